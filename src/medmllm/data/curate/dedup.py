"""Near-duplicate removal with MinHash + LSH (P2Med's outpatient-record deduplication).

P2Med (section V-C.1) deduplicated outpatient records "with 5-grams, a Jaccard similarity threshold
of 0.85, 16 rows and 256 bands", inheriting CodeParrot's pipeline (datasketch MinHash + MinHashLSH).
This module is our own vectorised implementation of that pipeline:

1. **Tokens** (`tokenize`): lowercase, split on anything that is not a letter or a digit (Unicode
   aware; ``_`` is a separator too). CJK ideographs and kana are written without spaces, so each of
   them is a token of its own: on Chinese text the "word n-grams" are character n-grams, and mixed
   text (``体温38.5℃ cough``) gives ``体 温 38 5 cough``. Hangul is spaced and stays word-level.
   Scripts written without spaces and not listed here (Thai, Lao, ...) are not segmented.
2. **Shingles** (`shingle_hashes`): the set of word ``ngram``-grams (default 5), each hashed to 64
   bits: every distinct token is hashed once with BLAKE2b (8 bytes, deterministic across processes,
   unlike Python's ``hash``), then the n token hashes of a shingle are combined with numpy over the
   whole batch (``h = h * K + t`` wrapping mod 2^64, then the MurmurHash3 finalizer). No extra
   dependency. A text with fewer than ``ngram`` tokens has no shingle (see `count_ngrams`).
3. **MinHash** (`minhash_signatures`): ``num_perm = bands * rows`` universal hash functions
   ``h -> ((a*h + b) mod 2^64) mod (2^61 - 1)``, truncated to 32 bits, with ``(a, b)`` drawn from
   ``numpy.random.RandomState(seed)`` in datasketch's order: bit for bit datasketch's ``MinHash``
   with ``scheme="legacy"`` (the only scheme before datasketch 2.0, the one CodeParrot used) fed
   the same 64-bit shingle hashes. The modulo is a Mersenne fold that numpy vectorises (numpy's
   uint64 ``%`` is ~15x slower); see `_signatures` for how its rare last step is kept exact.
4. **LSH**: each signature is cut into ``bands`` bands of ``rows`` values; a band is hashed to a
   64-bit bucket key; texts sharing a key in any band are candidate pairs (all pairs within a bucket,
   up to ``max_bucket`` members; see `near_duplicates`).
5. **Verification**: each candidate pair is kept only if its similarity is >= ``threshold``:
   ``verify="exact"`` (default) computes the exact Jaccard of the two shingle sets (no estimator
   error, and only the shingle sets are kept in memory, not the ``N x num_perm`` signatures);
   ``"minhash"`` uses the signature agreement (datasketch's ``MinHash.jaccard``); ``"none"`` keeps
   every candidate (what ``MinHashLSH`` alone returns).
6. **Clusters**: connected components of the verified pairs (union-find; single linkage: A~B and
   B~C put A, B, C in one cluster even if A and C are further apart). Each cluster keeps its first
   text in input order; the cluster id of a text is the index of that kept text.

Texts whose shingle sets are identical are merged before LSH (Jaccard 1), so that an exact duplicate
repeated thousands of times does not make buckets with millions of pairs. Texts with no shingle
(fewer than ``ngram`` tokens) are never duplicates of anything: remove them first with the
``few_ngrams`` filter (`medmllm.data.curate.filters`), as P2Med did.

**The paper's LSH numbers.** "16 rows and 256 bands" taken literally is ``num_perm = 256 * 16 =
4,096`` permutations. The probability that a pair becomes a candidate, ``1 - (1 - J^16)^256``, is
0.5 at J = 0.69, 0.57 at 0.7 and 1 - 3e-9 at 0.85: the bands only gather candidates (recall ~1 at
the threshold) and the verification step enforces 0.85. CodeParrot itself used ``num_perm=256``
with datasketch's optimised bands for 0.85, (13 bands, 19 rows): 0.5 at J = 0.86, 0.45 at 0.85,
0.85 at 0.9, so pairs just above the threshold are mostly missed whatever is checked afterwards.
A third reading, 256 permutations as 16 bands x 16 rows (0.5 at J = 0.82, 0.71 at 0.85), fits
"256" and "16 rows" if the paper called the permutations "bands".
We take the paper literally (defaults ``bands=256, rows=16``); the cost is the signatures, about
0.8 ns per shingle and hash function: 86 s on one core for 200,000 notes of ~100 words, 6x less
than datasketch (benchmarks/RESULTS.md). ``bands=13, rows=19`` is CodeParrot's setting, 9x
cheaper, but it misses ~6% of the pairs with Jaccard >= 0.85 in that benchmark.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from medmllm.data.schema import Sample

__all__ = [
    "NearDuplicates",
    "conversation_text",
    "count_ngrams",
    "dedup_samples",
    "minhash_signatures",
    "near_duplicate_clusters",
    "near_duplicates",
    "output_text",
    "permutations",
    "shingle_hashes",
    "tokenize",
]

# The P2Med / CodeParrot settings (see the module docstring).
DEFAULT_NGRAM = 5
DEFAULT_THRESHOLD = 0.85
DEFAULT_BANDS = 256
DEFAULT_ROWS = 16

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64((1 << 32) - 1)  # datasketch's legacy range; also the value of an empty signature
_SHIFT61 = np.uint64(61)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: h * K + t is a bijection in h, so shingle order matters
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)

# One token: a single CJK ideograph / kana, or a run of other letters and digits.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
_ASCII_SEPARATORS = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum()})

# Shingles per block of the MinHash kernel: the block and two work arrays stay in a core's L2 cache.
_BLOCK_SHINGLES = 32768
# Texts per task handed to a worker process.
_TASK_TEXTS = 1024


def tokenize(text: str) -> list[str]:
    """Lowercased tokens: runs of letters/digits; each CJK ideograph or kana is one token."""
    text = text.lower()
    if text.isascii():  # same tokens as the regular expression, twice as fast
        return text.translate(_ASCII_SEPARATORS).split()
    return _TOKEN.findall(text)


def count_ngrams(text: str, n: int = DEFAULT_NGRAM) -> int:
    """How many word n-grams (with repeats) `tokenize(text)` has: ``max(0, tokens - n + 1)``.

    P2Med filtered out records "with n-grams less than 5": ``count_ngrams(text, 5) < 5``.
    """
    return max(0, len(tokenize(text)) - n + 1)


# --------------------------------------------------------------------------- hashing


class _TokenHashes(dict):
    """token -> 64-bit BLAKE2b hash, computed once per distinct token (per process)."""

    def __missing__(self, token: str) -> int:
        value = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
        if len(self) > 4_000_000:  # bound the cache on corpora with huge vocabularies (ids, numbers)
            self.clear()
        self[token] = value
        return value


_TOKEN_HASHES = _TokenHashes()


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, in place: a bijection that spreads every input bit."""
    h ^= h >> _S33
    h *= _FMIX1
    h ^= h >> _S33
    h *= _FMIX2
    h ^= h >> _S33
    return h


