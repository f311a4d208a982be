"""`MedMLLMProcessor`: chat messages + scans -> model-ready batches (training, evaluation, serving).

Input
-----
A batch is a list of samples; a sample is a list of messages (one sample alone is accepted too)::

    {"role": "system" | "user" | "assistant", "content": str | [part, ...], "weight": 1.0}

    part = {"type": "text", "text": str}
         | {"type": "image", "image": Scan | str | Path | np.ndarray,   # ndarray (D, H, W) or (H, W)
            "modality": str, "time": str | datetime | date, "exam_index": int}   # all optional

Parts are concatenated in order, so images may sit anywhere in any turn, any number of them.
``weight`` (default 1.0) is the loss weight of the message's learned tokens.

Image text
----------
Each image part becomes ``<image>`` + ``num_latents`` x ``<image_patch>`` + ``</image>``. With
``describe_exams`` (default True) and a part that has a time or a modality, P2Med's wording comes
first, a missing field left out::

    "[Examination time] 2022-10-29 \\n [Examination modality] X-ray \\n [Image] <image>...</image>"

Dates are written ``YYYY-MM-DD``, datetimes ``YYYY-MM-DD HH:MM``, strings as given. For several
images of one exam (AP + lateral views, non-contrast + contrast series) give time and modality on
the first part only: ``... [Image] <image>...</image><image>...</image>``.

Conversation text, and what is learned
--------------------------------------
- Tokenizer with a chat template: ``tokenizer.apply_chat_template(messages, tokenize=False)`` with
  each message's content rendered to a string as above. Assistant message i is learned over the
  characters ``[len(render(messages[:i], add_generation_prompt=True)), len(render(messages[:i+1])))``:
  its content and the end-of-turn text the template writes after it (ChatML: ``yes<|im_end|>\\n``).
  The template must be prefix-consistent (each rendered prefix a prefix of the full rendering).
  The text is tokenized with ``add_special_tokens=False`` (templates write their own BOS).
- A conversation without a system message gets ``config.system_prompt`` as its first message
  when that is set (not None; nothing is learned on it), else a chat template may add its own default.
- Tokenizer without a chat template: P2Med's format, ``<STOP>`` being the tokenizer's EOS token::

      "{system text}\\n"                                    (each system message, in place)
      "Human: {user text} <STOP> "                          (each user message)
      "Assistant: {assistant text} <STOP> "                 (each assistant message)
      "Assistant:"                                          (the generation prompt)

  Learned: `` {assistant text} <STOP>`` (from just after ``Assistant:``, so the space the model
  must produce after the generation prompt is learned too). The text is tokenized with
  ``add_special_tokens=True``: the tokenizer's own convention for base LLMs (e.g. Llama's BOS).

A token is learned when its character offsets overlap a learned span (a token straddling the span's
start carries text the model has to produce). Image tokens and padding are never learned.
``labels`` = ``input_ids`` where learned, -100 elsewhere; ``loss_weights`` = the message's weight
where learned, 0 elsewhere. With ``add_generation_prompt=True`` (inference) nothing is learned.

With a ``term_weighter`` (RadFM eq. 3-4, `medmllm.data.weights.TermWeighter`), each learned span is
passed to it and a learned token overlapping one of the spans it returns gets that span's weight
(``term_weight``, 3 for medical terms) x the message's weight, every other learned token
``term_weighter.other_weight`` (1) x the message's weight.

Images
------
Each image: `medmllm.scans.read` for a path; `prepare` with ``config.image_recipe_3d`` when D > 1,
else ``image_recipe_2d``; channels-first ``(C, D, H, W)`` with ``C = config.image_channels`` (a grey
channel repeated for 3-channel towers); then ``(x - image_mean) / image_std`` per channel if set.
The images of sample b, in ``pixel_values[b]``, are in the order of their ``<image>`` groups in its
text: the model writes image k's vectors into the k-th group of ``<image_patch>`` tokens.

Output (a `transformers.BatchFeature`)
--------------------------------------
``input_ids`` long (B, T), ``attention_mask`` long (B, T), ``labels`` long (B, T),
``loss_weights`` float32 (B, T), ``pixel_values`` float32 (B, N, C, D, H, W) zero-padded (None when
the batch has no image), ``image_mask`` bool (B, N), ``image_sizes`` long (B, N, 3) (the prepared
(D, H, W); 0 for padding), ``image_exam_index`` long (B, N) (the part's ``exam_index``, else the
image's order in its sample). Rows are padded with the pad token (EOS if none) on the right, or on
the left for generation (``add_generation_prompt=True``) or ``padding_side="left"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from medmllm.errors import MedMLLMError
from medmllm.model.configuration import IMAGE_END, IMAGE_PATCH, IMAGE_START, SPECIAL_TOKENS, MedMLLMConfig
from medmllm.scans import Recipe, Scan, get_recipe, prepare, read

PROCESSOR_CONFIG_NAME = "processor_config.json"
IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")
P2MED_HUMAN = "Human:"
P2MED_ASSISTANT = "Assistant:"

# Config field of each image token id, in the order of SPECIAL_TOKENS.
_TOKEN_ID_FIELDS = {
    IMAGE_START: "image_start_token_id",
    IMAGE_END: "image_end_token_id",
    IMAGE_PATCH: "image_patch_token_id",
}


def add_image_tokens(tokenizer) -> dict[str, int]:
    """Add ``<image>``, ``</image>``, ``<image_patch>`` as special tokens (idempotent).

    Returns:
        ``{token: id}`` for the three tokens. The caller resizes the LLM's embeddings to
        ``len(tokenizer)`` and stores the ids in `MedMLLMConfig`.
    """
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    return {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}


@dataclass
class _Message:
    """A message with its content rendered to one string."""

    role: str
    text: str
    weight: float


@dataclass
class _ImagePart:
    image: Any  # Scan | str | Path | np.ndarray
    exam_index: int
    where: str  # "sample 0, message 1, part 2": for error messages


@dataclass
class _Sample:
    """One sample ready to tokenize: its text, learned character spans (start, end, weight), images."""

    text: str
    spans: list[tuple[int, int, float]] = field(default_factory=list)
    images: list[_ImagePart] = field(default_factory=list)


def format_exam_time(time: str | date | datetime) -> str:
    """``YYYY-MM-DD HH:MM`` for a datetime, ``YYYY-MM-DD`` for a date, a string unchanged."""
    if isinstance(time, datetime):  # before date: a datetime is a date too
        return time.strftime("%Y-%m-%d %H:%M")
    if isinstance(time, date):
        return time.strftime("%Y-%m-%d")
    return str(time)


def describe_exam(time: str | date | datetime | None, modality: str | None) -> str:
    """P2Med's exam header before an image; "" when neither field is given."""
    lines = []
    if time is not None and time != "":
        lines.append(f"[Examination time] {format_exam_time(time)} \n ")
    if modality:
        lines.append(f"[Examination modality] {modality} \n ")
    return ("".join(lines) + "[Image] ") if lines else ""


