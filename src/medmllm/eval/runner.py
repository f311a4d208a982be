"""``medmllm eval run``: a model on a benchmark -> predictions, metrics with 95% CIs, a report.

    from medmllm.eval.adapters import build_adapter
    from medmllm.eval.runner import run_eval
    result = run_eval(build_adapter("medmllm", "runs/demo/model"), "vqa-rad:data/VQA_RAD", "out/vqa-rad")

Files written in OUT (docs/evaluation.md):

- ``predictions.jsonl``: one row per sample ``{"id", "task", "family", "prediction", "seconds"}``
  or ``{"id", "task", "family", "error"}`` (one line, no traceback), in the order generated (longest
  prompt first where the adapter counts tokens: `in_prompt_length_order`). Appended and flushed row by
  row: a run that stops is continued by running it again (ids already there are skipped; a torn
  last line is dropped). ``run.json`` records the model and benchmark; another model or benchmark
  in the same OUT is refused.
- ``metrics.json``: per task family, each metric's value, 95% CI (method), n, signature and library
  versions, and breakdowns by modality, 2D/3D, dataset and task; failures counted, not scored.
- ``per_sample.jsonl``: one row per sample ``{"id", "task", "family", "dataset", "modality", "dim",
  "cluster", metric: value, ...}`` (``"error"`` instead of metrics for a failure); what
  ``medmllm eval compare`` pairs two runs on.
- ``report.html``: tables, plots and qualitative examples with thumbnails (`medmllm.eval.report`).

`fast_metrics` scores texts in memory with the cheap metrics (for validation during training).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmllm.allocator import hold_freed_memory
from medmllm.data.schema import Sample
from medmllm.data.templates import canonical_modality
from medmllm.errors import MedMLLMError, first_line
from medmllm.eval.metrics.base import Score
from medmllm.eval.tasks import FAMILIES, ScoreOptions, TaskScores, family_of

PREDICTIONS, METRICS, PER_SAMPLE, REPORT, RUN = "predictions.jsonl", "metrics.json", "per_sample.jsonl", "report.html", "run.json"
FACETS = ("modality", "dim", "dataset", "task")
_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


# -------------------------------------------------------------------------------- sample facets


def _dim_of_path(path: str) -> str:
    """"2d" / "3d" from the file, cheaply: photos and single DICOM files are 2D, folders and
    volumes 3D; NIfTI and NPY by their header's shape."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "3d"
    if name.endswith((".nii", ".nii.gz")):
        try:
            import nibabel

            shape = nibabel.load(str(p)).shape
            return "3d" if len(shape) >= 3 and sum(s > 1 for s in shape[:3]) == 3 else "2d"
        except Exception:  # unreadable here: the model's read reports it
            return "3d"
    if name.endswith(".npy"):
        try:
            array = np.load(p, mmap_mode="r")
            return "3d" if array.ndim >= 3 and array.shape[0] > 1 and array.shape[-1] not in (3, 4) else "2d"
        except Exception:
            return "2d"
    return "3d" if name.endswith(_VOLUME_SUFFIXES) else "2d"


def sample_facets(sample: Sample) -> dict[str, str]:
    """What the report breaks results down by: task, dataset, modality, dim ("2d" / "3d" / "text"),
    and the cluster key (the sample's image paths; its id for text) for clustered standard errors."""
    modality = canonical_modality(sample.labels.get("modality")) or next(
        (canonical_modality(ref.modality) for ref in sample.images if ref.modality), None)
    dims = {_dim_of_path(ref.path) for ref in sample.images}
    dim = str(sample.labels.get("dim") or sample.meta.get("dim") or ("text" if not dims else "3d" if "3d" in dims else "2d"))
    return {
        "task": sample.task,
        "dataset": sample.source or str(sample.meta.get("dataset") or "unknown"),
        "modality": modality or ("none" if not sample.images else "unknown"),
        "dim": dim,
        "cluster": "|".join(ref.path for ref in sample.images) or f"id:{sample.id}",
    }


# ---------------------------------------------------------------------------------- predictions


