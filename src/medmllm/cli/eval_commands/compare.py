"""``medmllm eval compare``: paired comparison of two runs on the same sample ids (docs/statistics.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer


def _per_sample_file(path: Path) -> Path:
    """A run folder of `medmllm eval run` -> its per_sample.jsonl; a file -> itself."""
    from medmllm.errors import MedMLLMError

    if path.is_dir():
        path = path / "per_sample.jsonl"
    if not path.is_file():
        raise MedMLLMError(f"{path}: not found; give a run folder with per_sample.jsonl or a per-sample JSONL file")
    return path


def compare_command(
    run_a: Path = typer.Argument(..., help="Run A: a `medmllm eval run` folder or a per-sample JSONL ({\"id\", metric: value})."),
    run_b: Path = typer.Argument(..., help="Run B, the same way; differences are B - A."),
    metrics: str = typer.Option(None, "--metrics", help="Comma-separated metrics (default: every metric both runs have)."),
    method: str = typer.Option("bootstrap", "--method", help="bootstrap (paired bootstrap) or permutation (approximate randomisation)."),
    resamples: int = typer.Option(10_000, "--resamples", help="Bootstrap resamples or random swaps."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same input, same numbers."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of the interval of the difference."),
    no_clusters: bool = typer.Option(False, "--no-clusters", help="Ignore the rows' \"cluster\" (default: resample clusters when given)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Paired comparison of two runs: mean difference B - A, its CI and a two-sided p-value per metric."""
    import numpy as np

    from medmllm.errors import MedMLLMError
    from medmllm.eval.runner import read_per_sample
    from medmllm.eval.stats import paired_bootstrap, permutation_test

    if method not in ("bootstrap", "permutation"):
        raise MedMLLMError(f"--method must be bootstrap or permutation, got {method!r}")
    if resamples < 1 or not 0 < confidence < 1:
        raise MedMLLMError("--resamples must be >= 1 and --confidence between 0 and 1")
    path_a, path_b = _per_sample_file(run_a), _per_sample_file(run_b)
    (values_a, clusters_a), (values_b, clusters_b) = read_per_sample(path_a), read_per_sample(path_b)
    ids = [i for i in values_a if i in values_b]
    if not ids:
        raise MedMLLMError(f"no sample id is in both {path_a} and {path_b}: a paired comparison needs the same samples")
    available = [m for m in dict.fromkeys(k for i in ids for k in values_a[i]) if any(m in values_b[i] for i in ids)]
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else available
    unknown = [m for m in names if m not in available]
    if unknown:
        raise MedMLLMError(f"metric(s) {', '.join(unknown)} not in both runs; both have: {', '.join(available) or 'none'}")
    if not names:
        raise MedMLLMError("the two runs share no numeric metric")
    clusters = None
    if not no_clusters and all(i in clusters_a or i in clusters_b for i in ids):
        clusters = np.array([clusters_a.get(i, clusters_b.get(i)) for i in ids])
    test = paired_bootstrap if method == "bootstrap" else permutation_test
    results = []
    for name in names:
        a = np.array([values_a[i].get(name, math.nan) for i in ids])
        b = np.array([values_b[i].get(name, math.nan) for i in ids])
        try:
            result = test(a, b, resamples=resamples, seed=seed, confidence=confidence, clusters=clusters)
        except ValueError as e:
            raise MedMLLMError(f"{name}: {e}") from None
        results.append({"metric": name, **result.to_dict()})
    counts = {"matched": len(ids), "only_a": len(values_a) - len(ids), "only_b": len(values_b) - len(ids)}
    if json_out:
        typer.echo(json.dumps({"a": str(path_a), "b": str(path_b), **counts, "method": method, "confidence": confidence, "results": results}, indent=2))
        return
    typer.echo(f"A = {path_a}\nB = {path_b}\n{counts['matched']} matched ids; {counts['only_a']} only in A, {counts['only_b']} only in B; "
               f"{method}, {resamples} resamples" + (f", {results[0]['n_clusters']} clusters" if clusters is not None else ""))
    level = f"{confidence:.0%} CI"
    typer.echo(f"{'metric':<32} {'n':>5} {'A':>8} {'B':>8} {'B - A':>8}  {level:<20} {'p':>7}")
    for r in results:
        ci = f"({r['ci'][0]:.4f}, {r['ci'][1]:.4f})"
        typer.echo(f"{r['metric']:<32} {r['n']:>5} {r['mean_a']:>8.4f} {r['mean_b']:>8.4f} {r['difference']:>+8.4f}  {ci:<20} {r['p_value']:>7.4f}")
