"""Score prediction files against reference files: read, validate, run metrics, add 95% CIs.

Files are JSONL, one object per line (blank lines skipped):

    predictions  {"id": ..., "prediction": "text"}           ("prediction": null counts as empty)
    references   {"id": ..., "reference": "text"}  or  {"id": ..., "references": ["text", ...]}

Ids (strings or integers, compared as strings) must be unique in each file and the same in both,
unless ``intersect=True`` scores only the ids present in both (the others are counted in ``meta``).
Every problem is one `MedMLLMError` line naming the file and line. Nothing here imports torch.

`score` returns a dict: each metric output -> ``{"value", "ci95": [lo, hi]}``, and ``"meta"`` with
the sample count, empty texts, per-metric signature and CI method, and library versions. All
intervals of one run come from one shared `bootstrap_indices` matrix (t intervals need none).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medmllm.errors import MedMLLMError
from medmllm.jsonl import read_jsonl

DEFAULT_METRICS = ("bleu", "rouge_l", "cider")


def _id(row: dict, path: Path, number: int) -> str:
    value = row.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise MedMLLMError(f"{path}:{number}: missing or invalid \"id\" (a non-empty string or an integer)")
    return str(value)


def _add(table: dict, lines: dict, key: str, value, path: Path, number: int) -> None:
    if key in table:
        raise MedMLLMError(f"{path}:{number}: duplicate id {key!r} (first at line {lines[key]})")
    table[key], lines[key] = value, number


def read_predictions(path: str | Path) -> dict[str, str]:
    """id -> prediction text, in file order."""
    path = Path(path)
    out: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, row in read_jsonl(path):
        if "prediction" not in row:
            raise MedMLLMError(f"{path}:{number}: no \"prediction\" key")
        text = row["prediction"]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise MedMLLMError(f"{path}:{number}: \"prediction\" must be a string, got {type(text).__name__}")
        _add(out, lines, _id(row, path, number), text, path, number)
    return out


def read_references(path: str | Path) -> dict[str, list[str]]:
    """id -> list of one or more reference texts, in file order."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    for number, row in read_jsonl(path):
        if ("reference" in row) == ("references" in row):
            raise MedMLLMError(f"{path}:{number}: needs exactly one of \"reference\" (a string) or \"references\" (a list of strings)")
        refs = [row["reference"]] if "reference" in row else row["references"]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise MedMLLMError(f"{path}:{number}: \"references\" must be a non-empty list of strings" if "references" in row
                               else f"{path}:{number}: \"reference\" must be a string")
        _add(out, lines, _id(row, path, number), refs, path, number)
    return out


def align(predictions: dict[str, str], references: dict[str, list[str]], intersect: bool = False) -> tuple[list[str], dict]:
    """The ids to score, in prediction-file order, and counts of what was left out.

    Ids that are not in both files are an error unless ``intersect``."""
    both = [i for i in predictions if i in references]
    only_pred = len(predictions) - len(both)
    only_ref = len(references) - len(both)
    if (only_pred or only_ref) and not intersect:
        example = next((f"id {i!r} has a prediction but no reference" for i in predictions if i not in references), None)
        example = example or next(f"id {i!r} has a reference but no prediction" for i in references if i not in predictions)
        raise MedMLLMError(
            f"ids do not match: {len(predictions)} predictions, {len(references)} references, {len(both)} in both; "
            f"e.g. {example} (--intersect scores only the {len(both)} in both)"
        )
    if not both:
        raise MedMLLMError("no id has both a prediction and a reference: nothing to score")
    return both, {"only_in_predictions": only_pred, "only_in_references": only_ref}


