"""The LLM judge: P2Med-MLLM's 5-point accuracy / comprehensiveness scoring of generated records.

    from medmllm.eval.judge import Judge, OpenAIChat, judge_file
    judge = Judge(OpenAIChat("http://localhost:8000/v1", "qwen2.5-7b-instruct"), "p2med/report-xray")
    row = judge.judge_sample("cxr-1", prediction_text, reference_text)
    # {"id": "cxr-1", "task": ..., "judge_model": ..., "prompt_version": ..., "findings.accuracy": 4,
    #  "impression.accuracy": 3, "impression.comprehensiveness": 3, "reasons": {...}, "failures": {}, ...}

A sample's text is split into the task's components with the task template's parser
(`medmllm.data.templates`, e.g. `parse_report` for "[Findings]" / "[Impression]"); each component is
judged once per criterion (prompts: `medmllm.eval.judge_prompts`). The judge must answer one JSON
object {"reason": str, "score": 1..5}; `parse_judgement` finds it in code fences or prose. An answer
that cannot be read is sent back with a correction message, up to ``retries`` times; after that the
criterion is a counted failure (null score, the error in ``failures``), never a silent number.

Judges: `OpenAIChat` (any OpenAI-compatible endpoint, `medmllm serve` included, through the
``openai`` client; temperature 0) and `TransformersChat` (a local causal LM folder; its chat
template; greedy decoding). Rows are plain JSON with one number per "component.criterion", so
`medmllm eval compare` compares two judged files directly.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from medmllm.errors import MedMLLMError, first_line
from medmllm.eval.judge_prompts import PROMPT_VERSION, TASKS, Component, JudgeTask, build_messages, correction_message

DEFAULT_RETRIES = 2


# ---------------------------------------------------------------------------------------- parsing


class JudgeOutputError(ValueError):
    """The judge's answer holds no valid {"reason", "score"} object; the message says why (sent back to it)."""


@dataclass(frozen=True)
class Judgement:
    score: int  # 1..5
    reason: str


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def _json_objects(text: str) -> Iterable[dict]:
    """The JSON objects in ``text``: inside code fences first, then anywhere in the prose."""
    decoder = json.JSONDecoder()
    for chunk in [*_FENCE.findall(text), text]:
        for start in (m.start() for m in re.finditer(r"\{", chunk)):
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value


def parse_judgement(text: str) -> Judgement:
    """The first JSON object with a "score" in the judge's answer, validated: an integer 1..5 (4, 4.0
    or "4") and a non-empty string "reason". Raises `JudgeOutputError` saying what is wrong."""
    text = _THINK.sub("", text or "")
    found = next((obj for obj in _json_objects(text) if "score" in obj), None)
    if found is None:
        raise JudgeOutputError("no JSON object with a \"score\" was found")
    score = found["score"]
    if isinstance(score, str) and score.strip().lstrip("+-").isdigit():
        score = int(score.strip())
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not float(score).is_integer():
        raise JudgeOutputError(f"\"score\" must be an integer from 1 to 5, got {json.dumps(score)}")
    if not 1 <= score <= 5:
        raise JudgeOutputError(f"\"score\" {int(score)} is outside 1..5")
    reason = found.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise JudgeOutputError("\"reason\" must be a non-empty string")
    return Judgement(int(score), reason.strip())


# ---------------------------------------------------------------------------------------- backends


class ChatBackend(Protocol):
    """A chat model: messages [{"role", "content"}] -> the answer text."""

    name: str  # recorded in every judged row as judge_model
    concurrent: bool  # whether several requests may run at once

    def complete(self, messages: list[dict[str, str]]) -> str: ...


