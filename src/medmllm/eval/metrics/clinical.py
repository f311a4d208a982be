"""CheXpert label F1: the clinical accuracy of generated reports, with the rule-based labeler.

Both the prediction and its first reference are labelled (`medmllm.eval.labeler`), each of the
14 observations becomes a binary label, and F1 is computed over the (sample, observation) pairs:

    uncertain as positive (no suffix)  positive <=> label in {1, -1}; 0 and None are negative
    positive only (``_pos_only``)      positive <=> label == 1

    micro F1  2 TP / (2 TP + FP + FN), TP/FP/FN summed over all samples and observations
    macro F1  the mean over observations of each observation's F1 over the samples

over the 5 CheXbert observations (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural
Effusion: ``_5``) or all 14 (No Finding included: ``_14``). As sklearn's
``f1_score(y_true, y_pred, average="micro" | "macro", zero_division=0)``: an observation with no
positive in either the references or the predictions has F1 0 in the macro mean, and a corpus with
no positive at all has micro F1 0 (the tests check both against sklearn).

Per sample: that sample's F1 over the observations, 2 tp / (2 tp + fp + fn) (the same for the
micro and macro outputs); NaN when neither text has a positive label (0/0). Neither corpus value is
the mean of these, so each `Score` has ``corpus(indices)``, which sums the per-sample counts of a
resample (a weighted sum: one bincount and a matrix product).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medmllm.errors import MedMLLMError
from medmllm.eval.labeler.chexpert import CHEXBERT_5, OBSERVATIONS, POSITIVE, UNCERTAIN, label_report
from medmllm.eval.metrics.base import Score, register

LABELER = "medmllm-chexpert-rules-v1"
CONVENTIONS = {"": (POSITIVE, UNCERTAIN), "_pos_only": (POSITIVE,)}  # output suffix -> labels that count as positive
SUBSETS = {"5": CHEXBERT_5, "14": OBSERVATIONS}
OUTPUTS = tuple(
    f"chexpert_{average}_f1_{subset}{suffix}" for suffix in CONVENTIONS for subset in SUBSETS for average in ("micro", "macro")
)
SIGNATURE = (
    f"chexpert_f1|labeler={LABELER}|ref=first|uncertain=positive (_pos_only: negative)|subsets=chexbert5,all14|"
    "zero_division=0|=sklearn f1_score average=micro/macro"
)


def first_references(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[str]:
    """The first reference of each prediction, after checking the lengths match."""
    if len(predictions) != len(references):
        raise MedMLLMError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if any(len(refs) == 0 for refs in references):
        raise MedMLLMError("every prediction needs at least one reference")
    return [refs[0] for refs in references]


def label_matrix(texts: Sequence[str]) -> np.ndarray:
    """(N, 14) float array of labels, observations in `OBSERVATIONS` order: 1, 0, -1, NaN for None."""
    out = np.full((len(texts), len(OBSERVATIONS)), np.nan)
    for i, text in enumerate(texts):
        for j, label in enumerate(label_report(text).values()):
            if label is not None:
                out[i, j] = label
    return out


def f1_counts(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Binary (N, K) predicted and reference labels -> (3, N, K) int64 TP, FP, FN indicators."""
    predicted, reference = predicted.astype(bool), reference.astype(bool)
    return np.stack([predicted & reference, predicted & ~reference, ~predicted & reference]).astype(np.int64)


def f1_from_counts(tp, fp, fn, undefined: float):
    """2 tp / (2 tp + fp + fn), elementwise; ``undefined`` where the denominator is 0."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, undefined)


def micro_f1(counts: np.ndarray) -> float:
    """(3, N, K) counts -> micro F1 (0 when there is no positive at all)."""
    tp, fp, fn = counts.sum(axis=(1, 2))
    return float(f1_from_counts(tp, fp, fn, 0.0))


def macro_f1(counts: np.ndarray) -> float:
    """(3, N, K) counts -> the mean over the K observations of their F1 (0 for one with no positive)."""
    tp, fp, fn = counts.sum(axis=1)
    return float(f1_from_counts(tp, fp, fn, 0.0).mean())


def resampled_f1(counts: np.ndarray, average: str):
    """indices (M,) -> the micro or macro F1 of that resample, from the per-sample counts."""
    per_observation = counts  # (3, N, K)

    def corpus(indices: np.ndarray) -> float:
        weights = np.bincount(indices, minlength=per_observation.shape[1]).astype(np.float64)
        tp, fp, fn = np.einsum("n,cnk->ck", weights, per_observation)
        if average == "micro":
            return float(f1_from_counts(tp.sum(), fp.sum(), fn.sum(), 0.0))
        return float(f1_from_counts(tp, fp, fn, 0.0).mean())

    return corpus


def micro_f1_score(counts: np.ndarray) -> Score:
    """(3, N, K) counts -> the micro F1 as a `Score`: per-sample F1 (NaN where a sample has no
    positive at all) and the corpus F1 of any resample, for bootstrap intervals and paired tests."""
    tp, fp, fn = counts.sum(axis=2)
    return Score(micro_f1(counts), f1_from_counts(tp, fp, fn, np.nan), resampled_f1(counts, "micro"))


def chexpert_scores(predicted_labels: np.ndarray, reference_labels: np.ndarray) -> dict[str, Score]:
    """All `OUTPUTS` from (N, 14) label matrices (`label_matrix`)."""
    scores = {}
    for suffix, positive in CONVENTIONS.items():
        predicted, reference = np.isin(predicted_labels, positive), np.isin(reference_labels, positive)
        for subset, observations in SUBSETS.items():
            columns = [OBSERVATIONS.index(o) for o in observations]
            counts = f1_counts(predicted[:, columns], reference[:, columns])
            micro = micro_f1_score(counts)
            scores[f"chexpert_micro_f1_{subset}{suffix}"] = micro
            scores[f"chexpert_macro_f1_{subset}{suffix}"] = Score(macro_f1(counts), micro.per_sample, resampled_f1(counts, "macro"))
    return scores


@register("chexpert_f1", outputs=OUTPUTS, signature=SIGNATURE)
def chexpert_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Score]:
    """CheXpert label micro/macro F1 over 5 and 14 observations (rule-based labeler; first reference)."""
    refs = first_references(predictions, references)
    return chexpert_scores(label_matrix(predictions), label_matrix(refs))


__all__ = ["OUTPUTS", "chexpert_f1", "chexpert_scores", "f1_counts", "first_references", "label_matrix", "macro_f1", "f1_from_counts", "micro_f1", "resampled_f1"]