def read_predictions(path: Path, repair: bool = False) -> dict[str, dict]:
    """Rows of a predictions file by id. A last line without its newline (a run stopped while
    writing it) is dropped, and with ``repair`` cut off the file so appending continues cleanly."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
    rows: dict[str, dict] = {}
    for number, line in enumerate(data[:end].split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise MedMLLMError(f"{path}:{number}: not a JSON line; remove the line or use another -o folder") from None
        if isinstance(row, dict) and "id" in row:
            rows[str(row["id"])] = row
    return rows


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error, limit=300, default='')}".rstrip(": ")


def in_prompt_length_order(samples: list[Sample], adapter) -> list[Sample]:
    """``samples`` longest prompt first when the adapter can count its prompts' tokens (else as they
    are): each batch then holds prompts of about one length, so left padding wastes little of the
    prefill, and a batch too large for memory fails first, not last. Rows are keyed by id, so the
    order does not change any score."""
    count = getattr(adapter, "prompt_length", None)  # adapters need not subclass `Adapter`
    lengths = [count(s) for s in samples] if count is not None else [None]
    if None in lengths:
        return samples
    return [s for _, s in sorted(zip(lengths, samples), key=lambda pair: pair[0], reverse=True)]  # stable among equals


def generate_rows(adapter, samples: Sequence[Sample]) -> list[dict]:
    """One predictions row per sample. A batch that fails is retried one sample at a time, so one
    bad sample fails alone; its row holds the error's first line."""
    start = time.perf_counter()
    try:
        texts = adapter.generate(list(samples))
        if len(texts) != len(samples):
            raise RuntimeError(f"the adapter returned {len(texts)} texts for {len(samples)} samples")
    except Exception as e:
        if len(samples) > 1:
            return [row for s in samples for row in generate_rows(adapter, [s])]
        s = samples[0]
        return [{"id": s.id, "task": s.task, "family": family_of(s), "error": _error_text(e)}]
    seconds = (time.perf_counter() - start) / len(samples)
    return [{"id": s.id, "task": s.task, "family": family_of(s), "prediction": "" if t is None else str(t), "seconds": round(seconds, 4)}
            for s, t in zip(samples, texts, strict=True)]


def _check_run(out: Path, info: dict) -> None:
    """Refuse to mix two models or benchmarks in one output folder; record this run otherwise."""
    path = out / RUN
    if path.exists():
        before = json.loads(path.read_text())
        for key in ("model", "bench"):
            if before.get(key) != info[key]:
                raise MedMLLMError(f"{out} holds a run of another {key} ({before.get(key)}); use another -o folder or delete it")
        return
    path.write_text(json.dumps(info, indent=2) + "\n")


# ------------------------------------------------------------------------------------- scoring


@dataclass
class FamilyResult:
    """One task family's scored samples (failures left out) and their scores."""

    family: str
    samples: list[Sample]
    predictions: list[str]
    scores: TaskScores
    failures: list[dict] = field(default_factory=list)


def score_predictions(samples: Sequence[Sample], rows: dict[str, dict], options: ScoreOptions = ScoreOptions()) -> dict[str, FamilyResult]:
    """Score every sample that has a prediction row, per family; error rows are counted as failures."""
    groups: dict[str, FamilyResult] = {}
    for sample in samples:
        row = rows.get(sample.id)
        if row is None:
            continue
        result = groups.setdefault(family_of(sample), FamilyResult(family_of(sample), [], [], TaskScores()))
        if "error" in row:
            result.failures.append({"id": sample.id, "error": row["error"]})
        else:
            result.samples.append(sample)
            result.predictions.append(row.get("prediction") or "")
    for name, result in groups.items():
        if result.samples:
            result.scores = FAMILIES[name].score(result.predictions, result.samples, options)
    return groups


