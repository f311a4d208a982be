"""CheXpert label F1, medical-term P/R/F1 and open recall, against direct computations and sklearn.

Texts: tests/eval/data/reports.jsonl (62 hand-written report pairs, no patient data).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medmllm.errors import MedMLLMError
from medmllm.eval.labeler import CHEXBERT_5, OBSERVATIONS, label_report
from medmllm.eval.metrics import get_metric
from medmllm.eval.metrics.clinical import OUTPUTS, label_matrix
from medmllm.eval.metrics.terms import medical_terms
from medmllm.eval.stats import bootstrap_indices, interval

ROWS = [json.loads(line) for line in (Path(__file__).parent / "data" / "reports.jsonl").read_text().splitlines() if line.strip()]


def _first_ref(row) -> str:
    refs = row.get("references") or [row["reference"]]
    return refs[0]


PREDICTIONS = [r["prediction"] for r in ROWS]
REFERENCES = [[_first_ref(r), "an ignored second reference: large pleural effusion"] for r in ROWS]
# Pairs with disagreements on the 5 observations too, so that every F1 is informative.
EXTRA = [
    ("Small left pleural effusion. No pneumothorax.", "No pleural effusion."),
    ("Cardiomegaly with mild pulmonary edema.", "Stable cardiomegaly. No edema."),
    ("Right lower lobe consolidation, possibly pneumonia.", "Right lower lobe atelectasis."),
    ("Bibasilar atelectasis versus consolidation.", "Bibasilar atelectasis. No consolidation."),
    ("No acute process.", "Moderate bilateral pleural effusions and pulmonary edema."),
]
PREDICTIONS += [p for p, _ in EXTRA]
REFERENCES += [[r] for _, r in EXTRA]


def _binary(texts, positive, columns):
    labels = np.array([[label_report(t)[o] for o in columns] for t in texts], dtype=object)
    return np.isin(labels, positive).astype(int)


def _reference_f1(y_true, y_pred, average):
    """F1 computed directly from the definition (sklearn's zero_division=0)."""
    def f1(t, p):
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        return 0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)

    t, p = y_true.astype(bool), y_pred.astype(bool)
    if average == "micro":
        return f1(t.ravel(), p.ravel())
    return float(np.mean([f1(t[:, k], p[:, k]) for k in range(t.shape[1])]))


@pytest.fixture(scope="module")
def scores():
    return get_metric("chexpert_f1").fn(PREDICTIONS, REFERENCES)


@pytest.mark.parametrize("name", OUTPUTS)
def test_chexpert_f1_matches_a_direct_computation_and_sklearn(scores, name):
    _, average, _, rest = name.split("_", 3)
    subset, _, convention = rest.partition("_")
    positive = (1,) if convention == "pos_only" else (1, -1)
    columns = CHEXBERT_5 if subset == "5" else OBSERVATIONS
    y_pred = _binary(PREDICTIONS, positive, columns)
    y_true = _binary([refs[0] for refs in REFERENCES], positive, columns)
    expected = _reference_f1(y_true, y_pred, average)
    assert scores[name].value == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 1  # informative data
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert scores[name].value == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred, average=average, zero_division=0), abs=1e-12)


def test_chexpert_f1_conventions_differ_on_uncertain_labels():
    result = get_metric("chexpert_f1").fn(["Possible pneumonia. Small left effusion."], [["Pneumonia. Small left effusion."]])
    assert result["chexpert_micro_f1_14"].value == pytest.approx(2 * 2 / (2 * 2 + 0 + 0))
    assert result["chexpert_micro_f1_14_pos_only"].value == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))
    assert result["chexpert_micro_f1_5"].value == 1.0  # effusion only: pneumonia is not one of the 5


def test_chexpert_per_sample_values_and_nan(scores):
    per_sample = scores["chexpert_micro_f1_5"].per_sample
    assert per_sample.shape == (len(PREDICTIONS),)
    labels_p = label_matrix(PREDICTIONS)
    labels_r = label_matrix([refs[0] for refs in REFERENCES])
    columns = [OBSERVATIONS.index(o) for o in CHEXBERT_5]
    p, r = np.isin(labels_p[:, columns], (1, -1)), np.isin(labels_r[:, columns], (1, -1))
    for i in range(len(PREDICTIONS)):
        tp, fp, fn = (p[i] & r[i]).sum(), (p[i] & ~r[i]).sum(), (~p[i] & r[i]).sum()
        if tp + fp + fn == 0:
            assert np.isnan(per_sample[i])
        else:
            assert per_sample[i] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert np.isnan(per_sample).any() and not np.isnan(per_sample).all()


