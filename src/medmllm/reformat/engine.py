"""The reformat engine: image-text records -> PubMedVision-style VQA samples through a vision LLM.

    from medmllm.reformat.engine import EngineConfig, reformat_file
    summary = reformat_file("pairs.jsonl", "vqa.jsonl", EngineConfig(endpoint="http://localhost:8000/v1", model="qwen2-vl"))

Per record (one or more images + context text) and ``mode`` (Table 12 of the paper):

- ``mllm``: images + Figure 4's prompt with the context and a scenario (Appendix D) -> JSON
  ``{"Image_description", "QA-query", "QA-answer"}`` -> two samples: ``alignment-vqa`` (a question
  of Appendix C, answered by the description) and ``vqa`` (the generated question and answer).
- ``llm``: Figure 19's text-only prompt; ``distill``: the images and "Please provide a description
  of the given medical image."; ``native``: the context itself, no call. Each gives one
  ``caption`` sample with that question, as the paper's 60K comparison datasets.

The scenario and the alignment question are drawn from ``random.Random(sha256(seed, record id))``:
the same seed gives the same draw for a record whatever the order, concurrency or resume.

Engineering: ``concurrency`` requests at a time and at most ``rate_limit`` starts per second;
429, 408, 409, 5xx, timeouts and connection errors are retried with exponential back-off and jitter
(honouring Retry-After) up to ``max_attempts``; other 4xx fail the record; 401/403/404 end the run
(the key or model is wrong for every record). A malformed answer is repaired (code fences, prose
around the JSON, trailing commas, raw newlines in strings, a truncated end), else sent back with a
correction up to ``parse_retries`` times. Valid answers go into a SQLite (WAL) cache keyed by
sha256(prompt version, model, mode, scenario, context, sha256 of each image's bytes): a re-run, or
a run resumed after a crash, pays for no answer twice. The output is written record by record
(all samples of a record in one write, flushed); on start an existing output is read back, records
cut short by a crash are dropped, and only the records not yet written are done, so the output ends
with exactly one set of samples per kept input, in input order. Every dropped or failed record is
counted by reason in the summary (``OUT.summary.json``) and listed in ``OUT.rejected.jsonl``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medmllm.errors import MedMLLMError, first_line
from medmllm.reformat.prompts import (
    DESCRIPTION_QUERY,
    MODES,
    MULTI_IMAGE_QUESTIONS,
    PROMPT_VERSION,
    SCENARIOS,
    SINGLE_IMAGE_QUESTIONS,
    llm_prompt,
    mllm_prompt,
)

ANSWER_KEYS = ("Image_description", "QA-query", "QA-answer")
RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx
FATAL_STATUSES = {401: "the API key was refused", 403: "access was refused", 404: "the endpoint or model was not found"}
IMAGE_MIME = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


# ------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Record:
    """One input: images (absolute paths) and the context text (caption + inline mentions)."""

    id: str
    image_paths: tuple[Path, ...]
    context: str
    source: str | None = None


def read_records(path: str | Path) -> tuple[list[Record], list[tuple[str, str]]]:
    """Records of a JSONL file, and (id, reason) of the rows left out (``image-missing``,
    ``no-image``, ``empty-context``, ``duplicate-id``: the first row of an id is kept).

    A row is ``{"id", "images": [paths relative to the file], "context", "source"?}`` or a medmllm
    `Sample` (it has ``turns``): its images, and the text of its assistant turns as the context (all
    turns' text if it has none). A row that is neither is a `MedMLLMError` naming FILE:LINE.
    """
    from medmllm.data.io import read_jsonl
    from medmllm.data.schema import parse_sample

    path = Path(path)
    if not path.is_file():
        raise MedMLLMError(f"{path}: not found")
    root = path.resolve().parent
    records: list[Record] = []
    dropped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        if "turns" in row:
            sample = parse_sample(json.dumps(row), where)
            texts = [t.text for t in sample.turns if t.role == "assistant"] or [t.text for t in sample.turns]
            rid, images, context, source = sample.id, [i.path for i in sample.images], "\n".join(t for t in texts if t.strip()), sample.source
        else:
            rid, images, context, source = row.get("id"), row.get("images"), row.get("context"), row.get("source")
            if not isinstance(rid, str) or not rid.strip():
                raise MedMLLMError(f"{where}: 'id' must be a non-empty string")
            if not isinstance(images, list) or not all(isinstance(p, str) and p.strip() for p in images):
                raise MedMLLMError(f"{where}: 'images' must be a list of image paths")
            if not isinstance(context, str):
                raise MedMLLMError(f"{where}: 'context' must be a string (caption and inline mentions)")
            if source is not None and not isinstance(source, str):
                raise MedMLLMError(f"{where}: 'source' must be a string")
        if rid in seen:
            dropped.append((rid, "duplicate-id"))
            continue
        seen.add(rid)
        paths = tuple(p if p.is_absolute() else root / p for p in map(Path, images))
        reason = "no-image" if not paths else "empty-context" if not context.strip() else None
        if reason is None and not all(p.is_file() for p in paths):
            reason = "image-missing"
        if reason is not None:
            dropped.append((rid, reason))
        else:
            records.append(Record(rid, paths, context.strip(), source))
    return records, dropped



# ------------------------------------------------------------------------------------ the answers


class AnswerError(ValueError):
    """The model's answer cannot be used; the message says why (it is sent back to the model)."""


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_REFERENCE_LEAK = re.compile(r"<reference>|reference (?:information|text)|the provided (?:reference|context)", re.IGNORECASE)


def repair_json(text: str) -> str:
    """Best-effort fix of a JSON object as LLMs break it: from the first "{", curly quotes made
    straight, raw newlines and tabs inside strings escaped, trailing commas removed, and an
    unterminated string, array or object closed (a reply cut by max_tokens)."""
    start = text.find("{")
    text = text[start:] if start >= 0 else text
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    out, stack, in_string, escaped = [], [], False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            elif ch in "\n\r\t":
                ch = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not stack:
                break  # the object is complete; what follows is prose
            stack.pop()
            if not stack:
                out.append(ch)
                break
        out.append(ch)
    if in_string:
        out.append("\\" if escaped else "")
        out.append('"')
    fixed = "".join(out).rstrip().rstrip(",:")
    fixed += "".join(reversed(stack))
    return _TRAILING_COMMA.sub(r"\1", fixed)


def _candidates(text: str):
    """JSON objects found in ``text``: in code fences first, then anywhere; then the repaired text."""
    decoder = json.JSONDecoder()
    chunks = [*_FENCE.findall(text), text]
    for chunk in chunks:
        for m in re.finditer(r"\{", chunk):
            try:
                value, _ = decoder.raw_decode(chunk, m.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value
    for chunk in chunks:
        try:
            value = json.loads(repair_json(chunk))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def parse_mllm_answer(text: str) -> dict[str, str]:
    """Figure 4's JSON answer -> ``{"Image_description", "QA-query", "QA-answer"}``, each a
    non-empty string (keys matched ignoring case, spaces, "-" and "_"). Raises `AnswerError`."""
    text = _THINK.sub("", text or "")
    wanted = {_key(k): k for k in ANSWER_KEYS}
    best: dict | None = None
    for obj in _candidates(text):
        found = {wanted[_key(k)]: v for k, v in obj.items() if _key(k) in wanted}
        if len(found) == len(ANSWER_KEYS):
            best = found
            break
    if best is None:
        raise AnswerError(f"no JSON object with the keys {', '.join(ANSWER_KEYS)} was found")
    for key in ANSWER_KEYS:
        if not isinstance(best[key], str) or not best[key].strip():
            raise AnswerError(f'"{key}" must be a non-empty string')
    answer = {k: best[k].strip() for k in ANSWER_KEYS}
    if any(_REFERENCE_LEAK.search(v) for v in answer.values()):
        raise AnswerError("the reply mentions the reference text, which it must not")
    return answer


def parse_text_answer(text: str) -> dict[str, str]:
    """A free-text description (modes llm and distill) -> ``{"caption": text}``."""
    text = _THINK.sub("", text or "").strip()
    if not text:
        raise AnswerError("the reply is empty")
    return {"caption": text}


def correction_message(error: AnswerError) -> str:
    return (f"Your reply could not be used: {error}. Reply again with only the JSON object "
            '{"Image_description": ..., "QA-query": ..., "QA-answer": ...}, each value a string.')


# ------------------------------------------------------------------------------------------ cache


class AnswerCache:
    """Valid answers by content key, in SQLite (WAL: a reader never blocks the writer).

    Table ``answers (key PRIMARY KEY, record_id, mode, model, prompt_version, answer JSON,
    prompt_tokens, completion_tokens, created)``. Failed calls are not cached: a re-run tries again.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, record_id TEXT, mode TEXT, model TEXT, prompt_version TEXT, "
                "answer TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)")
            self.db.commit()
        except sqlite3.DatabaseError as e:
            raise MedMLLMError(f"{self.path}: not a usable cache database ({e}); delete it or give another --cache") from None

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, record_id: str, mode: str, model: str, answer: dict, usage: tuple[int, int]) -> None:
        self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, record_id, mode, model, PROMPT_VERSION, json.dumps(answer), usage[0], usage[1], time.time()))
        self.db.commit()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def cache_key(record: Record, image_bytes: Sequence[bytes], mode: str, model: str, scenario: str | None) -> str:
    """sha256 of what decides the answer: prompt version, model, mode, scenario, context, image bytes."""
    parts = {"prompt_version": PROMPT_VERSION, "model": model, "mode": mode, "scenario": scenario, "context": record.context,
             "images": [hashlib.sha256(b).hexdigest() for b in image_bytes]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------- config


@dataclass
class EngineConfig:
    """How to call the model. ``endpoint``/``model`` are not needed for mode ``native``."""

    endpoint: str | None = None  # OpenAI-compatible base URL, e.g. http://localhost:8000/v1
    model: str | None = None
    mode: str = "mllm"
    api_key: str | None = None  # default $OPENAI_API_KEY, else "EMPTY"
    concurrency: int = 8
    rate_limit: float | None = None  # request starts per second; None: no limit
    max_attempts: int = 6  # HTTP attempts per call (429/5xx/timeouts retried)
    parse_retries: int = 2  # corrections sent after an unusable answer
    timeout: float = 120.0  # seconds per request
    backoff: float = 1.0  # first back-off in seconds, doubled per attempt, jittered
    max_backoff: float = 60.0
    max_tokens: int = 1024
    temperature: float = 0.7
    seed: int = 0
    price_per_1k_in: float | None = None  # USD per 1,000 prompt tokens
    price_per_1k_out: float | None = None
    cache: str | Path | None = None  # default OUT.cache.sqlite

    def check(self) -> None:
        if self.mode not in MODES:
            raise MedMLLMError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode != "native" and not (self.endpoint and self.model):
            raise MedMLLMError(f"mode {self.mode!r} calls a model: give --endpoint URL and --model NAME")
        if self.concurrency < 1 or self.max_attempts < 1 or self.parse_retries < 0:
            raise MedMLLMError("--concurrency and the attempts must be >= 1, the parse retries >= 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise MedMLLMError("--rate-limit must be > 0 requests per second")


@dataclass
class Stats:
    """What a run did and cost; `summary` is the JSON written beside the output."""

    requests: int = 0  # HTTP attempts
    completions: int = 0  # answers received (each paid)
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    missing_usage: int = 0  # answers without a usage block
    retries: Counter = field(default_factory=Counter)  # reason -> retried attempts
    failed: Counter = field(default_factory=Counter)  # reason -> records that failed
    filtered: Counter = field(default_factory=Counter)  # reason -> records left out before any call


# ----------------------------------------------------------------------------------------- client


class RequestFailed(Exception):
    """One record's call failed for good; ``reason`` is its summary key (http-400, http-429, timeout, ...)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RateLimiter:
    """At most ``per_second`` starts per second, evenly spaced (no burst)."""

    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval  # claimed before sleeping: one event loop, no lock needed
        if start > now:
            await asyncio.sleep(start - now)


class ChatClient:
    """``AsyncOpenAI`` with the SDK's own retries off (max_retries=0): the retries here are counted."""

    def __init__(self, config: EngineConfig, stats: Stats):
        from openai import AsyncOpenAI

        self.config, self.stats = config, stats
        self.client = AsyncOpenAI(base_url=config.endpoint, api_key=config.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                                  timeout=config.timeout, max_retries=0)
        self.limiter = RateLimiter(config.rate_limit)
        self.jitter = random.Random(config.seed)

    async def complete(self, messages: list[dict]) -> tuple[str, tuple[int, int]]:
        """(the answer's text, (prompt, completion) tokens); counts them in the stats; raises
        `RequestFailed`, or `MedMLLMError` on 401/403/404."""
        import openai

        reason = "unknown"
        for attempt in range(self.config.max_attempts):
            await self.limiter.wait()
            self.stats.requests += 1
            retry_after = None
            try:
                response = await self.client.chat.completions.create(
                    model=self.config.model, messages=messages, max_tokens=self.config.max_tokens, temperature=self.config.temperature)
            except openai.APIStatusError as e:
                status = e.status_code
                if status in FATAL_STATUSES:
                    raise MedMLLMError(f"{self.config.endpoint} answered HTTP {status} ({FATAL_STATUSES[status]}): {first_line(e, 160)}") from None
                reason = f"http-{status}"
                if status not in RETRY_STATUSES and status < 500:
                    raise RequestFailed(reason) from None
                retry_after = _retry_after(e.response)
            except openai.APITimeoutError:
                reason = "timeout"
            except openai.APIConnectionError:
                reason = "connection-error"
            except openai.APIError:  # e.g. a 200 whose body is not a chat completion
                reason = "bad-response"
            else:
                self.stats.completions += 1
                usage = getattr(response, "usage", None)
                tokens = (usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage is not None else (0, 0)
                self.stats.missing_usage += usage is None
                self.stats.prompt_tokens += tokens[0]
                self.stats.completion_tokens += tokens[1]
                choices = response.choices or []
                return ((choices[0].message.content or "") if choices else ""), tokens
            if attempt + 1 < self.config.max_attempts:
                self.stats.retries[reason] += 1
                delay = min(self.config.max_backoff, self.config.backoff * 2**attempt) * (0.5 + 0.5 * self.jitter.random())
                await asyncio.sleep(min(self.config.max_backoff, retry_after) if retry_after is not None else delay)
        raise RequestFailed(reason)

    async def close(self) -> None:
        await self.client.close()


def _retry_after(response) -> float | None:
    try:
        value = float(response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if value >= 0 else None


# ---------------------------------------------------------------------------------------- samples


def draw(record_id: str, seed: int, n_images: int) -> tuple[str, str]:
    """(scenario name, alignment question) for a record: a function of (seed, record id) only."""
    rng = random.Random(hashlib.sha256(f"{seed}\0{record_id}".encode()).digest())
    scenario = rng.choice(SCENARIOS)[0]
    question = rng.choice(MULTI_IMAGE_QUESTIONS if n_images > 1 else SINGLE_IMAGE_QUESTIONS)
    return scenario, question


def sample_ids(record_id: str, mode: str) -> tuple[str, ...]:
    """The ids of the samples a record gives: ``ID/alignment`` + ``ID/instruction``, or ``ID/caption``."""
    return (f"{record_id}/alignment", f"{record_id}/instruction") if mode == "mllm" else (f"{record_id}/caption",)


def build_samples(record: Record, answer: dict[str, str], config: EngineConfig, out_dir: Path) -> list:
    """The `Sample`s of one record (see the module docstring); image paths relative to ``out_dir``."""
    from medmllm.data.schema import ImagePart, ImageRef, Sample, TextPart, Turn, text_turn

    scenario, question = draw(record.id, config.seed, len(record.image_paths))
    images = [ImageRef(path=os.path.relpath(p, out_dir)) for p in record.image_paths]
    meta = {"record_id": record.id, "mode": config.mode, "model": config.model if config.mode != "native" else None,
            "prompt_version": PROMPT_VERSION, "seed": config.seed}
    if record.source:
        meta["input_source"] = record.source

    def sample(suffix: str, task: str, q: str, a: str, **extra) -> Sample:
        user = Turn(role="user", content=[*(ImagePart(image=i) for i in range(len(images))), TextPart(text=q)])
        return Sample(id=f"{record.id}/{suffix}", task=task, turns=[user, text_turn("assistant", a)], images=images,
                      targets={"answer": a}, source=f"reformat:{config.mode}", meta={**meta, **extra})

    if config.mode == "mllm":
        return [sample("alignment", "alignment-vqa", question, answer["Image_description"], scenario=scenario),
                sample("instruction", "vqa", answer["QA-query"], answer["QA-answer"], scenario=scenario)]
    return [sample("caption", "caption", DESCRIPTION_QUERY, answer["caption"])]


def _image_part(data: bytes) -> dict:
    """An image as a data URI part; PNG and JPEG as they are, anything else converted to PNG."""
    mime = next((m for magic, m in IMAGE_MIME.items() if data.startswith(magic)), None)
    if mime is None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        with Image.open(io.BytesIO(data)) as image:
            image.save(buffer, format="PNG")
        data, mime = buffer.getvalue(), "image/png"
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


def build_messages(record: Record, image_bytes: Sequence[bytes], mode: str, scenario: str) -> list[dict]:
    """The chat request of one record in ``mode`` (not ``native``)."""
    if mode == "llm":
        return [{"role": "user", "content": llm_prompt(record.context)}]
    text = mllm_prompt(scenario, record.context) if mode == "mllm" else DESCRIPTION_QUERY
    return [{"role": "user", "content": [*(_image_part(b) for b in image_bytes), {"type": "text", "text": text}]}]


# -------------------------------------------------------------------------------------------- run


class Reformatter:
    """Answers for records: cache first, else the model (with parse retries), then the cache."""

    def __init__(self, config: EngineConfig, cache: AnswerCache | None, stats: Stats):
        self.config, self.cache, self.stats = config, cache, stats
        self.client = ChatClient(config, stats) if config.mode != "native" else None
        self.parse = parse_mllm_answer if config.mode == "mllm" else parse_text_answer

    async def answer(self, record: Record) -> dict[str, str]:
        if self.config.mode == "native":
            return {"caption": record.context}
        try:
            image_bytes = await asyncio.to_thread(lambda: [p.read_bytes() for p in record.image_paths])
        except OSError:
            raise RequestFailed("image-unreadable") from None
        scenario, _ = draw(record.id, self.config.seed, len(image_bytes))
        key = cache_key(record, image_bytes, self.config.mode, self.config.model, scenario if self.config.mode == "mllm" else None)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        try:
            messages = await asyncio.to_thread(build_messages, record, image_bytes, self.config.mode, scenario)
        except (OSError, ValueError):  # PIL: not an image it can convert
            raise RequestFailed("image-unreadable") from None
        spent = [0, 0]  # this record's tokens, all attempts
        for attempt in range(self.config.parse_retries + 1):
            text, tokens = await self.client.complete(messages)
            spent = [spent[0] + tokens[0], spent[1] + tokens[1]]
            try:
                answer = self.parse(text)
                break
            except AnswerError as e:
                if attempt == self.config.parse_retries:
                    raise RequestFailed("parse-error") from None
                self.stats.retries["parse-error"] += 1
                if self.config.mode == "mllm":  # the JSON answer gets a correction; a free-text one is simply asked again
                    messages = [*messages, {"role": "assistant", "content": text}, {"role": "user", "content": correction_message(e)}]
        if self.cache is not None:
            self.cache.put(key, record.id, self.config.mode, self.config.model, answer, (spent[0], spent[1]))
        return answer

    async def close(self) -> None:
        if self.client:
            await self.client.close()


def _existing_output(out_path: Path, wanted: dict[str, Record], config: EngineConfig) -> dict[str, list[str]]:
    """{record id: its lines} of the records an earlier run wrote completely; lines of records cut
    short by a crash, or no longer wanted, are dropped. Refuses an output of another mode or model."""
    from medmllm.data.schema import Sample

    if not out_path.is_file():
        return {}
    lines: dict[str, list[str]] = {}
    with out_path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                sample = Sample.from_json(line)
            except ValueError:
                continue  # the line a crash cut short
            meta = sample.meta
            if (meta.get("mode"), meta.get("prompt_version")) != (config.mode, PROMPT_VERSION) or (
                    config.mode != "native" and meta.get("model") != config.model):
                raise MedMLLMError(f"{out_path} holds samples of another run (mode {meta.get('mode')}, model {meta.get('model')}, "
                                   f"prompt {meta.get('prompt_version')}); give another -o or delete it")
            lines.setdefault(str(meta.get("record_id")), []).append(line.rstrip("\n"))
    done = {}
    for rid, record_lines in lines.items():
        ids = [json.loads(x)["id"] for x in record_lines]
        if rid in wanted and sorted(ids) == sorted(sample_ids(rid, config.mode)):
            done[rid] = record_lines
    return done


def _write_lines(path: Path, lines: list[str]) -> None:
    from medmllm.scans.write import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def _sidecar(out_path: Path, suffix: str) -> Path:
    return out_path.with_name(out_path.name.removesuffix(".jsonl") + suffix)


def reformat_file(in_path: str | Path, out_path: str | Path, config: EngineConfig, filters=None, *,
                  progress: Callable[[int, int], None] | None = None, embed=None) -> dict:
    """Reformat every record of ``in_path`` into ``out_path`` (resuming it); returns the summary.

    ``filters``: a `medmllm.reformat.filters.FilterConfig` (None: no pre-filter). ``progress(done,
    total)`` is called after each record. Writes ``OUT.summary.json``, ``OUT.rejected.jsonl``
    and the cache (``OUT.cache.sqlite`` unless ``config.cache``).
    """
    from medmllm.reformat.filters import prefilter

    config.check()
    started = time.monotonic()
    in_path, out_path = Path(in_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    records, rejected = read_records(in_path)
    inputs = len(records) + len(rejected)
    if filters is not None:
        records, dropped = prefilter(records, filters, embed=embed)
        rejected += list(dropped.items())
    for _, reason in rejected:
        stats.filtered[reason] += 1
    wanted = {r.id: r for r in records}
    done = _existing_output(out_path, wanted, config)
    _write_lines(out_path, [line for lines in done.values() for line in lines])  # drop what a crash cut short
    resumed = len(done)
    todo = [r for r in records if r.id not in done]
    cache = AnswerCache(config.cache or _sidecar(out_path, ".cache.sqlite")) if config.mode != "native" else None
    failures: list[tuple[str, str]] = []
    try:
        asyncio.run(_run(todo, config, cache, stats, out_path, done, failures, progress, resumed, len(records)))
    finally:
        if cache is not None:
            cache.close()
    order = {r.id: i for i, r in enumerate(records)}
    _write_lines(out_path, [line for rid in sorted(done, key=order.__getitem__) for line in done[rid]])  # input order
    for _, reason in failures:
        stats.failed[reason] += 1
    from medmllm.data.io import write_jsonl

    write_jsonl(_sidecar(out_path, ".rejected.jsonl"),
                [{"id": rid, "stage": "filter", "reason": reason} for rid, reason in rejected]
                + [{"id": rid, "stage": "reformat", "reason": reason} for rid, reason in failures])
    summary = _summary(config, stats, inputs=inputs, kept=len(records), written=len(done), resumed=resumed,
                       seconds=time.monotonic() - started, out_path=out_path)
    _sidecar(out_path, ".summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


async def _run(todo: list[Record], config: EngineConfig, cache: AnswerCache | None, stats: Stats, out_path: Path,
               done: dict[str, list[str]], failures: list, progress, resumed: int, total: int) -> None:
    reformatter = Reformatter(config, cache, stats)
    queue: asyncio.Queue[Record] = asyncio.Queue()
    for record in todo:
        queue.put_nowait(record)
    out_dir = out_path.resolve().parent
    finished = resumed
    if progress:
        progress(finished, total)
    with out_path.open("a", encoding="utf-8") as out:

        async def worker() -> None:
            nonlocal finished
            while True:
                try:
                    record = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    answer = await reformatter.answer(record)
                    lines = [s.to_json() for s in build_samples(record, answer, config, out_dir)]
                except RequestFailed as e:
                    failures.append((record.id, e.reason))
                else:
                    out.write("".join(line + "\n" for line in lines))  # one write per record, then flushed: a crash loses at most this record
                    out.flush()
                    done[record.id] = lines
                finished += 1
                if progress:
                    progress(finished, total)

        tasks = [asyncio.create_task(worker()) for _ in range(min(config.concurrency, max(1, len(todo))))]
        try:
            finished_tasks, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished_tasks:
                if task.exception() is not None:
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await reformatter.close()


def _summary(config: EngineConfig, stats: Stats, *, inputs: int, kept: int, written: int, resumed: int, seconds: float, out_path: Path) -> dict:
    cost = None
    if config.price_per_1k_in is not None or config.price_per_1k_out is not None:
        cost = round(stats.prompt_tokens / 1000 * (config.price_per_1k_in or 0) + stats.completion_tokens / 1000 * (config.price_per_1k_out or 0), 6)
    return {
        "output": str(out_path), "mode": config.mode, "model": config.model if config.mode != "native" else None,
        "prompt_version": PROMPT_VERSION, "seed": config.seed,
        "inputs": inputs, "filtered": dict(sorted(stats.filtered.items())), "kept": kept,
        "records_written": written, "samples_written": written * len(sample_ids("x", config.mode)), "resumed": resumed,
        "failed": dict(sorted(stats.failed.items())),
        "requests": stats.requests, "completions": stats.completions, "cache_hits": stats.cache_hits,
        "retries": dict(sorted(stats.retries.items())),
        "tokens": {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens, "missing_usage": stats.missing_usage},
        "cost_usd": cost, "seconds": round(seconds, 2),
    }
