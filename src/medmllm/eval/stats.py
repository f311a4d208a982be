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
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import numpy as np

from medmllm.eval.metrics.base import Score

Method = Literal["auto", "t", "bootstrap", "cluster"]

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile (= scipy.stats.t.ppf) from scipy.special: importing scipy.stats costs ~1 s
    of start-up, which `medmllm eval score` must not pay."""
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaNs dropped); (nan, nan) with fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size < 2:
        return (math.nan, math.nan)
    mean = float(v.mean())
    half = float(t_quantile(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
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


# ------------------------------------------------------------------------------ clustered samples


def _cluster_codes(clusters, n: int) -> np.ndarray:
    """(N,) cluster labels of any hashable kind (image ids, ints) -> (N,) int codes 0..G-1."""
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(f"clusters has shape {labels.shape}, expected ({n},): one label per sample")
    return np.unique(labels.astype(str) if labels.dtype == object else labels, return_inverse=True)[1].reshape(-1)


def cluster_se(values: np.ndarray, clusters) -> tuple[float, float, int]:
    """(mean, cluster-robust standard error of the mean, G) of ``values`` (N,) grouped by ``clusters`` (N,).

    SE^2 = G / (G - 1) * sum_g (sum_{i in g} (v_i - mean))^2 / N^2 (the CR1 sandwich of an
    intercept-only regression, Stata's ``mean, vce(cluster)``). NaNs are dropped with their labels.
    With one sample per cluster it is s^2 / N, the plain t interval's.
    """
    v = np.asarray(values, dtype=np.float64)
    codes = _cluster_codes(clusters, v.size)
    keep = ~np.isnan(v)
    v, codes = v[keep], np.unique(codes[keep], return_inverse=True)[1].reshape(-1)
    n, g = v.size, int(codes.max()) + 1 if v.size else 0
    if n == 0:
        return (math.nan, math.nan, 0)
    mean = float(v.mean())
    if g < 2:
        return (mean, math.nan, g)
    sums = np.bincount(codes, weights=v - mean, minlength=g)
    return (mean, math.sqrt(g / (g - 1) * float(np.sum(sums**2)) / n**2), g)


def cluster_interval(values: np.ndarray, clusters, confidence: float = 0.95) -> tuple[float, float]:
    """mean +- t(0.5 + confidence / 2, G - 1) * `cluster_se`; (nan, nan) with fewer than 2 clusters."""
    mean, se, g = cluster_se(values, clusters)
    if g < 2:
        return (math.nan, math.nan)
    half = float(t_quantile(0.5 + confidence / 2, g - 1) * se)
    return (mean - half, mean + half)


# ------------------------------------------------------------------------------ paired comparison

DEFAULT_PAIRED_RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A on the same samples; ``difference`` = mean(B) - mean(A).

    ci is the ``confidence`` interval of the difference; p_value is two-sided; n_clusters is None
    when pairs were resampled (or swapped) one by one.
    """

    method: str
    n: int
    mean_a: float
    mean_b: float
    difference: float
    ci: tuple[float, float]
    p_value: float
    resamples: int
    n_clusters: int | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "ci": list(self.ci)}


class _Pairs(NamedTuple):
    """Paired values with a NaN on neither side; a unit is one pair, or one cluster of pairs."""

    a: np.ndarray  # (N,)
    b: np.ndarray  # (N,)
    codes: np.ndarray | None  # (N,) cluster codes 0..G-1, or None
    sums: np.ndarray  # (units,) sum of B - A per unit
    sizes: np.ndarray  # (units,) pairs per unit

    @property
    def n_clusters(self) -> int | None:
        return None if self.codes is None else self.sums.size


