"""VQA-RAD as published: ``VQA_RAD Dataset Public.json`` and ``VQA_RAD Image Folder/``.

Dataset: Lau, Gayen, Ben Abacha, Demner-Fushman, "A dataset of clinically generated visual
questions and answers about radiology images", Scientific Data 5, 2018 (files on OSF, project
89kps). 315 radiology images (head CT/MR, chest X-ray, abdominal CT), 3,515 question/answer pairs.

Layout: one JSON document, a list of records::

    {"qid": 1, "image_name": "synpic54610.jpg", "image_organ": "HEAD",
     "question": "Are regions of the brain infarcted?", "answer": "Yes",
     "answer_type": "CLOSED", "question_type": "PRES", "phrase_type": "freeform",
     "image_case_url": "...", "evaluation": "...", "qid_linked_id": "...",
     "question_rephrase": "...", "question_relation": "...", "question_frame": "..."}

``src`` is the JSON file, or the folder holding it (then the images are in
``VQA_RAD Image Folder`` beside it; ``image_root`` overrides). The file is read whole (one JSON
document, about 2 MB).

Split: the official test set is the records whose ``phrase_type`` is ``test_freeform`` or
``test_para`` (451 pairs); everything else is train. Answers may be numbers in the JSON and are
kept as text.

Sample: ``id`` ``vqa-rad/QID``, task ``vqa``, one image, question -> answer; ``targets.answer``;
``labels``: ``answer_type`` (``open``/``closed``), ``question_type``, ``organ``; ``meta``:
``phrase_type``, ``image_case_url``, ``question_rephrase`` when present. VQA-RAD does not give the
image's modality per record, so image refs carry none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medmllm.data.formats._common import ImagePaths, json_list_records, located, qa_sample, record_id, sample_id, text_field
from medmllm.data.schema import Sample

PUBLIC_JSON = "VQA_RAD Dataset Public.json"
IMAGE_FOLDER = "VQA_RAD Image Folder"
_META = ("phrase_type", "image_case_url", "question_rephrase")


def import_vqa_rad(
    src: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    source: str = "vqa-rad",
    split: str | None = None,
) -> Iterator[Sample]:
    """``split``: keep only ``train`` or ``test`` (default: both)."""
    src = Path(src)
    path = src / PUBLIC_JSON if src.is_dir() else src
    images = ImagePaths(image_root if image_root is not None else path.parent / IMAGE_FOLDER, relative_to)
    for index, (where, record) in enumerate(json_list_records(path)):
        with located(where):
            sample = _sample(record, index, images, source)
        if split is None or sample.split == split:
            yield sample


def _sample(record: dict, index: int, images: ImagePaths, source: str) -> Sample:
    phrase_type = text_field(record, "phrase_type", required=False) or ""
    labels = {}
    answer_type = text_field(record, "answer_type", required=False)
    if answer_type:
        labels["answer_type"] = answer_type.lower()
    for key, label in (("question_type", "question_type"), ("image_organ", "organ")):
        value = text_field(record, key, required=False)
        if value:
            labels[label] = value
    return qa_sample(
        id=sample_id(source, record_id(record, "qid") or str(index)),
        task="vqa",
        question=text_field(record, "question"),
        answer=text_field(record, "answer"),
        images=[images.ref(text_field(record, "image_name"))],
        source=source,
        split="test" if phrase_type.lower().startswith("test") else "train",
        labels=labels,
        meta={key: record[key] for key in _META if record.get(key) not in (None, "")},
    )
