"""Task templates: small typed records -> `Sample`s in RadFM's RadBench and P2Med's P2Med-MBench formats.

    from medmllm.data.templates import ImageStudy, get_template
    study = ImageStudy(id="cxr-1", images=["cxr-1.png"], modality="X-ray", time="2022-10-29",
                       findings="The lungs are clear.", impression="No acute disease.")
    sample = get_template("p2med/report-xray").make(study, random.Random(0))

Every template has the paper's prompt first (``prompts[0]``, ``paper_prompt=True`` always uses it,
for benchmarks) and paraphrases after it, each marked with where it was quoted from (`Prompt.source`)
or None for ours. ``make(record, rng)`` draws the prompt (and, for judgements, the question) from a
``random.Random``, so one seed gives one dataset; `make_samples` runs a template over many records.

RadBench (RadFM, Wu et al., sections 3.3 and 4.1; ``{images}`` marks where the images go)
------------------------------------------------------------------------------------------
- ``radbench/modality-judgement``: "<image-1> Is this image shot by {modality}?" -> "yes" / "no";
  with probability 0.5 the true modality is asked, else another one of `MODALITIES`.
- ``radbench/modality-open``: "What's the modality of the input scan <image-1>?" -> "CT".
- ``radbench/diagnosis-judgement``: "<image-1> Does the patient have {disease}?" -> "yes" / "no",
  balanced: with probability 0.5 one of the study's diagnoses, else a disease it does not have.
- ``radbench/diagnosis-open``: "Please make diagnosis based on the images <image-1><image-2>." ->
  the diseases as a comma list, as the paper's "Edema, pneumothorax.".
- ``radbench/vqa``: the question, then the images ("What is the location of the contrast blush in
  the image? <image-1>") -> the answer.
- ``radbench/report``: "Please caption this scan with findings. <image-1>" -> the findings.
- ``radbench/rationale``: "Determine the disease that corresponds to the given radiographic images,
  starting with the established radiological features and concluding with the ultimate diagnosis."
  -> "The Radiographic features can be summarized as follows. {features} The diagnosis is {disease}."
  (the order of RadFM's Fig. 11: features first, diagnosis last, as the prompt asks).

RadFM writes no exam header, and for modality recognition the processor's "[Examination modality]"
header would give the answer away, so RadBench samples keep images without modality and time
(the modality stays in ``labels``). A record's ``context`` (patient data: "Patient Data Age: 40
years Gender: Male ...") comes before the prompt, as in RadFM's Fig. 7 and 9.

P2Med-MBench (P2Med-MLLM, section V-A and Table VI)
-------------------------------------------------
The paper writes a line break as ``\\n`` with spaces around it; here it is a real newline with the
same spaces (``" \\n "``), as the processor writes its exam header. The prompts, with ``{images}``
the image parts and ``[...] ...`` the record's sections:

- ``p2med/report-xray`` and ``p2med/report-ct``::

      Current radiological data is as follows: \\n {images} \\n Based on the above information,
      combined with professional radiological knowledge, generate a report in the format: \\n
      [Findings] {Your findings based on the images} \\n [Impression] {Your impression based on the images} \\n

  The processor writes "[Examination time] ... \\n [Examination modality] X-ray \\n [Image] " before
  the first image part (its ImageRef carries the exam's time and modality; the other views or
  series of the exam carry neither, so the header is written once, "[Image] <image>...<image>").
  Output: ``[Findings] {findings} \\n [Impression] {impression}``.
- ``p2med/outpatient-record``: "Current outpatient pediatric information is as follows: \\n
  [Chief complaint] ... \\n [History of present illness] ... \\n [Physical examination] ... \\n Based on
  the above information, combined with professional medical knowledge, make a diagnosis in the
  format: \\n [Preliminary diagnosis] {Your preliminary diagnosis} \\n [Treatment recommendation]
  {Your treatment recommendation} \\n [Treatment plan] {Your treatment plan} \\n" -> the three sections.
- ``p2med/first-disease-course``: "Current inpatient pediatric information is as follows: \\n
  [History of present illness] ... \\n [Physical examination] ... \\n [Auxiliary examination] ... \\n
  [Clinical history features] ... \\n Based on ... make a diagnosis in the format: \\n [Diagnostic
  basis] {Your diagnostic basis} \\n [Admission diagnosis] {Your admission diagnosis} \\n [Diagnostic
  and treatment plan] {Your diagnostic and treatment plan} \\n".
- ``p2med/attending-ward-round`` and ``p2med/chief-ward-round``: "Current inpatient pediatric
  information is as follows: \\n [Clinical history features] ... \\n [Additional clinical history and
  signs] ... \\n Based on ... make a diagnosis in the format: \\n [Diagnostic basis] {Your diagnostic
  basis} \\n [Current diagnosis] {Your current diagnosis} \\n [Diagnostic and treatment plan] {Your
  diagnostic and treatment plan} \\n" (the paper gives the two the same prompt).

Outputs are the sections joined by " \\n " (`format_sections`); `parse_sections` / `parse_report`
read them back (any spacing, missing sections), for evaluation. A record input section that is
missing is left out of the prompt. ``labels["key_target"]`` names the section the paper scores for
accuracy and comprehensiveness (impression, preliminary / admission / current diagnosis).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medmllm.data.schema import ImagePart, ImageRef, Sample, Split, TextPart, Turn, describe_validation_error, text_turn
from medmllm.errors import MedMLLMError

# RadFM's modality set (section 3.3), in P2Med's spelling of X-ray.
MODALITIES = ("CT", "MRI", "X-ray", "Ultrasound", "PET", "Angiography")
_MODALITY_ALIASES = {
    "ct": "CT", "mr": "MRI", "mri": "MRI", "x-ray": "X-ray", "xray": "X-ray", "x ray": "X-ray", "cr": "X-ray",
    "dx": "X-ray", "dr": "X-ray", "xr": "X-ray", "radiograph": "X-ray", "us": "Ultrasound", "ultrasound": "Ultrasound",
    "pet": "PET", "pt": "PET", "angiography": "Angiography", "xa": "Angiography",
}
# Negatives for radbench/diagnosis-judgement when a record lists no known-absent diseases: the
# CheXpert / MIMIC-CXR observations. A dataset of other diseases should pass its own pool
# (``dataclasses.replace(get_template("radbench/diagnosis-judgement"), disease_pool=...)``).
DEFAULT_DISEASES = (
    "atelectasis", "cardiomegaly", "consolidation", "edema", "enlarged cardiomediastinum", "fracture",
    "lung lesion", "lung opacity", "pleural effusion", "pleural other", "pneumonia", "pneumothorax",
)
YES, NO = "yes", "no"


def canonical_modality(name: str | None) -> str | None:
    """``MR`` -> ``MRI``, ``CR`` / ``DX`` -> ``X-ray``, ``US`` -> ``Ultrasound``...; others unchanged."""
    if name is None or not name.strip():
        return None
    return _MODALITY_ALIASES.get(name.strip().lower(), name.strip())


# --------------------------------------------------------------------------------------- sections


def section_key(name: str) -> str:
    """The targets key of a section: ``Diagnostic and treatment plan`` -> ``diagnostic_and_treatment_plan``."""
    return re.sub(r"[\s_]+", "_", name.strip()).lower()


def format_sections(sections: Iterable[tuple[str, str]]) -> str:
    """``[Name] value`` joined by P2Med's " \\n ": ``[Findings] ... \\n [Impression] ...``."""
    return " \n ".join(f"[{name}] {value.strip()}" for name, value in sections)


