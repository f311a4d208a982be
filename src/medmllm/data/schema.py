"""`Sample`: one training or evaluation example, one JSON line. The format is in docs/data-format.md.

A sample is a conversation (``turns``) whose content parts are text or references to
``images`` by index, plus what is known about it: task, patient and visit (pseudonymous ids),
targets (the expected outputs by field), labels (diseases, modality, normal), source and split.
Parsing validates everything and names the first problem; ``to_json`` writes the canonical line,
so ``Sample.from_json(s.to_json()) == s`` and ``from_json(line).to_json() == line`` for a
canonical line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medmllm.config_files import describe_validation_error
from medmllm.errors import MedMLLMError

Role = Literal["system", "user", "assistant"]
Split = Literal["train", "val", "test"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=False)


class ImageRef(_Strict):
    """An image or series on disk. ``path`` is relative to the JSONL file's folder, or absolute."""

    path: str
    modality: str | None = None  # CT, MR, X-ray, US, PET, ...
    view: str | None = None  # AP, PA, LAT, axial ...
    time: str | None = None  # exam date or date-time, ISO 8601 (YYYY-MM-DD[THH:MM[:SS]])
    series: str | None = None  # series selector for a DICOM folder (see medmllm.scans)
    exam: str | None = None  # exam id: several images (views, series) of one exam share it

    @field_validator("path")
    @classmethod
    def _path_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("image path is empty")
        return v


class TextPart(_Strict):
    type: Literal["text"] = "text"
    text: str


class ImagePart(_Strict):
    type: Literal["image"] = "image"
    image: int = Field(ge=0, description="index into Sample.images")


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Turn(_Strict):
    role: Role
    content: list[Part]
    weight: float | None = Field(default=None, ge=0, description="loss weight of an assistant turn (default 1)")

    @property
    def text(self) -> str:
        """The turn's text parts joined (images left out)."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class Sample(_Strict):
    id: str
    task: str
    turns: list[Turn] = Field(min_length=1)
    images: list[ImageRef] = Field(default_factory=list)
    patient_id: str | None = None  # pseudonymous; never a hospital identifier
    visit_id: str | None = None
    targets: dict[str, str] = Field(default_factory=dict)  # e.g. findings, impression, answer
    labels: dict[str, Any] = Field(default_factory=dict)  # e.g. diseases: [...], modality: "CT", normal: false
    source: str | None = None
    split: Split | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", "task")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _check_references(self) -> Sample:
        used = set()
        for t, turn in enumerate(self.turns):
            for part in turn.content:
                if isinstance(part, ImagePart):
                    if part.image >= len(self.images):
                        raise ValueError(f"turns[{t}] refers to image {part.image} but the sample has {len(self.images)} image(s)")
                    used.add(part.image)
        unused = sorted(set(range(len(self.images))) - used)
        if unused:
            raise ValueError(f"images {unused} are never referred to in the turns")
        if not any(turn.role == "assistant" for turn in self.turns) and self.split != "test" and not self.targets:
            raise ValueError("no assistant turn and no targets: nothing to learn or to score")
        return self

    # -- convenience -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, line: str | bytes) -> Sample:
        return cls.model_validate_json(line)

    def to_json(self) -> str:
        """The canonical line: every field in schema order, None values left out."""
        return self.model_dump_json(exclude_none=True)

    def to_messages(self, root: str | Path | None = None, *, upto: int | None = None) -> list[dict]:
        """Messages for `MedMLLMProcessor`: image parts become paths (resolved against ``root``)
        with their exam order; the first image of each exam also carries its modality and time,
        so the processor writes one P2Med header per exam ("[Image] <image>...<image>" for the
        views or series of one exam). ``upto``: only turns[:upto]."""
        base = Path(root) if root is not None else None
        exam_order = _exam_order(self.images)
        described: set[int] = set()  # exams whose header was written: one header per exam, as P2Med
        messages = []
        for turn in self.turns[:upto]:
            parts = []
            for part in turn.content:
                if isinstance(part, TextPart):
                    parts.append({"type": "text", "text": part.text})
                else:
                    ref = self.images[part.image]
                    path = Path(ref.path)
                    if base is not None and not path.is_absolute():
                        path = base / path
                    exam = exam_order[part.image]
                    item = {"type": "image", "image": str(path), "exam_index": exam}
                    if exam not in described:  # views / series of one exam share the first one's header
                        described.add(exam)
                        if ref.modality:
                            item["modality"] = ref.modality
                        if ref.time:
                            item["time"] = ref.time
                    parts.append(item)
            message = {"role": turn.role, "content": parts}
            if turn.weight is not None:
                message["weight"] = turn.weight
            messages.append(message)
        return messages


def _exam_order(images: list[ImageRef]) -> list[int]:
    """Index of each image's exam among the sample's exams, in time order (ties: first seen)."""
    keys = [ref.exam or ref.time or f"#{i}" for i, ref in enumerate(images)]
    first = {}
    for i, key in enumerate(keys):
        first.setdefault(key, (images[i].time or "", i))
    order = {key: rank for rank, key in enumerate(sorted(first, key=lambda k: first[k]))}
    return [order[k] for k in keys]


def text_turn(role: Role, text: str, weight: float | None = None) -> Turn:
    return Turn(role=role, content=[TextPart(text=text)], weight=weight)


def parse_sample(line: str | bytes, where: str = "") -> Sample:
    """`Sample.from_json` with a one-line `MedMLLMError` (``where`` = ``file:line``) on any problem."""
    try:
        return Sample.from_json(line)
    except ValidationError as e:
        raise MedMLLMError(f"{where}: {describe_validation_error(e)}" if where else describe_validation_error(e)) from None
