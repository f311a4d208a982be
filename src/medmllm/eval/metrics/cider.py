"""CIDEr-D exactly as pycocoevalcap 1.2's ``Cider`` (n = 4, sigma = 6), vectorised.

For N samples, a k-gram g's weight in a text is tf(g) * (log N - log max(1, df(g))), where df(g)
is the number of samples whose references (any of them) contain g: the idf comes from the
references of the scored set itself. For a prediction h and one reference r, per order k:

    sim_k(h, r) = sum over g in h of min(w_h(g), w_r(g)) * w_r(g) / (|w_h| |w_r|)     (clipped cosine;
                  the division is skipped when a norm is 0)
                  * exp(-(d^2) / (2 sigma^2)),  d = bigrams(h) - bigrams(r)           (length penalty)

    CIDEr-D(h) = 10 * mean over k of (sum over references of sim_k) / (number of references)

``bigrams(x) = max(len(x) - 1, 0)``: pycocoevalcap measures the length by counting 2-grams. The corpus
value is the mean of the per-sample values; a bootstrap resample keeps the idf of the full set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medmllm.eval.metrics.base import Score, register
from medmllm.eval.metrics.text import TOKENIZER, TextPairs, counts_by_text, lookup, prepare, unique_sorted

ORDER = 4
SIGMA = 6.0
SIGNATURE = f"cider|CIDEr-D|n=4|sigma=6|clipped|x10|idf=scored references|tok={TOKENIZER}|=pycocoevalcap 1.2 Cider"


def cider_scores(pairs: TextPairs, order: int = ORDER, sigma: float = SIGMA) -> np.ndarray:
    """(N,) per-sample CIDEr-D."""
    n, n_refs = pairs.n, len(pairs.ref_sample)
    n_texts = n + n_refs
    log_n = np.log(float(n))
    sim = np.zeros((n_refs, order))
    norms_sq = np.zeros((n_texts, order))
    terms = []
    for k in range(1, order + 1):
        text, codes, count = pairs.ngrams(k)
        t, g, tf = counts_by_text(text, codes, count)  # distinct (text, k-gram) with term frequency
        is_ref = t >= n
        sample = np.where(is_ref, pairs.ref_sample[np.maximum(t - n, 0)], t)
        sample_gram = unique_sorted(sample[is_ref] * np.int64(count) + g[is_ref])  # document frequency: samples, not references
        df = np.bincount(sample_gram % count, minlength=count).astype(np.float64)
        w = tf * (log_n - np.log(np.maximum(1.0, df[g])))
        norms_sq[:, k - 1] = np.bincount(t, weights=w * w, minlength=n_texts)
        terms.append((t, g, w, is_ref, sample, count))
    norms = np.sqrt(norms_sq)
    for k, (t, g, w, is_ref, sample, count) in enumerate(terms):
        hyp_keys = t[~is_ref] * np.int64(count) + g[~is_ref]  # sorted: counts_by_text sorts by (text, k-gram)
        w_hyp = lookup(hyp_keys, w[~is_ref], sample[is_ref] * np.int64(count) + g[is_ref], missing=np.nan)
        w_ref = w[is_ref]
        found = ~np.isnan(w_hyp)
        dot = np.bincount((t[is_ref] - n)[found], weights=np.minimum(w_hyp[found], w_ref[found]) * w_ref[found], minlength=n_refs)
        hyp_norm, ref_norm = norms[pairs.ref_sample, k], norms[n:, k]
        with np.errstate(divide="ignore", invalid="ignore"):
            sim[:, k] = np.where((hyp_norm != 0) & (ref_norm != 0), dot / (hyp_norm * ref_norm), dot)
    bigrams = np.maximum(pairs.lengths - 1, 0)
    delta = (bigrams[pairs.ref_sample] - bigrams[n:]).astype(np.float64)
    sim *= np.power(np.e, -(delta**2) / (2 * sigma**2))[:, None]
    per_ref = np.add.reduceat(sim, pairs.ref_starts[:-1], axis=0) if n_refs else np.zeros((0, order))
    per_sample_refs = np.diff(pairs.ref_starts)
    return per_ref.mean(axis=1) / per_sample_refs * 10.0


@register("cider", signature=SIGNATURE)
def cider(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = TOKENIZER) -> dict[str, Score]:
    """CIDEr-D as pycocoevalcap's Cider (idf from the scored references, x10); corpus = mean."""
    pairs = prepare(predictions, references, tokenizer)
    scores = cider_scores(pairs) if pairs.n else np.zeros(0)
    return {"cider": Score(float(scores.mean()) if len(scores) else float("nan"), scores)}


__all__ = ["cider", "cider_scores"]
