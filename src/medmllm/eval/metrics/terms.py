"""Medical-term precision / recall (RadFM's UMLS_Precision / UMLS_Recall idea) and open-answer recall.

Term metrics (RadFM, Wu et al. 2023, section "Evaluation metrics"): "extract the medical-related
words from [prediction and ground truth] ... count the overlap words as true-positive";
precision = TP / the prediction's medical words, recall = TP / the reference's. RadFM extracts
them with UMLS; here they are the terms of the project's bundled vocabulary
(`medmllm.data.vocab.MedicalVocabulary.load()`: ICD-10-CM phrases + the radiology lexicon, matched
longest-first, plurals folded to the singular term), so the numbers are *over the bundled vocabulary, not UMLS*
and are not comparable with RadFM's. Per sample, with P and R the sets of distinct terms found in
the prediction and in the first reference:

    term_precision = |P & R| / |P|     term_recall = |P & R| / |R|     term_f1 = 2 |P & R| / (|P| + |R|)

When exactly one side has no term all three are 0; when neither has one all three are NaN (left
out of the mean). Negation is ignored, as in RadFM ("no effusion" names "effusion"). The corpus
value is the mean over samples ("the average score on all test samples", RadFM Table 4).

Open recall (LLaVA-Med, Li et al. 2023, section 5.2, for open-ended VQA answers: "the ratio that
ground-truth tokens appear in the generated sequences"): the fraction of the first reference's
tokens (``medmllm-v1`` tokens without the articles a/an/the, as LLaVA-Med's normalisation drops
them; repeats counted) that occur anywhere in the prediction; NaN for a reference with no token.
LLaVA-Med's code counts a shared word as often as the *prediction* repeats it, which can exceed
the reference count; we count the reference's occurrences, which is the stated definition.
RadFM does not define an open recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache

import numpy as np

from medmllm.eval.metrics.base import Score, register
from medmllm.eval.metrics.clinical import first_references
from medmllm.eval.metrics.text import TOKENIZER, tokenize

TERM_SIGNATURE = "{name}|terms=medmllm vocabulary (icd10cm+radiology), not UMLS|distinct terms|ref=first|empty side=0|both empty=nan|mean over samples|=RadFM UMLS_{kind} idea"
OPEN_RECALL_SIGNATURE = f"open_recall|tok={TOKENIZER} minus a/an/the|ref=first|ref tokens with repeats|mean over samples|=LLaVA-Med open-set recall (paper definition)"
ARTICLES = frozenset({"a", "an", "the"})


@cache
def _vocabulary():
    from medmllm.data.vocab import MedicalVocabulary

    return MedicalVocabulary.load()  # built once per process (about 3 s: ICD-10-CM phrases)


@lru_cache(maxsize=1 << 16)
def _singular(term: str) -> str:
    """The singular form of a term when the vocabulary has it: "opacities" -> "opacity", "masses" ->
    "mass" (the vocabulary lists some plurals on their own, from ICD-10-CM: "nodules", "fractures")."""
    head, _, last = term.rpartition(" ")
    candidates = [last[:-3] + "y"] * last.endswith("ies") + [last[:-2]] * last.endswith("es") + [last[:-1]] * last.endswith("s")
    for singular in candidates:
        candidate = f"{head} {singular}".strip()
        if len(singular) > 2 and candidate in _vocabulary():
            return candidate
    return term


def medical_terms(text: str) -> frozenset[str]:
    """The distinct vocabulary terms found in ``text``, lowercase, in singular form where the vocabulary has it."""
    return frozenset(_singular(term) for _, _, term in _vocabulary().find_terms(text))


def term_overlap(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(N, 3) int64: |P & R|, |P|, |R| per pair (term sets of prediction and reference)."""
    out = np.zeros((len(predictions), 3), dtype=np.int64)
    seen: dict[str, frozenset[str]] = {}  # references repeat (one per question of a study)
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        for text in (prediction, reference):
            if text not in seen:
                seen[text] = medical_terms(text)
        p, r = seen[prediction], seen[reference]
        out[i] = len(p & r), len(p), len(r)
    return out


def term_scores(overlap: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 3) overlap counts -> per-sample term_precision, term_recall, term_f1 (see the module docstring)."""
    common, n_pred, n_ref = (overlap[:, k].astype(np.float64) for k in range(3))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_pred > 0, common / n_pred, 0.0)
        recall = np.where(n_ref > 0, common / n_ref, 0.0)
        f1 = np.where(n_pred + n_ref > 0, 2 * common / (n_pred + n_ref), 0.0)
    both_empty = (n_pred == 0) & (n_ref == 0)
    return {name: np.where(both_empty, np.nan, values) for name, values in
            (("term_precision", precision), ("term_recall", recall), ("term_f1", f1))}


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


@register(
    "terms",
    outputs=("term_precision", "term_recall", "term_f1"),
    signature=TERM_SIGNATURE.format(name="term_precision/term_recall/term_f1", kind="Precision/Recall"),
    description="Medical-term precision, recall and F1 over the bundled vocabulary (RadFM's UMLS_Precision/Recall idea, not UMLS).",
)
def terms(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Score]:
    """Medical-term precision, recall and F1 over the bundled vocabulary, mean over samples."""
    refs = first_references(predictions, references)
    per_sample = term_scores(term_overlap(list(predictions), refs))
    return {name: Score(_mean(values), values) for name, values in per_sample.items()}


def open_recall_values(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(N,) per-sample open recall (see the module docstring)."""
    out = np.full(len(predictions), np.nan)
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        wanted = [t for t in tokenize(reference) if t not in ARTICLES]
        if wanted:
            found = set(tokenize(prediction))
            out[i] = sum(t in found for t in wanted) / len(wanted)
    return out


@register("open_recall", signature=OPEN_RECALL_SIGNATURE)
def open_recall(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Score]:
    """The fraction of the reference's tokens found in the prediction (LLaVA-Med's open-VQA recall)."""
    values = open_recall_values(predictions, first_references(predictions, references))
    return {"open_recall": Score(_mean(values), values)}


__all__ = ["medical_terms", "open_recall", "open_recall_values", "term_overlap", "term_scores", "terms"]