def fast_metrics(predictions: list[str], samples: list[Sample]) -> dict[str, float]:
    """Cheap task-appropriate metrics of generated texts (no judge, no model-based or optional
    metrics), flat: ``{"vqa-closed/exact_match": 0.61, "report/bleu_4": 0.08, ...}``; metrics
    that are not available are left out. For validation during training."""
    if len(predictions) != len(samples):
        raise MedMLLMError(f"fast_metrics: {len(predictions)} predictions for {len(samples)} samples")
    rows = {s.id: {"prediction": p} for p, s in zip(predictions, samples, strict=True)}
    if len(rows) != len(samples):  # duplicate ids: score by position instead
        samples = [s.model_copy(update={"id": f"{i}"}) for i, s in enumerate(samples)]
        rows = {s.id: {"prediction": p} for p, s in zip(predictions, samples, strict=True)}
    out = {}
    for name, result in score_predictions(samples, rows, ScoreOptions(fast=True)).items():
        for metric, score in result.scores.scores.items():
            if math.isfinite(score.value):
                out[f"{name}/{metric}"] = float(score.value)
    return out


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def subset_score(score: Score, indices: np.ndarray) -> Score:
    """The score of the samples at ``indices`` (its own corpus value and resampling)."""
    corpus = (lambda rows: score.corpus(indices[rows])) if score.corpus is not None else None
    return Score(score.resample(indices), score.per_sample[indices], corpus)


def summarize_score(score: Score, resamples: int) -> dict[str, Any]:
    """{"value", "ci95", "ci_method", "n"}: t for mean metrics, percentile bootstrap for corpus ones."""
    from medmllm.eval.stats import interval

    n = int(np.sum(~np.isnan(score.per_sample))) if score.corpus is None else len(score.per_sample)
    method = "t" if score.corpus is None else "bootstrap"
    if n == 0 or not np.isfinite(score.value):
        return {"value": None, "ci95": [None, None], "ci_method": method, "n": 0}
    try:
        with warnings.catch_warnings():  # resamples of a sparse component may be all NaN: their CI is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = interval(score, method, resamples=resamples) if method == "bootstrap" else interval(score, method)
    except (ValueError, ZeroDivisionError, FloatingPointError):
        lo, hi = math.nan, math.nan
    return {"value": _finite(score.value), "ci95": [_finite(lo), _finite(hi)], "ci_method": method, "n": n}


