"""MiniRad end to end: files, determinism, splits, samples, reports against the truth, the model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medmllm.data.io import read_samples
from medmllm.errors import MedMLLMError
from medmllm.synth.findings import FINDING_TYPES
from medmllm.synth.minirad import MiniRadConfig, generate

N = 300


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minirad") / "out"
    generate(out, MiniRadConfig(n=N, seed=0, dicom=True))
    return out


def _truth(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "truth.jsonl").read_text().splitlines()]


def test_layout_and_exactly_n_valid_samples(dataset):
    samples = list(read_samples(dataset / "samples.jsonl"))  # validates every line with the Sample schema
    assert len(samples) == N
    assert {p.name for p in dataset.iterdir()} == {"images", "samples.jsonl", "train.jsonl", "val.jsonl", "test.jsonl", "truth.jsonl", "README.md"}
    assert sum(len(list(read_samples(dataset / f"{s}.jsonl"))) for s in ("train", "val", "test")) == N
    for s in samples:
        for ref in s.images:
            assert not Path(ref.path).is_absolute() and (dataset / ref.path).exists()
        assert s.patient_id.startswith("mr-") and s.source == "minirad"
    tasks = {s.task for s in samples}
    assert {"p2med/report-xray", "p2med/report-ct", "radbench/vqa", "radbench/diagnosis-judgement", "radbench/modality-open"} <= tasks
    assert tasks & {"p2med/outpatient-record", "p2med/first-disease-course"}
    readme = (dataset / "README.md").read_text()
    assert f"{N} samples" in readme and "truth.jsonl" in readme


def test_splits_are_by_patient(dataset):
    split_of: dict[str, set[str]] = {}
    for name in ("train", "val", "test"):
        for s in read_samples(dataset / f"{name}.jsonl"):
            assert s.split == name
            split_of.setdefault(s.patient_id, set()).add(name)
    assert all(len(v) == 1 for v in split_of.values())
    assert {"train", "val"} <= {next(iter(v)) for v in split_of.values()}
    for row in _truth(dataset):
        assert split_of.get(row["patient_id"], {row["split"]}) == {row["split"]}


def test_same_seed_same_bytes_other_seed_other_bytes(dataset, tmp_path):
    generate(tmp_path / "again", MiniRadConfig(n=N, seed=0, dicom=True))
    assert _digest(tmp_path / "again") == _digest(dataset)
    generate(tmp_path / "other", MiniRadConfig(n=N, seed=1, dicom=True))
    other = _digest(tmp_path / "other")
    assert other["samples.jsonl"] != _digest(dataset)["samples.jsonl"]
    assert set(other) != set(_digest(dataset))  # other patients, other image files


def test_output_does_not_depend_on_workers(tmp_path):
    config = MiniRadConfig(n=40, seed=5)
    generate(tmp_path / "one", config, workers=1)
    generate(tmp_path / "two", config, workers=2)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")


def test_a_draw_from_a_later_patient_is_all_held_out_and_shares_no_patient(dataset, tmp_path):
    """The demo's benchmark-only draw: --val 0 --test 1 from patient 1,000,000. Its first patient is the
    same one a draw from 0 would make at that index (a patient depends only on seed and index), and no
    patient is also in the draw from 0."""
    from medmllm.synth.minirad import patient_id

    later = tmp_path / "later"
    generate(later, MiniRadConfig(n=60, seed=0, dicom=True, val=0.0, test=1.0, first_patient=1_000_000))
    samples = list(read_samples(later / "samples.jsonl"))
    assert len(samples) == 60 and all(s.split == "test" for s in samples)
    assert [s.patient_id for s in read_samples(later / "test.jsonl")] == [s.patient_id for s in samples]
    assert not (later / "train.jsonl").read_text() and not (later / "val.jsonl").read_text()
    ids = {s.patient_id for s in samples}
    assert samples[0].patient_id == patient_id(0, 1_000_000)
    assert {p.name for p in (later / "images").iterdir()} == ids  # the patients generated ahead of need are removed
    assert not ids & {s.patient_id for s in read_samples(dataset / "samples.jsonl")}
    # patient 3 from index 3 is patient 3 of the draw from 0, byte for byte
    generate(tmp_path / "from3", MiniRadConfig(n=5, seed=0, dicom=True, first_patient=3))
    first = next(read_samples(tmp_path / "from3" / "samples.jsonl"))
    assert first.patient_id == patient_id(0, 3)
    assert first in [s for s in read_samples(dataset / "samples.jsonl") if s.patient_id == first.patient_id]
    with pytest.raises(MedMLLMError, match="sum to at most 1"):
        MiniRadConfig(val=0.5, test=0.6).check()
    with pytest.raises(MedMLLMError, match="first-patient"):
        MiniRadConfig(first_patient=-1).check()


def test_exams_are_in_date_order_and_change_between_them(dataset):
    by_patient: dict[str, list[dict]] = {}
    for row in _truth(dataset):
        by_patient.setdefault(row["patient_id"], []).append(row)
    changes = set()
    for rows in by_patient.values():
        assert 2 <= len(rows) <= 3 and len({r["modality"] for r in rows}) == 1
        dates = [r["date"] for r in rows]
        assert dates == sorted(dates) and len(set(dates)) == len(dates)
        for before, after in zip(rows, rows[1:]):
            for f in after["findings"]:
                prior = next((p for p in before["findings"] if (p["type"], p["region"]) == (f["type"], f["region"])), None)
                assert prior is not None  # findings do not appear from nowhere
                ratio = f["size_mm"] / prior["size_mm"]
                assert f["change"] == ("increased" if ratio > 1.1 else "decreased" if ratio < 0.9 else "unchanged")
                changes.add(f["change"])
    assert {"increased", "unchanged"} <= changes


def test_reports_state_present_findings_and_negate_absent_ones(dataset):
    rows = _truth(dataset)
    negations = 0
    for row in rows:
        text = row["report"]["findings"]
        for f in row["findings"]:
            word = "cardi" if f["type"] == "cardiomegaly" else f["type"].split()[-1]  # "brain mass" -> "mass"
            assert word in text.lower(), (f, text)
            if f["change"] in ("increased", "decreased"):
                assert f"{f['change']} in size compared with the prior exam" in text or ("larger" if f["change"] == "increased" else "smaller") in text
        if row["resolved"]:
            assert "resolved" in text or "resolution" in text
        if row["modality"] != "MRI":
            present = {f["type"] for f in row["findings"]}
            if not present & {"pleural effusion", "pneumothorax"}:
                assert "pleural effusion" in text and "pneumothorax" in text  # negated together
                negations += 1
            if "cardiomegaly" not in present:
                assert "heart" in text.lower() and "normal" in text.lower()
    assert negations > 10
    wordings = {row["report"]["findings"].split(".")[0] for row in rows if row["normal"] and row["modality"] == "X-ray"}
    assert len(wordings) > 1  # varied wording


def test_labeler_reads_back_the_truth(dataset):
    labeler = pytest.importorskip("medmllm.eval.labeler")
    covered = ("Cardiomegaly", "Lung Lesion", "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion", "No Finding")
    agree = total = 0
    for row in _truth(dataset):
        if row["modality"] == "MRI":
            continue
        labels = labeler.label_report(row["report"]["findings"] + " " + row["report"]["impression"])
        present = {FINDING_TYPES[f["type"]].observation for f in row["findings"]}
        for observation in covered:
            truth = row["normal"] if observation == "No Finding" else observation in present
            agree += (labels[observation] == 1) == truth
            total += 1
    print(f"labeler agreement: {agree}/{total} = {agree / total:.4f}")
    assert total > 200 and agree / total >= 0.95


def test_labels_and_questions_agree_with_the_truth(dataset):
    truth = {row["exam_id"]: row for row in _truth(dataset)}
    seen = 0
    for s in read_samples(dataset / "samples.jsonl"):
        if not s.images or s.meta.get("conversation"):
            continue
        exam = truth[s.images[0].exam]
        assert s.labels["findings"] == [{k: f[k] for k in ("type", "side", "region", "size_mm")} for f in exam["findings"]]
        assert s.labels["normal"] == exam["normal"] and s.labels["modality"] == exam["modality"]
        if s.task == "radbench/diagnosis-judgement":
            assert s.targets["answer"] == ("yes" if s.labels["asked"] in exam["diseases"] else "no")
        if s.task == "radbench/vqa" and s.turns[0].text.startswith("Is the heart enlarged"):
            assert s.targets["answer"] == ("yes" if any(f["type"] == "cardiomegaly" for f in exam["findings"]) else "no")
        seen += 1
    assert seen > 100


def test_records_diagnose_what_the_exams_show(dataset):
    truth = [row for row in _truth(dataset)]
    first = {}
    for row in truth:
        first.setdefault(row["patient_id"], row)
    n = 0
    for s in read_samples(dataset / "samples.jsonl"):
        if s.task in ("p2med/outpatient-record", "p2med/first-disease-course"):
            key = "preliminary_diagnosis" if s.task == "p2med/outpatient-record" else "admission_diagnosis"
            diseases = first[s.patient_id]["diseases"]
            assert s.targets[key] == ("; ".join(d[:1].upper() + d[1:] for d in diseases) if diseases else "No acute disease")
            assert not s.images
            n += 1
    assert n > 5


def test_multi_round_conversations_and_no_mrc(dataset, tmp_path):
    samples = list(read_samples(dataset / "samples.jsonl"))
    conversations = [s for s in samples if s.meta.get("conversation") == "multi-round"]
    assert conversations
    for s in conversations:
        assert len(s.images) == len(s.meta["rounds"]) >= 2 and sum(t.role == "assistant" for t in s.turns) == len(s.images)
        times = [ref.time for ref in s.images if ref.time]
        assert times == sorted(times)
        assert "prior exam" in s.turns[-1].text or "resol" in s.turns[-1].text  # follow-ups compare
    generate(tmp_path / "single", MiniRadConfig(n=N, seed=0, mrc=False))
    single = list(read_samples(tmp_path / "single" / "samples.jsonl"))
    assert not any(s.meta.get("conversation") for s in single)
    reports = [s for s in single if s.task in ("p2med/report-xray", "p2med/report-ct", "radbench/report")]
    assert reports and all(len(s.images) == 1 and len(s.turns) == 2 for s in reports)


def test_images_read_back_with_their_values(dataset):
    from medmllm.scans import read

    rows = _truth(dataset)
    ct = next(r for r in rows if r["modality"] == "CT" and r["image"].endswith(".nii.gz"))
    dicom = next(r for r in rows if r["modality"] == "CT" and not r["image"].endswith(".nii.gz"))
    for row in (ct, dicom):
        scan = read(dataset / row["image"])
        assert scan.shape == (32, 64, 64) and scan.value_range[0] < -900 and scan.value_range[1] > 500
        lung = (scan.voxels > -900) & (scan.voxels < -800)
        assert lung.mean() > 0.05
    mri = next(r for r in rows if r["modality"] == "MRI")
    assert read(dataset / mri["image"], modality="MR").value_range[1] > 600
    xray = read(dataset / next(r for r in rows if r["modality"] == "X-ray")["image"])
    assert xray.shape == (1, 128, 128) and xray.value_range[1] > 150


def test_a_batch_goes_through_the_tiny_model(dataset):
    torch = pytest.importorskip("torch")
    from medmllm.model.factory import build
    from medmllm.train.dataset import SampleCollator, SampleDataset

    torch.set_num_threads(1)
    data = SampleDataset(dataset / "train.jsonl")
    items = [data[i] for i in range(len(data))]
    mixed = [next(it for it in items if it.sample.meta.get("conversation")),  # multi-image conversation
             next(it for it in items if it.sample.images and it.sample.images[0].path.endswith(".png")),  # 2-D
             next(it for it in items if it.sample.images and it.sample.images[0].path.endswith(".nii.gz")),  # 3-D
             next(it for it in items if not it.sample.images)]  # a record, text only
    model, processor = build("tiny")
    batch = SampleCollator(processor)(mixed)
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)


def test_thousand_samples_speed(tmp_path):
    started = time.perf_counter()
    summary = generate(tmp_path / "k", MiniRadConfig(n=1000, seed=2))
    seconds = time.perf_counter() - started
    assert summary.samples == 1000 and len((tmp_path / "k" / "samples.jsonl").read_text().splitlines()) == 1000
    print(f"minirad n=1000: {seconds:.2f} s, {1000 / seconds:.0f} samples/s, {summary.patients} patients, {summary.images} images")


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(MedMLLMError, match="at least 1"):
        generate(tmp_path / "x", MiniRadConfig(n=0))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    with pytest.raises(MedMLLMError, match="not empty"):
        generate(tmp_path / "full", MiniRadConfig(n=5))
    with pytest.raises(MedMLLMError, match="modalities"):
        generate(tmp_path / "y", MiniRadConfig(n=5, modalities={"PET": 1.0}))
    proc = subprocess.run([sys.executable, "-m", "medmllm", "synth", "minirad", "-o", str(tmp_path / "z"), "--ct-shape", "32x64"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: --ct-shape")


def test_cli_writes_the_dataset(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "medmllm", "synth", "minirad", "-o", str(tmp_path / "cli"), "--n", "30", "--seed", "4",
                           "--no-mrc", "--modalities", "CT=1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 30 samples" in proc.stdout and "samples/s" in proc.stdout
    rows = _truth(tmp_path / "cli")
    assert {r["modality"] for r in rows} == {"CT"}
    assert np.all([r["image"].endswith(".nii.gz") for r in rows])


def test_real_base_mri_gets_findings_in_its_own_millimetres(tmp_path, brain_mri_path):
    from medmllm.scans import read

    generate(tmp_path / "base", MiniRadConfig(n=40, seed=2, modalities={"MRI": 1.0}, base_mri=str(brain_mri_path)))
    rows = [r for r in _truth(tmp_path / "base") if r["findings"]]
    assert rows
    real = read(brain_mri_path, modality="MR")
    for row in rows:
        scan = read(tmp_path / "base" / row["image"], modality="MR")
        fov = [n * s for n, s in zip(scan.shape, scan.spacing)]
        assert fov == pytest.approx([n * s for n, s in zip(real.shape, real.spacing)], rel=1e-3)  # the real head, resampled
        f = row["findings"][0]
        k = tuple(int((c + w / 2) / w * n) for c, w, n in zip(f["center_mm"], fov, scan.shape))
        assert abs(scan.voxels[k] - FINDING_TYPES[f["type"]].value) < 60  # the lesion's T1 value at its centre (noise sigma 15)
        assert scan.voxels.max() > 600  # white matter of the real scan, scaled to the phantom's 720
