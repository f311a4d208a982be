"""MiniRad: synthetic patients -> exams -> image files + samples + ground truth, streamed to disk.

    from medmllm.synth.minirad import MiniRadConfig, generate
    summary = generate("minirad-out", MiniRadConfig(n=1000, seed=0))

Each patient (pseudonymous id ``mr-<10 hex>``, a child of 1-17 years, as P2Med's pediatric records)
has one visit (outpatient or inpatient) with 2-3 exams of one modality (chest X-ray, chest CT or
brain MRI) a few days or weeks apart. Its findings (0-2, see `medmllm.synth.findings`) follow a
course over the exams (increasing, stable, decreasing, resolving). Every exam gives an image file,
a report, questions, and one truth row; the visit gives a clinical record. Samples use the
project's task templates (`medmllm.data.templates`), and the reports of a visit become one P2Med
multi-round conversation (`medmllm.data.conversations.multi_round`) unless ``mrc=False``.

Everything a patient gets is drawn from generators seeded by (seed, patient index), so the output
does not depend on the number of workers, and the same seed gives byte-identical files. Layout,
formats and the truth table are described in docs/minirad.md and in the README.md written to DIR.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from medmllm.data.conversations import multi_round
from medmllm.data.schema import ImageRef, Sample
from medmllm.data.templates import ImageStudy, InpatientRecord, OutpatientRecord, VQARecord, get_template
from medmllm.errors import MedMLLMError
from medmllm.synth import phantoms as ph
from medmllm.synth import reports as rp
from medmllm.synth.findings import BRAIN_TYPES, CHEST_TYPES, FINDING_TYPES, Course, Finding, sample_courses

SOURCE = "minirad"
MODALITY_WEIGHTS = {"X-ray": 0.45, "CT": 0.35, "MRI": 0.2}
REPORT_TASKS = {"X-ray": "p2med/report-xray", "CT": "p2med/report-ct", "MRI": "radbench/report"}
# painted in this order, so a nodule or mass is never covered by fluid or air drawn after it
_PAINT_ORDER = ("cardiomegaly", "pleural effusion", "pneumothorax", "consolidation", "atelectasis", "nodule", "mass", "infarct", "brain mass")
OUTPUT_FILES = ("samples.jsonl", "train.jsonl", "val.jsonl", "test.jsonl", "truth.jsonl", "README.md")


@dataclass(frozen=True)
class MiniRadConfig:
    """What to generate. Sizes are (H, W) for radiographs and (D, H, W) for volumes."""

    n: int = 1000  # samples (JSONL lines) to write
    seed: int = 0
    xray_size: tuple[int, int] = (128, 128)
    ct_shape: tuple[int, int, int] = (32, 64, 64)
    mri_shape: tuple[int, int, int] = (32, 64, 64)
    modalities: dict[str, float] = field(default_factory=lambda: dict(MODALITY_WEIGHTS))
    mrc: bool = True  # the reports of a visit as one multi-round conversation
    dicom: bool = False  # the first CT exam of each CT patient as a DICOM series instead of NIfTI
    val: float = 0.1  # fraction of patients in the validation split
    test: float = 0.1  # (val + test = 1: a draw all held out, e.g. a benchmark beside another draw's train split)
    # The index of the first patient (a patient depends only on seed and index): a draw from a later
    # index shares no patient with one that stopped before it (the demo's benchmark-only draw)
    first_patient: int = 0
    p_normal: float = 0.3  # probability that a patient has no finding
    base_mri: str | None = None  # a real T1 brain MRI (e.g. brain_t1_mri.nii.gz) used as the base of brain exams

    def check(self) -> None:
        if self.n < 1:
            raise MedMLLMError(f"--n must be at least 1, got {self.n}")
        if not (self.val >= 0 and self.test >= 0 and self.val + self.test <= 1):
            raise MedMLLMError(f"val ({self.val}) and test ({self.test}) fractions must be >= 0 and sum to at most 1")
        if self.first_patient < 0:
            raise MedMLLMError(f"--first-patient must be at least 0, got {self.first_patient}")
        if min(self.xray_size) < 16 or min(self.ct_shape) < 8 or min(self.mri_shape) < 8:
            raise MedMLLMError("image sizes too small: radiographs need at least 16 x 16, volumes 8 x 8 x 8")
        if max(self.xray_size) > 2048 or max(self.ct_shape + self.mri_shape) > 512:
            raise MedMLLMError("image sizes too large: at most 2048 for radiographs, 512 per volume axis")
        unknown = set(self.modalities) - set(MODALITY_WEIGHTS)
        if unknown or not self.modalities or any(w < 0 for w in self.modalities.values()) or sum(self.modalities.values()) <= 0:
            raise MedMLLMError(f"modalities must be weights >= 0 of {', '.join(MODALITY_WEIGHTS)} with a positive sum, got {self.modalities}")
        if self.base_mri is not None and not Path(self.base_mri).is_file():
            raise MedMLLMError(f"{self.base_mri}: no such base MRI file")


@dataclass
class Summary:
    samples: int
    patients: int
    exams: int
    images: int
    seconds: float
    by_split: dict[str, int]
    by_task: dict[str, int]

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class PatientOutput:
    """What one patient adds: sample lines (with their split), truth rows, the images written."""

    patient_id: str
    split: str
    lines: list[tuple[str, str]]  # (task, JSON line)
    truth: list[dict]
    images: int


# ------------------------------------------------------------------------------------ patients


def patient_id(seed: int, index: int) -> str:
    """Pseudonymous, stable for (seed, index), no meaning: ``mr-`` + 10 hex digits of a hash."""
    return "mr-" + hashlib.sha256(f"minirad|{seed}|{index}".encode()).hexdigest()[:10]


@dataclass
class _Exam:
    id: str
    date: str
    findings: list[Finding]
    changes: list[str | None]
    priors: list[Finding | None]
    resolved: list[Finding]
    image: ImageRef | None = None  # set once the image is written
    findings_text: str = ""
    impression: str = ""
    ratio: float | None = None

    @property
    def diseases(self) -> list[str]:
        return [FINDING_TYPES[f.type].disease for f in self.findings]

    def labels(self, modality: str) -> dict:
        return {"findings": [f.truth() for f in self.findings], "diseases": self.diseases, "modality": modality, "normal": not self.findings}

    def summary(self, modality: str) -> str:
        return f"{_MODALITY_NAMES[modality]} on {self.date}: {self.impression}"


_MODALITY_NAMES = {"X-ray": "Chest X-ray", "CT": "Chest CT", "MRI": "Brain MRI"}


def make_patient(config: MiniRadConfig, out: Path, index: int) -> PatientOutput:
    """Generate patient ``index``: write its images under ``out/images/<patient id>/`` and return
    its samples and truth rows. Depends only on (config, index)."""
    rng = np.random.default_rng([config.seed, index])
    trng = random.Random(f"minirad|{config.seed}|{index}")
    pid, visit = patient_id(config.seed, index), "v1"
    u = rng.random()
    split = "test" if u < config.test else "val" if u < config.test + config.val else "train"
    age, sex = int(rng.integers(1, 18)), ("M", "F")[int(rng.integers(2))]
    names = list(config.modalities)
    weights = np.asarray([config.modalities[m] for m in names], dtype=float)
    modality = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    family = "brain" if modality == "MRI" else "chest"
    n_exams = int(rng.integers(2, 4))
    inpatient = rng.random() < 0.5
    scale = float((0.6 + 0.025 * age) * rng.uniform(0.95, 1.05)) if family == "chest" else float(0.85 + 0.009 * age)
    base_mri = _base_mri(config) if family == "brain" and config.base_mri else None
    if base_mri is not None:
        scale = 1.0  # a real head: its own millimetres
    courses = sample_courses(family, n_exams, rng, scale, config.p_normal, CHEST_TYPES if family == "chest" else BRAIN_TYPES)
    domes = (float(rng.uniform(-86, -74)), float(rng.uniform(-98, -86)))
    start = date(2015, 1, 1) + timedelta(days=int(rng.integers(0, 3650)))
    gaps = rng.integers(1, 8, n_exams) if inpatient else rng.integers(7, 60, n_exams)

    folder = out / "images" / pid
    folder.mkdir(parents=True, exist_ok=True)
    exams: list[_Exam] = []
    day = start
    for k in range(n_exams):
        if k:
            day += timedelta(days=int(gaps[k]))
        present = [(c, c.at(k, scale)) for c in courses]
        findings = [f for _, f in present if f is not None]
        exam = _Exam(
            id=f"{pid}-e{k + 1}", date=day.isoformat(), findings=findings,
            changes=[c.change(k) for c, f in present if f is not None],
            priors=[c.at(k - 1, scale) if k else None for c, f in present if f is not None],
            resolved=[c.at(k - 1, scale) for c, f in present if f is None and c.change(k) == "resolved"],
        )
        exam_rng = np.random.default_rng([config.seed, index, k])
        painted = sorted(findings, key=lambda f: _PAINT_ORDER.index(f.type))
        exam.image, exam.ratio = _write_image(config, out, folder, exam, modality, painted, scale, domes, exam_rng, base_mri, dicom=config.dicom and k == 0)
        exam.findings_text, exam.impression = rp.report(family, modality, list(zip(findings, exam.changes, exam.priors)), exam.resolved, trng,
                                                        follow_up=k > 0, ratio=exam.ratio)
        exams.append(exam)

    common = dict(patient_id=pid, visit_id=visit, source=SOURCE, split=split)
    samples = _image_samples(exams, modality, family, config, trng, common)
    samples += _record_samples(exams, modality, family, inpatient, age, sex, trng, common)
    truth = [_truth_row(e, pid, visit, modality, split, courses) for e in exams]
    return PatientOutput(pid, split, [(s.task, s.to_json()) for s in samples], truth, len(exams))


def _truth_row(exam: _Exam, pid: str, visit: str, modality: str, split: str, courses: list[Course]) -> dict:
    rows = []
    for f, change in zip(exam.findings, exam.changes):
        course = next(c.course for c in courses if c.first.type == f.type and c.first.region == f.region)
        rows.append({**f.truth(), "change": change, "course": course,
                     "center_mm": [round(v, 1) for v in f.center] if f.center else None})
    return {"exam_id": exam.id, "patient_id": pid, "visit_id": visit, "date": exam.date, "modality": modality, "image": exam.image.path,
            "split": split, "normal": not exam.findings, "findings": rows, "resolved": [f.truth() for f in exam.resolved],
            "diseases": exam.diseases, "cardiothoracic_ratio": round(exam.ratio, 3) if exam.ratio is not None else None,
            "report": {"findings": exam.findings_text, "impression": exam.impression}}


# -------------------------------------------------------------------------------------- images


def _write_image(config, out: Path, folder: Path, exam: _Exam, modality: str, findings: list[Finding], scale: float, domes,
                 rng: np.random.Generator, base_mri, dicom: bool) -> tuple[ImageRef, float | None]:
    """Render and write one exam's image; its ImageRef (path relative to ``out``) and the
    cardiothoracic ratio (chest) or None."""
    heart = next((f.extent for f in findings if f.type == "cardiomegaly"), 1.0)
    anatomy = ph.ChestAnatomy(scale=scale, heart_scale=heart, right_dome=domes[0], left_dome=domes[1])
    ratio = anatomy.heart_diameter_mm() / anatomy.thoracic_width_mm()
    if modality == "X-ray":
        image, _ = ph.chest_radiograph(config.xray_size, anatomy, findings, rng)
        path = folder / f"{exam.id}.png"
        _write_png(image, path)
        return ImageRef(path=_rel(path, out), modality=modality, view="PA", time=exam.date, exam=exam.id), ratio
    if modality == "CT":
        grid = ph.Grid(config.ct_shape, ph.CHEST_FOV_MM)
        volume, _ = ph.chest_ct(grid, anatomy, findings, rng)
        spacing = tuple(s * scale for s in grid.spacing)
        if dicom:
            path = folder / exam.id
            _write_dicom(volume, spacing, path, exam, config.seed)
        else:
            path = folder / f"{exam.id}.nii.gz"
            _write_nifti(volume, spacing, path, "MiniRad synthetic chest CT (HU)")
        return ImageRef(path=_rel(path, out), modality=modality, view="axial", time=exam.date, exam=exam.id), ratio
    base, fov = base_mri if base_mri is not None else (None, ph.BRAIN_FOV_MM)
    grid = ph.Grid(config.mri_shape, fov)
    volume, _ = ph.brain_mri(grid, ph.BrainAnatomy(scale=scale), findings, rng, base=base)
    path = folder / f"{exam.id}.nii.gz"
    _write_nifti(volume, tuple(s * scale for s in grid.spacing), path, "MiniRad synthetic brain T1 MRI")
    return ImageRef(path=_rel(path, out), modality=modality, view="axial", time=exam.date, exam=exam.id), None


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(path, optimize=False)


def _write_nifti(volume: np.ndarray, spacing, path: Path, description: str) -> None:
    """int16 NIfTI (HU or T1 units), RAS+ affine from the spacing, as `medmllm.scans.write.write_nifti`
    but half the bytes (the values are whole numbers), gzip by ISA-L at level 1 (5x faster than
    zlib here, 4% larger) with mtime 0 (reproducible bytes), and no fsync per file."""
    import nibabel as nib
    from isal import igzip

    from medmllm.scans.orient import canonical_affine

    data = np.ascontiguousarray(np.round(volume).astype(np.int16).transpose(2, 1, 0))
    img = nib.Nifti1Image(data, canonical_affine(spacing))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode("ascii")
    path.write_bytes(igzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def _write_dicom(volume: np.ndarray, spacing, folder: Path, exam: _Exam, seed: int) -> None:
    """One axial CT series with `medmllm.scans.write.write_dicom_series`, then UIDs derived from
    (seed, exam) instead of random ones, so the files are reproducible."""
    from datetime import datetime

    import pydicom
    from pydicom.uid import generate_uid

    from medmllm.scans.write import write_dicom_series

    paths = write_dicom_series(volume, spacing, folder, series_description="MiniRad chest CT", patient_id=exam.id.rsplit("-", 1)[0],
                               acquisition_datetime=datetime.fromisoformat(exam.date + "T12:00:00"))
    key = f"minirad|{seed}|{exam.id}"
    study, series, frame = (generate_uid(entropy_srcs=[key, part]) for part in ("study", "series", "frame"))
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[key, str(k)])
        ds.save_as(path, enforce_file_format=True)


_BASE_CACHE: dict[str, tuple[np.ndarray, tuple[float, float, float]]] = {}


def _base_mri(config: MiniRadConfig) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The real base MRI resampled to ``mri_shape`` in T1 units (its white matter at the phantom's
    720), and its field of view (z, y, x) in mm. Read once per process."""
    key = f"{config.base_mri}|{config.mri_shape}"
    if key not in _BASE_CACHE:
        from scipy import ndimage

        from medmllm.scans import read

        scan = read(config.base_mri, modality="MR")
        vox = scan.voxels if scan.voxels.ndim == 3 else scan.voxels.mean(axis=3)
        zoomed = ndimage.zoom(vox, [t / s for t, s in zip(config.mri_shape, vox.shape)], order=1)
        volume = np.zeros(config.mri_shape, dtype=np.float32)  # zoom may round a size down by one
        crop = tuple(slice(0, min(a, b)) for a, b in zip(zoomed.shape, config.mri_shape))
        volume[crop] = zoomed[crop]
        tissue = volume[volume > 0.1 * volume.max()]
        white = float(np.percentile(tissue, 90)) if tissue.size else 1.0  # the brightest brain tissue of a T1
        fov = tuple(float(n * s) for n, s in zip(vox.shape, scan.spacing))
        _BASE_CACHE[key] = (np.clip(volume * (ph.T1["white"] / white), 0, 1000).astype(np.float32), fov)
    return _BASE_CACHE[key]


