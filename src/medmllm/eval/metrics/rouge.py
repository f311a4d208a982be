"""ROUGE-L (pycocoevalcap's and rouge-score's) and ROUGE-1 (rouge-score's), per sample; corpus = mean.

With LCS = length of the longest common subsequence of the prediction's and a reference's tokens:

- ``rouge_l``    pycocoevalcap 1.2 ``Rouge``: P = max over references of LCS / len(prediction),
                 R = max over references of LCS / len(reference) (each maximised on its own),
                 F = (1 + b^2) P R / (R + b^2 P), b = 1.2; 0 if P or R is 0. As pycocoevalcap splits
                 on " ", an empty text counts as one empty token: empty vs empty scores 1.
- ``rouge_l_f``  rouge-score 0.1.2 ``rougeL`` F1 = 2 P R / (P + R) with P = LCS / len(prediction),
                 R = LCS / len(reference); 0 if either is empty; several references: the largest
                 F1 (``RougeScorer.score_multi``).
- ``rouge_1``    rouge-score ``rouge1`` F1 on clipped unigram counts, several references: the largest.

LCS lengths use the bit-parallel algorithm (Allison & Dix 1986; Hyyro 2004) on Python ints:
one add, two ands, one or and one subtraction per reference token, instead of a len x len table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medmllm.eval.metrics.base import Score, register
from medmllm.eval.metrics.text import TOKENIZER, TextPairs, counts_by_text, lookup, prepare

BETA = 1.2


def lcs_lengths(pairs: TextPairs) -> np.ndarray:
    """(R,) LCS length of each reference with its sample's prediction (cached on ``pairs``)."""
    if "lcs" in pairs.cache:
        return pairs.cache["lcs"]
    n, tokens = pairs.n, pairs.token_lists
    out = np.zeros(len(pairs.ref_sample), dtype=np.int64)
    for i in range(n):
        prediction = tokens[i]
        if not prediction:
            continue
        masks: dict[int, int] = {}  # token -> bit set of its positions in the prediction
        for pos, t in enumerate(prediction):
            masks[t] = masks.get(t, 0) | (1 << pos)
        full = (1 << len(prediction)) - 1
        for j in range(pairs.ref_starts[i], pairs.ref_starts[i + 1]):
            v = full  # zero bits = the LCS so far
            for t in tokens[n + j]:
                m = masks.get(t)
                if m:
                    u = v & m
                    v = ((v + u) | (v - u)) & full
            out[j] = len(prediction) - v.bit_count()
    pairs.cache["lcs"] = out
    return out


def _max_per_sample(values: np.ndarray, pairs: TextPairs) -> np.ndarray:
    return np.maximum.reduceat(values, pairs.ref_starts[:-1]) if len(values) else np.zeros(0)


def _f1(overlap: np.ndarray, hyp_len: np.ndarray, ref_len: np.ndarray) -> np.ndarray:
    """rouge-score's fmeasure of P = overlap / hyp_len, R = overlap / ref_len (0 where a length is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = overlap / np.maximum(hyp_len, 1)
        r = overlap / np.maximum(ref_len, 1)
        return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


@register("rouge_l", signature=f"rouge_l|lcs|beta=1.2|P,R maximised over references|tok={TOKENIZER}|=pycocoevalcap 1.2 Rouge")
def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = TOKENIZER) -> dict[str, Score]:
    """ROUGE-L F (beta 1.2) as pycocoevalcap's Rouge."""
    pairs = prepare(predictions, references, tokenizer)
    lcs = lcs_lengths(pairs).astype(np.float64)
    lengths = pairs.lengths
    hyp_len, ref_len = lengths[: pairs.n][pairs.ref_sample], lengths[pairs.n :]
    lcs[(hyp_len == 0) & (ref_len == 0)] = 1  # [""] vs [""]
    prec = _max_per_sample(lcs / np.maximum(hyp_len, 1), pairs)
    rec = _max_per_sample(lcs / np.maximum(ref_len, 1), pairs)
    b2 = BETA**2
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where((prec != 0) & (rec != 0), ((1 + b2) * prec * rec) / (rec + b2 * prec), 0.0)
    return {"rouge_l": Score(_mean(score), score)}


@register("rouge_l_f", signature=f"rouge_l_f|lcs F1|no stemming|max over references|tok={TOKENIZER}|=rouge-score 0.1.2 rougeL fmeasure")
def rouge_l_f(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = TOKENIZER) -> dict[str, Score]:
    """ROUGE-L F1 as rouge-score's rougeL (no stemming), best reference."""
    pairs = prepare(predictions, references, tokenizer)
    lengths = pairs.lengths
    f1 = _f1(lcs_lengths(pairs).astype(np.float64), lengths[: pairs.n][pairs.ref_sample], lengths[pairs.n :])
    score = _max_per_sample(f1, pairs)
    return {"rouge_l_f": Score(_mean(score), score)}


@register("rouge_1", signature=f"rouge_1|unigram F1|no stemming|max over references|tok={TOKENIZER}|=rouge-score 0.1.2 rouge1 fmeasure")
def rouge_1(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = TOKENIZER) -> dict[str, Score]:
    """ROUGE-1 F1 as rouge-score's rouge1 (no stemming), best reference; RadFM's ROUGE."""
    pairs = prepare(predictions, references, tokenizer)
    n = pairs.n
    text, codes, count = pairs.ngrams(1)
    is_hyp = text < n
    hyp_text, hyp_code, hyp_tf = counts_by_text(text[is_hyp], codes[is_hyp], count)
    ref_text, ref_code, ref_tf = counts_by_text(text[~is_hyp], codes[~is_hyp], count)
    ref_row = ref_text - n
    in_hyp = lookup(hyp_text * np.int64(count) + hyp_code, hyp_tf, pairs.ref_sample[ref_row] * np.int64(count) + ref_code)
    overlap = np.bincount(ref_row, weights=np.minimum(ref_tf, in_hyp), minlength=len(pairs.ref_sample))
    lengths = pairs.lengths
    score = _max_per_sample(_f1(overlap, lengths[:n][pairs.ref_sample], lengths[n:]), pairs)
    return {"rouge_1": Score(_mean(score), score)}


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


__all__ = ["lcs_lengths", "rouge_1", "rouge_l", "rouge_l_f"]