class OpenAIChat:
    """An OpenAI-compatible chat endpoint (OpenAI, vLLM, `medmllm serve`...) through the ``openai`` client.

    Temperature 0 for repeatable judgements. ``api_key`` defaults to $OPENAI_API_KEY, else "EMPTY"
    (local servers ignore it). Network or HTTP errors end the run with one line (they are not the
    judge's answers, so they are not counted as failed judgements).
    """

    concurrent = True

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, max_tokens: int = 512, timeout: float = 120.0,
                 max_retries: int = 2):
        from openai import OpenAI

        self.base_url, self.name, self.max_tokens = base_url, model, max_tokens
        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY", timeout=timeout,
                             max_retries=max_retries)

    def complete(self, messages: list[dict[str, str]]) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(model=self.name, messages=messages, temperature=0.0, max_tokens=self.max_tokens)
        except openai.APIStatusError as e:
            raise MedMLLMError(f"judge endpoint {self.base_url} answered HTTP {e.status_code}: {first_line(e, 160)}") from None
        except openai.APIError as e:
            raise MedMLLMError(f"judge endpoint {self.base_url} failed: {first_line(e, 160)}") from None
        return (response.choices[0].message.content or "") if response.choices else ""


class TransformersChat:
    """A local causal LM folder as the judge: its chat template, greedy decoding.

    A model without a chat template gets the messages as plain text in Fig. 2's layout
    ("Input: ... Output: ...").
    """

    concurrent = False

    def __init__(self, model_dir: str | Path, *, max_new_tokens: int = 512, device: str | None = None):
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise MedMLLMError(f"{path}: not a model folder (no config.json); --judge-model takes a local transformers model folder")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name, self.max_new_tokens = path.resolve().name, max_new_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(self.device).eval()

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text the model sees (ends where the judge's answer starts)."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = []
        for m in messages:
            if m["role"] == "system":
                parts.append(m["content"] + "\n")
            elif m["role"] == "user":
                parts.append(f"Input:\n{m['content']}\nOutput:")
            else:
                parts.append(f" {m['content']}\n")
        return "\n".join(parts)

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        text = self.render(messages)
        # The chat template already wrote the special tokens it wants.
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=not self.tokenizer.chat_template).to(self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens, pad_token_id=pad)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


# ------------------------------------------------------------------------------------------- judge


def get_judge_task(task: str) -> JudgeTask:
    if task not in TASKS:
        raise MedMLLMError(f"the judge has no components for task {task!r}; judged tasks: {', '.join(TASKS)}")
    return TASKS[task]


def criterion_keys(task: str) -> list[str]:
    """The "component.criterion" keys of a task's rows, in order: ["findings.accuracy", "impression.accuracy", ...]."""
    return [f"{c.key}.{criterion}" for c in get_judge_task(task).components for criterion in c.criteria]


def split_components(task: str, text: str) -> dict[str, str]:
    """A task output's sections by key ("" where missing), with the task template's parser."""
    from medmllm.data.templates import get_template

    return get_template(task).parse(text)


@dataclass(frozen=True)
class CriterionResult:
    score: int | None  # None: failed after all attempts
    reason: str | None
    attempts: int
    error: str | None = None