# ------------------------------------------------------------------------------------- samples


def _study(exam: _Exam, family: str, common: dict, **extra) -> dict:
    pool = CHEST_TYPES if family == "chest" else BRAIN_TYPES
    absent = [FINDING_TYPES[t].disease for t in pool if t not in {f.type for f in exam.findings}]
    return dict(id=exam.id, images=[exam.image], findings=exam.findings_text, impression=exam.impression, diagnoses=exam.diseases,
                absent=absent, **common, **extra)


def _with_labels(sample: Sample, labels: dict) -> Sample:
    return sample.model_copy(update={"labels": {**sample.labels, **labels}})


def _image_samples(exams: list[_Exam], modality: str, family: str, config: MiniRadConfig, rng: random.Random, common: dict) -> list[Sample]:
    reports, others = [], []
    for k, exam in enumerate(exams):
        labels = exam.labels(modality)
        study = ImageStudy(**_study(exam, family, common))
        reports.append(_with_labels(get_template(REPORT_TASKS[modality]).make(study, rng, id=f"minirad/{exam.id}/report"), labels))
        for q, (question, answer, kind) in enumerate(rp.questions(family, exam.findings, rng)):
            record = VQARecord(id=exam.id, images=[exam.image], question=question, answer=answer, answer_type=kind, **common)
            others.append(_with_labels(get_template("radbench/vqa").make(record, rng, id=f"minirad/{exam.id}/vqa-{q + 1}"), labels))
        others.append(_with_labels(get_template("radbench/diagnosis-judgement").make(study, rng, id=f"minirad/{exam.id}/diagnosis"), labels))
        if exam.findings:
            others.append(_with_labels(get_template("radbench/diagnosis-open").make(study, rng, id=f"minirad/{exam.id}/diagnosis-open"), labels))
        task = "radbench/modality-open" if k % 2 == 0 else "radbench/modality-judgement"
        others.append(_with_labels(get_template(task).make(study, rng, id=f"minirad/{exam.id}/modality"), labels))
    if config.mrc and len(reports) > 1:
        reports = multi_round(reports)
    return reports + others


