"""`medmllm data build`: raw sources to stage datasets, resumable, every drop counted, a report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medmllm.data import ImageRef, read_samples, write_samples
from medmllm.data.build import build
from medmllm.data.templates import ImageStudy, OutpatientRecord, get_template

IMPRESSIONS = ["Bronchopneumonia.", "Right lower lobe pneumonia.", "Pleural effusion on the left.", "No acute cardiopulmonary abnormality."]


@pytest.fixture
def raw(tmp_path):
    """An IU X-ray style R2Gen folder, X-ray report exams of patients with two visits, outpatient records."""
    root = tmp_path / "raw"
    (root / "iu" / "images").mkdir(parents=True)
    img = (np.indices((64, 64)).sum(0) % 255).astype(np.uint8)
    annotations = {"train": [], "val": [], "test": []}
    for i in range(12):
        Image.fromarray(img).save(root / "iu" / "images" / f"CXR{i}.png")
        report = f"The heart size is normal. Case {i} shows {'patchy opacity in the right lower lobe' if i % 2 else 'clear lungs'} and no effusion."
        annotations["train" if i < 10 else "test"].append({"id": f"CXR{i}", "report": report, "image_path": [f"CXR{i}.png"], "split": "train" if i < 10 else "test"})
    annotations["train"].append(dict(annotations["train"][0], id="CXR0-copy"))  # an exact copy: a near-duplicate
    (root / "iu" / "annotation.json").write_text(json.dumps(annotations))

    report_template, outpatient = get_template("p2med/report-xray"), get_template("p2med/outpatient-record")
    samples = []
    for p in range(4):
        for k, day in enumerate(("2022-10-29", "2022-11-11")):
            Image.fromarray(img).save(root / f"p{p}_{k}.png")
            study = ImageStudy(id=f"x{p}{k}", patient_id=f"p{p}", visit_id="v1", split="train",
                               images=[ImageRef(path=f"p{p}_{k}.png", modality="X-ray", view="AP", time=day)],
                               findings=f"Both lungs show increased markings in patient {p} on day {k}.", impression=IMPRESSIONS[(p + k) % 4])
            samples.append(report_template.make(study, p * 2 + k))
    for r in range(6):
        record = OutpatientRecord(id=f"o{r}", patient_id=f"q{r}", split="train", chief_complaint=f"Cough for {r + 2} days.",
                                  history_of_present_illness="Fever and cough since last week, no vomiting.", physical_examination="Coarse breath sounds.",
                                  preliminary_diagnosis="Bronchopneumonia" if r % 2 else "Acute upper respiratory infection",
                                  treatment_recommendation="Nebulised therapy.", treatment_plan="Review in three days.")
        samples.append(outpatient.make(record, r))
    bad = samples[-1].model_copy(update={"id": "o-empty", "targets": {**samples[-1].targets, "treatment_plan": ""}})
    samples.append(bad)  # a missing output field: dropped by missing_output
    write_samples(root / "records.jsonl", samples)

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: test\noutput: out\nseed: 0\nsources:\n"
        "  - {name: iu, format: r2gen, path: raw/iu/annotation.json, options: {image_root: raw/iu/images}}\n"
        "  - {name: records, format: medmllm, path: raw/records.jsonl}\n"
        "filters: {names: [missing_output, few_ngrams]}\n"
        "dedup: {near: {threshold: 0.85, bands: 32, rows: 4, text: output}}\n"
        "stages:\n  - {name: stage1}\n  - {name: stage2, balance: {by: task, per_task: 3}}\n"
    )
    return recipe


def test_build_writes_stages_counts_every_drop_and_resumes(raw):
    lines = []
    report = build(raw, log=lines.append)
    out = raw.parent / "out"
    stage1 = list(read_samples(out / "stage1.jsonl"))
    assert report["steps"]["import:iu"]["samples"] == 13 and report["steps"]["import:records"]["samples"] == 15
    assert report["dropped"]["near-duplicate"] >= 1
    assert report["dropped"]["missing_output"] == 1, report["dropped"]
    kept_before_conversations = report["steps"]["dedup"]["samples"]
    assert kept_before_conversations == 28 - sum(v for k, v in report["dropped"].items() if not k.startswith("not drawn"))
    # P2Med multi-round: each patient's two X-ray exams of one visit became one conversation, in time order
    mrc = [s for s in stage1 if s.task.startswith("p2med/report") and len(s.turns) == 4]
    assert len(mrc) == 4
    times = [ref.time for ref in mrc[0].images]
    assert times == sorted(times)
    assert {s.id for s in stage1}.isdisjoint({"CXR0-copy", "o-empty"})
    # stage 2: at most 3 per task
    stage2 = list(read_samples(out / "stage2.jsonl"))
    counts = {}
    for s in stage2:
        counts[s.task] = counts.get(s.task, 0) + 1
    assert counts and max(counts.values()) <= 3
    assert (out / "report.html").read_text().count("<img") >= 3
    assert json.loads((out / "report.json").read_text())["stages"]["stage2"]["samples"] == len(stage2)

    # a second run reuses every step; changing stage2 redoes only stage2
    again = []
    build(raw, log=again.append)
    assert sum("unchanged" in line for line in again) == 8  # 2 imports, merge, filter, dedup, conversations, 2 stages
    raw.write_text(raw.read_text().replace("per_task: 3", "per_task: 2"))
    third = []
    build(raw, log=third.append)
    assert sum("unchanged" in line for line in third) == 7 and not any(line.startswith("stage:stage2") for line in third)
    assert max(sum(s.task == t for s in read_samples(out / "stage2.jsonl")) for t in counts) <= 2


def test_bad_recipe_is_one_clear_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\noutput: o\nsources: []\n")
    proc = subprocess.run([sys.executable, "-m", "medmllm", "data", "build", str(recipe)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {recipe}: sources") and "Traceback" not in proc.stderr