def parse_sections(text: str, names: Iterable[str]) -> dict[str, str]:
    """The sections ``names`` of ``text`` by targets key (`section_key`); "" for a missing one.

    A section starts at ``[Name]`` (any case and spacing inside the brackets, an optional colon
    after) or at ``Name:`` at the start of a line, and runs to the next of ``names``' headers.
    Text before the first header is ignored; a repeated section keeps its first occurrence.
    """
    names = list(names)
    words = {section_key(n): r"\s+".join(re.escape(w) for w in section_key(n).split("_")) for n in names}
    alternatives = "|".join(f"(?P<{key}>{pattern})" for key, pattern in words.items())
    header = re.compile(rf"\[\s*(?:{alternatives})\s*\]\s*:?|^[ \t]*(?:{alternatives.replace('?P<', '?P<c_')})[ \t]*:", re.IGNORECASE | re.MULTILINE)
    found: list[tuple[str, int, int]] = []  # (key, header start, content start)
    for match in header.finditer(text):
        key = next(k.removeprefix("c_") for k, v in match.groupdict().items() if v is not None)
        found.append((key, match.start(), match.end()))
    out = dict.fromkeys(words, "")
    seen = set()
    for i, (key, _, start) in enumerate(found):
        if key in seen:
            continue
        seen.add(key)
        end = found[i + 1][1] if i + 1 < len(found) else len(text)
        out[key] = text[start:end].strip()
    return out


def parse_report(text: str) -> dict[str, str]:
    """``{"findings", "impression"}`` of a P2Med report ("" for a missing section)."""
    return parse_sections(text, (FINDINGS, IMPRESSION))