def _record_samples(exams: list[_Exam], modality: str, family: str, inpatient: bool, age: int, sex: str, rng: random.Random, common: dict) -> list[Sample]:
    visit_id = f"{common['patient_id']}-{common['visit_id']}"
    if not inpatient:
        first = exams[0]
        fields = rp.outpatient_sections(family, age, sex, first.diseases, first.findings, first.summary(modality), rng)
        record = OutpatientRecord(id=visit_id, diagnoses=first.diseases, **fields, **common)
        sample = get_template("p2med/outpatient-record").make(record, rng, id=f"minirad/{visit_id}/outpatient-record")
        return [_with_labels(sample, {"diseases": first.diseases, "normal": not first.findings, "findings": [f.truth() for f in first.findings]})]
    course = [(e.diseases, e.findings, e.summary(modality)) for e in exams]
    record = InpatientRecord(id=visit_id, diagnoses=sorted({d for e in exams for d in e.diseases}), **rp.inpatient_sections(family, age, sex, course, rng), **common)
    out = []
    for task, exam in (("p2med/first-disease-course", exams[0]), ("p2med/attending-ward-round", exams[min(1, len(exams) - 1)]),
                       ("p2med/chief-ward-round", exams[-1])):
        sample = get_template(task).make(record, rng, id=f"minirad/{visit_id}/{task.split('/')[1]}")
        out.append(_with_labels(sample, {"diseases": exam.diseases, "normal": not exam.findings, "findings": [f.truth() for f in exam.findings]}))
    return out


