"""Statistics: intervals against scipy, agreement against textbook values and brute-force definitions,
paired tests on seeded data with and without a real difference, and `medmllm eval compare`."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from medmllm.errors import MedMLLMError
from medmllm.eval.metrics.base import Score
from medmllm.eval.stats import (
    cluster_interval,
    cluster_se,
    icc_2_1,
    interval,
    krippendorff_alpha,
    paired_bootstrap,
    permutation_test,
    t_interval,
)

nan = math.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", sec. E: 4 observers x 12 units, missing values.
KRIPPENDORFF_2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
    [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
])
# Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; ICC(2,1) = .29.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float)


# ------------------------------------------------------------------------------ intervals


def test_t_interval_matches_scipy():
    from scipy import stats

    values = np.random.default_rng(3).normal(3.2, 0.9, 57)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert t_interval(values) == pytest.approx(expected, rel=1e-12)
    assert t_interval(values, 0.9) == pytest.approx(stats.t.interval(0.9, 56, loc=values.mean(), scale=stats.sem(values)), rel=1e-12)


def test_cluster_interval_with_one_sample_per_cluster_is_the_t_interval():
    values = np.random.default_rng(4).normal(size=40)
    assert cluster_interval(values, np.arange(40)) == pytest.approx(t_interval(values), rel=1e-12)
    assert interval(Score(float(values.mean()), values), method="cluster", clusters=[f"img{i}" for i in range(40)]) == pytest.approx(t_interval(values))


def test_cluster_se_of_exact_copies_is_the_se_of_the_clusters():
    """k identical questions per image carry one image's information: the clustered SE of the
    repeated data equals the plain SE of the G distinct values, with G - 1 degrees of freedom."""
    base = np.random.default_rng(5).normal(size=15)
    repeated, clusters = np.repeat(base, 4), np.repeat(np.arange(15), 4)
    mean, se, g = cluster_se(repeated, clusters)
    assert g == 15 and mean == pytest.approx(base.mean())
    assert se == pytest.approx(base.std(ddof=1) / math.sqrt(15), rel=1e-12)
    assert cluster_interval(repeated, clusters) == pytest.approx(t_interval(base), rel=1e-12)
    # ignoring the clusters would claim 4x the information: a narrower interval
    lo, hi = t_interval(repeated)
    assert hi - lo < 0.6 * (cluster_interval(repeated, clusters)[1] - cluster_interval(repeated, clusters)[0])


def test_cluster_se_against_the_sandwich_formula_with_unequal_clusters():
    rng = np.random.default_rng(6)
    values, clusters = rng.normal(size=30), rng.integers(0, 7, size=30)
    mean = values.mean()
    groups = sorted(set(clusters.tolist()))
    meat = sum((values[clusters == g] - mean).sum() ** 2 for g in groups)
    expected = math.sqrt(len(groups) / (len(groups) - 1) * meat / len(values) ** 2)
    assert cluster_se(values, clusters)[1] == pytest.approx(expected, rel=1e-12)


def test_cluster_interval_needs_clusters_and_a_mean_metric():
    score = Score(1.0, np.ones(3))
    with pytest.raises(ValueError, match="needs clusters"):
        interval(score, method="cluster")
    with pytest.raises(ValueError, match="shape"):
        cluster_interval(np.ones(3), [1, 2])


# ------------------------------------------------------------------------------ paired tests


def _runs(effect: float, n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(3, 1, n)  # shared per-sample difficulty: what pairing removes
    return difficulty + rng.normal(0, 0.4, n), difficulty + effect + rng.normal(0, 0.4, n)


@pytest.mark.parametrize("test", [paired_bootstrap, permutation_test])
def test_paired_tests_find_a_real_difference(test):
    a, b = _runs(0.25)
    result = test(a, b, resamples=4000, seed=1)
    assert result.difference == pytest.approx(b.mean() - a.mean())
    assert result.p_value < 0.01
    assert result.ci[0] > 0 and result.ci[0] < result.difference < result.ci[1]


@pytest.mark.parametrize("test", [paired_bootstrap, permutation_test])
def test_paired_tests_find_no_difference_where_there_is_none(test):
    a, b = _runs(0.0, seed=2)
    result = test(a, b, resamples=4000, seed=1)
    assert result.p_value > 0.2
    assert result.ci[0] < 0 < result.ci[1]
    assert test(a, b, resamples=4000, seed=1) == result  # seeded


def test_permutation_test_approaches_the_exact_permutation_p_value():
    d = np.array([0.8, -0.2, 0.5, 0.9, 0.1, -0.4, 0.7, 0.3, 0.6, -0.1])
    signs = np.array(list(itertools.product((-1, 1), repeat=d.size)))
    exact = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12)
    result = permutation_test(np.zeros_like(d), d, resamples=20000, seed=0)
    assert result.p_value == pytest.approx(exact, abs=0.01)


def test_paired_bootstrap_ci_is_close_to_the_t_interval_of_the_differences():
    a, b = _runs(0.1, n=400, seed=7)
    result = paired_bootstrap(a, b, resamples=5000, seed=0)
    assert result.ci == pytest.approx(t_interval(b - a), abs=0.01)


def test_paired_tests_with_clusters_resample_whole_clusters():
    rng = np.random.default_rng(8)
    clusters = np.repeat(np.arange(30), 5)
    shift = np.repeat(rng.normal(0, 0.5, 30), 5)  # B - A varies by image, not by question
    a = rng.normal(3, 1, 150)
    b = a + shift + rng.normal(0, 0.05, 150)
    plain, clustered = paired_bootstrap(a, b, seed=0, resamples=4000), paired_bootstrap(a, b, seed=0, resamples=4000, clusters=clusters)
    assert clustered.n_clusters == 30 and plain.n_clusters is None
    assert clustered.ci[1] - clustered.ci[0] > 1.7 * (plain.ci[1] - plain.ci[0])
    swapped = permutation_test(a, b, seed=0, resamples=4000, clusters=clusters)
    assert swapped.ci == pytest.approx(cluster_interval(b - a, clusters))


def test_paired_bootstrap_of_a_corpus_metric_uses_its_corpus_function():
    """A ratio-of-sums corpus value (like BLEU's): the bootstrap must recompute it, not average."""
    rng = np.random.default_rng(9)
    hits_a, hits_b, lengths = rng.integers(0, 5, 80), rng.integers(2, 8, 80), rng.integers(5, 10, 80)

    def score(hits):
        return Score(hits.sum() / lengths.sum(), hits / lengths, corpus=lambda idx: hits[idx].sum() / lengths[idx].sum())

    result = paired_bootstrap(score(hits_a), score(hits_b), resamples=2000, seed=0)
    assert result.difference == pytest.approx((hits_b.sum() - hits_a.sum()) / lengths.sum())
    assert result.p_value < 0.01
    with pytest.raises(ValueError, match="mean metrics"):
        permutation_test(score(hits_a), score(hits_b))


def test_paired_tests_drop_pairs_with_a_missing_side():
    a, b = np.array([1, 2, nan, 4, 5.0]), np.array([2, 2, 3, nan, 6.0])
    result = permutation_test(a, b, resamples=100)
    assert result.n == 3 and result.difference == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------ agreement


def brute_force_alpha(data: np.ndarray, level: str) -> float:
    """Krippendorff's alpha from its pairwise definition: every ordered pair of values within a unit
    (observed) and across all pairable values (expected), with the level's difference function."""
    units = [col[~np.isnan(col)] for col in data.T]
    units = [u for u in units if u.size >= 2]
    pooled = np.concatenate(units)
    n = pooled.size
    values = sorted(set(pooled.tolist()))
    count = {v: int((pooled == v).sum()) for v in values}

    def delta2(c, k):
        if level == "nominal":
            return float(c != k)
        if level == "interval":
            return (c - k) ** 2
        if level == "ratio":
            return ((c - k) / (c + k)) ** 2
        lo, hi = sorted((c, k))  # ordinal
        return (sum(count[g] for g in values if lo <= g <= hi) - (count[c] + count[k]) / 2) ** 2

    observed = sum(sum(delta2(u[i], u[j]) for i in range(u.size) for j in range(u.size) if i != j) / (u.size - 1) for u in units) / n
    expected = sum(delta2(pooled[i], pooled[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return 1 - observed / expected


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)])
def test_krippendorff_alpha_on_krippendorffs_own_example(level, published):
    alpha = krippendorff_alpha(KRIPPENDORFF_2011, level)
    assert round(alpha, 3) == published
    assert alpha == pytest.approx(brute_force_alpha(KRIPPENDORFF_2011, level), rel=1e-12)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_matches_the_definition_on_random_ratings_with_gaps(level):
    rng = np.random.default_rng(10)
    truth = rng.integers(1, 6, 25)
    data = np.clip(truth + rng.integers(-1, 2, (3, 25)), 1, 5).astype(float)
    data[rng.random(data.shape) < 0.2] = nan
    assert krippendorff_alpha(data, level) == pytest.approx(brute_force_alpha(data, level), rel=1e-12)


def test_krippendorff_alpha_edge_cases():
    assert krippendorff_alpha(np.array([[1, 2, 3, 4.0], [1, 2, 3, 4.0]])) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha(np.full((2, 3), 3.0)))  # no variation: undefined
    assert math.isnan(krippendorff_alpha(np.array([[1, nan], [nan, 2.0]])))  # no unit with 2 values
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(KRIPPENDORFF_2011, "cardinal")