def _shingle_batch(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique shingle hashes of each text, concatenated, and the (N + 1) offsets."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    token_lists = [tokenize(t) for t in texts]
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    total = int(lengths.sum())
    if total < ngram:
        return np.empty(0, np.uint64), offsets
    flat = itertools.chain.from_iterable(token_lists)
    token_hash = np.fromiter(map(_TOKEN_HASHES.__getitem__, flat), dtype=np.uint64, count=total)
    # Shingle starting at every token position of the concatenation; those crossing a text
    # boundary are dropped below.
    m = total - ngram + 1
    h = token_hash[:m].copy()
    for k in range(1, ngram):
        h *= _MIX
        h += token_hash[k : k + m]
    _fmix64(h)
    doc = np.repeat(np.arange(len(texts), dtype=np.int16 if len(texts) < 2**15 else np.int64), lengths)[:m]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    valid = np.arange(m) - starts[doc] <= lengths[doc] - ngram
    h, doc = h[valid], doc[valid]
    # Per-text sets: sort by hash, then stably by text (a radix sort for int16), drop repeats.
    order = np.argsort(h)
    order = order[np.argsort(doc[order], kind="stable")]
    h, doc = h[order], doc[order]
    if len(h):
        keep = np.ones(len(h), dtype=bool)
        keep[1:] = (h[1:] != h[:-1]) | (doc[1:] != doc[:-1])
        h, doc = h[keep], doc[keep]
    np.cumsum(np.bincount(doc, minlength=len(texts)), out=offsets[1:])
    return h, offsets


def shingle_hashes(text: str, ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """The sorted, unique 64-bit hashes (uint64) of the word ``ngram``-grams of ``text``."""
    return _shingle_batch([text], ngram)[0]


_PERMUTATIONS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` uint64 arrays of the ``num_perm`` hash functions: datasketch's legacy draw
    (``RandomState(seed)``, ``a`` in [1, p), ``b`` in [0, p), alternating), so the first k of them
    are those of a datasketch ``MinHash(num_perm=k, seed=seed, scheme="legacy")``."""
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    key = (num_perm, seed)
    if key not in _PERMUTATIONS:
        gen = np.random.RandomState(seed)
        ab = np.array(
            [(gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64)) for _ in range(num_perm)],
            dtype=np.uint64,
        ).reshape(num_perm, 2)
        _PERMUTATIONS[key] = (np.ascontiguousarray(ab[:, 0]), np.ascontiguousarray(ab[:, 1]))
    return _PERMUTATIONS[key]


def _signatures(shingles: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, num_perm) uint32 MinHash signatures of the concatenated shingle sets.

    For hash function k and shingle h, datasketch's legacy value is ``((a_k*h + b_k) mod 2^64)
    mod p`` truncated to 32 bits, p = 2^61 - 1; the signature keeps its minimum over the text's
    shingles. Texts without shingles get ``MAX_HASH`` (datasketch's empty MinHash).

    ``v mod p`` is the Mersenne fold ``r = (v & p) + (v >> 61)``, then ``r - p`` if ``r >= p``. Only
    the low 32 bits are kept, and those of ``r`` are those of ``v + (v >> 61)``: two cheap passes
    instead of numpy's slow uint64 ``%``. The final subtraction is needed only when ``r`` is in
    [p, p + 7] (probability 2^-58 per value); its low 32 bits are then 2^32 - 1 or 0..6 where the
    true value is 0 or 1..7. So a block is exact unless some value there is 2^32 - 1 or some text's
    minimum is <= 6 (about 1 block-permutation in 20,000 with 32k shingles); those are recomputed
    with the full fold (`_exact_row`). The result is bit for bit datasketch's, at ~0.8 ns per value.
    """
    n = len(offsets) - 1
    out = np.full((n, len(a)), MAX_HASH, dtype=np.uint32)
    lengths = np.diff(offsets)
    nonempty = np.flatnonzero(lengths)
    if len(nonempty) == 0:
        return out
    # Blocks of whole texts with about _BLOCK_SHINGLES shingles each (a longer text is a block alone).
    block_of = offsets[nonempty] // _BLOCK_SHINGLES
    cuts = np.flatnonzero(np.diff(block_of)) + 1
    cap = _BLOCK_SHINGLES + int(lengths.max())  # a block starts below a multiple of the size and ends one text past it
    v = np.empty(cap, np.uint64)
    t = np.empty(cap, np.uint64)
    low = np.empty(cap, np.uint32)
    max32 = np.uint32(MAX_HASH)
    for docs in np.split(nonempty, cuts):
        lo, hi = offsets[docs[0]], offsets[docs[-1] + 1]
        h = shingles[lo:hi]
        starts = offsets[docs] - lo
        vv, tt, ll = v[: len(h)], t[: len(h)], low[: len(h)]
        block = np.empty((len(a), len(docs)), np.uint32)
        for k in range(len(a)):
            np.multiply(h, a[k], out=vv)
            vv += b[k]  # v = a*h + b, wrapping mod 2^64 as in datasketch
            np.right_shift(vv, _SHIFT61, out=tt)
            vv += tt  # low 32 bits = those of (v & p) + (v >> 61)
            np.copyto(ll, vv, casting="unsafe")  # & 0xFFFFFFFF
            row = block[k]
            np.minimum.reduceat(ll, starts, out=row)
            if row.min() <= 6 or ll.max() == max32:
                _exact_row(h, starts, a[k], b[k], row)
        out[docs] = block.T
    return out


def _exact_row(h: np.ndarray, starts: np.ndarray, a: np.uint64, b: np.uint64, row: np.ndarray) -> None:
    """One permutation over one block with the complete Mersenne reduction (see `_signatures`)."""
    v = h * a + b
    r = (v & MERSENNE_PRIME) + (v >> _SHIFT61)  # in [0, p + 7]
    r = np.minimum(r, r - MERSENNE_PRIME)  # r - p wraps around to a huge value when r < p
    np.minimum.reduceat((r & MAX_HASH).astype(np.uint32), starts, out=row)


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, N) uint64 bucket keys: each band's ``rows`` values hashed to 64 bits (exact for
    ``rows <= 2``). Two different bands of 32-bit values collide with probability 2^-64."""
    n = sig.shape[0]
    cut = sig[:, : bands * rows].reshape(n, bands, rows)
    if rows == 1:
        return np.ascontiguousarray(cut[:, :, 0].T.astype(np.uint64))
    if rows == 2:
        return np.ascontiguousarray(((cut[:, :, 0].astype(np.uint64) << np.uint64(32)) | cut[:, :, 1]).T)
    key = np.zeros((n, bands), np.uint64)
    for r in range(rows):
        key *= _MIX
        key += cut[:, :, r]
    return np.ascontiguousarray(_fmix64(key).T)


def _set_keys(shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """A 64-bit key per shingle set (order-free sum of mixed hashes, with the size): equal sets have
    equal keys; equal keys are checked element by element before texts are merged."""
    n = len(offsets) - 1
    keys = np.zeros(n, np.uint64)
    lengths = np.diff(offsets)
    nonempty = np.flatnonzero(lengths)
    if len(nonempty):
        mixed = _fmix64(shingles ^ _MIX)
        keys[nonempty] = np.add.reduceat(mixed, offsets[nonempty])
    keys += lengths.astype(np.uint64) * _FMIX1
    return keys


@dataclass
class _Chunk:
    shingles: np.ndarray
    offsets: np.ndarray
    band_keys: np.ndarray | None
    signatures: np.ndarray | None
    seconds_shingles: float
    seconds_minhash: float


def _process_chunk(texts: Sequence[str], ngram: int, num_perm: int, seed: int, bands: int, rows: int, keep_signatures: bool, want_keys: bool) -> _Chunk:
    t0 = time.perf_counter()
    shingles, offsets = _shingle_batch(texts, ngram)
    t1 = time.perf_counter()
    a, b = permutations(num_perm, seed)
    sig = _signatures(shingles, offsets, a, b)
    keys = _band_keys(sig, bands, rows) if want_keys else None
    t2 = time.perf_counter()
    return _Chunk(shingles, offsets, keys, sig if keep_signatures else None, t1 - t0, t2 - t1)


def _process_task(args) -> _Chunk:
    return _process_chunk(*args)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _map_chunks(texts: Sequence[str], processes: int | None, params: tuple) -> Iterator[tuple[int, _Chunk]]:
    """``(first text index, chunk)`` for tasks of _TASK_TEXTS texts, in order, hashed and signed in
    worker processes when it pays off (results are consumed as they come: memory stays bounded).

    ``processes=None``: one per CPU when there are at least 4 tasks' worth of texts, else none.
    ``processes <= 1``: everything in this process. Chunks do not depend on the process count."""
    starts = range(0, len(texts), _TASK_TEXTS)
    tasks = ((texts[i : i + _TASK_TEXTS], *params) for i in starts)
    if processes is None:
        processes = _cpu_count() if len(starts) >= 4 else 1
    processes = min(processes, len(starts))
    if processes <= 1:
        yield from zip(starts, map(_process_task, tasks))
        return
    import multiprocessing

    with multiprocessing.get_context().Pool(processes) as pool:
        yield from zip(starts, pool.imap(_process_task, tasks, chunksize=1))


def minhash_signatures(texts: Sequence[str], num_perm: int = DEFAULT_BANDS * DEFAULT_ROWS, ngram: int = DEFAULT_NGRAM, seed: int = 0, *, processes: int | None = None) -> np.ndarray:
    """MinHash signatures, shape ``(len(texts), num_perm)``, dtype uint64, values < 2^32.

    Args:
        texts: the documents.
        num_perm: number of hash functions (default 4,096 = 256 bands x 16 rows).
        ngram: words per shingle (default 5).
        seed: seed of the hash functions (`permutations`).
        processes: worker processes for hashing (None: one per CPU for large inputs; 1: none).

    Row i equals ``datasketch.MinHash(num_perm, seed, hashfunc=int, scheme="legacy")`` updated with
    `shingle_hashes(texts[i], ngram)`; a text without shingles has every value ``2^32 - 1``.
    """
    out = np.empty((len(texts), num_perm), np.uint64)
    for start, chunk in _map_chunks(texts, processes, (ngram, num_perm, seed, 1, 1, True, False)):
        out[start : start + len(chunk.signatures)] = chunk.signatures
    return out


# --------------------------------------------------------------------------- LSH and verification


@dataclass
class NearDuplicates:
    """What `near_duplicates` found.

    Attributes:
        clusters: (N,) int64, for each text the index of the text its cluster keeps (itself if kept).
        pairs: (E, 2) int64 verified duplicate pairs ``i < j`` (before clustering): identical-set
            merges, then large-bucket comparisons, then LSH pairs in (i, j) order.
        similarity: (E,) float64 similarity of each pair (exact or estimated Jaccard; 1.0 for
            identical shingle sets; NaN with ``verify="none"``).
        candidates: number of distinct candidate pairs from buckets of up to ``max_bucket`` texts
            (before verification; identical sets merged beforehand and large buckets not counted).
        seconds: wall time per stage: shingles+minhash (hashing and signatures, in the worker
            processes), lsh (candidate pairs), verify, cluster; and total.
        cpu_seconds: the worker-side split of the first stage: shingles, minhash (summed over workers).
        stats: counts: texts, empty (no shingle), exact_merged (identical sets merged before LSH),
            large_buckets (buckets over ``max_bucket`` members, compared pivot by pivot).
        candidate_pairs: (C, 2) int64 distinct LSH candidate pairs ``i < j`` (buckets up to
            ``max_bucket`` members), with ``keep_candidates=True``; else None.
    """

    clusters: np.ndarray
    pairs: np.ndarray
    similarity: np.ndarray
    candidates: int
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    candidate_pairs: np.ndarray | None = None

    @property
    def kept(self) -> np.ndarray:
        """Indices of the texts that are kept (one per cluster, the first in input order)."""
        return np.flatnonzero(self.clusters == np.arange(len(self.clusters)))


class _Verifier:
    """Similarity of pairs of texts, vectorised over batches of pairs."""

    def __init__(self, mode: str, shingles: np.ndarray, offsets: np.ndarray, signatures: np.ndarray | None):
        self.mode, self.shingles, self.offsets, self.signatures = mode, shingles, offsets, signatures

    def __call__(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if len(i) == 0:
            return np.empty(0)
        if self.mode == "none":
            return np.full(len(i), np.nan)
        if self.mode == "minhash":
            out = np.empty(len(i))
            step = max(1, 2**24 // self.signatures.shape[1])
            for s in range(0, len(i), step):
                out[s : s + step] = (self.signatures[i[s : s + step]] == self.signatures[j[s : s + step]]).mean(axis=1)
            return out
        return self._exact(i, j)

    def _exact(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Exact Jaccard |A & B| / |A | B| of the shingle sets: the elements of A and B (each a set)
        are mapped to dense ids, tagged with their pair, sorted; a repeated (pair, id) is a shared shingle."""
        off = self.offsets
        out = np.empty(len(i))
        sizes = np.cumsum((off[i + 1] - off[i]) + (off[j + 1] - off[j]))
        start = 0
        while start < len(i):  # batches of about 8M shingles
            end = max(start + 1, int(np.searchsorted(sizes, (sizes[start - 1] if start else 0) + 8_000_000, side="right")))
            sel = slice(start, end)
            start = end
            ii, jj = i[sel], j[sel]
            la, lb = off[ii + 1] - off[ii], off[jj + 1] - off[jj]
            values = np.concatenate((self.shingles[_ranges(off[ii], la)], self.shingles[_ranges(off[jj], lb)]))
            tag = np.arange(len(ii), dtype=np.uint64)
            tags = np.concatenate((np.repeat(tag, la), np.repeat(tag, lb)))
            _, dense = np.unique(values, return_inverse=True)
            key = np.sort((tags << np.uint64(32)) | dense.astype(np.uint64))
            shared = key[1:][key[1:] == key[:-1]] >> np.uint64(32)
            inter = np.bincount(shared.astype(np.int64), minlength=len(ii))
            union = la + lb - inter
            out[sel] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for each (s, l), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    ends = np.cumsum(lengths)
    idx = np.arange(total, dtype=np.int64)
    return idx - np.repeat(ends - lengths, lengths) + np.repeat(starts, lengths)


def _pairs_within_runs(members: np.ndarray, run_starts: np.ndarray, run_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (members[p], members[q]), p < q, inside each run of the ``members`` array."""
    run_end = np.repeat(run_starts + run_lengths, run_lengths)
    pos = _ranges(run_starts, run_lengths)
    left, right = [], []
    d = 1
    while len(pos):
        ok = pos + d < run_end
        pos, run_end = pos[ok], run_end[ok]
        left.append(members[pos])
        right.append(members[pos + d])
        d += 1
    if not left:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(left), np.concatenate(right)


def _pivot_pairs(members: np.ndarray, verify: _Verifier, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bucket too large for all pairs: the first member is compared with all others, those that
    fail with the first of them, and so on. Pairs between two members that matched different pivots
    (or one that matched and one that did not) are not compared: see `near_duplicates`."""
    left, right, sims = [], [], []
    rest = np.sort(members)
    while len(rest) > 1:
        pivot, others = rest[0], rest[1:]
        sim = verify(np.full(len(others), pivot), others)
        ok = (sim >= threshold) | np.isnan(sim)
        left.append(np.full(int(ok.sum()), pivot))
        right.append(others[ok])
        sims.append(sim[ok])
        rest = others[~ok]
    if not left:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    return np.concatenate(left), np.concatenate(right), np.concatenate(sims)


def near_duplicates(
    texts: Sequence[str],
    *,
    ngram: int = DEFAULT_NGRAM,
    threshold: float = DEFAULT_THRESHOLD,
    bands: int = DEFAULT_BANDS,
    rows: int = DEFAULT_ROWS,
    seed: int = 0,
    verify: Literal["exact", "minhash", "none"] = "exact",
    max_bucket: int = 500,
    processes: int | None = None,
    keep_candidates: bool = False,
) -> NearDuplicates:
    """Near-duplicate clusters of ``texts`` with MinHash + LSH, and what was found on the way.

    Args:
        texts: the documents, in priority order (a cluster keeps its first text).
        ngram: words per shingle (P2Med: 5).
        threshold: Jaccard similarity at or above which two texts are duplicates (P2Med: 0.85).
        bands, rows: LSH bands of ``rows`` hash values each; ``num_perm = bands * rows``
            (P2Med, literally: 256 bands x 16 rows = 4,096 permutations; see the module docstring).
        seed: seed of the hash functions: the same seed gives the same result, on any machine.
        verify: ``"exact"`` Jaccard of the shingle sets (default), ``"minhash"`` estimate from the
            signatures (keeps ``N x num_perm x 4`` bytes of signatures in memory), or ``"none"``
            (every LSH candidate pair is a duplicate, as with datasketch's MinHashLSH alone).
        max_bucket: buckets with more members than this are not expanded into all pairs; their
            members are compared pivot by pivot (see `_pivot_pairs`), which can miss a pair that
            only links through a non-pivot. ``stats["large_buckets"]`` says how often it happened.
        processes: worker processes for hashing (None: one per CPU for large inputs; 1: none).
        keep_candidates: also return the LSH candidate pairs (``candidate_pairs``).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if bands < 1 or rows < 1:
        raise ValueError(f"bands and rows must be >= 1, got bands={bands}, rows={rows}")
    if verify not in ("exact", "minhash", "none"):
        raise ValueError(f"verify must be 'exact', 'minhash' or 'none', got {verify!r}")
    n = len(texts)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    keys = np.empty((bands, n), np.uint64)  # (bands, N): one band's keys are contiguous for the LSH
    signatures = np.empty((n, bands * rows), np.uint32) if verify == "minhash" else None
    lengths = np.zeros(n, np.int64)
    parts: list[np.ndarray] = []
    cpu = {"shingles": 0.0, "minhash": 0.0}
    for start, chunk in _map_chunks(texts, processes, (ngram, bands * rows, seed, bands, rows, verify == "minhash", True)):
        stop = start + len(chunk.offsets) - 1
        keys[:, start:stop] = chunk.band_keys
        if signatures is not None:
            signatures[start:stop] = chunk.signatures
        lengths[start:stop] = np.diff(chunk.offsets)
        parts.append(chunk.shingles)
        cpu["shingles"] += chunk.seconds_shingles
        cpu["minhash"] += chunk.seconds_minhash
    shingles = np.concatenate(parts) if parts else np.empty(0, np.uint64)
    del parts
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    t1 = time.perf_counter()
    seconds["shingles+minhash"] = t1 - t0
    verifier = _Verifier(verify, shingles, offsets, signatures)

    # Identical shingle sets: merge them now (Jaccard 1); only the first of each enters the LSH.
    edge_i: list[np.ndarray] = []
    edge_j: list[np.ndarray] = []
    edge_sim: list[np.ndarray] = []
    nonempty = np.flatnonzero(lengths)
    set_keys = _set_keys(shingles, offsets)
    order = nonempty[np.argsort(set_keys[nonempty], kind="stable")]
    sorted_keys = set_keys[order]
    active = np.ones(n, bool)
    active[lengths == 0] = False
    run_starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    run_lengths = np.diff(np.append(run_starts, len(order)))
    for s, m in zip(run_starts[run_lengths > 1], run_lengths[run_lengths > 1]):
        members = np.sort(order[s : s + m])
        first = shingles[offsets[members[0]] : offsets[members[0] + 1]]
        same = [x for x in members[1:] if np.array_equal(shingles[offsets[x] : offsets[x + 1]], first)]
        if same:
            edge_i.append(np.full(len(same), members[0]))
            edge_j.append(np.array(same, np.int64))
            edge_sim.append(np.ones(len(same)))
            active[same] = False
    exact_merged = int(sum(len(x) for x in edge_j))

    # LSH: for each band, the runs of equal keys among the active texts.
    idx = np.flatnonzero(active)
    codes: list[np.ndarray] = []
    pending = 0
    large = 0
    for band in range(bands):
        k = keys[band, idx]
        o = np.argsort(k, kind="stable")
        sk = k[o]
        boundary = np.concatenate(([True], sk[1:] != sk[:-1], [True]))
        starts = np.flatnonzero(boundary[:-1])
        lens = np.diff(np.flatnonzero(boundary))
        multi = lens > 1
        if not multi.any():
            continue
        starts, lens = starts[multi], lens[multi]
        members = idx[o]
        small = lens <= max_bucket
        if small.any():
            a, b = _pairs_within_runs(members, starts[small], lens[small])
            codes.append(np.minimum(a, b) * n + np.maximum(a, b))
            pending += len(a)
        for s, m in zip(starts[~small], lens[~small]):
            large += 1
            a, b, sim = _pivot_pairs(members[s : s + m], verifier, threshold)
            edge_i.append(a)
            edge_j.append(b)
            edge_sim.append(sim)
        if pending > 20_000_000:  # the same pair recurs in many bands: compact now and then
            codes = [np.unique(np.concatenate(codes))]
            pending = len(codes[0])
    candidates = np.unique(np.concatenate(codes)) if codes else np.empty(0, np.int64)
    t2 = time.perf_counter()
    seconds["lsh"] = t2 - t1

    ci, cj = (candidates // n, candidates % n) if n else (candidates, candidates)
    sim = verifier(ci, cj)
    ok = (sim >= threshold) | np.isnan(sim)
    edge_i.append(ci[ok])
    edge_j.append(cj[ok])
    edge_sim.append(sim[ok])
    t3 = time.perf_counter()
    seconds["verify"] = t3 - t2

    pi = np.concatenate(edge_i).astype(np.int64)
    pj = np.concatenate(edge_j).astype(np.int64)
    psim = np.concatenate(edge_sim).astype(np.float64)
    clusters = _components(n, pi, pj)
    t4 = time.perf_counter()
    seconds["cluster"] = t4 - t3
    seconds["total"] = t4 - t0
    stats = {"texts": n, "empty": int((lengths == 0).sum()), "exact_merged": exact_merged, "large_buckets": large}
    kept_candidates = np.stack([ci, cj], axis=1) if keep_candidates else None
    return NearDuplicates(clusters, np.stack([pi, pj], axis=1), psim, int(len(candidates)), seconds, cpu, stats, kept_candidates)


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """For each node, the smallest index in its connected component."""
    if n == 0:
        return np.empty(0, np.int64)
    if len(i) == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(first, labels, np.arange(n, dtype=np.int64))
    return first[labels]


def near_duplicate_clusters(
    texts: Sequence[str],
    *,
    ngram: int = DEFAULT_NGRAM,
    threshold: float = DEFAULT_THRESHOLD,
    bands: int = DEFAULT_BANDS,
    rows: int = DEFAULT_ROWS,
    seed: int = 0,
    processes: int | None = None,
    verify: Literal["exact", "minhash", "none"] = "exact",
    max_bucket: int = 500,
) -> np.ndarray:
    """For each text, the index of the text its near-duplicate cluster keeps (its own index if kept).

    ``np.flatnonzero(ids == np.arange(len(texts)))`` are the texts to keep. Parameters as in
    `near_duplicates` (defaults: P2Med's 5-grams, Jaccard 0.85, 256 bands x 16 rows, exact verification).
    """
    return near_duplicates(texts, ngram=ngram, threshold=threshold, bands=bands, rows=rows, seed=seed, processes=processes, verify=verify, max_bucket=max_bucket).clusters


def dedup_samples(samples: Sequence[Sample], text_of: Callable[[Sample], str] | None = None, **params) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Near-duplicate removal of samples.

    Args:
        samples: the samples, in priority order (a cluster keeps its first sample).
        text_of: the text compared (default `conversation_text`: every turn's text). A prompt
            template shared by all samples adds the same shingles to every text and raises every
            pair's Jaccard; pass e.g. ``output_text`` or the record's own text to compare records only.
        **params: passed to `near_duplicate_clusters` (ngram, threshold, bands, rows, seed, ...).

    Returns:
        ``(kept, dropped)``: the kept samples in input order, and ``(id, kept_id)`` for each dropped
        sample, naming the sample its cluster kept.
    """
    text_of = text_of or conversation_text
    samples = list(samples)
    clusters = near_duplicate_clusters([text_of(s) for s in samples], **params)
    kept = [s for i, s in enumerate(samples) if clusters[i] == i]
    dropped = [(s.id, samples[int(clusters[i])].id) for i, s in enumerate(samples) if clusters[i] != i]
    return kept, dropped


def conversation_text(sample: Sample) -> str:
    """Every turn's text (system, user, assistant), joined with newlines; images left out."""
    return "\n".join(turn.text for turn in sample.turns)


def output_text(sample: Sample) -> str:
    """The ground-truth output: the assistant turns' text, or the targets' values when there is none."""
    texts = [turn.text for turn in sample.turns if turn.role == "assistant"]
    return "\n".join(texts) if texts else "\n".join(sample.targets.values())
