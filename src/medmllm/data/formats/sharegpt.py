"""ShareGPT / OpenAI-messages conversations, as LLaMA-Factory reads them: import and export.

Layouts (LLaMA-Factory's ``data/README.md``, "sharegpt" format with multimodal columns; a JSON
list, or JSONL with one record a line)::

    {"messages": [{"role": "system", "content": "..."},          # optional
                  {"role": "user", "content": "<image>What is shown?"},
                  {"role": "assistant", "content": "A fracture."}],
     "images": ["xray/001.png"]}

    {"conversations": [{"from": "human", "value": "<image>What is shown?"},
                       {"from": "gpt", "value": "A fracture."}],
     "system": "You are a radiologist.",                           # optional
     "images": ["xray/001.png"]}

``content`` may also be OpenAI's list of parts: ``{"type": "text", "text": ...}``,
``{"type": "image", "image": PATH}`` or ``{"type": "image_url", "image_url": {"url": PATH}}``
(a ``data:image/...;base64,`` URL is written to ``image_dir``; ``http(s)`` URLs are refused, the
importer never downloads). ``<image>`` placeholders take the ``images`` in order; images listed
without any placeholder go to the start of the first user turn. Image paths are relative to
``image_root`` (default: the file's folder). ``id`` is optional (default: the record's index);
other extra fields go to ``meta``. Tool roles (``function_call``, ``observation``) and
``videos``/``audios`` are refused with the record's location.

A ``.jsonl`` file is streamed; a ``.json`` list is one document and is read whole.

Export: ``style="messages"`` (default) or ``"conversations"``; ``.jsonl`` output gives JSONL,
anything else a JSON list. It writes the id (``SOURCE/`` stripped for samples this format
imported), the turns with ``<image>`` placeholders, ``images`` relative to ``image_root`` (default:
the output's folder) and ``meta`` fields; targets, labels, task, split and turn weights are not
written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from medmllm.data.formats._common import (
    ImagePaths,
    ImageStore,
    RecordError,
    conversation_turns,
    decode_data_url,
    export_image_path,
    image_order,
    json_or_jsonl_records,
    located,
    record_id,
    render_turn,
    sample_id,
    strip_source,
    write_json_records,
)
from medmllm.data.schema import ImageRef, Sample
from medmllm.errors import MedMLLMError

STYLES = ("messages", "conversations")
_ROLES_OUT = {"user": "human", "assistant": "gpt", "system": "system"}
_KNOWN = {"id", "messages", "conversations", "images", "system"}


def import_sharegpt(
    src: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    image_dir: Path | None = None,
    source: str = "sharegpt",
    task: str = "conversation",
    split: str | None = None,
) -> Iterator[Sample]:
    src = Path(src)
    reader = _Reader(src, ImagePaths(image_root if image_root is not None else src.parent, relative_to), image_dir, relative_to, source)
    for index, (where, record) in enumerate(json_or_jsonl_records(src)):
        with located(where):
            sample = reader.sample(record, index, task, split)
        yield sample


class _Reader:
    def __init__(self, src: Path, images: ImagePaths, image_dir: Path | None, relative_to: Path | None, source: str):
        self.src, self.images, self.image_dir, self.relative_to, self.source = src, images, image_dir, relative_to, source
        self._store: ImageStore | None = None

    def sample(self, record: dict, index: int, task: str, split: str | None) -> Sample:
        for key in ("videos", "audios"):
            if record.get(key):
                raise RecordError(f"{key} are not supported (images only)")
        if "messages" in record:
            raw, role_key, content_key = record["messages"], "role", "content"
        elif "conversations" in record:
            raw, role_key, content_key = record["conversations"], "from", "value"
            if raw and isinstance(raw[0], dict) and "role" in raw[0]:  # OpenAI keys under "conversations"
                role_key, content_key = "role", "content"
        else:
            raise RecordError("no 'messages' or 'conversations' list")
        if not isinstance(raw, list) or not raw:
            raise RecordError("the conversation is empty or not a list")
        listed = record.get("images") or []
        if isinstance(listed, str):
            listed = [listed]
        if not isinstance(listed, list):
            raise RecordError(f"'images' must be a list of paths, got {type(listed).__name__}")
        refs = [self._ref(p) for p in listed]
        inline: list[ImageRef] = []  # OpenAI-style image parts, numbered after the listed images
        messages = []
        system = record.get("system")
        if isinstance(system, str) and system:
            messages.append(("system", [system]))
        for k, message in enumerate(raw):
            if not isinstance(message, dict) or not isinstance(message.get(role_key), str):
                raise RecordError(f"turn {k} must be an object with {role_key!r} and {content_key!r}")
            messages.append((message[role_key], self._segments(message.get(content_key), k, len(refs), inline)))
        meta = {key: value for key, value in record.items() if key not in _KNOWN}
        return Sample(
            id=sample_id(self.source, record_id(record, "id") or str(index)),
            task=task,
            turns=conversation_turns(messages, len(refs)),
            images=refs + inline,
            source=self.source,
            split=split,
            meta=meta,
        )

    def _segments(self, content, k: int, n_listed: int, inline: list[ImageRef]) -> list[str | int]:
        if isinstance(content, str):
            return [content]
        if not isinstance(content, list):
            raise RecordError(f"turn {k}: content must be text or a list of parts")
        segments: list[str | int] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                segments.append(part["text"])
            elif kind in ("image", "image_url"):
                value = part.get(kind)
                url = value.get("url") if isinstance(value, dict) else value
                inline.append(self._ref(url))
                segments.append(n_listed + len(inline) - 1)
            else:
                raise RecordError(f"turn {k}: unsupported content part {part!r:.80}")
        return segments

    def _ref(self, path) -> ImageRef:
        if not isinstance(path, str) or not path.strip():
            raise RecordError(f"image path must be non-empty text, got {path!r:.80}")
        if path.startswith("data:"):
            if self._store is None:
                self._store = ImageStore.for_options(self.image_dir, self.relative_to, self.source, self.src)
            return ImageRef(path=self._store.put(decode_data_url(path)))
        if path.startswith(("http://", "https://")):
            raise RecordError(f"remote image {path!r:.80}: download it first (the importer never goes online)")
        return self.images.ref(path.removeprefix("file://"))


def export_sharegpt(
    samples: Iterable[Sample],
    out: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    source: str = "sharegpt",
    style: str = "messages",
) -> int:
    """Write ``samples`` as ShareGPT records; returns how many were written."""
    if style not in STYLES:
        raise MedMLLMError(f"unknown sharegpt style {style!r}; known: {', '.join(STYLES)}")
    out = Path(out)
    root = image_root if image_root is not None else out.parent
    return write_json_records(out, (_record(s, root, relative_to, source, style) for s in samples))


def _record(sample: Sample, image_root: Path, relative_to: Path | None, source: str, style: str) -> dict:
    record: dict = {"id": strip_source(sample, source)}
    if style == "messages":
        record["messages"] = [{"role": t.role, "content": render_turn(t)} for t in sample.turns]
    else:
        record["conversations"] = [{"from": _ROLES_OUT[t.role], "value": render_turn(t)} for t in sample.turns]
    record["images"] = [export_image_path(sample.images[i], relative_to, image_root) for i in image_order(sample)]
    for key, value in sample.meta.items():
        record.setdefault(key, value)
    return record
