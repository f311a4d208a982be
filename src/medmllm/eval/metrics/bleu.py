"""BLEU-1..4 exactly as pycocoevalcap 1.2's ``Bleu(4)`` (corpus and per sample), vectorised.

Per sample i and order n (pycocoevalcap's bleu_scorer.py, option "closest"):

    correct_k  clipped k-gram matches: sum over the prediction's k-grams of min(count, max count in one reference)
    guess_k    max(0, len - k + 1), the prediction's k-grams
    reflen     the reference length closest to the prediction's (ties: the shorter)
    BLEU-n     prod_{k<=n} ((correct_k + 1e-15) / (guess_k + 1e-9)) ** (1/n) * BP
    BP         exp(1 - 1/ratio) if ratio < 1 else 1, ratio = (len + 1e-15) / (reflen + 1e-9)

The corpus value uses the same formula on the sums of correct, guess, len and reflen over all
samples; it is not the mean of the per-sample values, so `Score.corpus` recomputes it for a
bootstrap resample from the per-sample sufficient statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medmllm.eval.metrics.base import Score, register
from medmllm.eval.metrics.text import TOKENIZER, TextPairs, counts_by_text, lookup, prepare

MAX_ORDER = 4
TINY = 1e-15  # pycocoevalcap: "so that if guess is 0 still return 0"
SMALL = 1e-9
SIGNATURE = f"bleu|n=1..4|reflen=closest|tiny=1e-15|small=1e-9|tok={TOKENIZER}|=pycocoevalcap 1.2 Bleu(4), corpus and per sample"


def bleu_statistics(pairs: TextPairs, max_order: int = MAX_ORDER) -> np.ndarray:
    """(N, 2 * max_order + 2) int64 sufficient statistics per sample:
    correct_1..n, guess_1..n, prediction length, closest reference length."""
    n = pairs.n
    lengths = pairs.lengths
    hyp_len, ref_len = lengths[:n], lengths[n:]
    stats = np.zeros((n, 2 * max_order + 2), dtype=np.int64)
    for k in range(1, max_order + 1):
        text, codes, count = pairs.ngrams(k)
        is_hyp = text < n
        # max count of each k-gram in any one reference of its sample
        ref_text, ref_code, ref_tf = counts_by_text(text[~is_hyp], codes[~is_hyp], count)
        key = pairs.ref_sample[ref_text - n] * np.int64(count) + ref_code
        order = np.lexsort((ref_tf, key))
        key, ref_tf = key[order], ref_tf[order]
        last = np.ones(len(key), dtype=bool)  # the largest count of each (sample, k-gram) sorts last
        last[:-1] = key[1:] != key[:-1]
        max_key, max_tf = key[last], ref_tf[last]
        hyp_text, hyp_code, hyp_tf = counts_by_text(text[is_hyp], codes[is_hyp], count)
        clipped = np.minimum(hyp_tf, lookup(max_key, max_tf, hyp_text * np.int64(count) + hyp_code))
        stats[:, k - 1] = np.bincount(hyp_text, weights=clipped, minlength=n).astype(np.int64)
        stats[:, max_order + k - 1] = np.maximum(hyp_len - k + 1, 0)
    stats[:, 2 * max_order] = hyp_len
    # closest reference length, ties to the shorter: min of |diff| * big + length per sample
    big = np.int64(ref_len.max(initial=0) + 1)
    closest = np.abs(ref_len - hyp_len[pairs.ref_sample]) * big + ref_len
    stats[:, 2 * max_order + 1] = np.minimum.reduceat(closest, pairs.ref_starts[:-1]) % big
    return stats


def bleu_from_statistics(stats: np.ndarray, max_order: int = MAX_ORDER) -> np.ndarray:
    """(..., 2 * max_order + 2) statistics -> (..., max_order) BLEU-1..n, pycocoevalcap's arithmetic."""
    stats = np.asarray(stats)
    correct = stats[..., :max_order].astype(np.float64)
    guess = stats[..., max_order : 2 * max_order].astype(np.float64)
    testlen = stats[..., 2 * max_order].astype(np.float64)
    reflen = stats[..., 2 * max_order + 1].astype(np.float64)
    products = np.cumprod((correct + TINY) / (guess + SMALL), axis=-1)
    bleu = products ** (1.0 / np.arange(1, max_order + 1))
    ratio = (testlen + TINY) / (reflen + SMALL)
    with np.errstate(over="ignore", divide="ignore"):
        brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleu * brevity[..., None]


def _corpus_bleu(stats: np.ndarray, order: int):
    """indices (M,) -> corpus BLEU-order of that resample: the sums of the resampled statistics."""

    def corpus(indices: np.ndarray) -> float:
        weights = np.bincount(indices, minlength=len(stats))
        return float(bleu_from_statistics(weights @ stats)[order - 1])

    return corpus


@register("bleu", outputs=tuple(f"bleu_{k}" for k in range(1, MAX_ORDER + 1)), signature=SIGNATURE)
def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = TOKENIZER) -> dict[str, Score]:
    """BLEU-1..4, pycocoevalcap's definition (closest reference length), corpus and per sample."""
    stats = bleu_statistics(prepare(predictions, references, tokenizer))
    per_sample = bleu_from_statistics(stats)
    corpus = bleu_from_statistics(stats.sum(axis=0))
    return {f"bleu_{k}": Score(float(corpus[k - 1]), per_sample[:, k - 1], _corpus_bleu(stats, k)) for k in range(1, MAX_ORDER + 1)}


@register("bleu_1_mean", signature=f"bleu_1_mean|mean of per-sample BLEU-1|reflen=closest|tok={TOKENIZER}|=RadFM's BLEU (1-gram, averaged over samples)")
def bleu_1_mean(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = TOKENIZER) -> dict[str, Score]:
    """The mean over samples of per-sample BLEU-1, as RadFM reports BLEU for VQA and reports."""
    stats = bleu_statistics(prepare(predictions, references, tokenizer), max_order=1)
    per_sample = bleu_from_statistics(stats, max_order=1)[:, 0]
    return {"bleu_1_mean": Score(float(per_sample.mean()) if len(per_sample) else float("nan"), per_sample)}


__all__ = ["bleu", "bleu_1_mean", "bleu_from_statistics", "bleu_statistics"]