def _paired_units(a, b, clusters) -> _Pairs:
    a = np.asarray(a.per_sample if isinstance(a, Score) else a, dtype=np.float64)
    b = np.asarray(b.per_sample if isinstance(b, Score) else b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need the same shape (N,), got {a.shape} and {b.shape}")
    codes = _cluster_codes(clusters, a.size) if clusters is not None else None
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs with both values, got {a.size}")
    d = b - a
    if codes is None:
        return _Pairs(a, b, None, d, np.ones_like(d))
    codes = np.unique(codes[keep], return_inverse=True)[1].reshape(-1)
    g = int(codes.max()) + 1
    return _Pairs(a, b, codes, np.bincount(codes, weights=d, minlength=g), np.bincount(codes, minlength=g).astype(np.float64))


def _chunks(resamples: int, units: int):
    """Row counts of resample chunks of at most ~4M cells (10k resamples of 10k samples stay in memory)."""
    step = max(1, 4_000_000 // max(units, 1))
    for start in range(0, resamples, step):
        yield min(step, resamples - start)


def paired_bootstrap(a: Score | np.ndarray, b: Score | np.ndarray, *, resamples: int = DEFAULT_PAIRED_RESAMPLES, seed: int = DEFAULT_SEED,
                     confidence: float = 0.95, clusters=None) -> PairedComparison:
    """Paired bootstrap: resample pairs (or whole clusters) with replacement, recompute mean(B) - mean(A).

    ci: percentile interval of the resampled differences. p (two-sided): the share of resampled
    differences at least as far from the observed one as the observed one is from 0,
    (1 + #{|d* - d| >= |d|}) / (R + 1) — the shift method (Efron & Tibshirani 1993, sec. 16.4;
    Koehn 2004). Scores with a corpus function (BLEU) are resampled through it, without clusters.
    """
    rng = np.random.default_rng(seed)
    corpus = any(isinstance(x, Score) and x.corpus is not None for x in (a, b))
    if corpus:
        if clusters is not None:
            raise ValueError("clustered resampling needs mean metrics, not corpus metrics")
        n = len(a.per_sample)
        observed = b.value - a.value
        stats = np.empty(resamples)
        for r in range(resamples):
            rows = rng.integers(0, n, size=n)
            stats[r] = b.resample(rows) - a.resample(rows)
        mean_a, mean_b, n_used, g = a.value, b.value, n, None
    else:
        pairs = _paired_units(a, b, clusters)
        sums, sizes, units = pairs.sums, pairs.sizes, pairs.sums.size
        observed = float(sums.sum() / sizes.sum())
        parts = []
        for rows in _chunks(resamples, units):
            idx = rng.integers(0, units, size=(rows, units))
            parts.append(sums[idx].sum(axis=1) / sizes[idx].sum(axis=1))
        stats = np.concatenate(parts)
        mean_a, mean_b, n_used, g = float(pairs.a.mean()), float(pairs.b.mean()), pairs.a.size, pairs.n_clusters
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    extreme = np.abs(stats - observed) >= abs(observed) - 1e-12 * max(1.0, abs(observed))
    p = (1 + int(extreme.sum())) / (resamples + 1)
    return PairedComparison("bootstrap", n_used, float(mean_a), float(mean_b), float(observed), (float(lo), float(hi)), p, resamples, g)


def permutation_test(a: Score | np.ndarray, b: Score | np.ndarray, *, resamples: int = DEFAULT_PAIRED_RESAMPLES, seed: int = DEFAULT_SEED,
                     confidence: float = 0.95, clusters=None) -> PairedComparison:
    """Approximate randomisation (Noreen 1989; Riezler & Maxwell 2005): swap A and B within each pair
    (or within each whole cluster) with probability 1/2, recompute mean(B) - mean(A).

    p (two-sided) = (1 + #{|d*| >= |d|}) / (R + 1). ci: the t interval of the paired differences
    (cluster-robust with ``clusters``). Mean metrics only.
    """
    if any(isinstance(x, Score) and x.corpus is not None for x in (a, b)):
        raise ValueError("the permutation test needs mean metrics; use paired_bootstrap for corpus metrics (BLEU)")
    pairs = _paired_units(a, b, clusters)
    n, observed, units = pairs.a.size, float(pairs.sums.sum() / pairs.sizes.sum()), pairs.sums.size
    rng = np.random.default_rng(seed)
    parts = []
    for rows in _chunks(resamples, units):
        signs = rng.integers(0, 2, size=(rows, units)) * 2.0 - 1.0
        parts.append(signs @ pairs.sums / n)
    stats = np.concatenate(parts)
    extreme = np.abs(stats) >= abs(observed) - 1e-12 * max(1.0, abs(observed))
    p = (1 + int(extreme.sum())) / (resamples + 1)
    d = pairs.b - pairs.a
    ci = t_interval(d, confidence) if pairs.codes is None else cluster_interval(d, pairs.codes, confidence)
    return PairedComparison("permutation", n, float(pairs.a.mean()), float(pairs.b.mean()), observed, ci, p, resamples, pairs.n_clusters)


# ------------------------------------------------------------------------------ rater agreement

AlphaLevel = Literal["nominal", "ordinal", "interval", "ratio"]


def krippendorff_alpha(data: np.ndarray, level: AlphaLevel = "interval") -> float:
    """Krippendorff's alpha of ``data`` (raters, units), NaN where a rater did not rate a unit.

    alpha = 1 - D_o / D_e from the coincidence matrix o_ck = sum_u (n_uc n_uk - [c=k] n_uc) / (m_u - 1)
    over the units with m_u >= 2 values (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"),
    D_o = sum o_ck delta2_ck / n, D_e = sum n_c n_k delta2_ck / (n (n - 1)). delta2: nominal [c != k];
    interval (c - k)^2; ratio ((c - k) / (c + k))^2; ordinal (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2
    over the ranks of the observed values. NaN when the pairable values do not vary.
    """
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"krippendorff_alpha needs a (raters, units) array, got shape {x.shape}")
    values = np.unique(x[~np.isnan(x)])
    if values.size == 0:
        return math.nan
    # counts (U, V): how many raters gave unit u value c
    counts = np.stack([(x == v).sum(axis=0) for v in values], axis=1).astype(np.float64)
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]
    if counts.size == 0:
        return math.nan
    o = np.einsum("uc,uk->ck", counts / (m - 1)[:, None], counts) - np.diag((counts / (m - 1)[:, None]).sum(axis=0))
    n_c = o.sum(axis=1)
    n = n_c.sum()
    delta2 = _alpha_distance(values, n_c, level)
    expected = float((np.outer(n_c, n_c) * delta2).sum()) / (n * (n - 1))
    if expected == 0:
        return math.nan
    return 1.0 - float((o * delta2).sum()) / n / expected


