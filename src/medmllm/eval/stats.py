"""Statistics in one place: confidence intervals of metric scores, paired comparisons of two runs,
clustered standard errors, and rater agreement (docs/statistics.md has the exact definitions).

- ``t``: mean of the per-sample values +- t(0.975, n-1) * sd / sqrt(n) — P2Med's intervals
  (section V-A.5: "calculated using the t-distribution"). Only for metrics whose corpus value is
  the mean of their per-sample values.
- ``bootstrap``: percentile bootstrap over samples (resample N indices with replacement, recompute
  the corpus value with `Score.resample`), for any metric, BLEU included. Seeded: same input, same CI.

- ``cluster``: mean +- t(0.975, G-1) * cluster-robust SE, for several questions on one image
  (G clusters; `cluster_interval`).

``interval(score)`` picks ``t`` for mean metrics and ``bootstrap`` for corpus metrics unless told.

Paired comparison of two runs on the same samples (`paired_bootstrap`, `permutation_test`) and
rater agreement (`krippendorff_alpha`, `icc_2_1`) follow below.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from medmllm.eval.metrics.base import Score

Method = Literal["auto", "t", "bootstrap", "cluster"]

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaNs dropped); (nan, nan) with fewer than 2 values."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size < 2:
        return (math.nan, math.nan)
    mean = float(v.mean())
    half = float(t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return (mean - half, mean + half)


def bootstrap_indices(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(resamples, n) int array of resampled sample indices; the same for every metric of one run,
    so intervals of different metrics come from the same resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_interval(score: Score, confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                       indices: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of ``score``'s corpus value."""
    n = len(score.per_sample)
    if n < 2:
        return (math.nan, math.nan)
    if indices is None:
        indices = bootstrap_indices(n, resamples, seed)
    if score.corpus is None:
        # Vectorised: the mean of a resample is a row mean of the gathered matrix.
        values = score.per_sample[indices]
        stats = np.nanmean(values, axis=1) if np.isnan(values).any() else values.mean(axis=1)
    else:
        stats = np.array([score.resample(row) for row in indices])
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(stats, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def interval(score: Score, method: Method = "auto", confidence: float = 0.95, clusters: np.ndarray | None = None,
             **bootstrap_options) -> tuple[float, float]:
    """The 95% (``confidence``) interval of a score: t for mean metrics, bootstrap for corpus metrics;
    ``method="cluster"`` with ``clusters`` (N,) (e.g. the image id of each question) for clustered samples."""
    if method == "auto":
        method = "t" if score.corpus is None else "bootstrap"
    if method in ("t", "cluster") and score.corpus is not None:
        raise ValueError(f"a {method} interval needs a metric whose value is the mean of its per-sample values")
    if method == "t":
        return t_interval(score.per_sample, confidence)
    if method == "cluster":
        if clusters is None:
            raise ValueError("method='cluster' needs clusters=, one cluster label per sample")
        return cluster_interval(score.per_sample, clusters, confidence)
    return bootstrap_interval(score, confidence, **bootstrap_options)