def hand_icc_2_1(x: np.ndarray) -> float:
    """ICC(2,1) from the two-way ANOVA sums of squares written out with loops (Shrout & Fleiss, Table 1)."""
    n, k = x.shape
    grand = sum(sum(row) for row in x) / (n * k)
    row_means = [sum(row) / k for row in x]
    col_means = [sum(x[i][j] for i in range(n)) / n for j in range(k)]
    total = sum((x[i][j] - grand) ** 2 for i in range(n) for j in range(k))
    between_targets = k * sum((m - grand) ** 2 for m in row_means)
    between_judges = n * sum((m - grand) ** 2 for m in col_means)
    bms, jms = between_targets / (n - 1), between_judges / (k - 1)
    ems = (total - between_targets - between_judges) / ((n - 1) * (k - 1))
    return (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)


def test_icc_2_1_on_shrout_and_fleiss():
    assert round(icc_2_1(SHROUT_FLEISS), 2) == 0.29
    assert icc_2_1(SHROUT_FLEISS) == pytest.approx(hand_icc_2_1(SHROUT_FLEISS), rel=1e-12)
    ratings = np.random.default_rng(11).integers(1, 6, (20, 3)).astype(float)
    assert icc_2_1(ratings) == pytest.approx(hand_icc_2_1(ratings), rel=1e-12)


