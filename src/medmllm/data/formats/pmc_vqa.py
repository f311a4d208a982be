"""PMC-VQA as published: ``train.csv`` / ``test.csv`` (and the ``_2``, ``test_clean`` variants) with ``figures/``.

Dataset: Zhang, Wu, Zhang, Wu, Zhang, Xie, Wang, "PMC-VQA: Visual Instruction Tuning for Medical
Visual Question Answering", 2023 (files on the Hugging Face hub as xmcmic/PMC-VQA; images in
``images.zip``, which unpacks to ``figures/``). About 227k multiple-choice questions on 149k
figures from PubMed Central papers.

Layout: CSV with a header::

    Figure_path,Question,Answer,Choice A,Choice B,Choice C,Choice D,Answer_label
    PMC1234_fig1.jpg,What imaging was used?,Computed tomography, A:MRI , B:Computed tomography , C:PET , D:Ultrasound ,B

The ``_2`` files drop ``Answer_label`` and add ``index``, ``Caption`` and ``split``; the answer
letter is then found by matching ``Answer`` against the choices (or ``Answer`` is the letter).
Choices carry an ``A:`` prefix, which is removed. ``src`` is one CSV file or the folder holding
``train.csv`` and ``test.csv``; rows are streamed.

``mode="choice"`` (default): the question with the lettered choices, answered ``"B: text"``;
``mode="open"``: the bare question, answered with the choice's text.

Sample: ``id`` ``pmc-vqa/STEM-ROW`` (``index`` column when present: ``pmc-vqa/STEM-INDEX``),
task ``vqa``; ``targets``: ``answer`` (the text) and ``choice`` (the letter); ``labels.answer_type``
``choice`` or ``open``; ``meta``: ``caption`` when given. Split from the file name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from medmllm.data.formats._common import (
    ImagePaths,
    RecordError,
    csv_records,
    located,
    qa_sample,
    record_id,
    sample_id,
    split_from_name,
    text_field,
)
from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError

MODES = ("choice", "open")
LETTERS = "ABCD"
DEFAULT_FILES = ("train.csv", "test.csv")
_PREFIX = re.compile(r"^\s*([A-D])\s*[:.)]\s*")


def import_pmc_vqa(
    src: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    source: str = "pmc-vqa",
    mode: str = "choice",
    split: str | None = None,
) -> Iterator[Sample]:
    """``split`` overrides the split read from the file name."""
    if mode not in MODES:
        raise MedMLLMError(f"unknown PMC-VQA mode {mode!r}; known: {', '.join(MODES)}")
    src = Path(src)
    files = [src / name for name in DEFAULT_FILES if (src / name).exists()] if src.is_dir() else [src]
    if not files:
        raise MedMLLMError(f"{src}: none of {', '.join(DEFAULT_FILES)} found")
    for path in files:
        images = ImagePaths(image_root if image_root is not None else path.parent / "figures", relative_to)
        file_split = split or split_from_name(path.name)
        columns = ["Figure_path", "Question", "Answer"] + [f"Choice {c}" for c in LETTERS]
        for row_number, (where, row) in enumerate(csv_records(path, columns)):
            with located(where):
                sample = _sample(row, f"{path.stem}-{record_id(row, 'index') or row_number}", images, source, mode, file_split)
            yield sample


def _sample(row: dict, original_id: str, images: ImagePaths, source: str, mode: str, split: str | None) -> Sample:
    choices = {}
    for letter in LETTERS:
        text = text_field(row, f"Choice {letter}", required=False)
        if text is not None:
            choices[letter] = _PREFIX.sub("", text, count=1).strip()
    answer = text_field(row, "Answer")
    letter = (text_field(row, "Answer_label", required=False) or "").upper() or _letter_of(answer, choices)
    if letter not in choices:
        raise RecordError(f"answer {answer!r} is none of the choices {choices}")
    if len(answer) == 1 and answer.upper() == letter:  # the _2 files may give the letter as Answer
        answer = choices[letter]
    question = text_field(row, "Question")
    if mode == "choice":
        question = question + "\n" + "\n".join(f"{k}: {v}" for k, v in choices.items())
        reply = f"{letter}: {answer}"
    else:
        reply = answer
    caption = text_field(row, "Caption", required=False)
    return qa_sample(
        id=sample_id(source, original_id),
        task="vqa",
        question=question,
        answer=reply,
        images=[images.ref(text_field(row, "Figure_path"))],
        source=source,
        split=split,
        targets={"answer": answer, "choice": letter},
        labels={"answer_type": mode},
        meta={"caption": caption} if caption else {},
    )


def _letter_of(answer: str, choices: dict[str, str]) -> str:
    if answer.strip().upper() in choices:
        return answer.strip().upper()
    wanted = _PREFIX.sub("", answer, count=1).strip().lower()
    for letter, text in choices.items():
        if text.lower() == wanted:
            return letter
    return ""
