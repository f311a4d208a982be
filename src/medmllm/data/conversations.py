"""Conversation shapes: one round, P2Med's multi-round conversations, RadFM's interleaved text.

- `single_round`: one user turn (text and images in any order) and one assistant turn.
- `multi_round`: P2Med's multi-round conversation (MRC, P2Med-MLLM sec. C): "for the radiology
  report generation task, we constructed a multi-round conversation using all scans of the same
  imaging modality from a single visit, arranged in chronological order", so each report can
  compare with the earlier ones::

      Human: {prompt} [exam 1 images]   Assistant: {report 1}
      Human: {prompt} [exam 2 images]   Assistant: {report 2}   ...

  `split_conversation` is its inverse: the rounds as independent samples (the "w/o MRC" ablation)
  or, with ``context=True``, round k with rounds 1..k-1 before it (to evaluate each round).
- `interleaved`: RadFM's free text with ``<image-1>``, ``<image-2>`` placeholders -> one turn whose
  text and image parts follow the text's order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from medmllm.data.schema import ImagePart, ImageRef, Role, Sample, TextPart, Turn, describe_validation_error, text_turn
from medmllm.data.templates import ImageStudy, canonical_modality, get_template
from medmllm.errors import MedMLLMError

DEFAULT_GROUP_BY = ("patient_id", "visit_id", "modality")
# The template a study becomes when `multi_round` is given studies, by canonical modality.
REPORT_TEMPLATES = {"X-ray": "p2med/report-xray", "CT": "p2med/report-ct"}


def _make_sample(**fields: Any) -> Sample:
    """`Sample(**fields)` with a one-line `MedMLLMError` naming the sample."""
    try:
        return Sample(**fields)
    except ValidationError as e:
        raise MedMLLMError(f"sample {fields.get('id')!r}: {describe_validation_error(e)}") from None


def _content(items: str | Sequence[str | ImageRef], images: list[ImageRef]) -> list[TextPart | ImagePart]:
    """Parts of a turn: strings are text, ImageRefs are appended to ``images`` and referred to."""
    if isinstance(items, str):
        items = [items]
    parts: list[TextPart | ImagePart] = []
    for item in items:
        if isinstance(item, ImageRef):
            images.append(item)
            parts.append(ImagePart(image=len(images) - 1))
        elif isinstance(item, str):
            if item:
                parts.append(TextPart(text=item))
        else:
            raise MedMLLMError(f"a turn's content items are text or ImageRef, got {type(item).__name__}")
    return parts


def single_round(
    user: str | Sequence[str | ImageRef],
    answer: str | None,
    *,
    id: str,
    task: str,
    system: str | None = None,
    **fields: Any,
) -> Sample:
    """One user turn and (when ``answer`` is given) one assistant turn.

    Args:
        user: the user turn: a string, or strings and `ImageRef`s in the order they are shown,
            e.g. ``["Please caption this scan with findings. ", ImageRef(path="cxr.png")]``.
        answer: the assistant turn; None for a prompt (then ``targets`` or ``split="test"``).
        fields: other `Sample` fields (``targets``, ``labels``, ``patient_id``, ``split``...).
    """
    images: list[ImageRef] = []
    turns = [text_turn("system", system)] if system else []
    turns.append(Turn(role="user", content=_content(user, images)))
    if answer is not None:
        turns.append(text_turn("assistant", answer))
    return _make_sample(id=id, task=task, turns=turns, images=images, **fields)


# ------------------------------------------------------------------------------- interleaved

_IMAGE_PLACEHOLDER = re.compile(r"<image-(\d+)>")


def interleaved(
    text: str,
    images: Sequence[ImageRef | str],
    *,
    id: str,
    task: str = "interleaved",
    answer: str | None = None,
    role: Role = "user",
    **fields: Any,
) -> Sample:
    """RadFM's interleaved text -> a sample whose ``role`` turn has text and image parts in order.

    ``"The patient is 47-year-old. <image-1> <image-2> We can see opacity on the X-ray"`` with two
    images gives text, image 0, text " ", image 1, text. Placeholders count from 1; one may appear
    more than once (RadFM's Fig. 7 repeats ``<image-3>``). Every placeholder must have an image and
    every image a placeholder, else `MedMLLMError`. ``answer`` adds an assistant turn;
    ``role="assistant"`` makes the text itself the learned turn (RadFM's interleaved PMC-Inline).
    """
    refs = [ImageRef(path=image) if isinstance(image, str) else image for image in images]
    pieces = _IMAGE_PLACEHOLDER.split(text)  # text, number, text, number, ..., text
    numbers = [int(n) for n in pieces[1::2]]
    bad = sorted({n for n in numbers if not 1 <= n <= len(refs)})
    if bad:
        raise MedMLLMError(f"sample {id!r}: placeholder(s) {', '.join(f'<image-{n}>' for n in bad)} but {len(refs)} image(s) given")
    unused = sorted(set(range(1, len(refs) + 1)) - set(numbers))
    if unused:
        raise MedMLLMError(f"sample {id!r}: image(s) {unused} have no placeholder <image-N> in the text")
    parts: list[TextPart | ImagePart] = []
    for i, piece in enumerate(pieces):
        if i % 2:
            parts.append(ImagePart(image=int(piece) - 1))
        elif piece:
            parts.append(TextPart(text=piece))
    turns = [Turn(role=role, content=parts)]
    if answer is not None:
        turns.append(text_turn("assistant", answer))
    return _make_sample(id=id, task=task, turns=turns, images=refs, **fields)


# ---------------------------------------------------------------------------- multi-round


def exam_time(sample: Sample) -> datetime | None:
    """The earliest time of a sample's images (naive, UTC for times with a zone), None if none has one."""
    times = []
    for ref in sample.images:
        if not ref.time:
            continue
        try:
            t = datetime.fromisoformat(ref.time.replace("Z", "+00:00"))
        except ValueError:
            raise MedMLLMError(f"sample {sample.id!r}: image time {ref.time!r} is not ISO 8601 (YYYY-MM-DD[THH:MM[:SS]])") from None
        times.append(t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t)
    return min(times) if times else None


def _key_value(sample: Sample, name: str) -> Any:
    """A sample's value of a group_by name: ``modality`` (labels, else its images'), a `Sample`
    field, else a label."""
    if name == "modality":
        return canonical_modality(sample.labels.get("modality") or next((r.modality for r in sample.images if r.modality), None))
    if name in Sample.model_fields:
        return getattr(sample, name)
    return sample.labels.get(name)


def chronological(samples: Sequence[Sample]) -> list[Sample]:
    """Samples in exam time order. Equal times keep their input order (a stable sort); a sample
    without a time keeps its input position, and those with a time are sorted around it."""
    times = [exam_time(s) for s in samples]
    timed = [i for i, t in enumerate(times) if t is not None]
    order = list(range(len(samples)))
    for slot, source in zip(timed, sorted(timed, key=lambda i: times[i])):
        order[slot] = source
    return [samples[i] for i in order]


def _leading_system(sample: Sample) -> int:
    """How many system turns the sample starts with."""
    n = 0
    while n < len(sample.turns) and sample.turns[n].role == "system":
        n += 1
    return n


def _shift(turn: Turn, offset: int) -> Turn:
    """The turn with its image indices moved by ``offset``."""
    content = [ImagePart(image=p.image + offset) if isinstance(p, ImagePart) else p for p in turn.content]
    return turn.model_copy(update={"content": content})


def _merge(key: tuple, members: list[Sample]) -> Sample:
    """One conversation of ``members`` (already in time order)."""
    first, last = members[0], members[-1]
    system = first.turns[: _leading_system(first)]
    turns, images, rounds = list(system), [], []
    for k, sample in enumerate(members):
        if sample.turns[: _leading_system(sample)] != system:
            raise MedMLLMError(f"sample {sample.id!r}: its system turns differ from {first.id!r}'s; one conversation has one system prompt")
        body = sample.turns[len(system):]
        if not body or (body[-1].role != "assistant" and k < len(members) - 1):
            raise MedMLLMError(f"sample {sample.id!r} ends without an assistant turn, so it cannot be followed by later exams ({last.id!r})")
        turns.extend(_shift(turn, len(images)) for turn in body)
        images.extend(sample.images)
        time = exam_time(sample)
        rounds.append({
            "id": sample.id, "time": time.isoformat() if time else None, "images": len(sample.images),
            **sample.model_dump(include={"patient_id", "visit_id", "targets", "labels", "source", "split", "meta"}),
        })
    splits = {s.split for s in members}
    if len(splits) > 1:
        raise MedMLLMError(f"samples {[s.id for s in members]} of one visit are in different splits {sorted(map(str, splits))}; "
                           "split by patient before building conversations")

    def common(name: str) -> Any:  # a field the rounds share, else None
        value = getattr(first, name)
        return value if all(getattr(s, name) == value for s in members) else None

    return _make_sample(
        id="mrc/" + "/".join(str(v) for v in key),
        task=first.task,
        turns=turns,
        images=images,
        patient_id=common("patient_id"),
        visit_id=common("visit_id"),
        targets=last.targets,  # the conversation is scored on its last report
        labels=last.labels,
        source=common("source"),
        split=first.split,
        meta={"conversation": "multi-round", "rounds": rounds},
    )


def multi_round(
    samples_or_studies: Iterable[Sample | ImageStudy],
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    *,
    template: str | None = None,
    seed: int = 0,
    paper_prompt: bool = False,
) -> list[Sample]:
    """P2Med's multi-round conversations: the samples of one task and one ``group_by`` key (patient,
    visit, modality), in exam time order (`chronological`), become one conversation.

    Args:
        samples_or_studies: one-round samples (e.g. of ``p2med/report-xray``) or `ImageStudy`s,
            which first become samples of ``template`` (default by modality: `REPORT_TEMPLATES`),
            prompts drawn from ``random.Random(seed)`` (or the paper's with ``paper_prompt``).
        group_by: names of `Sample` fields, ``"modality"`` (labels, else the images'), or labels.
            A sample missing one of them (e.g. no visit id) stays a conversation of its own.

    Returns:
        The conversations in the order their first sample came. A group of one is its sample,
        unchanged. A merged one has id ``"mrc/{key values}"``, the images of every round in order
        (image parts re-indexed), the last round's targets and labels, and in ``meta["rounds"]``
        each round's id, time, image count, targets, labels, meta and sample fields (for
        `split_conversation`). Samples of one group in different splits are an error.
    """
    rng = random.Random(seed)
    samples = []
    for item in samples_or_studies:
        if isinstance(item, ImageStudy):
            name = template or REPORT_TEMPLATES.get(item.study_modality or "")
            if name is None:
                raise MedMLLMError(f"study {item.id!r}: no report template for modality {item.study_modality!r}; pass template=")
            item = get_template(name).make(item, rng, paper_prompt=paper_prompt)
        samples.append(item)

    groups: dict[tuple, list[Sample]] = {}
    for n, sample in enumerate(samples):
        values = tuple(_key_value(sample, name) for name in group_by)
        # Without the whole key we cannot know it is the same visit: the sample stays alone.
        key = (sample.task, *values) if all(v is not None for v in values) else ("#alone", n)
        groups.setdefault(key, []).append(sample)
    out = []
    for key, members in groups.items():
        out.append(members[0] if len(members) == 1 else _merge(key, chronological(members)))
    return out


def _rounds(sample: Sample) -> tuple[list[Turn], list[list[Turn]]]:
    """The leading system turns, and the rounds: each ends with its last assistant turn (a
    trailing round of user turns only is a round too)."""
    system = sample.turns[: _leading_system(sample)]
    rounds: list[list[Turn]] = [[]]
    body = sample.turns[len(system):]
    for i, turn in enumerate(body):
        rounds[-1].append(turn)
        if turn.role == "assistant" and i + 1 < len(body) and body[i + 1].role != "assistant":
            rounds.append([])
    return system, rounds


def _reindexed(turns: list[Turn], images: list[ImageRef]) -> tuple[list[Turn], list[ImageRef]]:
    """The turns with only the images they refer to, renumbered 0.. in their original order."""
    used = sorted({p.image for t in turns for p in t.content if isinstance(p, ImagePart)})
    new = {old: k for k, old in enumerate(used)}
    out = [t.model_copy(update={"content": [ImagePart(image=new[p.image]) if isinstance(p, ImagePart) else p for p in t.content]}) for t in turns]
    return out, [images[i] for i in used]


def split_conversation(sample: Sample, *, context: bool | int = False) -> list[Sample]:
    """The rounds of a conversation as samples: the inverse of `multi_round`.

    Round k keeps its own turns and images (re-indexed from 0); with ``context=True`` it also has
    rounds 1..k-1 before it (their turns and images), to evaluate round k as the model sees it in
    a conversation; with ``context=n`` (an int) only the n rounds just before it. Rounds are cut
    after each assistant turn that a user turn follows. With ``meta["rounds"]`` (from
    `multi_round`) each round gets back its id, targets, labels, meta and sample fields, so
    ``split_conversation(multi_round(xs))`` gives ``xs`` back in time order; otherwise round k is
    ``"{id}#k"`` (from 1) and the last round has the sample's targets and labels.
    """
    system, rounds = _rounds(sample)
    saved = sample.meta.get("rounds")
    if not (isinstance(saved, list) and len(saved) == len(rounds)):
        saved = None
        if len(rounds) == 1:  # a one-round sample is its own split
            return [sample]
    out = []
    for k in range(len(rounds)):
        before = min(k, k if context is True else int(context))  # rounds of context (False: 0)
        turns = [turn for r in rounds[k - before: k + 1] for turn in r]
        turns, images = _reindexed(list(system) + turns, sample.images)
        if saved is not None:
            info = saved[k]
            fields = {name: info.get(name) for name in ("patient_id", "visit_id", "targets", "labels", "source", "split", "meta")}
            fields["id"] = info["id"]
        else:
            last = k == len(rounds) - 1
            fields = dict(id=f"{sample.id}#{k + 1}", patient_id=sample.patient_id, visit_id=sample.visit_id, source=sample.source,
                          split=sample.split, targets=sample.targets if last else {}, labels=sample.labels if last else {}, meta={})
        if before:
            fields["meta"] = {**(fields["meta"] or {}), "context_rounds": before}
        out.append(_make_sample(task=sample.task, turns=turns, images=images, **{n: v for n, v in fields.items() if v is not None}))
    return out


__all__ = ["DEFAULT_GROUP_BY", "REPORT_TEMPLATES", "chronological", "exam_time", "interleaved", "multi_round", "single_round", "split_conversation"]
