"""Shared machinery of the text metrics (BLEU, ROUGE, CIDEr): the tokenizer and a numpy n-gram index.

Tokenizer ``medmllm-v1`` (docs/metrics.md): NFKC-normalise (non-ASCII text only), lowercase, put
spaces around each CJK ideograph / kana (Chinese and Japanese are scored per character), then every
maximal run of letters and digits is a token; punctuation, symbols, underscores and whitespace
only separate tokens and are dropped. Text that is already lowercase alphanumeric tokens joined by
single spaces comes out unchanged, and on ASCII text the tokens equal rouge-score's tokenizer
(without stemming). ``whitespace`` splits on whitespace only (for pre-tokenized text, e.g. PTB).

`TextPairs` turns N predictions and their references into int64 arrays once; the metrics share it
(one-entry cache in `prepare`), so ``bleu,rouge_l,cider`` tokenizes and counts n-grams once.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medmllm.errors import MedMLLMError

TOKENIZER = "medmllm-v1"
TOKENIZERS = (TOKENIZER, "whitespace")

_WORD = re.compile(r"[^\W_]+")
_ASCII_WORD = re.compile(r"[a-z0-9]+")  # the same tokens on lowercase ASCII text, faster
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def tokenize(text: str, tokenizer: str = TOKENIZER) -> list[str]:
    """One text -> its tokens (see the module docstring)."""
    if tokenizer == "whitespace":
        return text.split()
    if tokenizer != TOKENIZER:
        raise MedMLLMError(f"unknown tokenizer {tokenizer!r}; known: {', '.join(TOKENIZERS)}")
    if text.isascii():
        return _ASCII_WORD.findall(text.lower())
    text = _CJK.sub(r" \1 ", unicodedata.normalize("NFKC", text))
    return _WORD.findall(text.lower())


def normalize(text: str, tokenizer: str = TOKENIZER) -> str:
    """The tokens joined by single spaces: what the reference implementations are fed in the parity tests."""
    return " ".join(tokenize(text, tokenizer))


def segment_ids(lengths: np.ndarray) -> np.ndarray:
    """(S,) segment lengths -> (sum,) index of the segment each element belongs to."""
    return np.repeat(np.arange(len(lengths)), lengths)


@dataclass
class TextPairs:
    """N predictions with R >= N references, as token ids.

    tokens      (T,) int64 token ids of all texts: the N predictions first, then the R references
    starts      (N + R + 1,) offsets of each text in ``tokens``
    ref_sample  (R,) the sample each reference belongs to (non-decreasing)
    ref_starts  (N + 1,) offsets of each sample's references in the reference rows
    vocab_size  an upper bound of the token ids
    token_lists the tokens of each text (strings), for the LCS
    """

    n: int
    tokens: np.ndarray
    starts: np.ndarray
    ref_sample: np.ndarray
    ref_starts: np.ndarray
    vocab_size: int
    token_lists: list[list[str]]
    _ngrams: dict[int, tuple] = field(default_factory=dict, repr=False)
    cache: dict = field(default_factory=dict, repr=False)  # per-metric intermediate results (LCS lengths)

    @property
    def lengths(self) -> np.ndarray:
        """(N + R,) token counts, predictions first."""
        return np.diff(self.starts)

    def ngrams(self, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        """All k-grams: (text index (M,), n-gram id (M,), number of distinct k-grams).

        Exact, no hashing: the id of a k-gram is the rank of (id of its (k-1)-prefix, last token)
        among all k-grams, so equal ids mean equal token tuples."""
        if k not in self._ngrams:
            if k == 1:
                text = segment_ids(self.lengths)
                codes, count = self.tokens, self.vocab_size
                pos = np.arange(len(self.tokens))
            else:
                text_prev, codes_prev, count_prev = self.ngrams(k - 1)[:3]
                pos_prev = self._ngrams[k - 1][3]
                # a (k-1)-gram at position p extends to a k-gram if p + k - 1 is still in its text
                keep = pos_prev + k - 1 < self.starts[text_prev + 1]
                pos, text = pos_prev[keep], text_prev[keep]
                pair = codes_prev[keep] * np.int64(self.vocab_size) + self.tokens[pos + k - 1]
                uniq, codes = np.unique(pair, return_inverse=True)
                count = len(uniq)
            self._ngrams[k] = (text, codes, count, pos)
        text, codes, count, _ = self._ngrams[k]
        return text, codes, count


_last: tuple | None = None


def prepare(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = TOKENIZER) -> TextPairs:
    """Tokenize N predictions and their reference lists into a `TextPairs` (the last one is reused)."""
    global _last
    predictions, references = list(predictions), [list(r) for r in references]
    if _last is not None and _last[2] == tokenizer and _last[0] == predictions and _last[1] == references:
        return _last[3]
    if len(predictions) != len(references):
        raise MedMLLMError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if any(len(refs) == 0 for refs in references):
        raise MedMLLMError("every prediction needs at least one reference")
    texts = predictions + [r for refs in references for r in refs]
    token_lists = [tokenize(text, tokenizer) for text in texts]
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    # token id = position of the token's first occurrence: unique, below the token count, no sort needed
    first_seen: dict[str, int] = {}
    flat = list(itertools.chain.from_iterable(token_lists))
    tokens = np.fromiter(map(first_seen.setdefault, flat, itertools.count()), dtype=np.int64, count=len(flat))
    per_sample = np.fromiter((len(refs) for refs in references), dtype=np.int64, count=len(references))
    ref_starts = np.zeros(len(references) + 1, dtype=np.int64)
    np.cumsum(per_sample, out=ref_starts[1:])
    pairs = TextPairs(len(predictions), tokens, starts, segment_ids(per_sample), ref_starts, len(flat) + 1, token_lists)
    _last = (predictions, references, tokenizer, pairs)
    return pairs


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is slower on these int64 keys)."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def counts_by_text(text: np.ndarray, codes: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occurrences (text, n-gram) -> distinct (text, n-gram) pairs and their counts, sorted by text then n-gram."""
    keys, tf = np.unique(text * np.int64(count) + codes, return_counts=True)
    return keys // count, keys % count, tf


def lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray, missing=0) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, else ``missing``; sorted_keys ascending and unique."""
    if len(sorted_keys) == 0:
        return np.full(len(queries), missing, dtype=values.dtype)
    at = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == queries, values[at], missing)


__all__ = ["TOKENIZER", "TOKENIZERS", "TextPairs", "counts_by_text", "lookup", "normalize", "prepare", "segment_ids", "tokenize", "unique_sorted"]
