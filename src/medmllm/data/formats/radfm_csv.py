"""RadFM's training/test CSVs (the ``data_csv`` files of RadMD), one layout per RadFM reader.

Dataset: Wu, Zhang, Zhang, Wang, Xie, "Towards Generalist Foundation Model for Radiology by
Leveraging Web-scale 2D&3D Medical Data" (RadFM; MedMD/RadMD, RadBench), 2023; the CSVs are
released beside its code (Hugging Face: chaoyi-wu/RadFM_data_csv). What each CSV holds is what
the reader in RadFM's ``src/Dataset/dataset/`` takes from it:

=============  ================================================  ===================  ===============================
layout         columns                                           RadFM reader         RadFM's CSVs
=============  ================================================  ===================  ===============================
``vqa``        ``img_root_dir, Figure_path, Question, Answer``   ``VQA_Dataset``      pmcvqa_*, vqarad_*, slakevqa_*
``radiovqa``   ``image_path, question, answer``                  ``RadioVQA_Dataset``  radiology_vqa_* (3D, ``.npy``)
``modality``   ``image_path, answer`` (the modality)             ``Radio_Modality_Dataset``  radio_modality_*
``caption``    ``image_path, label`` (``Findings: ... Impression: ...``)  ``ChestXray_Dataset``  mimic_caption_*
``diagnosis``  ``image_path, label`` (the diagnosis)             ``ChestXray_Dataset``  chestxray_*, pcxr_*, mammo_*, spinexr_*
``binary``     ``image_path, disease, label`` (0/1)              ``Binary_Dataset``   *_balance_train*
``medpix-qa``  ``name, question, answer[, explanation]``         ``MedPix_QA_Dataset``  MedPix_questions_*
=============  ================================================  ===================  ===============================

The layout is found from the header (``layout`` forces one); for ``image_path, label`` a label
that starts with ``Findings:`` or ``Impression:`` is a report (``caption``), any other a
diagnosis. Extra columns (``PMC_ID``, pandas' unnamed index) are ignored; rows are streamed.

RadFM draws its instructions at random from prompt files that are not released; here each task
has one fixed instruction (``prompt`` replaces it). Captions become report samples: P2Med-style
``[Findings] ... \\n [Impression] ...`` (``report_style="p2med"``) or the sections as prose
(``"plain"``), with ``targets`` ``findings``/``impression``.

Image paths in RadFM's CSVs are absolute paths on the authors' machines: ``strip_prefix`` removes
such a prefix and the rest is resolved against ``image_root`` (default: the CSV's folder), which is
also where relative paths start. ``vqa`` rows join ``img_root_dir`` and ``Figure_path``.
MedPix's ``name`` is relative to ``image_root``.

Sample: ``id`` ``radfm/STEM-ROW`` (STEM: the CSV's name), ``split`` from the file name,
``meta.dataset`` the CSV's name without the split. Modality questions do not put the modality on
the image ref (the processor would write the answer into the prompt).

Not read: MedPix single/multi-image cases and the Radiopaedia caption/feature JSON files (their
questions come from unreleased prompt lists and article files).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from medmllm.data.formats._common import (
    ImagePaths,
    RecordError,
    check_report_style,
    csv_header,
    csv_records,
    located,
    normalize_modality,
    qa_sample,
    report_sample,
    sample_id,
    split_from_name,
    split_report,
    text_field,
)
from medmllm.data.schema import ImageRef, Sample
from medmllm.errors import MedMLLMError

LAYOUTS = {
    "vqa": ("img_root_dir", "Figure_path", "Question", "Answer"),
    "radiovqa": ("image_path", "question", "answer"),
    "modality": ("image_path", "answer"),
    "caption": ("image_path", "label"),
    "diagnosis": ("image_path", "label"),
    "binary": ("image_path", "disease", "label"),
    "medpix-qa": ("name", "question", "answer"),
}
# Most specific first: the first layout whose columns the header has is the file's layout.
_DETECT_ORDER = ("vqa", "medpix-qa", "radiovqa", "binary", "caption", "modality")
PROMPTS = {
    "modality": "What is the modality of this scan?",
    "diagnosis": "What diagnosis does this image show?",
    "binary": "Does this image show {disease}?",
    "caption": "Write the radiology report for this image.",
}
_REPORT_START = re.compile(r"(?i)^\s*(findings|impression)\s*:")
_YES = {"1", "1.0", "yes", "true"}
_NO = {"0", "0.0", "no", "false"}


def import_radfm_csv(
    src: Path,
    *,
    layout: str | None = None,
    image_root: Path | None = None,
    strip_prefix: str | None = None,
    relative_to: Path | None = None,
    source: str = "radfm",
    report_style: str = "p2med",
    prompt: str | None = None,
    split: str | None = None,
) -> Iterator[Sample]:
    """``split`` overrides the split read from the file name."""
    check_report_style(report_style)
    src = Path(src)
    header = csv_header(src)
    forced = layout in ("caption", "diagnosis")  # else an image_path/label row's label says which
    if layout is None:
        layout = next((name for name in _DETECT_ORDER if all(c in header for c in LAYOUTS[name])), None)
        if layout is None:
            raise MedMLLMError(f"{src}:1: not a RadFM CSV layout I know (header: {', '.join(header)}); known: {_describe()}")
    elif layout not in LAYOUTS:
        raise MedMLLMError(f"unknown RadFM CSV layout {layout!r}; known: {_describe()}")
    reader = _Rows(
        images=ImagePaths(image_root if image_root is not None else src.parent, relative_to),
        strip_prefix=strip_prefix,
        source=source,
        style=report_style,
        prompt=prompt,
        split=split or split_from_name(src.stem),
        dataset=re.sub(r"(?i)[_-](train|val|valid|validation|test)(?=$|[_-]).*$", "", src.stem),
        forced=forced,
    )
    for row_number, (where, row) in enumerate(csv_records(src, LAYOUTS[layout])):
        with located(where):
            sample = reader.sample(layout, row, f"{src.stem}-{row_number}")
        yield sample


def _describe() -> str:
    return "; ".join(f"{name} ({', '.join(cols)})" for name, cols in LAYOUTS.items())


class _Rows:
    def __init__(
        self,
        *,
        images: ImagePaths,
        strip_prefix: str | None,
        source: str,
        style: str,
        prompt: str | None,
        split: str | None,
        dataset: str,
        forced: bool,
    ):
        self.images, self.strip_prefix, self.source, self.style = images, strip_prefix, source, style
        self.prompt, self.split, self.dataset, self.forced = prompt, split, dataset, forced

    def sample(self, layout: str, row: dict, original_id: str) -> Sample:
        if layout == "caption" and not self.forced and not _REPORT_START.match(row.get("label") or ""):
            layout = "diagnosis"  # an auto-detected image_path/label file: the label says which
        common = {"id": sample_id(self.source, original_id), "source": self.source, "split": self.split, "meta": {"dataset": self.dataset}}
        if layout == "caption":
            return report_sample(
                sections=split_report(text_field(row, "label")),
                images=[self._image(text_field(row, "image_path"))],
                style=self.style,
                plain_prompt=self.prompt or PROMPTS["caption"],
                **common,
            )
        if layout == "vqa":
            path = str(Path(text_field(row, "img_root_dir")) / text_field(row, "Figure_path"))
            return self._qa(common, "vqa", text_field(row, "Question"), text_field(row, "Answer"), path)
        if layout == "radiovqa":
            return self._qa(common, "vqa", text_field(row, "question"), text_field(row, "answer"), text_field(row, "image_path"))
        if layout == "medpix-qa":
            answer = text_field(row, "answer")
            explanation = text_field(row, "explanation", required=False)
            reply = f"{answer}. {explanation}" if explanation else answer  # as MedPix_QA_Dataset joins them
            targets = {"answer": answer, **({"explanation": explanation} if explanation else {})}
            return self._qa(common, "vqa", text_field(row, "question"), reply, text_field(row, "name"), targets=targets)
        if layout == "modality":
            modality = text_field(row, "answer")
            labels = {"modality": normalize_modality(modality)}
            return self._qa(
                common,
                "modality",
                self.prompt or PROMPTS["modality"],
                modality,
                text_field(row, "image_path"),
                targets={"modality": modality},
                labels=labels,
            )
        if layout == "diagnosis":
            diagnosis = text_field(row, "label")
            return self._qa(
                common,
                "diagnosis",
                self.prompt or PROMPTS["diagnosis"],
                diagnosis,
                text_field(row, "image_path"),
                targets={"diagnosis": diagnosis},
            )
        # binary: Binary_Dataset maps label 0/1 to no/yes for "is DISEASE shown?"
        disease = text_field(row, "disease")
        value = text_field(row, "label").lower()
        if value not in _YES | _NO:
            raise RecordError(f"label must be 0 or 1, got {value!r}")
        present = value in _YES
        labels = {"answer_type": "closed", "disease": disease, "present": present}
        question = (self.prompt or PROMPTS["binary"]).replace("{disease}", disease)
        return self._qa(common, "diagnosis", question, "yes" if present else "no", text_field(row, "image_path"), labels=labels)

    def _qa(self, common: dict, task: str, question: str, answer: str, path: str, *, targets=None, labels=None) -> Sample:
        return qa_sample(task=task, question=question, answer=answer, images=[self._image(path)], targets=targets, labels=labels, **common)

    def _image(self, path: str) -> ImageRef:
        if self.strip_prefix and path.startswith(self.strip_prefix):
            path = path[len(self.strip_prefix) :].lstrip("/")
        return self.images.ref(path)