class Judge:
    """Scores one task's predictions against references with a `ChatBackend`."""

    def __init__(self, backend: ChatBackend, task: str, *, retries: int = DEFAULT_RETRIES):
        if retries < 0:
            raise MedMLLMError(f"retries must be >= 0, got {retries}")
        self.backend, self.task, self.retries = backend, task, retries
        self.spec = get_judge_task(task)

    def score(self, component: Component, criterion: str, reference: str, prediction: str) -> CriterionResult:
        """One judgement, re-asked with a correction message while the answer cannot be read."""
        messages = build_messages(self.spec, component, criterion, reference, prediction)
        error = ""
        for attempt in range(1, self.retries + 2):
            answer = self.backend.complete(messages)
            try:
                judgement = parse_judgement(answer)
                return CriterionResult(judgement.score, judgement.reason, attempt)
            except JudgeOutputError as e:
                error = str(e)
                messages = [*messages, {"role": "assistant", "content": answer}, correction_message(error, criterion)]
        return CriterionResult(None, None, self.retries + 1, f"{error} ({self.retries + 1} attempts)")

    def judge_sample(self, sample_id: str, prediction: str, reference: str | dict[str, str]) -> dict:
        """One judged row. ``reference`` is the reference text, or its sections by key (a Sample's targets).

        A component missing from the prediction scores 1 without asking (its reason says so; listed in
        ``missing``); one missing from the reference is not judged (null; listed in ``skipped``).
        """
        predicted = split_components(self.task, prediction)
        expected = reference if isinstance(reference, dict) else split_components(self.task, reference)
        row: dict = {"id": sample_id, "task": self.task, "judge_model": self.backend.name, "prompt_version": PROMPT_VERSION}
        reasons, failures, missing, skipped, attempts = {}, {}, [], [], 0
        for component in self.spec.components:
            ref, pred = (expected.get(component.key) or "").strip(), (predicted.get(component.key) or "").strip()
            for criterion in component.criteria:
                key = f"{component.key}.{criterion}"
                if not ref:
                    row[key] = None
                    skipped.append(key)
                elif not pred:
                    row[key], reasons[key] = 1, f"The AI output has no [{component.name}] section."
                    missing.append(key)
                else:
                    result = self.score(component, criterion, ref, pred)
                    attempts += result.attempts
                    row[key] = result.score
                    if result.score is None:
                        failures[key] = result.error
                    else:
                        reasons[key] = result.reason
        return row | {"reasons": reasons, "failures": failures, "missing": missing, "skipped": skipped, "attempts": attempts}


# ------------------------------------------------------------------------------------------- files

_PREDICTION_KEYS = ("prediction", "output", "text", "answer", "response")
_REFERENCE_KEYS = ("reference", "output", "text", "answer")