# -------------------------------------------------------------------------------------- driver


def _patients(config: MiniRadConfig, out: Path, workers: int) -> Iterator[PatientOutput]:
    """Patients ``first_patient``, +1, +2 ... in order, generated ``workers`` at a time (batches of a few per worker)."""
    if workers <= 1:
        index = config.first_patient
        while True:
            yield make_patient(config, out, index)
            index += 1
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        index, batch = config.first_patient, 4 * workers
        while True:
            futures = [pool.submit(make_patient, config, out, i) for i in range(index, index + batch)]
            index += batch
            try:
                for future in futures:
                    yield future.result()
            finally:  # closed early: patients not started yet are not generated at all
                for future in futures:
                    future.cancel()


def generate(out: str | Path, config: MiniRadConfig, *, workers: int = 1, force: bool = False, progress=None) -> Summary:
    """Write MiniRad to ``out``: images/, samples.jsonl, train/val/test.jsonl, truth.jsonl, README.md.

    Exactly ``config.n`` samples: whole patients in order, the last one cut short when the count
    is reached (its images and truth rows are kept). ``force`` replaces MiniRad's own files in an
    existing folder; otherwise a non-empty ``out`` is refused. ``progress(samples_done)``: called
    after each patient.
    """
    config.check()
    if workers < 1:
        raise MedMLLMError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MedMLLMError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise MedMLLMError(f"{out}: folder is not empty; pass --force to replace its MiniRad files")
        if not (out / "truth.jsonl").is_file():
            raise MedMLLMError(f"{out}: not a MiniRad folder (no truth.jsonl); --force only replaces an earlier MiniRad output")
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    written, patients, exams, by_split, by_task = 0, 0, 0, {"train": 0, "val": 0, "test": 0}, {}
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(open(out / f"{name}.jsonl", "w", encoding="utf-8", newline="\n"))
                 for name in ("samples", "train", "val", "test", "truth")}
        stream = stack.enter_context(contextlib.closing(_patients(config, out, workers)))  # closing stops the workers
        for patient in stream:
            patients += 1
            exams += patient.images
            for row in patient.truth:
                files["truth"].write(json.dumps(row, ensure_ascii=False) + "\n")
            for task, line in patient.lines[: config.n - written]:
                files["samples"].write(line + "\n")
                files[patient.split].write(line + "\n")
                by_task[task] = by_task.get(task, 0) + 1
                by_split[patient.split] += 1
                written += 1
            if progress is not None:
                progress(written)
            if written >= config.n:
                break
    # patients generated ahead of need (by the workers) are removed
    kept = {patient_id(config.seed, i) for i in range(config.first_patient, config.first_patient + patients)}
    for folder in (out / "images").iterdir():
        if folder.name not in kept:
            shutil.rmtree(folder)
    seconds = time.perf_counter() - started
    summary = Summary(written, patients, exams, exams, seconds, by_split, dict(sorted(by_task.items())))
    (out / "README.md").write_text(_readme(config, summary), encoding="utf-8")
    return summary


