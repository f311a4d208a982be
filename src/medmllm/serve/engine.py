"""The generation engine: one worker thread runs every torch call; requests are batched dynamically.

    engine = GenerationEngine(model, processor, EngineConfig(max_batch_size=8))
    engine.start()
    handle = engine.submit(prompt, SamplingParams(max_tokens=64))    # in the event loop; QueueFullError when full
    async for event in handle.events():                              # str deltas, then one Completion
        ...
    engine.stop()

How a batch forms: the worker takes the oldest request, then for up to ``batch_wait_ms`` collects
queued requests with the same sampling settings (greedy, or the same temperature and top_p) until
``max_batch_size``; while requests are still being prepared by the API (inside `preparing`: JSON
parsed, images being decoded), it waits for them up to ``max_batch_wait_ms``; and while it has
fewer rows than the previous batch, up to ``refill_wait_ms``. The last rule is vLLM's scheduler
delay in small: clients whose answers just came back send their next request a few milliseconds
later, and one client whose short answer ended early would otherwise leave alone in a batch of
one (a whole generate call, ~1.5 s for the demo model) and split the next batch in two. The batch is tokenized left-padded by the processor and decoded by ONE
``model.generate`` call with ``max_new_tokens`` = the largest ``max_tokens`` of the batch. A
stopping criterion sees every new token of every row: it decodes the row's text, sends the new
text to the row's request (streaming), and ends the row at its own ``max_tokens``, at EOS, at one
of its ``stop`` strings (never sent: text that could still become a stop string is held back), when
the client went away (cancelled) or when its deadline passed. ``generate`` returns when every row
has ended.

Images: each request carries `ImageInput`s, either visual tokens already computed (a study's cached
features) or model-ready pixels; the worker encodes the missing ones in one ``encode_images`` call
per batch, stores those with a ``cache_key`` in the feature cache, and passes all of them to
``generate(image_features=...)``. The processor only renders the text: image parts reach it with a
tiny placeholder array (its pixels are never used).

The asyncio loop never waits on torch: `submit` only appends to a queue, and results come back
through ``loop.call_soon_threadsafe``. Everything torch runs in the worker under ``torch.inference_mode``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import StoppingCriteria

# What the processor prepares for an image part whose tokens the engine supplies itself.
IMAGE_PLACEHOLDER = np.zeros((1, 4, 4), dtype=np.float32)


@dataclass
class EngineConfig:
    """Batching, queueing and time limits. Every field has a default that works."""

    max_batch_size: int = 8  # rows in one generate call (1 = one request at a time)
    batch_wait_ms: float = 5.0  # how long the worker collects requests for a batch
    max_batch_wait_ms: float = 50.0  # ... and how long at most while requests are still being prepared (see `preparing`)
    refill_wait_ms: float = 50.0  # after a batch of N, how long the next one may wait to have N again (0: never)
    max_queue: int = 64  # queued requests beyond this get QueueFullError (HTTP 429)
    request_timeout_s: float = 300.0  # from submission to the last token (HTTP 504 after)
    max_new_tokens: int = 2048  # the largest max_tokens a request may ask for


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI's sampling fields. ``temperature == 0`` is greedy decoding."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one generate call."""
        return ("greedy",) if self.temperature <= 0 else ("sample", self.temperature, self.top_p)

    def generate_kwargs(self) -> dict:
        if self.temperature <= 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None}


@dataclass
class ImageInput:
    """One image of a prompt: its visual tokens (L, E), or model-ready pixels (C, D, H, W) to encode."""

    features: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    cache_key: str | None = None  # features encoded from pixels are kept in the feature cache under this key


@dataclass
class Prompt:
    """Processor messages whose image parts carry `IMAGE_PLACEHOLDER`; ``images`` in the same order."""

    messages: list[dict]
    images: list[ImageInput] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


class EngineError(Exception):
    """A request could not be answered; ``status`` is the HTTP status the API gives it."""

    status = 500


class QueueFullError(EngineError):
    status = 429


class RequestTimeoutError(EngineError):
    status = 504


class RequestCancelledError(EngineError):
    status = 499