def _versions(packages: Iterable[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def metrics_document(results: dict[str, FamilyResult], *, resamples: int = 1000) -> dict[str, Any]:
    """The ``tasks`` part of metrics.json: per family its metrics with CIs, signatures, versions,
    skipped metrics, failures and breakdowns by `FACETS`."""
    tasks = {}
    with warnings.catch_warnings():  # groups where a component is absent have all-NaN values: n/a, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, result in results.items():
            tasks[name] = _family_document(name, result, resamples)
    return tasks


def _family_document(name: str, result: FamilyResult, resamples: int) -> dict[str, Any]:
    scores = result.scores
    facets = [sample_facets(s) for s in result.samples]
    metrics = {
        metric: summarize_score(score, resamples) | {"signature": scores.signatures.get(metric, ""), "versions": _versions(scores.requires.get(metric, ()))}
        for metric, score in scores.scores.items()
    }
    breakdowns: dict[str, dict] = {}
    for facet in FACETS:
        groups: dict[str, list[int]] = {}
        for i, f in enumerate(facets):
            groups.setdefault(f[facet], []).append(i)
        breakdowns[facet] = {
            key: {"n": len(idx), "metrics": {m: summarize_score(subset_score(s, np.array(idx)), resamples) for m, s in scores.scores.items()}}
            for key, idx in sorted(groups.items())
        }
    return {
        "description": FAMILIES[name].description, "primary": FAMILIES[name].primary,
        "n": len(result.samples), "failures": len(result.failures), "empty_predictions": sum(1 for p in result.predictions if not p.strip()),
        "metrics": metrics, "skipped_metrics": scores.skipped, "breakdowns": breakdowns,
    }


def per_sample_rows(results: dict[str, FamilyResult], samples: Sequence[Sample]) -> list[dict]:
    """per_sample.jsonl rows, in benchmark order: facets, then each metric's value (null for NaN)."""
    rows: dict[str, dict] = {}
    for name, result in results.items():
        for i, sample in enumerate(result.samples):
            row = {"id": sample.id, "family": name, **sample_facets(sample)}
            row.update({metric: _finite(float(score.per_sample[i])) for metric, score in result.scores.scores.items()})
            rows[sample.id] = row
        by_id = {s.id: s for s in samples}
        for failure in result.failures:
            rows[failure["id"]] = {"id": failure["id"], "family": name, **sample_facets(by_id[failure["id"]]), "error": failure["error"]}
    return [rows[s.id] for s in samples if s.id in rows]


NOT_METRICS = {"id", "cluster"}  # per-sample keys that are not metrics


def read_per_sample(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """({id: {metric: value}}, {id: cluster}) of a per-sample JSONL; non-numbers and nulls are left out."""
    from medmllm.data.io import read_jsonl

    values: dict[str, dict[str, float]] = {}
    clusters: dict[str, str] = {}
    for number, row in read_jsonl(path):
        if "id" not in row:
            raise MedMLLMError(f"{path}:{number}: a row needs an \"id\"")
        sample_id = str(row["id"])
        if sample_id in values:
            raise MedMLLMError(f"{path}:{number}: id {sample_id!r} appears twice")
        values[sample_id] = {k: float(v) for k, v in row.items()
                             if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if row.get("cluster") is not None:
            clusters[sample_id] = str(row["cluster"])
    return values, clusters


# ------------------------------------------------------------------------------------------ run


@dataclass
class EvalResult:
    out: Path
    bench: str
    samples: int
    generated: int  # predictions computed by this call (the others were already in OUT)
    failures: int
    metrics: dict[str, Any]


def run_eval(
    adapter,
    bench: str,
    out: str | Path,
    *,
    limit: int | None = None,
    judge=None,
    optional_metrics: bool = False,
    resamples: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluate ``adapter`` on benchmark ``bench`` (see `medmllm.eval.benchmarks`) into ``out``.

    Args:
        adapter: a `medmllm.eval.adapters.Adapter`.
        limit: only the benchmark's first ``limit`` samples.
        judge: a `medmllm.eval.judge` chat backend for P2Med record components (None: skipped).
        optional_metrics: also the slow / tool-dependent metrics (METEOR, needs java).
        resamples: bootstrap resamples for the CIs of corpus metrics.
        progress: called with (done, total) after each batch.
    """
    from medmllm.eval.benchmarks import load_bench

    hold_freed_memory()  # batch after batch of the same large tensors: reuse their pages (medmllm.allocator)
    out = Path(out)
    name, samples = load_bench(bench, limit)
    out.mkdir(parents=True, exist_ok=True)
    _check_run(out, {"model": adapter.describe(), "bench": bench})
    predictions_path = out / PREDICTIONS
    done = read_predictions(predictions_path, repair=True)
    todo = in_prompt_length_order([s for s in samples if s.id not in done], adapter)
    generated = 0
    with open(predictions_path, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), max(1, adapter.batch_size)):
            for row in generate_rows(adapter, todo[start : start + adapter.batch_size]):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                done[row["id"]] = row
                generated += 1
            if progress is not None:
                progress(len(samples) - len(todo) + generated, len(samples))
        os.fsync(f.fileno())

    results = score_predictions(samples, done, ScoreOptions(optional=optional_metrics, judge=judge))
    failures = [f for r in results.values() for f in r.failures]
    document = {
        "run": {
            "model": adapter.describe(), "bench": bench, "bench_name": name, "samples": len(samples),
            "scored": sum(len(r.samples) for r in results.values()), "failures": len(failures),
            "judge": getattr(judge, "name", None) or "skipped: no judge configured (--judge-endpoint / --judge-model)",
            "optional_metrics": optional_metrics, "bootstrap_resamples": resamples,
            "versions": {"python": sys.version.split()[0], **_versions(("medmllm", "numpy", "scipy", "transformers", "torch", "openai"))},
        },
        "tasks": metrics_document(results, resamples=resamples),
        "failures": failures[:100],
    }
    _write_json(out / METRICS, document)
    _write_jsonl(out / PER_SAMPLE, per_sample_rows(results, samples))
    from medmllm.eval.report import write_report

    write_report(out / REPORT, document, results)
    return EvalResult(out, name, len(samples), generated, len(failures), document)


def _write_json(path: Path, document: dict) -> None:
    from medmllm.scans.write import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    from medmllm.scans.write import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows), encoding="utf-8")


__all__ = ["EvalResult", "FamilyResult", "fast_metrics", "metrics_document", "per_sample_rows", "read_per_sample", "read_predictions", "run_eval",
           "sample_facets", "score_predictions"]