def _readme(config: MiniRadConfig, summary: Summary) -> str:
    settings = {k: v for k, v in asdict(config).items() if k != "base_mri"} | {"base_mri": Path(config.base_mri).name if config.base_mri else None}
    tasks = "\n".join(f"| `{task}` | {count} |" for task, count in summary.by_task.items())
    return f"""# MiniRad synthetic dataset

Generated by `medmllm synth minirad` (medmllm.synth, docs/minirad.md). Everything here is
procedural: phantoms, findings, reports and records are synthetic; no patient data is involved.

Settings: `{json.dumps(settings, sort_keys=True)}`

{summary.samples} samples from {summary.patients} patients, {summary.exams} exams
(train {summary.by_split['train']}, val {summary.by_split['val']}, test {summary.by_split['test']} samples; split by patient).

## Layout

| path | what |
|---|---|
| `samples.jsonl` | every sample (medmllm sample format, docs/data-format.md), with its `split` |
| `train.jsonl`, `val.jsonl`, `test.jsonl` | the same samples by split; a patient is in one split only |
| `truth.jsonl` | one row per exam: findings (type, side, region, size_mm, change, course, center_mm), diseases, report |
| `images/<patient>/<exam>.png` | chest radiographs (PA, 8-bit, white = attenuation), {config.xray_size[0]} x {config.xray_size[1]} |
| `images/<patient>/<exam>.nii.gz` | chest CT in HU (int16) or brain T1 MRI (0-1000), (D, H, W) = {tuple(config.ct_shape)} / {tuple(config.mri_shape)} |
| `images/<patient>/<exam>/` | a chest CT as a DICOM series (with `--dicom`, the first CT exam of each CT patient) |

Image paths in the JSONL files are relative to this folder. `labels` of image samples:
`{{"findings": [{{"type", "side", "region", "size_mm"}}], "diseases": [...], "modality": ..., "normal": bool}}`.

## Samples by task

| task | samples |
|---|---|
{tasks}

The same seed and settings give byte-identical files.
"""