def format_diagnosis_list(diseases: Iterable[str]) -> str:
    """RadFM's open diagnosis answer: ``["edema", "pneumothorax"]`` -> ``"Edema, pneumothorax."``."""
    text = ", ".join(d.strip() for d in diseases if d.strip())
    return (text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def parse_diagnosis_list(text: str) -> list[str]:
    """The diseases of a comma (or semicolon, or line) separated answer, lower-cased, in order."""
    items = (item.strip(" \t.").lower() for item in re.split(r"[,;\n]", text))
    return [item for item in items if item]


FINDINGS, IMPRESSION = "Findings", "Impression"
CHIEF_COMPLAINT, PRESENT_ILLNESS, PHYSICAL_EXAMINATION = "Chief complaint", "History of present illness", "Physical examination"
AUXILIARY_EXAMINATION, HISTORY_FEATURES = "Auxiliary examination", "Clinical history features"
ADDITIONAL_HISTORY = "Additional clinical history and signs"
PRELIMINARY_DIAGNOSIS, TREATMENT_RECOMMENDATION, TREATMENT_PLAN = "Preliminary diagnosis", "Treatment recommendation", "Treatment plan"
DIAGNOSTIC_BASIS, ADMISSION_DIAGNOSIS, CURRENT_DIAGNOSIS = "Diagnostic basis", "Admission diagnosis", "Current diagnosis"
DIAGNOSTIC_PLAN = "Diagnostic and treatment plan"


# ---------------------------------------------------------------------------------------- records


class _Record(BaseModel):
    """What every record has: its id and the sample fields it passes on."""

    model_config = ConfigDict(extra="forbid")

    id: str
    patient_id: str | None = None
    visit_id: str | None = None
    source: str | None = None
    split: Split | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class _ImageRecord(_Record):
    images: list[ImageRef] = Field(min_length=1)
    modality: str | None = None  # default: the first image's
    context: str | None = None  # patient data written before the prompt (RadFM)

    @field_validator("images", mode="before")
    @classmethod
    def _paths_to_refs(cls, value: Any) -> Any:
        return [{"path": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @property
    def study_modality(self) -> str | None:
        """The canonical modality of the record (its own, else its first image's that has one)."""
        return canonical_modality(self.modality or next((ref.modality for ref in self.images if ref.modality), None))


class ImageStudy(_ImageRecord):
    """One imaging exam: its views (X-ray) or series (CT), and what is known about it."""

    time: str | None = None  # exam time (ISO 8601); default: the first image's
    exam: str | None = None  # exam id shared by the images; default: the record id
    findings: str | None = None
    impression: str | None = None
    diagnoses: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)  # diseases known to be absent: negatives for judgements
    rationale: str | None = None  # typical radiological features of the diagnosis (radbench/rationale)

    @property
    def exam_time(self) -> str | None:
        return self.time or next((ref.time for ref in self.images if ref.time), None)


class VQARecord(_ImageRecord):
    question: str
    answer: str | None = None
    answer_type: str | None = None  # e.g. "closed" / "open"


class OutpatientRecord(_Record):
    """An outpatient visit (P2Med-MBench task 3): inputs, then the record's output sections."""

    chief_complaint: str | None = None
    history_of_present_illness: str | None = None
    physical_examination: str | None = None
    preliminary_diagnosis: str | None = None
    treatment_recommendation: str | None = None
    treatment_plan: str | None = None
    diagnoses: list[str] = Field(default_factory=list)


class FirstDiseaseCourse(BaseModel):
    """The resident's first disease course record, within 24 h of admission (task 4 outputs)."""

    model_config = ConfigDict(extra="forbid")
    diagnostic_basis: str | None = None
    admission_diagnosis: str | None = None
    diagnostic_and_treatment_plan: str | None = None


class WardRound(BaseModel):
    """An attending (72 h) or chief (one week) physician's first ward round (tasks 5 and 6)."""

    model_config = ConfigDict(extra="forbid")
    additional_clinical_history_and_signs: str | None = None  # input
    diagnostic_basis: str | None = None
    current_diagnosis: str | None = None
    diagnostic_and_treatment_plan: str | None = None


class InpatientRecord(_Record):
    """A hospital stay: the admission inputs and the three records written about it."""

    history_of_present_illness: str | None = None
    physical_examination: str | None = None
    auxiliary_examination: str | None = None
    clinical_history_features: str | None = None
    first_disease_course: FirstDiseaseCourse | None = None
    attending_ward_round: WardRound | None = None
    chief_ward_round: WardRound | None = None
    diagnoses: list[str] = Field(default_factory=list)


# -------------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Prompt:
    """A prompt with ``{images}`` (where the image parts go) and the template's fields
    (``{modality}``, ``{disease}``, ``{question}``, ``{record}``). Other braces are literal text,
    such as P2Med's "{Your findings based on the images}"."""

    text: str
    source: str | None = None  # where it is quoted from ("RadFM sec. 4.1"); None: written for medmllm

    @property
    def from_paper(self) -> bool:
        return self.source is not None


@dataclass
class _Built:
    """What a template makes of a record, before the prompt is rendered."""

    fields: dict[str, str]  # values of the prompt's placeholders
    response: str | None  # the assistant turn (None: not known)
    targets: dict[str, str]
    labels: dict[str, Any]
    images: list[ImageRef] = field(default_factory=list)
    context: str | None = None


_PLACEHOLDER = re.compile(r"\{(images|modality|disease|question|record)\}")


@dataclass(frozen=True)
class TaskTemplate:
    """A task: its prompts (the paper's first) and how a record becomes a `Sample`.

    Subclasses say what a record gives (`_build`); rendering, prompt choice and the sample's
    common fields are here.
    """

    name: str
    family: str  # "radbench" / "p2med"
    description: str
    prompts: tuple[Prompt, ...]
    record_type: type[_Record] = ImageStudy
    fields: ClassVar[tuple[str, ...]] = ()  # the placeholders every prompt must have, besides {images}

    def __post_init__(self):
        if len(self.prompts) < 2 or not self.prompts[0].from_paper:
            raise ValueError(f"{self.name}: the paper's prompt comes first, then paraphrases")
        images = 1 if issubclass(self.record_type, _ImageRecord) else 0
        for prompt in self.prompts:
            found = _PLACEHOLDER.findall(prompt.text)
            if found.count("images") != images or sorted(set(found) - {"images"}) != sorted(self.fields):
                raise ValueError(f"{self.name}: prompt {prompt.text!r} must have {images} {{images}} and the fields {self.fields}")

    def make(
        self,
        record: _Record | dict,
        rng: random.Random | int | None = None,
        *,
        paper_prompt: bool = False,
        answer: bool = True,
        id: str | None = None,
    ) -> Sample:
        """One sample of ``record``.

        Args:
            record: a `record_type` or a dict of its fields.
            rng: draws the prompt (and a judgement's question); an int seeds one; None seeds one from
                the template and record ids, so the same record always gives the same sample.
            paper_prompt: always the paper's prompt (benchmarks); the other draws still use ``rng``.
            answer: write the assistant turn. Without it the sample is a prompt with its targets,
                for evaluation or serving (a record without the outputs then gives split "test").
            id: the sample id; default ``"{record.id}/{template name}"``.
        """
        record = self._coerce(record)
        if not isinstance(rng, random.Random):
            rng = random.Random(f"{self.name}|{record.id}" if rng is None else rng)
        index = 0 if paper_prompt else rng.randrange(len(self.prompts))
        built = self._build(record, rng, answer)
        user = _merge_text(([TextPart(text=built.context.strip() + " ")] if built.context else []) + _render(self.prompts[index].text, built))
        turns = [Turn(role="user", content=user)]
        if answer:
            turns.append(text_turn("assistant", built.response))
        split = record.split
        if not answer and not built.targets:  # a bare prompt (serving): only valid as a test sample
            split = split or "test"
        return Sample(
            id=id or f"{record.id}/{self.name}",
            task=self.name,
            turns=turns,
            images=built.images,
            patient_id=record.patient_id,
            visit_id=record.visit_id,
            targets=built.targets,
            labels=built.labels,
            source=record.source,
            split=split,
            meta={**record.meta, "prompt_index": index},
        )

    def parse(self, text: str) -> dict[str, str]:
        """A model's output as targets (for evaluation); a short answer by default."""
        return {"answer": text.strip()}

    # -- for subclasses ---------------------------------------------------------------------

    def _coerce(self, record: _Record | dict) -> _Record:
        if isinstance(record, self.record_type):
            return record
        if isinstance(record, BaseModel):
            raise MedMLLMError(f"{self.name} takes a {self.record_type.__name__}, got a {type(record).__name__}")
        try:
            return self.record_type.model_validate(record)
        except ValidationError as e:
            raise MedMLLMError(f"{self.name}: {describe_validation_error(e)}") from None

    def _build(self, record: _Record, rng: random.Random, answer: bool) -> _Built:
        raise NotImplementedError

    def _need(self, record: _Record, value: Any, what: str) -> Any:
        if value is None or value == "" or value == []:
            raise MedMLLMError(f"{self.name}: record {record.id!r} has no {what}")
        return value


def _render(text: str, built: _Built) -> list[TextPart | ImagePart]:
    """A prompt's text and image parts: fields substituted, ``{images}`` -> every image, in order."""
    parts: list[TextPart | ImagePart] = []
    for i, piece in enumerate(_PLACEHOLDER.split(text)):  # split() keeps the names: text, name, text, ...
        if i % 2 == 0:
            parts.append(TextPart(text=piece))
        elif piece == "images":
            parts.extend(ImagePart(image=k) for k in range(len(built.images)))
        else:
            parts.append(TextPart(text=built.fields[piece]))
    return parts


def _merge_text(parts: list[TextPart | ImagePart]) -> list[TextPart | ImagePart]:
    """Adjacent text parts joined, empty ones dropped."""
    out: list[TextPart | ImagePart] = []
    for part in parts:
        if isinstance(part, TextPart):
            if not part.text:
                continue
            if out and isinstance(out[-1], TextPart):
                out[-1] = TextPart(text=out[-1].text + part.text)
                continue
        out.append(part)
    return out


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _study_labels(record: _ImageRecord) -> dict[str, Any]:
    labels: dict[str, Any] = {}
    if record.study_modality:
        labels["modality"] = record.study_modality
    if getattr(record, "diagnoses", None):
        labels["diseases"] = list(record.diagnoses)
    return labels


# ------------------------------------------------------------------------------------ RadBench


@dataclass(frozen=True)
class _RadBench(TaskTemplate):
    """RadFM's format: no exam header (images without modality and time), patient data first."""

    def _build(self, record: _ImageRecord, rng: random.Random, answer: bool) -> _Built:
        built = self._answer(record, rng, answer)
        built.images = [ref.model_copy(update={"modality": None, "time": None}) for ref in record.images]
        built.context = record.context
        return built

    def _answer(self, record, rng: random.Random, answer: bool) -> _Built:
        raise NotImplementedError


@dataclass(frozen=True)
class ModalityJudgement(_RadBench):
    """"Is this image shot by {modality}?": the true modality or another one, each with probability 0.5."""

    fields: ClassVar[tuple[str, ...]] = ("modality",)
    modalities: tuple[str, ...] = MODALITIES

    def _answer(self, record: ImageStudy, rng, answer) -> _Built:
        truth = self._need(record, record.study_modality, "modality")
        others = [m for m in self.modalities if m != truth]
        asked = truth if rng.random() < 0.5 else rng.choice(others)
        reply = YES if asked == truth else NO
        return _Built({"modality": asked}, reply, {"answer": reply}, {**_study_labels(record), "asked": asked})


@dataclass(frozen=True)
class ModalityOpen(_RadBench):
    def _answer(self, record: ImageStudy, rng, answer) -> _Built:
        truth = self._need(record, record.study_modality, "modality")
        return _Built({}, truth, {"answer": truth}, _study_labels(record))


@dataclass(frozen=True)
class DiagnosisJudgement(_RadBench):
    """"Does the patient have {disease}?": with probability 0.5 one of the record's diagnoses, else a
    disease from ``record.absent`` (or, when it is empty, `disease_pool`) that it does not have.

    A record with no diagnoses is always asked a "no" question, one with no possible negative a
    "yes" one: the 50% holds over records that allow both.
    """

    fields: ClassVar[tuple[str, ...]] = ("disease",)
    disease_pool: tuple[str, ...] = DEFAULT_DISEASES

    def _answer(self, record: ImageStudy, rng, answer) -> _Built:
        present = {d.strip().lower() for d in record.diagnoses}
        negatives = [d for d in (record.absent or self.disease_pool) if d.strip().lower() not in present]
        if not record.diagnoses and not negatives:
            raise MedMLLMError(f"{self.name}: record {record.id!r} has neither diagnoses nor a disease it does not have")
        positive = rng.random() < 0.5
        if (positive and record.diagnoses) or not negatives:
            asked, reply = rng.choice(record.diagnoses), YES
        else:
            asked, reply = rng.choice(negatives), NO
        return _Built({"disease": asked}, reply, {"answer": reply}, {**_study_labels(record), "asked": asked})


@dataclass(frozen=True)
class DiagnosisOpen(_RadBench):
    def _answer(self, record: ImageStudy, rng, answer) -> _Built:
        reply = format_diagnosis_list(self._need(record, record.diagnoses, "diagnoses"))
        return _Built({}, reply, {"answer": reply}, _study_labels(record))

    def parse(self, text: str) -> dict[str, str]:
        return {"answer": format_diagnosis_list(parse_diagnosis_list(text))}


@dataclass(frozen=True)
class VQA(_RadBench):
    record_type: type[_Record] = VQARecord
    fields: ClassVar[tuple[str, ...]] = ("question",)

    def _answer(self, record: VQARecord, rng, answer) -> _Built:
        reply = self._need(record, record.answer, "answer") if answer else record.answer
        labels = _study_labels(record) | ({"answer_type": record.answer_type} if record.answer_type else {})
        return _Built({"question": record.question.strip()}, reply, {"answer": reply} if reply else {}, labels)


@dataclass(frozen=True)
class RadReport(_RadBench):
    def _answer(self, record: ImageStudy, rng, answer) -> _Built:
        findings = self._need(record, record.findings, "findings") if answer else record.findings
        return _Built({}, findings, {"findings": findings} if findings else {}, _study_labels(record))

    def parse(self, text: str) -> dict[str, str]:
        return {"findings": text.strip()}


RATIONALE_LEAD = "The Radiographic features can be summarized as follows."
RATIONALE_DIAGNOSIS = "The diagnosis is"


@dataclass(frozen=True)
class Rationale(_RadBench):
    """Features first, then the diagnosis: "The Radiographic features can be summarized as follows.
    {rationale} The diagnosis is {diagnoses, comma-joined}." (RadFM Fig. 11)."""

    def _answer(self, record: ImageStudy, rng, answer) -> _Built:
        features = _sentence(self._need(record, record.rationale, "rationale (radiological features)"))
        diagnosis = ", ".join(self._need(record, record.diagnoses, "diagnoses"))
        reply = f"{RATIONALE_LEAD} {features} {RATIONALE_DIAGNOSIS} {_sentence(diagnosis)}"
        return _Built({}, reply, {"rationale": features, "diagnosis": diagnosis}, _study_labels(record))

    def parse(self, text: str) -> dict[str, str]:
        body = text.strip().removeprefix(RATIONALE_LEAD).strip()
        features, _, diagnosis = body.rpartition(RATIONALE_DIAGNOSIS)
        if not _:  # no "The diagnosis is": all of it is the rationale
            return {"rationale": body, "diagnosis": ""}
        return {"rationale": features.strip(), "diagnosis": diagnosis.strip().removesuffix(".").strip()}


# -------------------------------------------------------------------------------- P2Med-MBench


def _p2med_prompts(openings: list[tuple[str, str]], body: str, outputs: tuple[str, ...], hints: dict[str, str], source: str) -> tuple[Prompt, ...]:
    """Full P2Med prompts: "{intro} \\n {body} \\n {instruction} \\n [Out] {Your out} \\n ..." for each
    (intro, instruction); the first pair is the paper's. The output format never varies, so the
    model always answers in the sections `parse_sections` reads."""
    form = "".join(f"[{name}] {{Your {hints.get(name, name.lower())}}} \n " for name in outputs)
    return tuple(
        Prompt(f"{intro} \n {body} \n {instruction} \n {form}".rstrip(" "), source if i == 0 else None)
        for i, (intro, instruction) in enumerate(openings)
    )


@dataclass(frozen=True)
class P2MedReport(TaskTemplate):
    """Radiology report of one exam; its images carry the exam's time and modality (first image)."""

    modality: str = "X-ray"

    def _build(self, record: ImageStudy, rng, answer) -> _Built:
        known = record.study_modality
        if known is not None and known != self.modality:
            raise MedMLLMError(f"{self.name}: record {record.id!r} is a {known} study, not {self.modality}")
        exam = record.exam or next((ref.exam for ref in record.images if ref.exam), None) or record.id
        # One header per exam, as the paper's "[Image] <image>...<image>": time and modality on the
        # first view/series only (the processor writes a header for every image part that has them).
        images = [
            ref.model_copy(update={"exam": ref.exam or exam, "modality": self.modality if k == 0 else None,
                                   "time": record.exam_time if k == 0 else None})
            for k, ref in enumerate(record.images)
        ]
        if answer:
            self._need(record, record.findings, "findings")
            self._need(record, record.impression, "impression")
        targets = {key: value for key, value in (("findings", record.findings), ("impression", record.impression)) if value}
        response = format_sections([(FINDINGS, record.findings), (IMPRESSION, record.impression)]) if answer else None
        labels = {**_study_labels(record), "modality": self.modality, "key_target": "impression"}
        return _Built({}, response, targets, labels, images)

    def parse(self, text: str) -> dict[str, str]:
        return parse_report(text)


@dataclass(frozen=True)
class P2MedRecord(TaskTemplate):
    """A clinical record from text: input sections in, output sections out (Table VI).

    Each section's value is the attribute `section_key(name)` of ``record.<part>`` when ``part`` is
    set and has it, else of the record.
    """

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    part: str | None = None  # the record attribute holding this task's document
    key_target: str = ""
    fields: ClassVar[tuple[str, ...]] = ("record",)

    def _value(self, record: _Record, name: str) -> str | None:
        key = section_key(name)
        document = getattr(record, self.part) if self.part else None
        value = getattr(document, key, None) if document is not None else None
        value = value if value is not None else getattr(record, key, None)
        return value.strip() if isinstance(value, str) and value.strip() else None

    def _build(self, record: _Record, rng, answer) -> _Built:
        if self.part and getattr(record, self.part) is None and answer:
            raise MedMLLMError(f"{self.name}: record {record.id!r} has no {self.part}")
        given = [(name, self._value(record, name)) for name in self.inputs]
        given = [(name, value) for name, value in given if value is not None]
        if not given:
            raise MedMLLMError(f"{self.name}: record {record.id!r} has none of the inputs {', '.join(self.inputs)}")
        outputs = [(name, self._value(record, name)) for name in self.outputs]
        if answer:
            for name, value in outputs:
                self._need(record, value, name.lower())
        targets = {section_key(name): value for name, value in outputs if value is not None}
        labels = {"key_target": self.key_target} | ({"diseases": list(record.diagnoses)} if getattr(record, "diagnoses", None) else {})
        return _Built({"record": format_sections(given)}, format_sections(outputs) if answer else None, targets, labels)

    def parse(self, text: str) -> dict[str, str]:
        return parse_sections(text, self.outputs)


# ------------------------------------------------------------------------------------ registry

_RADFM = "RadFM"
_REPORT_OPENINGS = [  # (intro, instruction); the first is the paper's
    ("Current radiological data is as follows:", "Based on the above information, combined with professional radiological knowledge, generate a report in the format:"),
    ("The current radiological examination is as follows:", "Using the information above and your radiological expertise, write a report in the format:"),
    ("Here are the patient's current imaging data:", "Based on these images and professional radiological knowledge, produce a radiology report in the format:"),
    ("Radiological data of the current examination:", "Write the radiology report of the examination above in the format:"),
    ("The following imaging examination was performed:", "As a radiologist, describe the findings and give your impression in the format:"),
]
_INSTRUCTIONS = [
    "Based on the above information, combined with professional medical knowledge, make a diagnosis in the format:",
    "Using the information above and your medical expertise, make a diagnosis in the format:",
    "Based on this information and professional medical knowledge, give your assessment in the format:",
    "Considering the information above, write the record in the format:",
    "As the physician in charge, analyse the information above and answer in the format:",
]
_OUTPATIENT_INTROS = [
    "Current outpatient pediatric information is as follows:",
    "The pediatric outpatient's information is as follows:",
    "Here is the information from a pediatric outpatient visit:",
    "Information of the current pediatric outpatient:",
    "A child attends the outpatient clinic with the following information:",
]
_INPATIENT_INTROS = [
    "Current inpatient pediatric information is as follows:",
    "The pediatric inpatient's information is as follows:",
    "Here is the information of a hospitalized child:",
    "Information of the current pediatric inpatient:",
    "A child has been admitted to hospital with the following information:",
]
_REPORT_HINTS = {FINDINGS: "findings based on the images", IMPRESSION: "impression based on the images"}
_P2MED = "P2Med-MLLM sec. V-A"
_REPORT_PROMPTS = _p2med_prompts(_REPORT_OPENINGS, "{images}", (FINDINGS, IMPRESSION), _REPORT_HINTS, _P2MED)
_WARD_ROUND = dict(record_type=InpatientRecord, inputs=(HISTORY_FEATURES, ADDITIONAL_HISTORY), outputs=(DIAGNOSTIC_BASIS, CURRENT_DIAGNOSIS, DIAGNOSTIC_PLAN), key_target="current_diagnosis")
_WARD_ROUND_PROMPTS = _p2med_prompts(list(zip(_INPATIENT_INTROS, _INSTRUCTIONS)), "{record}", _WARD_ROUND["outputs"], {}, _P2MED)


def _radbench(cls, name: str, description: str, *prompts: tuple[str, str | None]) -> TaskTemplate:
    return cls(f"radbench/{name}", "radbench", description, tuple(Prompt(text, source) for text, source in prompts))


_ALL: list[TaskTemplate] = [
    _radbench(ModalityJudgement, "modality-judgement", "Is the scan of a given modality? -> yes / no (balanced)",
              ("{images} Is this image shot by {modality}?", f"{_RADFM} sec. 4.1"),
              ("Is this scan acquired with {modality}? {images}", None),
              ("{images} Was this image taken with {modality}?", None),
              ("Is the imaging modality of this scan {modality}? {images}", None),
              ("{images} Is this a {modality} image?", None)),
    _radbench(ModalityOpen, "modality-open", "Which modality? -> CT / MRI / X-ray / Ultrasound / PET / Angiography",
              ("What's the modality of the input scan {images}?", f"{_RADFM} sec. 4.1"),
              ("What is the modality of the given image? {images}", f"{_RADFM} sec. 3.3"),
              ("What type of imaging modality is used to acquire the above image? {images}", f"{_RADFM} Fig. 7"),
              ("What modality is the given image? {images}", f"{_RADFM} sec. 7"),
              ("{images} Which imaging modality was used for this scan?", None)),
    _radbench(DiagnosisJudgement, "diagnosis-judgement", "Does the patient have a given disease? -> yes / no (balanced)",
              ("{images} Does the patient have {disease}?", f"{_RADFM} sec. 4.1"),
              ("Is {disease} shown in this image? {images}", f"{_RADFM} sec. 3.3 (question mark ours)"),
              ("Does the image exhibit any {disease}? {images}", f"{_RADFM} Fig. 11"),
              ("{images} Is there evidence of {disease} in this scan?", None),
              ("Can {disease} be diagnosed from this image? {images}", None)),
    _radbench(DiagnosisOpen, "diagnosis-open", "Which diseases? -> a comma list ('Edema, pneumothorax.')",
              ("Please make diagnosis based on the images {images}.", f"{_RADFM} sec. 4.1"),
              ("{images} What diseases can be diagnosed from this scan?", None),
              ("What is the diagnosis for the scan {images}?", None),
              ("Based on the images {images}, list the diseases the patient has.", None),
              ("{images} Please give your diagnosis.", None)),
    _radbench(VQA, "vqa", "A question about the images -> its answer",
              ("{question} {images}", f"{_RADFM} Fig. 7"),
              ("{images}{question}", f"{_RADFM} Fig. 9"),
              ("{images} {question}", None),
              ("{question} Answer based on the scan {images}.", None),
              ("Look at the scan {images} and answer: {question}", None)),
    _radbench(RadReport, "report", "Report generation -> the findings",
              ("Please caption this scan with findings. {images}", f"{_RADFM} sec. 3.3"),
              ("What can you find from the scans {images}?", f"{_RADFM} sec. 4.1"),
              ("Please describe the scans {images}.", f"{_RADFM} sec. 4.1"),
              ("Describe the findings of the medical image you see. {images}", f"{_RADFM} Fig. 9"),
              ("Please generate a radiology report for this scan {images}", f"{_RADFM} Fig. 9"),
              ("{images} Write the findings of this scan.", None)),
    _radbench(Rationale, "rationale", "Radiological features, then the diagnosis",
              ("Determine the disease that corresponds to the given radiographic images, starting with the established "
               "radiological features and concluding with the ultimate diagnosis. {images}", f"{_RADFM} sec. 3.3"),
              ("What disease can be diagnosed from these radiological images and what specific features are typically "
               "observed on the images? {images}", f"{_RADFM} sec. 4.1"),
              ("Based on your extensive knowledge of radiology, diagnosticate the given image, starting with the established "
               "radiological features and concluding with the ultimate diagnosis. {images}", f"{_RADFM} Fig. 7"),
              ("{images} Describe the typical radiological features shown in these images, then give the diagnosis.", None),
              ("Reason from the radiological features of the scans {images} to the final diagnosis.", None)),
    P2MedReport("p2med/report-xray", "p2med", "X-ray report: [Findings] + [Impression]", _REPORT_PROMPTS, modality="X-ray"),
    P2MedReport("p2med/report-ct", "p2med", "CT report (one non-contrast or two series): [Findings] + [Impression]", _REPORT_PROMPTS, modality="CT"),
    P2MedRecord("p2med/outpatient-record", "p2med", "Outpatient record: preliminary diagnosis, treatment recommendation and plan",
                _p2med_prompts(list(zip(_OUTPATIENT_INTROS, _INSTRUCTIONS)), "{record}", (PRELIMINARY_DIAGNOSIS, TREATMENT_RECOMMENDATION, TREATMENT_PLAN), {}, _P2MED),
                record_type=OutpatientRecord,
                inputs=(CHIEF_COMPLAINT, PRESENT_ILLNESS, PHYSICAL_EXAMINATION),
                outputs=(PRELIMINARY_DIAGNOSIS, TREATMENT_RECOMMENDATION, TREATMENT_PLAN), key_target="preliminary_diagnosis"),
    P2MedRecord("p2med/first-disease-course", "p2med", "Resident's first disease course record (24 h)",
                _p2med_prompts(list(zip(_INPATIENT_INTROS, _INSTRUCTIONS)), "{record}", (DIAGNOSTIC_BASIS, ADMISSION_DIAGNOSIS, DIAGNOSTIC_PLAN), {}, _P2MED),
                record_type=InpatientRecord,
                inputs=(PRESENT_ILLNESS, PHYSICAL_EXAMINATION, AUXILIARY_EXAMINATION, HISTORY_FEATURES),
                outputs=(DIAGNOSTIC_BASIS, ADMISSION_DIAGNOSIS, DIAGNOSTIC_PLAN), part="first_disease_course", key_target="admission_diagnosis"),
    P2MedRecord("p2med/attending-ward-round", "p2med", "Attending physician's first ward round record (72 h)", _WARD_ROUND_PROMPTS,
                part="attending_ward_round", **_WARD_ROUND),
    P2MedRecord("p2med/chief-ward-round", "p2med", "Chief physician's first ward round record (one week)", _WARD_ROUND_PROMPTS,
                part="chief_ward_round", **_WARD_ROUND),
]
TEMPLATES: dict[str, TaskTemplate] = {t.name: t for t in _ALL}


def list_templates(family: str | None = None) -> list[str]:
    """Template names (optionally of one family: "radbench" / "p2med"), in registry order."""
    return [name for name, t in TEMPLATES.items() if family is None or t.family == family]


def get_template(name: str) -> TaskTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise MedMLLMError(f"unknown task template {name!r}; known templates: {', '.join(TEMPLATES)}") from None


def make_samples(
    template: str | TaskTemplate,
    records: Iterable[_Record | dict],
    *,
    seed: int = 0,
    paper_prompt: bool = False,
    answer: bool = True,
    on_error: Callable[[Exception, Any], None] | None = None,
) -> Iterator[Sample]:
    """A template over many records with one ``random.Random(seed)``: the same seed and records
    give the same samples. ``on_error(error, record)``: called for a record the template refuses
    (`MedMLLMError`) instead of raising."""
    template = get_template(template) if isinstance(template, str) else template
    rng = random.Random(seed)
    for record in records:
        try:
            yield template.make(record, rng, paper_prompt=paper_prompt, answer=answer)
        except MedMLLMError as e:
            if on_error is None:
                raise
            on_error(e, record)


__all__ = [
    "DEFAULT_DISEASES", "MODALITIES", "TEMPLATES", "FirstDiseaseCourse", "ImageStudy", "InpatientRecord", "OutpatientRecord", "Prompt",
    "TaskTemplate", "VQARecord", "WardRound", "canonical_modality", "format_diagnosis_list", "format_sections", "get_template",
    "list_templates", "make_samples", "parse_diagnosis_list", "parse_report", "parse_sections", "section_key",
]