def _resolve_recipe(recipe: str | Mapping | Recipe | None) -> Recipe:
    """A config's recipe field as a `Recipe`; None = the voxels as they are (already prepared)."""
    if recipe is None:
        return Recipe(intensity="none")
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str):
        return get_recipe(recipe)
    return Recipe.from_dict(recipe)


def _span_weights(offsets: np.ndarray, spans: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Which tokens overlap a learned span, and that span's weight.

    Args:
        offsets: (T, 2) character offsets ``[start, end)`` of the tokens.
        spans: sorted, disjoint character spans ``(start, end, weight)``.

    Returns:
        ``hit`` bool (T,) and ``weight`` float32 (T,) (0 where no hit).
    """
    hit = np.zeros(len(offsets), dtype=bool)
    weight = np.zeros(len(offsets), dtype=np.float32)
    if not spans:
        return hit, weight
    starts, ends, weights = (np.array(column) for column in zip(*spans))
    # The only span a token can overlap is the first one ending after the token starts.
    index = np.searchsorted(ends, offsets[:, 0], side="right")
    inside = index < len(spans)
    index = np.where(inside, index, 0)
    hit = inside & (starts[index] < offsets[:, 1])
    weight[hit] = weights[index[hit]]
    return hit, weight


class MedMLLMProcessor:
    """Tokenizer + scan preparation for `MedMLLMForCausalLM`; see the module docstring for formats.

    Args:
        tokenizer: a fast tokenizer (offsets are needed) with the image tokens added
            (`add_image_tokens`).
        config: the model's `MedMLLMConfig` (num_latents, image_channels, recipes, mean/std, ids).
        describe_exams: write P2Med's exam header before images that have a time or a modality.
        term_weighter: per-token loss weights within learned text (see the module docstring): a
            callable ``text -> [(start, end, weight), ...]`` (sorted, disjoint) with an
            ``other_weight`` attribute, e.g. `medmllm.data.weights.TermWeighter`. None: every
            learned token weighs its message's weight. For training only; not saved.
    """

    def __init__(self, tokenizer, config: MedMLLMConfig, *, describe_exams: bool = True, term_weighter=None):
        if not getattr(tokenizer, "is_fast", False):
            raise MedMLLMError("MedMLLMProcessor needs a fast tokenizer (character offsets mark the learned tokens)")
        if config.num_latents < 1:
            raise MedMLLMError(f"config.num_latents must be >= 1, got {config.num_latents}")
        self.tokenizer = tokenizer
        self.config = config
        self.describe_exams = describe_exams
        if term_weighter is not None and not (callable(term_weighter) and hasattr(term_weighter, "other_weight")):
            raise MedMLLMError("term_weighter must be callable (text -> [(start, end, weight)]) and have an other_weight")
        self.term_weighter = term_weighter
        self.token_ids = self._image_token_ids(tokenizer, config)
        self.image_start_token_id, self.image_end_token_id, self.image_patch_token_id = (self.token_ids[token] for token in SPECIAL_TOKENS)
        self.image_text = IMAGE_START + IMAGE_PATCH * config.num_latents + IMAGE_END
        self.recipe_2d = _resolve_recipe(config.image_recipe_2d)
        self.recipe_3d = _resolve_recipe(config.image_recipe_3d)
        self.image_mean, self.image_std = self._normalisation(config)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # ----------------------------------------------------------------------------------- setup

    @staticmethod
    def _image_token_ids(tokenizer, config: MedMLLMConfig) -> dict[str, int]:
        """The tokenizer's ids of the image tokens, checked against the config's (when set)."""
        ids = {}
        for token in SPECIAL_TOKENS:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
                raise MedMLLMError(
                    f"the tokenizer has no {token} token; call medmllm.model.processor.add_image_tokens(tokenizer) "
                    "(and resize the LLM's embeddings) before building the processor"
                )
            expected = getattr(config, _TOKEN_ID_FIELDS[token])
            if expected is not None and expected != token_id:
                raise MedMLLMError(
                    f"config.{_TOKEN_ID_FIELDS[token]} is {expected} but the tokenizer maps {token} to {token_id}; "
                    "use the tokenizer saved with the model"
                )
            ids[token] = token_id
        return ids

    @staticmethod
    def _normalisation(config: MedMLLMConfig) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``image_mean`` / ``image_std`` as (C, 1, 1, 1) tensors, or None when not set."""
        if config.image_mean is None and config.image_std is None:
            return None, None
        channels = config.image_channels
        mean = config.image_mean if config.image_mean is not None else [0.0] * channels
        std = config.image_std if config.image_std is not None else [1.0] * channels
        if len(mean) != channels or len(std) != channels:
            raise MedMLLMError(f"image_mean {mean} and image_std {std} need one value per channel (image_channels={channels})")
        if any(not s > 0 for s in std):
            raise MedMLLMError(f"image_std {std} must be positive")
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float32).view(-1, 1, 1, 1)  # noqa: E731
        return as_tensor(mean), as_tensor(std)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # ------------------------------------------------------------------------------------ call

    def __call__(
        self,
        samples: Sequence[Sequence[Mapping]] | Sequence[Mapping],
        *,
        add_generation_prompt: bool = False,
        padding_side: str | None = None,
        max_length: int | None = None,
        describe_exams: bool | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """Tokenize and prepare a batch; see the module docstring for the formats and the output.

        Args:
            samples: a list of samples (each a list of messages), or one sample.
            add_generation_prompt: for inference: append the generation prompt (the conversation
                must not end with an assistant message); nothing is learned; pads on the left.
            padding_side: "right" or "left"; default right, left with ``add_generation_prompt``.
            max_length: a sample with more tokens is a `MedMLLMError` (samples are never cut).
            describe_exams: override the processor's setting for this call.
            return_tensors: only "pt".
        """
        if return_tensors != "pt":
            raise MedMLLMError(f"return_tensors={return_tensors!r} is not supported; use 'pt'")
        side = padding_side or ("left" if add_generation_prompt else "right")
        if side not in ("left", "right"):
            raise MedMLLMError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if isinstance(samples, Sequence) and samples and isinstance(samples[0], Mapping):
            samples = [samples]  # one sample
        if not samples:
            raise MedMLLMError("no samples to process")
        describe = self.describe_exams if describe_exams is None else describe_exams

        rendered = [self._render_sample(s, b, describe, add_generation_prompt) for b, s in enumerate(samples)]
        text = self._tokenize(rendered, max_length)
        images = self._image_batch([r.images for r in rendered])
        return BatchFeature({**self._pad(text, side), **images})

    def count_tokens(self, sample: Sequence[Mapping], describe_exams: bool | None = None, add_generation_prompt: bool = False) -> int:
        """Tokens of one sample (a list of messages) as the processor would write it, image
        tokens included, without reading any image: what the length-grouped sampler and the
        ``max_tokens`` filter need for a whole dataset before training starts, and what a server
        checks against the context before it queues a request. Invalid messages raise as in ``__call__``."""
        describe = self.describe_exams if describe_exams is None else describe_exams
        rendered = self._render_sample(sample, 0, describe, add_generation_prompt)
        return len(self.tokenizer(rendered.text, add_special_tokens=not self.has_chat_template)["input_ids"])

    # ------------------------------------------------------------------------------- rendering

    def _render_sample(self, sample: Sequence[Mapping], b: int, describe: bool, add_generation_prompt: bool) -> _Sample:
        """One sample -> its full text, learned spans and image parts (in text order)."""
        if isinstance(sample, Mapping) or not isinstance(sample, Sequence) or not sample:
            raise MedMLLMError(f"sample {b}: expected a non-empty list of messages")
        messages, images = [], []
        for m, message in enumerate(sample):
            role = message.get("role") if isinstance(message, Mapping) else None
            if role not in ROLES:
                raise MedMLLMError(f"sample {b}, message {m}: role must be one of {', '.join(ROLES)}, got {role!r}")
            weight = message.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
                raise MedMLLMError(f"sample {b}, message {m}: weight must be a number >= 0, got {weight!r}")
            content = self._render_content(message.get("content"), f"sample {b}, message {m}", describe, images)
            messages.append(_Message(role, content, float(weight)))
        if self.config.system_prompt is not None and messages[0].role != "system":  # the model's own
            messages.insert(0, _Message("system", self.config.system_prompt, 0.0))
        if add_generation_prompt and messages[-1].role == "assistant":
            raise MedMLLMError(f"sample {b}: add_generation_prompt=True needs a conversation that ends with a user turn")
        if self.has_chat_template:
            out = self._chat_template_text(messages, add_generation_prompt, b)
        else:
            out = self._p2med_text(messages, add_generation_prompt)
        out.images = images
        return out

    def _render_content(self, content: Any, where: str, describe: bool, images: list[_ImagePart]) -> str:
        """A message's content as one string; appends its image parts to ``images``."""
        if isinstance(content, str):
            return content
        if not isinstance(content, Sequence):
            raise MedMLLMError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")
        pieces = []
        for p, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise MedMLLMError(f"{where}, part {p}: a text part needs a string 'text'")
                pieces.append(part["text"])
            elif kind == "image":
                if "image" not in part:
                    raise MedMLLMError(f"{where}, part {p}: an image part needs an 'image' (Scan, path or array)")
                header = describe_exam(part.get("time"), part.get("modality")) if describe else ""
                pieces.append(header + self.image_text)
                exam_index = part.get("exam_index", len(images))
                images.append(_ImagePart(part["image"], int(exam_index), f"{where}, part {p}"))
            else:
                raise MedMLLMError(f"{where}, part {p}: type must be 'text' or 'image', got {kind!r}")
        return "".join(pieces)

    def _chat_template_text(self, messages: list[_Message], add_generation_prompt: bool, b: int) -> _Sample:
        """The chat template's rendering; each assistant message learned with its end-of-turn text."""
        chat = [{"role": m.role, "content": m.text} for m in messages]

        def render(msgs: list[dict], generation_prompt: bool = False) -> str:
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

        full = render(chat, add_generation_prompt)
        out = _Sample(full)
        if add_generation_prompt:  # inference: nothing to learn
            return out
        for i, message in enumerate(messages):
            if message.role != "assistant":
                continue
            before = render(chat[:i], generation_prompt=True)
            through = render(chat[: i + 1])
            if not (through.startswith(before) and full.startswith(through)):
                raise MedMLLMError(
                    f"sample {b}: the chat template is not prefix-consistent at message {i} (rendering the "
                    "conversation up to it is not a prefix of the full rendering), so its assistant tokens "
                    "cannot be located; use a template that renders earlier turns independently of later ones"
                )
            out.spans.append((len(before), len(through), message.weight))
        return out

    def _p2med_text(self, messages: list[_Message], add_generation_prompt: bool) -> _Sample:
        """P2Med's ``Human: ... <STOP> Assistant: ... <STOP>`` text; assistant text + <STOP> learned."""
        stop = self.tokenizer.eos_token
        if not stop:
            raise MedMLLMError("the tokenizer has no EOS token, which P2Med's format uses as <STOP>; set tokenizer.eos_token")
        out = _Sample("")
        pieces, length = [], 0
        for message in messages:
            if message.role == "system":
                piece = f"{message.text}\n"
            elif message.role == "user":
                piece = f"{P2MED_HUMAN} {message.text} {stop} "
            else:
                learned = f" {message.text} {stop}"
                start = length + len(P2MED_ASSISTANT)
                if not add_generation_prompt:  # inference: nothing to learn
                    out.spans.append((start, start + len(learned), message.weight))
                piece = f"{P2MED_ASSISTANT}{learned} "
            pieces.append(piece)
            length += len(piece)
        if add_generation_prompt:
            pieces.append(P2MED_ASSISTANT)
        out.text = "".join(pieces)
        return out

    # ------------------------------------------------------------------------------ tokenizing

    def _tokenize(self, rendered: list[_Sample], max_length: int | None) -> list[dict[str, np.ndarray]]:
        """One tokenizer call for the batch; per sample ``ids``, ``labels`` (int64) and ``weights`` (float32), (T,)."""
        encoding = self.tokenizer(
            [r.text for r in rendered],
            return_offsets_mapping=True,
            add_special_tokens=not self.has_chat_template,  # templates write their own BOS
        )
        image_ids = np.array([self.image_start_token_id, self.image_end_token_id, self.image_patch_token_id])
        rows = []
        for b, (sample, ids, offsets) in enumerate(zip(rendered, encoding["input_ids"], encoding["offset_mapping"])):
            ids = np.asarray(ids, dtype=np.int64)
            if max_length is not None and len(ids) > max_length:
                raise MedMLLMError(f"sample {b} has {len(ids)} tokens, more than max_length={max_length}; shorten or drop it")
            self._check_image_groups(ids, len(sample.images), b)
            offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
            hit, span_weight = _span_weights(offsets, sample.spans)
            if self.term_weighter is not None and sample.spans:
                span_weight = span_weight * self._term_factors(sample, offsets)
            learned = hit & ~np.isin(ids, image_ids)
            labels = np.where(learned, ids, IGNORE_INDEX)
            weights = np.where(learned, span_weight, 0.0).astype(np.float32)
            rows.append({"ids": ids, "labels": labels, "weights": weights})
        return rows

    def _term_factors(self, sample: _Sample, offsets: np.ndarray) -> np.ndarray:
        """Per token: the term weighter's weight where the token overlaps one of its spans in a
        learned span's text, its ``other_weight`` elsewhere; float32 (T,)."""
        spans = [
            (start + a, start + b, w)
            for start, end, _ in sample.spans
            for a, b, w in self.term_weighter(sample.text[start:end])
        ]
        hit, weight = _span_weights(offsets, spans)
        return np.where(hit, weight, np.float32(self.term_weighter.other_weight)).astype(np.float32)

    def _check_image_groups(self, ids: np.ndarray, n_images: int, b: int) -> None:
        """The text must hold exactly one token group per image part (the model pairs them in order)."""
        counts = [int(np.count_nonzero(ids == self.token_ids[t])) for t in SPECIAL_TOKENS]
        expected = [n_images, n_images, n_images * self.config.num_latents]
        if counts != expected:
            found = ", ".join(f"{c} {t}" for c, t in zip(counts, SPECIAL_TOKENS))
            raise MedMLLMError(
                f"sample {b}: {n_images} image part(s) need {expected[0]} {IMAGE_START} groups of "
                f"{self.config.num_latents} {IMAGE_PATCH}, but the tokens are {found}; put images in image "
                "parts, never image tokens in text (or the chat template dropped or repeated content)"
            )

    def _pad(self, rows: list[dict[str, np.ndarray]], side: str) -> dict[str, torch.Tensor]:
        """Stack rows into (B, T) tensors padded on ``side``."""
        if self.pad_token_id is None:
            raise MedMLLMError("the tokenizer has neither a pad nor an EOS token to pad with; set tokenizer.pad_token")
        batch, length = len(rows), max(len(r["ids"]) for r in rows)
        input_ids = np.full((batch, length), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((batch, length), dtype=np.int64)
        labels = np.full((batch, length), IGNORE_INDEX, dtype=np.int64)
        loss_weights = np.zeros((batch, length), dtype=np.float32)
        for b, row in enumerate(rows):
            n = len(row["ids"])
            cols = slice(length - n, length) if side == "left" else slice(0, n)
            input_ids[b, cols] = row["ids"]
            attention_mask[b, cols] = 1
            labels[b, cols] = row["labels"]
            loss_weights[b, cols] = row["weights"]
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "loss_weights": loss_weights}
        return {name: torch.from_numpy(a) for name, a in arrays.items()}

    # --------------------------------------------------------------------------------- images

    def _load_scan(self, image: Any, where: str) -> Scan:
        if isinstance(image, Scan):
            return image
        if isinstance(image, (str, Path)):
            return read(image)
        if isinstance(image, np.ndarray):
            voxels = image[None] if image.ndim == 2 else image  # one (H, W) image = one slice
            try:
                return Scan(voxels=np.asarray(voxels, dtype=np.float32))
            except ValueError as e:
                raise MedMLLMError(f"{where}: {e}") from None
        raise MedMLLMError(f"{where}: image must be a Scan, a path or a numpy array, got {type(image).__name__}")

    def image_tensor(self, image: Scan | str | Path | np.ndarray, where: str = "image") -> torch.Tensor:
        """One image -> float32 ``(C, D, H, W)``: read, prepare (2D or 3D recipe), channels, mean/std."""
        scan = self._load_scan(image, where)
        prepared = prepare(scan, self.recipe_3d if scan.is_3d else self.recipe_2d)
        x = torch.from_numpy(prepared.voxels)
        x = x.unsqueeze(0) if x.ndim == 3 else x.permute(3, 0, 1, 2)  # (C, D, H, W)
        channels = self.config.image_channels
        if x.shape[0] != channels:
            if x.shape[0] != 1:
                raise MedMLLMError(
                    f"{where}: the recipe gives {x.shape[0]} channels but the vision encoder takes {channels}; "
                    "use colour='grey' in the recipe"
                )
            x = x.expand(channels, -1, -1, -1)  # grey into every channel of a CLIP-like tower
        if self.image_mean is not None:
            x = (x - self.image_mean) / self.image_std
        return x

    def _image_batch(self, images: list[list[_ImagePart]]) -> dict[str, torch.Tensor | None]:
        """Every sample's images -> zero-padded ``pixel_values`` (B, N, C, D, H, W) and their masks."""
        batch, n_max = len(images), max(len(parts) for parts in images)
        image_mask = torch.zeros(batch, n_max, dtype=torch.bool)
        image_sizes = torch.zeros(batch, n_max, 3, dtype=torch.long)
        exam_index = torch.zeros(batch, n_max, dtype=torch.long)
        out = {"pixel_values": None, "image_mask": image_mask, "image_sizes": image_sizes, "image_exam_index": exam_index}
        if n_max == 0:
            return out
        tensors = [[self.image_tensor(part.image, part.where) for part in parts] for parts in images]
        shape = np.max([t.shape for row in tensors for t in row], axis=0).tolist()  # (C, D, H, W)
        pixel_values = torch.zeros(batch, n_max, *shape, dtype=torch.float32)
        for b, (row, parts) in enumerate(zip(tensors, images)):
            for k, (x, part) in enumerate(zip(row, parts)):
                _, d, h, w = x.shape
                pixel_values[b, k, :, :d, :h, :w] = x
                image_sizes[b, k] = torch.tensor([d, h, w])
                image_mask[b, k] = True
                exam_index[b, k] = part.exam_index
        out["pixel_values"] = pixel_values
        return out

    # ------------------------------------------------------------------------- decode, save, load

    def decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> str:
        """Text of ``ids`` (a list or a 1-D tensor), special tokens (image tokens, EOS...) left out."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def batch_decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """`decode` of each row of ``ids`` (B, T)."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write the tokenizer, ``processor_config.json`` and, unless one is there, ``config.json``.

        An existing ``config.json`` (written by the model's `save_pretrained`) is left as it is: it
        is the model's, and `from_pretrained` reads the image settings from it. The
        ``term_weighter`` (training only, and holding a whole vocabulary) is not saved: pass it
        to `from_pretrained` again to train on.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        settings = {"processor_class": type(self).__name__, "describe_exams": self.describe_exams}
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(settings, indent=2) + "\n")
        if not (directory / "config.json").exists():
            self.config.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> MedMLLMProcessor:
        """The processor saved in ``directory``; ``kwargs`` (e.g. ``describe_exams``, ``term_weighter``) override the saved ones."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        config = MedMLLMConfig.from_pretrained(directory)
        settings_file = directory / PROCESSOR_CONFIG_NAME
        settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
        settings.pop("processor_class", None)
        return cls(tokenizer, config, **{**settings, **kwargs})


__all__ = ["IGNORE_INDEX", "MedMLLMProcessor", "add_image_tokens", "describe_exam", "format_exam_time"]
