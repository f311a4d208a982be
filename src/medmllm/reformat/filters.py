"""PubMedVision's pre-filters (section 3.1, appendix B), cheapest first.

1. Context text: at least ``min_terms`` medical terms (`MedicalVocabulary.find_terms`; the paper:
   5 terms of its UMLS SPECIALIST-derived lexicon, here the project's vocabulary, docs/vocabulary.md).
2. Image resolution: every image at least ``min_size`` x ``min_size`` pixels (paper: 336 x 336).
3. Medical image or not: an `ImageClassifier` (a callable PIL image -> bool). The paper trained a
   CLIP-based classifier on 11K labelled images (91 % accuracy); the default here,
   `HistogramClassifier`, is a cheap heuristic, documented as one: charts, diagrams and text
   figures are mostly white paper with a few flat colours, so their intensity histogram has low
   entropy and a large near-white share, while radiographs, CT/MR slices, ultrasound, pathology and
   endoscopy photographs spread over many grey levels. It rejects an image when its grey-level
   entropy is below ``min_entropy`` bits or more than ``max_white`` of its pixels are near white.
   Plug in a real classifier with ``--classifier module:callable`` (`load_classifier`).
4. Semantic de-duplication of the contexts (all-MiniLM-L6-v2 embeddings, greedy keep-first,
   `medmllm.data.curate.semantic`), over the records that passed 1-3.

`prefilter` runs them over records and returns the kept ones and a reason for each dropped one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from medmllm.errors import MedMLLMError

if TYPE_CHECKING:
    from PIL import Image

    from medmllm.reformat.engine import Record

MIN_TERMS = 5  # appendix B: "filtering out data with fewer than five medical terms"
MIN_SIZE = 336  # appendix B: "a resolution lower than 336x336 pixels"


class ImageClassifier(Protocol):
    """Whether an image is a medical image (not a chart, diagram or photo of something else)."""

    def __call__(self, image: Image.Image) -> bool: ...


@dataclass(frozen=True)
class HistogramFeatures:
    entropy: float  # bits, of the 256-bin grey-level histogram (0..8)
    white: float  # share of pixels with every channel >= 245
    grayscale: float  # share of pixels whose channels differ by < 16 (1.0 for a grey image)


def histogram_features(image: Image.Image, max_side: int = 512) -> HistogramFeatures:
    """The statistics `HistogramClassifier` decides on (the image is shrunk to ``max_side`` first)."""
    rgb = image.convert("RGB")
    rgb.thumbnail((max_side, max_side))
    pixels = np.asarray(rgb, dtype=np.int16).reshape(-1, 3)
    gray = np.asarray(rgb.convert("L")).ravel()
    p = np.bincount(gray, minlength=256) / gray.size
    p = p[p > 0]
    return HistogramFeatures(
        entropy=float(-(p * np.log2(p)).sum()),
        white=float((pixels.min(axis=1) >= 245).mean()),
        grayscale=float(((pixels.max(axis=1) - pixels.min(axis=1)) < 16).mean()),
    )


@dataclass(frozen=True)
class HistogramClassifier:
    """A heuristic, not a trained model: medical when the grey-level entropy is >= ``min_entropy``
    bits and at most ``max_white`` of the pixels are near white. See the module docstring."""

    min_entropy: float = 4.0
    max_white: float = 0.5

    def __call__(self, image: Image.Image) -> bool:
        f = histogram_features(image)
        return f.entropy >= self.min_entropy and f.white <= self.max_white


def load_classifier(spec: str | None) -> ImageClassifier | None:
    """``"heuristic"`` (`HistogramClassifier`), ``"none"`` / None (no classifier), or
    ``"package.module:name"``: a callable image -> bool, or a class / factory called without
    arguments that returns one."""
    if spec in (None, "none"):
        return None
    if spec == "heuristic":
        return HistogramClassifier()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise MedMLLMError(f"--classifier {spec!r}: give 'heuristic', 'none' or 'package.module:callable'")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise MedMLLMError(f"--classifier {spec!r} cannot be loaded: {e}") from None
    return obj() if isinstance(obj, type) else obj


def count_medical_terms(text: str, vocabulary=None) -> int:
    """Medical terms in ``text`` (the project's vocabulary unless one is given)."""
    if vocabulary is None:
        from medmllm.data.vocab import MedicalVocabulary

        vocabulary = MedicalVocabulary.load()
    return len(vocabulary.find_terms(text))


@dataclass
class FilterConfig:
    min_terms: int = MIN_TERMS  # 0: no term filter
    min_size: int = MIN_SIZE  # 0: no resolution filter
    classifier: ImageClassifier | None = None
    semantic_threshold: float | None = None  # cosine; None: no semantic de-duplication


def check_images(paths: Sequence[Path], min_size: int, classifier: ImageClassifier | None) -> str | None:
    """Why the images of one record are refused ("image-unreadable", "image-too-small",
    "not-medical-image"), or None. Opens each image once."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as image:
                if min(image.size) < min_size:
                    return "image-too-small"
                if classifier is not None:
                    image.load()
                    if not classifier(image):
                        return "not-medical-image"
        except (UnidentifiedImageError, OSError, ValueError):
            return "image-unreadable"
    return None


def prefilter(records: Sequence[Record], config: FilterConfig, *, vocabulary=None,
              embed: Callable[[list[str]], np.ndarray] | None = None) -> tuple[list[Record], dict[str, str]]:
    """(kept records in input order, {record id: reason} of the dropped ones).

    Reasons: ``too-few-medical-terms``, ``image-too-small``, ``image-unreadable``,
    ``not-medical-image``, ``semantic-duplicate``. ``embed`` replaces the sentence encoder (tests).
    """
    dropped: dict[str, str] = {}
    kept: list[Record] = []
    if config.min_terms > 0 and vocabulary is None:
        from medmllm.data.vocab import MedicalVocabulary

        vocabulary = MedicalVocabulary.load()
    for record in records:
        if config.min_terms > 0 and count_medical_terms(record.context, vocabulary) < config.min_terms:
            dropped[record.id] = "too-few-medical-terms"
            continue
        reason = check_images(record.image_paths, config.min_size, config.classifier)
        if reason is not None:
            dropped[record.id] = reason
            continue
        kept.append(record)
    if config.semantic_threshold is not None and len(kept) > 1:
        from medmllm.data.curate.semantic import semantic_duplicate_clusters

        texts = [r.context for r in kept]
        if embed is None:
            clusters = semantic_duplicate_clusters(texts, threshold=config.semantic_threshold)
        else:
            clusters = semantic_duplicate_clusters(embeddings=embed(texts), threshold=config.semantic_threshold)
        for i, c in enumerate(clusters):
            if int(c) != i:
                dropped[kept[i].id] = "semantic-duplicate"
        kept = [r for i, r in enumerate(kept) if int(clusters[i]) == i]
    return kept, dropped
