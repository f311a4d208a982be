"""What the dataset readers and writers share: record sources with locations, image paths,
the few sample shapes (question/answer, report, conversation), and the missing-images report.

Every reader yields ``(where, record)`` pairs, ``where`` being ``FILE:LINE`` (JSONL, CSV),
``FILE: record N`` (a JSON list) or ``FILE: row N`` (parquet); a problem inside a record is a
`RecordError` raised by the builders, and `located` turns it into a one-line `MedMLLMError`
that carries the location.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medmllm.data.io import read_jsonl
from medmllm.data.schema import ImagePart, ImageRef, Role, Sample, TextPart, Turn, describe_validation_error, text_turn
from medmllm.data.templates import canonical_modality, format_sections
from medmllm.errors import MedMLLMError
from medmllm.scans.write import atomic_path

IMAGE_PLACEHOLDER = "<image>"


class RecordError(ValueError):
    """One record of a source file cannot be used; the message says why, `located` says where."""


@contextmanager
def located(where: str):
    """Re-raise a record's problem (`RecordError`, a schema violation) as ``MedMLLMError("WHERE: problem")``."""
    try:
        yield
    except RecordError as e:
        raise MedMLLMError(f"{where}: {e}") from None
    except ValidationError as e:
        raise MedMLLMError(f"{where}: {describe_validation_error(e)}") from None


# -- fields --------------------------------------------------------------------------------------


def text_field(record: dict, key: str, *, required: bool = True) -> str | None:
    """A field as text. Numbers are accepted (VQA-RAD has answers like ``2``); empty means missing."""
    value = record.get(key)
    if isinstance(value, float) and value != value:  # NaN: an empty cell as pandas writes it
        value = None
    if isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        value = str(int(value)) if value.is_integer() else str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RecordError(f"missing field {key!r}")
        return None
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be text, got {type(value).__name__}")
    return value.strip()


def record_id(record: dict, *keys: str) -> str | None:
    """The first of ``keys`` the record has, as text (ids are ints in some datasets)."""
    for key in keys:
        value = text_field(record, key, required=False)
        if value is not None:
            return value
    return None


_SPLITS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip


def normalize_split(name: str | None) -> str | None:
    """``train`` / ``val`` / ``test`` for the spellings datasets use; None if it is none of them."""
    return _SPLITS.get(name.strip().lower()) if name else None


def split_from_name(name: str) -> str | None:
    """The split a file name announces: ``train.json``, ``validate.json``, ``test-00000-of-00001.parquet``, ``vqarad_train.csv``."""
    for word in re.split(r"[^a-zA-Z]+", Path(name).name.lower()):
        if word in _SPLITS:
            return _SPLITS[word]
    return None


# Long spellings the datasets use, before templates.canonical_modality's short aliases.
_MODALITY_NAMES = {
    "computed tomography": "CT", "cta": "CT",
    "magnetic resonance imaging": "MRI", "magnetic resonance": "MRI",
    "radiography": "X-ray", "chest x-ray": "X-ray", "cxr": "X-ray",
    "ultrasonography": "Ultrasound", "positron emission tomography": "PET",
}  # fmt: skip


def normalize_modality(name: str | None) -> str | None:
    """The project's spelling of a modality (`medmllm.data.templates.MODALITIES`: ``CT``, ``MRI``,
    ``X-ray``, ``Ultrasound``, ``PET``, ...), so labels match the RadBench templates; others kept as given."""
    if name is None or not name.strip():
        return None
    return canonical_modality(_MODALITY_NAMES.get(name.strip().lower(), name))


def closed_or_open(answer: str) -> str:
    """VQA's answer type when a dataset does not say: yes/no answers are closed (PathVQA's definition)."""
    return "closed" if answer.strip().lower() in ("yes", "no") else "open"


def sample_id(source: str, original: str) -> str:
    return f"{source}/{original}"