def test_icc_2_1_drops_targets_with_a_missing_rating():
    with_gap = np.vstack([SHROUT_FLEISS, [5, nan, 4, 4]])
    assert icc_2_1(with_gap) == pytest.approx(icc_2_1(SHROUT_FLEISS))
    assert math.isnan(icc_2_1(SHROUT_FLEISS[:1]))


# ------------------------------------------------------------------------------ eval compare


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _compare(*args):
    from medmllm.cli import app

    return CliRunner().invoke(app, ["eval", "compare", *map(str, args)])


def test_eval_compare_runs_and_files(tmp_path):
    a, b = _runs(0.3, n=61, seed=12)
    run_a = tmp_path / "run_a"
    run_a.mkdir()
    _write(run_a / "per_sample.jsonl", [{"id": f"s{i}", "acc": a[i], "note": "text", "cluster": f"img{i // 2}"} for i in range(60)])
    file_b = _write(tmp_path / "b.jsonl", [{"id": f"s{i}", "acc": b[i], "extra": 1.0} for i in range(1, 61)])  # s0 missing, s60 extra
    result = _compare(run_a, file_b, "--json", "--resamples", "2000")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["matched"], report["only_a"], report["only_b"]) == (59, 1, 1)
    [acc] = report["results"]
    assert acc["metric"] == "acc" and acc["n"] == 59 and acc["n_clusters"] == 30
    assert acc["difference"] == pytest.approx(float(np.mean(b[1:60] - a[1:60])))
    assert acc["p_value"] < 0.01 and acc["ci"][0] > 0

    table = _compare(run_a, file_b, "--method", "permutation", "--no-clusters", "--resamples", "500")
    assert table.exit_code == 0, table.output
    assert "59 matched ids; 1 only in A, 1 only in B; permutation" in table.output
    assert "acc" in table.output.splitlines()[-1]


def test_eval_compare_errors(tmp_path):
    file_a = _write(tmp_path / "a.jsonl", [{"id": "x", "acc": 1.0}])
    file_b = _write(tmp_path / "b.jsonl", [{"id": "y", "acc": 1.0}])
    result = _compare(file_a, file_b)
    assert isinstance(result.exception, MedMLLMError) and "no sample id is in both" in str(result.exception)
    result = _compare(file_a, file_a, "--metrics", "bleu")
    assert isinstance(result.exception, MedMLLMError) and "not in both runs" in str(result.exception)
    result = _compare(file_a, tmp_path / "nope")
    assert isinstance(result.exception, MedMLLMError) and "not found" in str(result.exception)