class GenerationHandle:
    """One submitted request: its events arrive on the event loop that submitted it."""

    def __init__(self, prompt: Prompt, params: SamplingParams, timeout_s: float, loop: asyncio.AbstractEventLoop):
        self.id = uuid.uuid4().hex
        self.prompt = prompt
        self.params = params
        self.deadline = time.monotonic() + timeout_s
        self.cancelled = False
        self.finished = False
        self._loop = loop
        self._events: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        """Drop the request: removed from the queue, or its row stops at the next token."""
        self.cancelled = True

    # -- worker side (any thread) -----------------------------------------------------------------

    def _push(self, event: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _delta(self, text: str) -> None:
        if text:
            self._push(text)

    def _finish(self, completion: Completion) -> None:
        if not self.finished:
            self.finished = True
            self._push(completion)

    def _fail(self, error: EngineError) -> None:
        if not self.finished:
            self.finished = True
            self._push(error)

    # -- event-loop side ----------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[str | Completion]:
        """Text deltas (str), then the `Completion`; an `EngineError` is raised instead on failure."""
        while True:
            event = await self._events.get()
            if isinstance(event, EngineError):
                raise event
            yield event
            if isinstance(event, Completion):
                return

    async def result(self) -> Completion:
        async for event in self.events():
            if isinstance(event, Completion):
                return event
        raise EngineError("the engine ended the request without a result")


@dataclass
class _Call:
    """A function to run in the worker thread (e.g. encoding a study on upload)."""

    fn: Callable[[], Any]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class GenerationEngine:
    """Queue + dynamic batching + one torch worker thread; see the module docstring.

    Args:
        model: a `MedMLLMForCausalLM` in eval mode.
        processor: its `MedMLLMProcessor`.
        config: `EngineConfig`.
        feature_cache: optional object with ``get(key) -> Tensor | None`` and ``put(key, Tensor)``
            for visual tokens (L, E) (`medmllm.serve.studies.FeatureCache`).
    """

    def __init__(self, model, processor, config: EngineConfig | None = None, feature_cache=None):
        self.model = model
        self.processor = processor
        self.config = config or EngineConfig()
        self.feature_cache = feature_cache
        tokenizer = processor.tokenizer
        self.eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._preparing = 0  # requests received by the API and not yet submitted (images decoding ...)
        self._last_batch_size = 0  # rows of the previous batch (see `refill_wait_ms`)
        self._stats = collections.Counter()
        self._batch_sizes: collections.Counter = collections.Counter()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="medmllm-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the running batch, fail the queued requests, end the worker."""
        with self._cond:
            self._stopping = True
            pending, self._queue = list(self._queue), collections.deque()
            self._cond.notify_all()
        for item in pending:
            self._reject(item, EngineError("the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # -- submission (event loop) --------------------------------------------------------------------

    def submit(self, prompt: Prompt, params: SamplingParams, timeout_s: float | None = None) -> GenerationHandle:
        """Queue a request; raises `QueueFullError` when ``max_queue`` requests are waiting."""
        handle = GenerationHandle(prompt, params, timeout_s or self.config.request_timeout_s, asyncio.get_running_loop())
        self._enqueue(handle)
        self._stats["submitted"] += 1
        return handle

    @contextlib.contextmanager
    def preparing(self):
        """Wrap the preparation and `submit` of a request: a forming batch waits for it (up to
        ``max_batch_wait_ms``) instead of leaving without it."""
        with self._cond:
            self._preparing += 1
        try:
            yield
        finally:
            with self._cond:
                self._preparing -= 1
                self._cond.notify()

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` in the worker thread (between batches) and return its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._enqueue(_Call(fn, future, loop))
        return await future

    def _enqueue(self, item) -> None:
        with self._cond:
            if self._stopping or self._thread is None:
                raise EngineError("the engine is not running")
            if len(self._queue) >= self.config.max_queue:
                self._stats["rejected_queue_full"] += 1
                raise QueueFullError(f"the server is busy ({len(self._queue)} requests queued); retry later")
            self._queue.append(item)
            self._cond.notify()

    def stats(self) -> dict:
        """Counters since start: requests, batches, the largest batch, batch-size histogram, queue length."""
        with self._cond:
            queued = len(self._queue)
        sizes = dict(self._batch_sizes)  # one C-level copy: the worker may add a size meanwhile
        return {
            **{k: self._stats[k] for k in ("submitted", "completed", "failed", "cancelled", "timed_out", "rejected_queue_full",
                                           "batches", "generated_tokens")},
            "max_batch_size_seen": max(sizes, default=0),
            "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
            "queued": queued,
            "max_batch_size": self.config.max_batch_size,
            "max_queue": self.config.max_queue,
        }

    # -- worker -------------------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                work = self._next_work()
                if work is None:
                    return
                if isinstance(work, _Call):
                    self._run_call(work)
                else:
                    self._run_batch(work)

    def _next_work(self):
        """The next `_Call`, or a list of compatible requests (a batch); None when stopping."""
        with self._cond:
            first = None
            while first is None:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                first = self._queue.popleft()
                if isinstance(first, GenerationHandle) and self._drop_if_dead(first):
                    first = None
            if isinstance(first, _Call):
                return first
            batch, key = [first], first.params.batch_key()
            config = self.config
            now = time.monotonic()
            until = now + config.batch_wait_ms / 1000
            until_preparing = now + max(config.batch_wait_ms, config.max_batch_wait_ms) / 1000
            until_refilled = now + max(config.batch_wait_ms, config.refill_wait_ms) / 1000
            refill = min(self._last_batch_size, config.max_batch_size)
            while len(batch) < config.max_batch_size and not self._stopping:
                for item in list(self._queue):
                    if len(batch) >= config.max_batch_size:
                        break
                    if isinstance(item, GenerationHandle) and item.params.batch_key() == key:
                        self._queue.remove(item)
                        if not self._drop_if_dead(item):
                            batch.append(item)
                deadline = until
                if self._preparing:
                    deadline = max(deadline, until_preparing)
                if len(batch) < refill:
                    deadline = max(deadline, until_refilled)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or len(batch) >= config.max_batch_size:
                    break
                self._cond.wait(remaining)
            self._last_batch_size = len(batch)
            return batch

    def _drop_if_dead(self, handle: GenerationHandle) -> bool:
        """Fail a cancelled or expired request instead of running it."""
        if handle.cancelled:
            self._reject(handle, RequestCancelledError("cancelled"))
            return True
        if time.monotonic() > handle.deadline:
            self._reject(handle, RequestTimeoutError("the request timed out while queued"))
            return True
        return False

    def _reject(self, item, error: EngineError) -> None:
        if isinstance(item, _Call):
            try:
                item.loop.call_soon_threadsafe(_set_exception, item.future, error)
            except RuntimeError:  # its loop is closed
                pass
            return
        self._stats[{RequestCancelledError: "cancelled", RequestTimeoutError: "timed_out"}.get(type(error), "failed")] += 1
        item._fail(error)

    def _run_call(self, call: _Call) -> None:
        try:
            outcome = (_set_result, call.fn())
        except Exception as e:
            outcome = (_set_exception, e)
        try:
            call.loop.call_soon_threadsafe(outcome[0], call.future, outcome[1])
        except RuntimeError:  # the caller's loop is closed: nobody waits for the result
            pass

    def _run_batch(self, batch: list[GenerationHandle]) -> None:
        try:
            self._encode_missing(batch)
            inputs = self.processor([h.prompt.messages for h in batch], add_generation_prompt=True)
            features = [image.features for h in batch for image in h.prompt.images]
            prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
            rows = _RowStopper(batch, prompt_tokens, self.processor.tokenizer, self.eos_ids, self._stats)
            self._batch_sizes[len(batch)] += 1
            self._stats["batches"] += 1
            self.model.generate(
                input_ids=inputs["input_ids"].to(self.model.device),
                attention_mask=inputs["attention_mask"].to(self.model.device),
                image_mask=inputs["image_mask"].to(self.model.device) if features else None,
                image_exam_index=inputs["image_exam_index"].to(self.model.device) if features else None,
                image_features=torch.stack(features).to(self.model.device) if features else None,
                max_new_tokens=max(h.params.max_tokens for h in batch),
                stopping_criteria=[rows],
                pad_token_id=self.processor.pad_token_id,
                eos_token_id=sorted(self.eos_ids) or None,
                **batch[0].params.generate_kwargs(),
            )
            rows.finish()
        except Exception as e:  # a bug or a bad input: every request of the batch gets the error
            self._stats["failed"] += sum(not h.finished for h in batch)
            for handle in batch:
                handle._fail(EngineError(f"generation failed: {type(e).__name__}: {e}"))

    def _encode_missing(self, batch: list[GenerationHandle]) -> None:
        """Fill in every image's features: from the cache, else encoded together in one call."""
        missing: dict[Any, list[ImageInput]] = {}
        for handle in batch:
            for image in handle.prompt.images:
                if image.features is not None:
                    continue
                cached = self.feature_cache.get(image.cache_key) if (self.feature_cache and image.cache_key) else None
                if cached is not None:
                    image.features = cached
                else:  # the same study twice in one batch is encoded once
                    missing.setdefault(image.cache_key or id(image), []).append(image)
        if not missing:
            return
        groups = list(missing.values())
        features = encode_pixels(self.model, [group[0].pixels for group in groups])
        for group, tokens in zip(groups, features):
            for image in group:
                image.features = tokens
            if self.feature_cache is not None and group[0].cache_key:
                self.feature_cache.put(group[0].cache_key, tokens)


def encode_pixels(model, pixels: list[torch.Tensor]) -> torch.Tensor:
    """Visual tokens (n, L, E) of model-ready images, each (C, D, H, W), without exam embedding."""
    shape = np.max([p.shape for p in pixels], axis=0).tolist()
    batch = torch.zeros(1, len(pixels), *shape, dtype=torch.float32)
    sizes = torch.zeros(1, len(pixels), 3, dtype=torch.long)
    for k, p in enumerate(pixels):
        _, d, h, w = p.shape
        batch[0, k, :, :d, :h, :w] = p
        sizes[0, k] = torch.tensor([d, h, w])
    device = next(model.parameters()).device
    mask = torch.ones(1, len(pixels), dtype=torch.bool, device=device)
    return model.encode_images(batch.to(device), mask, sizes.to(device))


class _RowStopper(StoppingCriteria):
    """Per-row bookkeeping called by ``generate`` after every new token (see the module docstring)."""

    def __init__(self, handles: list[GenerationHandle], prompt_tokens: list[int], tokenizer, eos_ids: set[int], stats: collections.Counter):
        self.handles = handles
        self.prompt_tokens = prompt_tokens
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        n = len(handles)
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.sent = [0] * n  # characters already sent
        self.done = [False] * n
        self.stats = stats  # the engine's counters, updated before a result is handed back

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tokens = input_ids[:, -1].tolist()
        now = time.monotonic()
        for b, (handle, token) in enumerate(zip(self.handles, tokens)):
            if self.done[b]:
                continue
            if handle.cancelled:
                self._end(b, error=RequestCancelledError("cancelled"), outcome="cancelled")
                continue
            if now > handle.deadline:
                self._end(b, error=RequestTimeoutError("the request timed out while generating"), outcome="timed_out")
                continue
            self.stats["generated_tokens"] += 1
            if token in self.eos_ids:
                self._end(b, "stop", counted=1)
                continue
            self.ids[b].append(token)
            self._advance(b)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _text(self, b: int) -> str:
        return self.tokenizer.decode(self.ids[b], skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _advance(self, b: int) -> None:
        params = self.handles[b].params
        text = self._text(b)
        hits = [i for i in (text.find(s) for s in params.stop) if i >= 0]
        if hits:
            self._send(b, text[: min(hits)])
            self._end(b, "stop")
        elif len(self.ids[b]) >= params.max_tokens:
            self._send(b, text)
            self._end(b, "length")
        elif not text.endswith("\ufffd"):  # not in the middle of a multi-byte character
            hold = max((len(s) for s in params.stop), default=1) - 1  # could still become a stop string
            self._send(b, text[: len(text) - hold])

    def _send(self, b: int, text: str) -> None:
        if len(text) > self.sent[b]:
            self.handles[b]._delta(text[self.sent[b]:])
            self.sent[b] = len(text)

    def _end(self, b: int, reason: str = "", *, counted: int = 0, error: EngineError | None = None, outcome: str = "completed") -> None:
        self.done[b] = True
        self.stats[outcome] += 1
        handle = self.handles[b]
        if error is not None:
            handle._fail(error)
            return
        text = self._final_text(b)
        handle._finish(Completion(text, reason, int(self.prompt_tokens[b]), len(self.ids[b]) + counted))

    def _final_text(self, b: int) -> str:
        """The row's whole text (cut at a stop string); sends what is still held back."""
        text = self._text(b)
        hits = [i for i in (text.find(s) for s in self.handles[b].params.stop) if i >= 0]
        if hits:
            text = text[: min(hits)]
        self._send(b, text)
        return text

    def finish(self) -> None:
        """Rows still open when generate returned reached the batch's max_new_tokens."""
        for b in range(len(self.handles)):
            if not self.done[b]:
                self._end(b, "length")


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