# -- record sources ------------------------------------------------------------------------------


def existing_file(path: Path, what: str = "file") -> Path:
    if not path.is_file():
        raise MedMLLMError(f"{path}: no such {what}")
    return path


def load_json_document(path: Path) -> Any:
    """A whole JSON document (the datasets that publish one big JSON file are read whole)."""
    existing_file(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MedMLLMError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise MedMLLMError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def json_list_records(path: Path, items: Any = None, *, label: str = "record") -> Iterator[tuple[str, dict]]:
    """``(where, record)`` for each object of a JSON list (``items``, or the whole file)."""
    if items is None:
        items = load_json_document(path)
    if not isinstance(items, list):
        raise MedMLLMError(f"{path}: expected a JSON list of records, got {type(items).__name__}")
    for index, item in enumerate(items):
        where = f"{path}: {label} {index}"
        if not isinstance(item, dict):
            raise MedMLLMError(f"{where}: expected a JSON object, got {type(item).__name__}")
        yield where, item


def json_or_jsonl_records(path: Path) -> Iterator[tuple[str, dict]]:
    """Records of a ``.jsonl`` file (streamed, ``FILE:LINE``) or of a JSON list (read whole)."""
    if path.suffix.lower() == ".jsonl":
        for number, obj in read_jsonl(path):
            yield f"{path}:{number}", obj
    else:
        yield from json_list_records(path)


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file (its first row)."""
    existing_file(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            header = next(csv.reader(f), None)
        except csv.Error as e:
            raise MedMLLMError(f"{path}:1: not valid CSV ({e})") from None
    if not header:
        raise MedMLLMError(f"{path}: empty file (no header row)")
    return header


def csv_records(path: Path, required: Sequence[str]) -> Iterator[tuple[str, dict]]:
    """Rows of a CSV file as dicts, streamed; ``where`` is the line the row starts on.

    The header must have every ``required`` column; a row with more or fewer fields than the
    header is an error (a stray comma or a broken quote), not a silently shifted record.
    """
    existing_file(path)
    # Reports in a cell can exceed csv's 128 KiB default field limit.
    csv.field_size_limit(2**31 - 1)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise MedMLLMError(f"{path}: empty file (no header row)")
        absent = [c for c in required if c not in header]
        if absent:
            raise MedMLLMError(
                f"{path}:1: missing column(s) {', '.join(map(repr, absent))} (the header has {', '.join(map(repr, header))})"
            )
        line = reader.line_num + 1
        try:
            for row in reader:
                where = f"{path}:{line}"
                line = reader.line_num + 1
                if not row:
                    continue
                if len(row) != len(header):
                    raise MedMLLMError(f"{where}: {len(row)} field(s) where the header has {len(header)}")
                yield where, dict(zip(header, row))
        except csv.Error as e:
            raise MedMLLMError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None


def parquet_records(path: Path, batch_size: int = 256) -> Iterator[tuple[str, dict]]:
    """Rows of a parquet file, a batch at a time (needs pyarrow: ``pip install 'medmllm[formats]'``)."""
    existing_file(path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MedMLLMError(f"{path}: reading parquet needs pyarrow: pip install 'medmllm[formats]' (or pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
        index = 0
        for batch in parquet.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield f"{path}: row {index}", row
                index += 1
    except (pa.ArrowException, OSError) as e:
        raise MedMLLMError(f"{path}: not a readable parquet file ({e})") from None


# -- image paths ---------------------------------------------------------------------------------


def as_ref_path(path: Path | str, relative_to: Path | None) -> str:
    """How a sample names a file: relative to the JSONL's folder ``relative_to``, else absolute."""
    absolute = os.path.abspath(path)
    if relative_to is None:
        return Path(absolute).as_posix()
    return Path(os.path.relpath(absolute, os.path.abspath(relative_to))).as_posix()


def resolve_ref_path(path: str, relative_to: Path | None) -> Path:
    """The file a sample's image path points at (the inverse of `as_ref_path`)."""
    p = Path(path)
    if p.is_absolute():
        return p
    return Path(os.path.abspath(Path(relative_to or ".") / p))


class ImagePaths:
    """Image paths of a dataset (relative to its ``root``) turned into `ImageRef` paths."""

    def __init__(self, root: Path, relative_to: Path | None):
        self.root = Path(root)
        self.relative_to = Path(relative_to) if relative_to is not None else None

    def ref(self, path: str, **fields: Any) -> ImageRef:
        if not isinstance(path, str) or not path.strip():
            raise RecordError(f"image path must be non-empty text, got {path!r}")
        return ImageRef(path=as_ref_path(self.root / path.strip(), self.relative_to), **fields)


class ImageStore:
    """Images that come as bytes (parquet, Hugging Face datasets, data: URLs) written to a folder.

    Files are named by content hash, so an image shared by many questions is written once and
    a second import writes nothing new.
    """

    def __init__(self, folder: Path, relative_to: Path | None):
        self.folder = Path(folder)
        self.relative_to = Path(relative_to) if relative_to is not None else None

    @classmethod
    def for_options(cls, image_dir: Path | str | None, relative_to: Path | str | None, source: str, src: Path | str) -> ImageStore:
        """``image_dir``, or ``images/SOURCE`` beside the output (``relative_to``)."""
        if image_dir is None:
            if relative_to is None:
                raise MedMLLMError(
                    f"{src}: the images are embedded in the data; pass image_dir=FOLDER (where to write them) or relative_to=OUTPUT_FOLDER"
                )
            image_dir = Path(relative_to) / "images" / source.replace("/", "_")
        return cls(Path(image_dir), Path(relative_to) if relative_to is not None else None)

    def put(self, data: bytes, name_hint: str | None = None) -> str:
        digest = hashlib.sha256(data).hexdigest()[:24]
        path = self.folder / f"{digest}{_image_suffix(data, name_hint)}"
        if not path.exists():
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return as_ref_path(path, self.relative_to)

    def put_value(self, value: Any, images: ImagePaths | None = None) -> str:
        """An image as datasets store them: ``{"bytes", "path"}``, raw bytes, or a path string."""
        if isinstance(value, dict) and value.get("bytes"):
            return self.put(value["bytes"], value.get("path"))
        if isinstance(value, bytes | bytearray) and value:
            return self.put(bytes(value))
        path = value.get("path") if isinstance(value, dict) else value
        if isinstance(path, str) and path.strip() and images is not None:
            return images.ref(path).path
        raise RecordError(f"image has neither bytes nor a path: {_short(value)}")


def _image_suffix(data: bytes, name_hint: str | None) -> str:
    signatures = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"BM": ".bmp", b"II*\x00": ".tif", b"MM\x00*": ".tif"}
    for magic, suffix in signatures.items():
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    hinted = Path(name_hint).suffix.lower() if name_hint else ""
    return hinted if re.fullmatch(r"\.[a-z0-9]{1,5}", hinted or "") else ".img"


