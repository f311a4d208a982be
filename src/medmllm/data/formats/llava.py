"""LLaVA conversation JSON: import and export.

Layout (LLaVA's instruction data, Liu et al., "Visual Instruction Tuning", NeurIPS 2023; the same
layout carries LLaVA-Med and PubMedVision, Chen et al., "Towards Injecting Medical Visual
Knowledge into Multimodal LLMs at Scale", 2024): one JSON document, a list of records::

    [{"id": "0001",
      "image": "pmc/fig1.jpg",                    # or a list of paths, or absent (text only)
      "conversations": [
        {"from": "human", "value": "<image>\\nWhat does the CT show?"},
        {"from": "gpt", "value": "A mass in the left lobe."}],
      "modality": "Computed Tomography",          # optional extras (PubMedVision)
      "body_part": "Chest"}]

Image paths are relative to an image folder (``image_root``, default: the JSON file's folder).
Each ``<image>`` placeholder becomes an image part, in order; a record that lists images but has
no placeholder gets them at the start of its first human turn. Roles: ``human`` -> user,
``gpt`` -> assistant, ``system`` -> system.

The file is one JSON document, so it is read whole (the records are then yielded one at a time).

Sample fields: ``id`` = ``SOURCE/ID``; ``task`` (option, default ``conversation``); ``split``
(option; LLaVA files do not say); ``modality`` and ``body_part`` go to ``labels`` (modality in
the templates' spelling, ``CT``, ``MRI``, ...; it is not put on the image refs, so the prompt stays as published); any other
extra field goes to ``meta``.

Export writes what LLaVA can hold: id (``SOURCE/`` stripped for samples this format imported),
image(s) relative to ``image_root`` (default: the output's folder), the conversation, labels
``modality``/``body_part`` and ``meta`` as extra fields. Targets, task, split, turn weights and the
image refs' modality/view/time are not written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from medmllm.data.formats._common import (
    ImagePaths,
    RecordError,
    conversation_turns,
    export_image_path,
    image_order,
    json_list_records,
    located,
    normalize_modality,
    record_id,
    render_turn,
    sample_id,
    strip_source,
    write_json_records,
)
from medmllm.data.schema import Sample

_ROLES_OUT = {"user": "human", "assistant": "gpt", "system": "system"}
_KNOWN = {"id", "image", "conversations"}
_LABELS = ("modality", "body_part")


def import_llava(
    src: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    source: str = "llava",
    task: str = "conversation",
    split: str | None = None,
) -> Iterator[Sample]:
    src = Path(src)
    images = ImagePaths(image_root if image_root is not None else src.parent, relative_to)
    for index, (where, record) in enumerate(json_list_records(src)):
        with located(where):
            sample = _sample(record, index, images, source, task, split)
        yield sample


def _sample(record: dict, index: int, images: ImagePaths, source: str, task: str, split: str | None) -> Sample:
    paths = record.get("image")
    if paths is None:
        paths = []
    elif isinstance(paths, str):
        paths = [paths]
    elif not isinstance(paths, list):
        raise RecordError(f"'image' must be a path or a list of paths, got {type(paths).__name__}")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise RecordError("missing 'conversations' (a list of {from, value})")
    messages = []
    for k, message in enumerate(conversations):
        if not isinstance(message, dict) or not isinstance(message.get("from"), str) or not isinstance(message.get("value"), str):
            raise RecordError(f"conversations[{k}] must be {{'from': ROLE, 'value': TEXT}}")
        messages.append((message["from"], [message["value"]]))
    labels = {}
    for key in _LABELS:
        if isinstance(record.get(key), str) and record[key].strip():
            labels[key] = normalize_modality(record[key]) if key == "modality" else record[key]
    meta = {k: v for k, v in record.items() if k not in _KNOWN and not (k in _LABELS and k in labels)}
    return Sample(
        id=sample_id(source, record_id(record, "id") or str(index)),
        task=task,
        turns=conversation_turns(messages, len(paths)),
        images=[images.ref(p) for p in paths],
        labels=labels,
        source=source,
        split=split,
        meta=meta,
    )


def export_llava(
    samples: Iterable[Sample],
    out: Path,
    *,
    image_root: Path | None = None,
    relative_to: Path | None = None,
    source: str = "llava",
) -> int:
    """Write ``samples`` as a LLaVA JSON list; returns how many were written.

    ``relative_to``: the folder the samples' relative image paths start from (their JSONL's folder).
    """
    out = Path(out)
    root = image_root if image_root is not None else out.parent
    return write_json_records(out, (_record(s, root, relative_to, source) for s in samples))


def _record(sample: Sample, image_root: Path, relative_to: Path | None, source: str) -> dict:
    record: dict = {"id": strip_source(sample, source)}
    paths = [export_image_path(sample.images[i], relative_to, image_root) for i in image_order(sample)]
    if paths:
        record["image"] = paths[0] if len(paths) == 1 else paths
    record["conversations"] = [{"from": _ROLES_OUT[t.role], "value": render_turn(t)} for t in sample.turns]
    for key in _LABELS:
        if key in sample.labels:
            record[key] = sample.labels[key]
    for key, value in sample.meta.items():
        record.setdefault(key, value)
    return record
