"""IU X-ray and MIMIC-CXR in R2Gen's ``annotation.json``, with the images in ``images/``.

Layout (Chen, Song, Chang, Wan, "Generating Radiology Reports via Memory-driven Transformer",
EMNLP 2020; the preprocessed IU X-ray (Demner-Fushman et al., 2016) and MIMIC-CXR (Johnson et
al., 2019) releases that R2Gen and its successors use): one JSON document::

    {"train": [{"id": "CXR2384_IM-0942", "report": "The heart size and pulmonary vascularity appear within normal limits. ...",
                "image_path": ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"], "split": "train"}, ...],
     "val":   [...],
     "test":  [...]}

MIMIC-CXR records also have ``study_id`` and ``subject_id`` and one image each
(``image_path``: ``["p10/p10000032/s50414267/02aa804e-....jpg"]``). Image paths are relative to
``images/`` beside the file (``image_root`` overrides). The file is one JSON document and is read
whole (MIMIC-CXR's is about 150 MB).

``report`` is the findings section (R2Gen trains on findings), so it becomes ``targets.findings``.
The answer is P2Med-style ``[Findings] ...`` after P2Med's request for that section
(``report_style="p2med"``, default) or the bare report after a plain request (``"plain"``).

Sample: ``id`` ``SOURCE/ID`` (source ``iu-xray``, or ``mimic-cxr`` when records have
``study_id``; option ``source``), task ``report``, split from the section, images sharing one
``exam`` (the views of one study), the first with modality ``X-ray`` (so the processor writes one
exam header for the study, as the p2med/report templates do); ``patient_id``/``visit_id`` =
MIMIC-CXR's ``subject_id``/``study_id`` (already pseudonymous); ``labels.modality`` ``X-ray``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medmllm.data.formats._common import (
    ImagePaths,
    RecordError,
    check_report_style,
    json_list_records,
    load_json_document,
    located,
    normalize_split,
    record_id,
    report_sample,
    sample_id,
    text_field,
)
from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError

ANNOTATION = "annotation.json"
PLAIN_PROMPT = "Write the findings section of the radiology report for this chest X-ray."


def import_r2gen(
    src: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    source: str | None = None,
    report_style: str = "p2med",
    split: str | None = None,
) -> Iterator[Sample]:
    """``split``: keep only that section (``train``, ``val``, ``test``; default: all)."""
    check_report_style(report_style)
    src = Path(src)
    path = src / ANNOTATION if src.is_dir() else src
    images = ImagePaths(image_root if image_root is not None else path.parent / "images", relative_to)
    document = load_json_document(path)
    if not isinstance(document, dict):
        raise MedMLLMError(f"{path}: expected an object with 'train', 'val' and 'test' lists, got {type(document).__name__}")
    for section, records in document.items():
        section_split = normalize_split(section)
        if section_split is None:
            raise MedMLLMError(f"{path}: unknown section {section!r} (expected train, val, test)")
        if split is not None and section_split != split:
            continue
        for where, record in json_list_records(path, records, label=f"{section} record"):
            with located(where):
                sample = _sample(record, images, source, section_split, report_style)
            yield sample


def _sample(record: dict, images: ImagePaths, source: str | None, split: str, style: str) -> Sample:
    original = record_id(record, "id")
    if original is None:
        raise RecordError("missing field 'id'")
    study = record_id(record, "study_id")
    source = source or ("mimic-cxr" if study is not None else "iu-xray")
    paths = record.get("image_path")
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths:
        raise RecordError("'image_path' must be a non-empty list of paths")
    exam = study or original
    return report_sample(
        id=sample_id(source, original),
        sections={"findings": text_field(record, "report")},
        # One exam header per study, as P2Med's "[Image] <image>...<image>": the processor writes a
        # header before every image that has a modality, so only the first view carries it.
        images=[images.ref(p, modality="X-ray" if k == 0 else None, exam=exam) for k, p in enumerate(paths)],
        source=source,
        split=split,
        style=style,
        plain_prompt=PLAIN_PROMPT,
        labels={"modality": "X-ray"},
        patient_id=record_id(record, "subject_id"),
        visit_id=study,
    )