def _text_of(row: dict, keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        if isinstance(row.get(key), str):
            return row[key]
    if isinstance(row.get("references"), list) and row["references"] and isinstance(row["references"][0], str):
        return row["references"][0]
    raise MedMLLMError(f"{where}: no text field (one of {', '.join(keys)})")


def _rows_by_id(path: Path, what: str) -> dict[str, dict]:
    from medmllm.data.io import read_jsonl

    if not path.is_file():
        raise MedMLLMError(f"{path}: {what} file not found")
    rows: dict[str, dict] = {}
    for number, row in read_jsonl(path):
        if not isinstance(row, dict) or "id" not in row:
            raise MedMLLMError(f"{path}:{number}: a row needs an \"id\"")
        sample_id = str(row["id"])
        if sample_id in rows:
            raise MedMLLMError(f"{path}:{number}: id {sample_id!r} appears twice")
        rows[sample_id] = row | {"_line": number}
    return rows


def read_pairs(pred_path: str | Path, ref_path: str | Path) -> tuple[list[tuple[str, str, str | dict[str, str]]], int, int]:
    """(id, prediction, reference) for the ids in both files, in prediction order, and the counts of
    prediction ids without a reference and reference ids without a prediction.

    Predictions: JSONL rows {"id", "prediction"} ("output", "text", "answer" or "response" also do).
    References: rows {"id", "reference"} (or "output", "text", "answer", "references": [...]), or
    samples (medmllm's sample JSONL): their ``targets`` sections, else their last assistant turn.
    """
    preds, refs = _rows_by_id(Path(pred_path), "predictions"), _rows_by_id(Path(ref_path), "references")
    pairs = []
    for sample_id, row in preds.items():
        if sample_id not in refs:
            continue
        ref_row = refs[sample_id]
        where = f"{ref_path}:{ref_row['_line']}"
        if "turns" in ref_row:
            targets = ref_row.get("targets") or {}
            reference: str | dict[str, str] = targets if targets else _last_assistant_text(ref_row, where)
        else:
            reference = _text_of(ref_row, _REFERENCE_KEYS, where)
        pairs.append((sample_id, _text_of(row, _PREDICTION_KEYS, f"{pred_path}:{row['_line']}"), reference))
    if not pairs:
        raise MedMLLMError(f"no id of {pred_path} is in {ref_path}: predictions and references must share ids")
    return pairs, len(preds) - len(pairs), len(refs) - len(pairs)


def _last_assistant_text(row: dict, where: str) -> str:
    from medmllm.data.schema import Sample

    try:
        sample = Sample.model_validate({k: v for k, v in row.items() if k != "_line"})
    except Exception as e:
        raise MedMLLMError(f"{where}: not a valid sample: {first_line(e, 160)}") from None
    answers = [turn.text for turn in sample.turns if turn.role == "assistant"]
    if not answers:
        raise MedMLLMError(f"{where}: the sample has no assistant turn to use as the reference")
    return answers[-1]


def _read_done(out: Path, task: str, judge_model: str) -> dict[str, dict]:
    """Rows already judged in ``out`` (to resume); a broken last line (a killed run) is dropped."""
    if not out.exists():
        return {}
    done: dict[str, dict] = {}
    lines = out.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise MedMLLMError(f"{out}:{number}: not JSON; is -o a file the judge wrote?") from None
        for field, expected in (("task", task), ("judge_model", judge_model), ("prompt_version", PROMPT_VERSION)):
            if row.get(field) != expected:
                raise MedMLLMError(f"{out}:{number}: written with {field} {row.get(field)!r}, not {expected!r}; use another -o to start afresh")
        done[str(row["id"])] = row
    return done


def judge_file(judge: Judge, pred_path: str | Path, ref_path: str | Path, out_path: str | Path, *, concurrency: int = 4,
               progress: Callable[[int, int], None] | None = None) -> JudgeRun:
    """Judge every prediction with a reference and append its row to ``out_path`` as soon as it is done.

    Rows already in ``out_path`` (same task, judge model, prompt version) are kept and skipped, so an
    interrupted run resumes. Samples run ``concurrency`` at a time on backends that allow it.
    """
    out = Path(out_path)
    pairs, unmatched_pred, unmatched_ref = read_pairs(pred_path, ref_path)
    done = _read_done(out, judge.task, judge.backend.name)
    todo = [pair for pair in pairs if pair[0] not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    if done:  # rewrite without a possibly broken last line before appending
        from medmllm.data.io import write_jsonl

        write_jsonl(out, done.values())
    workers = max(1, concurrency) if judge.backend.concurrent else 1
    new_rows = []
    with out.open("a", encoding="utf-8") as f, ThreadPoolExecutor(max_workers=workers) as pool:
        # map keeps the input order, so the file is in prediction order whatever finishes first
        for i, row in enumerate(pool.map(lambda pair: judge.judge_sample(*pair), todo), start=1):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            new_rows.append(row)
            if progress:
                progress(i, len(todo))
    return JudgeRun([*done.values(), *new_rows], len(done), len(new_rows), unmatched_pred, unmatched_ref)


@dataclass
class JudgeRun:
    rows: list[dict]
    resumed: int
    judged: int
    predictions_without_reference: int
    references_without_prediction: int


def summarize(rows: list[dict], task: str, confidence: float = 0.95) -> list[dict]:
    """Per "component.criterion": n scored, mean, t interval (P2Med's), failed and skipped counts."""
    import numpy as np

    from medmllm.eval.stats import t_interval

    summary = []
    for key in criterion_keys(task):
        scores = np.array([r[key] for r in rows if isinstance(r.get(key), (int, float))], dtype=np.float64)
        lo, hi = t_interval(scores, confidence)
        summary.append({
            "criterion": key, "n": int(scores.size), "mean": float(scores.mean()) if scores.size else math.nan, "ci": [lo, hi],
            "failed": sum(key in (r.get("failures") or {}) for r in rows), "skipped": sum(key in (r.get("skipped") or []) for r in rows),
            "missing": sum(key in (r.get("missing") or []) for r in rows),
        })
    return summary


__all__ = ["DEFAULT_RETRIES", "ChatBackend", "CriterionResult", "Judge", "JudgeOutputError", "JudgeRun", "Judgement", "OpenAIChat",
           "TransformersChat", "criterion_keys", "judge_file", "parse_judgement", "read_pairs", "split_components", "summarize"]
