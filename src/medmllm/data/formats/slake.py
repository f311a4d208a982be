"""SLAKE as published: ``train.json``, ``validate.json``, ``test.json`` and ``imgs/``.

Dataset: Liu, Zhan, Xu, Ma, Yang, Wu, "SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset
for Medical Visual Question Answering", ISBI 2021. 642 radiology images (CT, MRI, X-ray), about
14k question/answer pairs in English and Chinese.

Layout: each split file is one JSON document, a list of records::

    {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Which part of the body does this image belong to?",
     "answer": "Chest", "q_lang": "en", "location": "Chest", "modality": "MRI",
     "answer_type": "OPEN", "base_type": "vqa", "content_type": "Position",
     "triple": ["vhead", "_", "_"], "qid": 0}

with ``img_name`` relative to ``imgs/``. ``src`` is one split file, or the dataset folder (then
all three files, in the order train, validate, test). Each file is read whole (one JSON document).

Split: from the file name (``validate`` -> ``val``). Language: ``lang="en"`` (default), ``"zh"``
or ``"all"``.

Sample: ``id`` ``slake/QID``, task ``vqa``; ``targets.answer``; ``labels``: ``answer_type``
(``open``/``closed``), ``modality`` (the templates' spelling: ``CT``, ``MRI``, ``X-ray``), ``location``,
``content_type``, ``lang``; ``meta``: ``img_id``, ``base_type``, ``triple``. The image ref carries
the modality, except for questions about the modality (``content_type`` ``Modality``): the
processor writes the modality into the prompt, which would give the answer away.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medmllm.data.formats._common import (
    ImagePaths,
    json_list_records,
    located,
    normalize_modality,
    qa_sample,
    record_id,
    sample_id,
    split_from_name,
    text_field,
)
from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError

SPLIT_FILES = ("train.json", "validate.json", "test.json")
LANGS = ("en", "zh", "all")


def import_slake(
    src: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    source: str = "slake",
    lang: str = "en",
) -> Iterator[Sample]:
    if lang not in LANGS:
        raise MedMLLMError(f"unknown SLAKE language {lang!r}; known: {', '.join(LANGS)}")
    src = Path(src)
    if src.is_dir():
        files = [src / name for name in SPLIT_FILES if (src / name).exists()]
        if not files:
            raise MedMLLMError(f"{src}: none of {', '.join(SPLIT_FILES)} found")
    else:
        files = [src]
    for path in files:
        images = ImagePaths(image_root if image_root is not None else path.parent / "imgs", relative_to)
        split = split_from_name(path.name)
        for index, (where, record) in enumerate(json_list_records(path)):
            if lang != "all" and record.get("q_lang", "en") != lang:
                continue
            with located(where):
                sample = _sample(record, index, images, source, split)
            yield sample


def _sample(record: dict, index: int, images: ImagePaths, source: str, split: str | None) -> Sample:
    modality = normalize_modality(text_field(record, "modality", required=False))
    content_type = text_field(record, "content_type", required=False)
    labels = {}
    answer_type = text_field(record, "answer_type", required=False)
    if answer_type:
        labels["answer_type"] = answer_type.lower()
    for key, value in (
        ("modality", modality),
        ("location", text_field(record, "location", required=False)),
        ("content_type", content_type),
    ):
        if value:
            labels[key] = value
    labels["lang"] = text_field(record, "q_lang", required=False) or "en"
    asks_modality = (content_type or "").lower() == "modality"
    return qa_sample(
        id=sample_id(source, record_id(record, "qid") or f"{split}-{index}"),
        task="vqa",
        question=text_field(record, "question"),
        answer=text_field(record, "answer"),
        images=[images.ref(text_field(record, "img_name"), modality=None if asks_modality else modality)],
        source=source,
        split=split,
        labels=labels,
        meta={key: record[key] for key in ("img_id", "base_type", "triple") if record.get(key) not in (None, "")},
    )