def resolve_metrics(names: Sequence[str]) -> dict[str, list[str]]:
    """Metric or output names -> {registered metric: the outputs to report}, in the order asked."""
    from medmllm.eval.metrics import get_metric

    wanted: dict[str, list[str]] = {}
    for name in names:
        spec = get_metric(name)
        outputs = list(spec.outputs) if name == spec.name else [name]
        wanted.setdefault(spec.name, [])
        wanted[spec.name] += [o for o in outputs if o not in wanted[spec.name]]
    if not wanted:
        raise MedMLLMError("no metric given")
    return wanted


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def score(predictions: Sequence[str], references: Sequence[Sequence[str]], metrics: Sequence[str] = DEFAULT_METRICS, *,
          ci: str = "auto", resamples: int = 1000, seed: int = 0, tokenizer: str | None = None) -> dict:
    """Score N predictions against their references.

    Returns ``{output: {"value": float, "ci95": [lo, hi]}, ..., "meta": {...}, "per_sample": {output: (N,) array}}``;
    NaN values are given as None. ``ci``: "auto" (t for mean metrics, bootstrap for corpus ones), "t" or "bootstrap"."""
    from medmllm import __version__
    from medmllm.eval.metrics import METRICS
    from medmllm.eval.stats import bootstrap_indices, interval

    if ci not in ("auto", "t", "bootstrap"):
        raise MedMLLMError(f"unknown CI method {ci!r}; use auto, t or bootstrap")
    if len(predictions) != len(references):
        raise MedMLLMError(f"{len(predictions)} predictions but {len(references)} reference lists")
    wanted = resolve_metrics(metrics)
    n = len(predictions)
    indices = bootstrap_indices(n, resamples, seed) if n >= 2 else None
    options = {} if tokenizer is None else {"tokenizer": tokenizer}
    result: dict = {}
    per_sample: dict[str, np.ndarray] = {}
    meta_metrics: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for name, outputs in wanted.items():
        spec = METRICS[name]
        t0 = time.perf_counter()
        scores = spec.fn(list(predictions), [list(r) for r in references], **options)
        seconds[name] = round(time.perf_counter() - t0, 4)
        for output in outputs:
            s = scores[output]
            method = ("t" if s.corpus is None else "bootstrap") if ci == "auto" else ci
            if method == "t" and s.corpus is not None:
                raise MedMLLMError(f"{output}: a t interval needs a metric whose value is the mean of its per-sample values; use --ci bootstrap")
            lo, hi = interval(s, method, indices=indices) if n >= 2 else (math.nan, math.nan)
            result[output] = {"value": _finite(s.value), "ci95": [_finite(lo), _finite(hi)]}
            per_sample[output] = s.per_sample
            signature = spec.signature if tokenizer is None else f"{spec.signature}|tokenizer={tokenizer}"
            meta_metrics[output] = {"signature": signature, "ci": method}
    result["meta"] = {
        "n": n,
        "empty_predictions": sum(1 for p in predictions if not p.strip()),
        "empty_references": sum(1 for refs in references if all(not r.strip() for r in refs)),
        "multi_reference": sum(1 for refs in references if len(refs) > 1),
        "ci": {"confidence": 0.95, "resamples": resamples, "seed": seed},
        "metrics": meta_metrics,
        "seconds": seconds,
        "versions": {"medmllm": __version__, "numpy": np.__version__},
    }
    result["per_sample"] = per_sample
    return result


def score_files(pred_path: str | Path, ref_path: str | Path, metrics: Sequence[str] = DEFAULT_METRICS, *,
                intersect: bool = False, **options) -> tuple[dict, list[str]]:
    """Read, align and score two JSONL files -> (the `score` result, the scored ids in order)."""
    predictions = read_predictions(pred_path)
    references = read_references(ref_path)
    ids, left_out = align(predictions, references, intersect)
    result = score([predictions[i] for i in ids], [references[i] for i in ids], metrics, **options)
    result["meta"].update(left_out)
    return result, ids


def per_sample_rows(result: dict, ids: Sequence[str]):
    """One dict per sample: {"id", output: value or None, ...}."""
    columns = result["per_sample"]
    for i, sample_id in enumerate(ids):
        yield {"id": sample_id, **{name: _finite(values[i]) for name, values in columns.items()}}


def write_per_sample(path: str | Path, result: dict, ids: Sequence[str]) -> int:
    """Write `per_sample_rows` as JSONL; returns the number of rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in per_sample_rows(result, ids):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(ids)


def summary(result: dict) -> dict:
    """The result without its per-sample arrays: what ``--json`` prints."""
    return {k: v for k, v in result.items() if k != "per_sample"}


def table(result: dict) -> str:
    """A readable plain-text table of the values and intervals."""
    meta = result["meta"]
    rows = [(name, f"{r['value']:.4f}" if r["value"] is not None else "n/a",
             "[{}, {}]".format(*(f"{x:.4f}" if x is not None else "n/a" for x in r["ci95"])), meta["metrics"][name]["ci"])
            for name, r in result.items() if name not in ("meta", "per_sample")]
    head = ("metric", "value", "95% CI", "CI method")
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(4)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{meta['n']} samples"]
    if meta["empty_predictions"]:
        notes.append(f"{meta['empty_predictions']} empty predictions (scored)")
    if meta["empty_references"]:
        notes.append(f"{meta['empty_references']} with only empty references")
    if meta.get("only_in_predictions") or meta.get("only_in_references"):
        notes.append(f"left out: {meta.get('only_in_predictions', 0)} ids only in predictions, {meta.get('only_in_references', 0)} only in references")
    return "\n".join(lines) + "\n" + "; ".join(notes)


__all__ = ["DEFAULT_METRICS", "align", "per_sample_rows", "read_predictions", "read_references", "resolve_metrics", "score",
           "score_files", "summary", "table", "write_per_sample"]