def decode_data_url(url: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL."""
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise RecordError("only base64 data: URLs are supported for images")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise RecordError("image data: URL is not valid base64") from None


def export_image_path(ref: ImageRef, relative_to: Path | None, image_root: Path) -> str:
    """An image path for a foreign format: relative to that format's image folder."""
    absolute = resolve_ref_path(ref.path, relative_to)
    return Path(os.path.relpath(absolute, os.path.abspath(image_root))).as_posix()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- sample shapes -------------------------------------------------------------------------------


def qa_sample(
    *,
    id: str,
    task: str,
    question: str,
    answer: str,
    images: list[ImageRef],
    source: str,
    split: str | None,
    targets: dict[str, str] | None = None,
    labels: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    patient_id: str | None = None,
    visit_id: str | None = None,
) -> Sample:
    """One user turn (the images, then the question) and one assistant turn (the answer).

    ``targets`` defaults to ``{"answer": answer}``; the scorer compares against it.
    """
    content = [ImagePart(image=i) for i in range(len(images))] + [TextPart(text=question)]
    return Sample(
        id=id,
        task=task,
        turns=[Turn(role="user", content=content), text_turn("assistant", answer)],
        images=images,
        patient_id=patient_id,
        visit_id=visit_id,
        targets=targets if targets is not None else {"answer": answer},
        labels=labels or {},
        source=source,
        split=split,
        meta=meta or {},
    )


REPORT_STYLES = ("p2med", "plain")

# P2Med-MLLM's report prompt (Tian et al., P2Med-MLLM, IEEE TUFFC, sec. V-A), spaced as the
# p2med/report-* templates write it, asking for the sections the record has (R2Gen's reports are
# findings only). The "[Examination time] / [Examination modality] / [Image]" header is written by
# MedMLLMProcessor from the first image ref of each exam (docs/data-format.md), not here.
_P2MED_INTRO = "Current radiological data is as follows: \n "
_P2MED_INSTRUCTION = (
    " \n Based on the above information, combined with professional radiological knowledge, generate a report in the format: \n "
)
_P2MED_HINTS = {"findings": "findings based on the images", "impression": "impression based on the images"}


def report_text(sections: dict[str, str], style: str) -> str:
    """The assistant's report: ``[Findings] ... \\n [Impression] ...`` (p2med, what
    `templates.parse_report` reads) or the sections as prose, one a line (plain)."""
    if style == "p2med":
        return format_sections((name.capitalize(), text) for name, text in sections.items())
    return "\n".join(sections.values())


def report_prompt(sections: Sequence[str], style: str, plain_prompt: str) -> tuple[str, str]:
    """(text before the images, text after them) asking for a report with ``sections``."""
    if style == "p2med":
        form = "".join(f"[{name.capitalize()}] {{Your {_P2MED_HINTS.get(name, name)}}} \n " for name in sections)
        return _P2MED_INTRO, (_P2MED_INSTRUCTION + form).rstrip(" ")
    return "", plain_prompt


def check_report_style(style: str) -> None:
    if style not in REPORT_STYLES:
        raise MedMLLMError(f"unknown report style {style!r}; known: {', '.join(REPORT_STYLES)}")


def report_sample(
    *,
    id: str,
    sections: dict[str, str],
    images: list[ImageRef],
    source: str,
    split: str | None,
    style: str,
    plain_prompt: str = "Write the findings of this radiology study.",
    task: str = "report",
    prefix: str = "",
    labels: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    patient_id: str | None = None,
    visit_id: str | None = None,
) -> Sample:
    """Report generation: the images in a request for ``sections`` (``findings``, ``impression``), the report as answer.

    ``prefix`` (clinical context such as the history) goes before the request.
    """
    sections = {name: text for name, text in sections.items() if text}
    if not sections:
        raise RecordError("the report is empty")
    before, after = report_prompt(list(sections), style, plain_prompt)
    content: list = []
    if prefix or before:
        content.append(TextPart(text=prefix + before))
    content += [ImagePart(image=i) for i in range(len(images))]
    content.append(TextPart(text=after))
    return Sample(
        id=id,
        task=task,
        turns=[Turn(role="user", content=content), text_turn("assistant", report_text(sections, style))],
        images=images,
        patient_id=patient_id,
        visit_id=visit_id,
        targets=dict(sections),
        labels=labels or {},
        source=source,
        split=split,
        meta=meta or {},
    )


_SECTION = re.compile(r"(?i)\b(findings|impression)\s*:\s*")


def split_report(report: str) -> dict[str, str]:
    """``"Findings: ... Impression: ..."`` (as RadFM and MIMIC-CXR write reports) into sections;
    text without those headings is all findings."""
    marks = list(_SECTION.finditer(report))
    if not marks:
        return {"findings": report.strip()}
    sections: dict[str, str] = {}
    if report[: marks[0].start()].strip():
        sections["findings"] = report[: marks[0].start()].strip()
    for mark, following in zip(marks, marks[1:] + [None]):
        text = report[mark.end() : following.start() if following else len(report)].strip()
        name = mark.group(1).lower()
        sections[name] = f"{sections[name]} {text}".strip() if name in sections else text
    return sections


# -- conversations with <image> placeholders -----------------------------------------------------

# Roles of LLaVA ("human"/"gpt"), ShareGPT/LLaMA-Factory ("human"/"gpt"/"system") and OpenAI messages.
CHAT_ROLES: dict[str, Role] = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def conversation_turns(messages: list[tuple[str, list[str | int]]], n_images: int, placeholder: str = IMAGE_PLACEHOLDER) -> list[Turn]:
    """Turns from ``(role, segments)`` where a segment is text (which may hold ``placeholder``s)
    or the index of an image given inline (OpenAI-style parts; the caller numbers those after
    the ``n_images`` listed ones).

    Placeholders take the ``n_images`` listed images in order. A conversation that lists images
    but writes no placeholder gets them at the start of its first user turn (the usual reading
    of such data); any other mismatch is an error.
    """
    roles = []
    for role, _ in messages:
        if role not in CHAT_ROLES:
            raise RecordError(f"unknown role {role!r} (known: {', '.join(CHAT_ROLES)})")
        roles.append(CHAT_ROLES[role])
    n_placeholders = sum(seg.count(placeholder) for _, segments in messages for seg in segments if isinstance(seg, str))
    if n_placeholders not in (0, n_images):
        raise RecordError(f"{n_placeholders} {placeholder} placeholder(s) for {n_images} image(s)")
    prepend = n_placeholders == 0 and n_images > 0
    if prepend and "user" not in roles:
        raise RecordError(f"{n_images} image(s) but no user turn to put them in")
    next_image = 0
    turns = []
    for role, (_, segments) in zip(roles, messages):
        content: list = []
        if prepend and role == "user":
            content += [ImagePart(image=i) for i in range(n_images)]
            prepend = False
        for seg in segments:
            if isinstance(seg, int):
                content.append(ImagePart(image=seg))
                continue
            pieces = seg.split(placeholder)
            for k, piece in enumerate(pieces):
                if k:
                    content.append(ImagePart(image=next_image))
                    next_image += 1
                if piece:
                    content.append(TextPart(text=piece))
        turns.append(Turn(role=role, content=content))
    return turns


def render_turn(turn: Turn, placeholder: str = IMAGE_PLACEHOLDER) -> str:
    """A turn's text with each image part written as ``placeholder`` (the inverse of `conversation_turns`)."""
    return "".join(part.text if isinstance(part, TextPart) else placeholder for part in turn.content)


def image_order(sample: Sample) -> list[int]:
    """Image indices in the order the turns show them (what placeholder formats need)."""
    order = []
    for turn in sample.turns:
        for part in turn.content:
            if isinstance(part, ImagePart):
                order.append(part.image)
    return order


def strip_source(sample: Sample, source: str) -> str:
    """The original id of a sample this format imported (``SOURCE/ID`` -> ``ID``); other ids stay whole,
    so a mix of datasets keeps unique ids."""
    prefix = f"{source}/"
    if sample.source == source and sample.id.startswith(prefix):
        return sample.id[len(prefix) :]
    return sample.id


# -- writing -------------------------------------------------------------------------------------


def write_json_records(out: Path, records: Iterable[dict]) -> int:
    """Records as JSONL (``.jsonl``) or as one JSON list (anything else), one record a line,
    streamed and written atomically."""
    out = Path(out)
    n = 0
    jsonl = out.suffix.lower() == ".jsonl"
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        if not jsonl:
            f.write("[")
        for record in records:
            line = json.dumps(record, ensure_ascii=False)
            if jsonl:
                f.write(line + "\n")
            else:
                f.write(("\n" if n == 0 else ",\n") + line)
            n += 1
        if not jsonl:
            f.write("\n]\n" if n else "]\n")
    return n


# -- missing images ------------------------------------------------------------------------------


class MissingImages:
    """Image files that samples refer to but that are not on disk.

    Filled by ``import_samples(..., check_images=True)``; the samples are still yielded (or,
    with ``drop_missing=True``, left out and counted here), never dropped without a trace.
    Memory grows with the number of distinct missing files, not with the number of samples.
    """

    def __init__(self) -> None:
        self.files: dict[str, str] = {}  # missing file -> first sample id that refers to it
        self.samples = 0  # samples with at least one missing file
        self.dropped = 0

    def check(self, sample: Sample, relative_to: Path | None) -> bool:
        """Record ``sample``'s missing files; True when all its images exist."""
        complete = True
        for ref in sample.images:
            path = resolve_ref_path(ref.path, relative_to)
            if not path.exists():
                self.files.setdefault(str(path), sample.id)
                complete = False
        if not complete:
            self.samples += 1
        return complete

    def __len__(self) -> int:
        return len(self.files)

    def __bool__(self) -> bool:
        return bool(self.files)

    def summary(self, limit: int = 10) -> str:
        """Lines for the user: a count, then up to ``limit`` files with a sample that needs each."""
        if not self.files:
            return "all image files found"
        head = f"{len(self.files)} image file(s) missing, needed by {self.samples} sample(s)"
        if self.dropped:
            head += f"; {self.dropped} sample(s) left out"
        lines = [head] + [f"  {path} (e.g. {sid})" for path, sid in list(self.files.items())[:limit]]
        if len(self.files) > limit:
            lines.append(f"  ... and {len(self.files) - limit} more")
        return "\n".join(lines)


# -- rows of Hugging Face style VQA tables (parquet files, `datasets`) ------------------------------

_VQA_ROW_KNOWN = {"image", "images", "question", "answer", "id", "qid", "answer_type"}


def vqa_row_sample(
    row: dict,
    *,
    index: int,
    split: str | None,
    source: str,
    store: ImageStore,
    images: ImagePaths | None = None,
    modality: str | None = None,
) -> Sample:
    """A VQA sample from a table row with ``image`` (or ``images``), ``question`` and ``answer``
    columns, the layout of the Hugging Face copies of PathVQA, VQA-RAD and SLAKE.

    Embedded image bytes go to ``store``; a bare path is resolved with ``images``. ``id``/``qid``
    columns give the id (else ``SPLIT-INDEX``), ``answer_type`` is kept or derived (yes/no ->
    closed), other scalar columns go to ``meta``.
    """
    if "images" in row and "image" not in row:
        values = row["images"]
        if not isinstance(values, list) or not values:
            raise RecordError("'images' must be a non-empty list")
    elif "image" in row:
        values = [row["image"]]
    else:
        raise RecordError("no 'image' or 'images' column")
    answer = text_field(row, "answer")
    answer_type = (text_field(row, "answer_type", required=False) or closed_or_open(answer)).lower()
    labels: dict[str, Any] = {"answer_type": answer_type}
    if modality:
        labels["modality"] = modality
    meta = {k: v for k, v in row.items() if k not in _VQA_ROW_KNOWN and isinstance(v, str | int | float | bool) and v == v}
    return qa_sample(
        id=sample_id(source, record_id(row, "id", "qid") or f"{split or 'all'}-{index}"),
        task="vqa",
        question=text_field(row, "question"),
        answer=answer,
        images=[ImageRef(path=store.put_value(v, images), modality=modality) for v in values],
        source=source,
        split=split,
        labels=labels,
        meta=meta,
    )