def test_chexpert_corpus_of_a_resample_is_recomputed(scores):
    n = len(PREDICTIONS)
    for name in ("chexpert_micro_f1_14", "chexpert_macro_f1_5_pos_only"):
        score = scores[name]
        assert score.resample(np.arange(n)) == pytest.approx(score.value)
        rng = np.random.default_rng(1)
        idx = rng.integers(0, n, n)
        direct = get_metric("chexpert_f1").fn([PREDICTIONS[i] for i in idx], [REFERENCES[i] for i in idx])[name].value
        assert score.resample(idx) == pytest.approx(direct)
    lo, hi = interval(scores["chexpert_micro_f1_5"], indices=bootstrap_indices(n, 200))
    assert lo < scores["chexpert_micro_f1_5"].value < hi


def test_chexpert_f1_bad_input():
    with pytest.raises(MedMLLMError, match="reference"):
        get_metric("chexpert_f1").fn(["a", "b"], [["a"]])
    with pytest.raises(MedMLLMError, match="at least one reference"):
        get_metric("chexpert_f1").fn(["a"], [[]])


def test_metric_names_resolve():
    assert get_metric("chexpert_macro_f1_14_pos_only").name == "chexpert_f1"
    assert get_metric("term_recall").name == "terms"
    assert get_metric("open_recall").name == "open_recall"


# ------------------------------------------------------------------------------ terms


def _term_reference(prediction: str, reference: str) -> tuple[float, float, float]:
    p, r = medical_terms(prediction), medical_terms(reference)
    if not p and not r:
        return (np.nan,) * 3
    common = len(p & r)
    return (common / len(p) if p else 0.0, common / len(r) if r else 0.0, 2 * common / (len(p) + len(r)))


def test_term_precision_recall_f1_match_their_definition():
    result = get_metric("terms").fn(PREDICTIONS, REFERENCES)
    expected = np.array([_term_reference(p, refs[0]) for p, refs in zip(PREDICTIONS, REFERENCES)])
    for k, name in enumerate(("term_precision", "term_recall", "term_f1")):
        np.testing.assert_allclose(result[name].per_sample, expected[:, k])
        assert result[name].value == pytest.approx(np.nanmean(expected[:, k]))
        assert result[name].corpus is None
    assert 0 < result["term_recall"].value < 1


def test_terms_on_a_worked_example():
    assert medical_terms("Patchy right lower lobe opacities. No pleural effusion.") >= {"opacity", "pleural effusion", "right lower lobe"}
    assert medical_terms("Nodules, masses and fractures.") == medical_terms("nodule, mass and fracture")
    result = get_metric("terms").fn(["Right lower lobe pneumonia."], [["Pneumonia in the right lower lobe with pleural effusion."]])
    p, r = medical_terms("Right lower lobe pneumonia."), medical_terms("Pneumonia in the right lower lobe with pleural effusion.")
    assert p < r  # every predicted term is in the reference
    assert result["term_precision"].value == 1.0
    assert result["term_recall"].value == pytest.approx(len(p) / len(r)) and result["term_recall"].value < 1
    empty = get_metric("terms").fn(["", "Pneumonia."], [["Okay."], [""]])
    assert np.isnan(empty["term_f1"].per_sample[0]) and empty["term_f1"].per_sample[1] == 0.0


def test_term_scoring_is_fast_once_the_vocabulary_is_loaded():
    medical_terms("warm up")
    predictions = [f"{p} {i}" for i in range(40) for p in PREDICTIONS][:3000]
    references = [[f"{r[0]} {i}"] for i in range(40) for r in REFERENCES][:3000]
    start = time.perf_counter()
    get_metric("terms").fn(predictions, references)
    assert time.perf_counter() - start < 5  # ~0.3 s on one core; generous for CI


# ------------------------------------------------------------------------------ open recall


def test_open_recall_counts_reference_tokens_found_in_the_prediction():
    result = get_metric("open_recall").fn(
        ["The left lung", "right", "", "anything"],
        [["the LEFT lower lung"], ["Right, right side"], ["yes"], ["the a an"]],
    )
    # "left lower lung" (articles dropped): 2 of 3; "right right side": 2 of 3; nothing found; no token
    np.testing.assert_allclose(result["open_recall"].per_sample, [2 / 3, 2 / 3, 0.0, np.nan])
    assert result["open_recall"].value == pytest.approx(np.mean([2 / 3, 2 / 3, 0.0]))


def test_scoring_imports_no_torch():
    code = ("import sys; from medmllm.eval.metrics import get_metric; "
            "get_metric('chexpert_f1').fn(['No effusion.'], [['Effusion.']]); get_metric('open_recall').fn(['a'], [['a']]); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False False", result.stderr