def _alpha_distance(values: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    """(V, V) squared distances delta2 between the observed values (sorted) at a level of measurement."""
    c, k = values[:, None], values[None, :]
    if level == "nominal":
        return (c != k).astype(np.float64)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(((c - k) / (c + k)) ** 2)
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])  # cum[i] = n_0 + ... + n_{i-1}
        i, j = np.minimum.outer(np.arange(values.size), np.arange(values.size)), np.maximum.outer(np.arange(values.size), np.arange(values.size))
        return (cum[j + 1] - cum[i] - (n_c[i] + n_c[j]) / 2) ** 2
    raise ValueError(f"level must be nominal, ordinal, interval or ratio, got {level!r}")


def icc_2_1(ratings: np.ndarray) -> float:
    """ICC(2,1) (Shrout & Fleiss 1979): two-way random effects, absolute agreement, one rater.

    ratings: (targets n, raters k). ICC = (BMS - EMS) / (BMS + (k - 1) EMS + k (JMS - EMS) / n) with the
    two-way ANOVA mean squares of targets (BMS), raters (JMS) and residual (EMS). Targets with a
    missing rating are dropped; NaN with fewer than 2 complete targets or 2 raters.
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"icc_2_1 needs a (targets, raters) array, got shape {x.shape}")
    x = x[~np.isnan(x).any(axis=1)]
    n, k = x.shape
    if n < 2 or k < 2:
        return math.nan
    grand = x.mean()
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    bms = k * float(((rows - grand) ** 2).sum()) / (n - 1)
    jms = n * float(((cols - grand) ** 2).sum()) / (k - 1)
    ems = float(((x - rows[:, None] - cols[None, :] + grand) ** 2).sum()) / ((n - 1) * (k - 1))
    denominator = bms + (k - 1) * ems + k * (jms - ems) / n
    return (bms - ems) / denominator if denominator != 0 else math.nan


__all__ = [
    "DEFAULT_PAIRED_RESAMPLES", "DEFAULT_RESAMPLES", "DEFAULT_SEED", "PairedComparison", "bootstrap_indices", "bootstrap_interval",
    "cluster_interval", "cluster_se", "icc_2_1", "interval", "krippendorff_alpha", "paired_bootstrap", "permutation_test", "t_interval",
]
