"""Drop rules for samples, each naming its reason, and a runner that counts every drop.

A filter is ``filter(sample, ctx) -> str | None``: the reason to drop the sample, or None to keep
it. `FILTERS` holds them by name; `register_filter` adds one. `apply_filters` runs a list of them
lazily over a stream and counts each dropped sample under the reason its first failing filter
gave, so ``seen == kept + sum(dropped.values())`` always (nothing is dropped silently).

The rules (papers in shared/seeds):

- ``missing_output``: P2Med removed "records with any missing element in the model's ground truth
  output": an assistant turn with no text, a required target missing or blank, or a required
  ``[Section]`` missing or blank in the last assistant turn.
- ``too_long``: P2Med excluded records over 4,000 tokens. Counted with ``ctx.tokenizer`` when given
  (a Hugging Face tokenizer, or any callable returning a sequence), else estimated: one token per
  CJK character plus one per 4 other characters (the usual English BPE rate); the estimate can be
  off by ~30% either way, give the model's tokenizer where the limit matters.
- ``few_ngrams``: P2Med dropped records with fewer than 5 word n-grams (`dedup.count_ngrams`),
  counted on the ground-truth output (``ctx.ngram_text_of``, default: assistant turns, else targets).
- ``small_image``: PubMedVision dropped images under 336 x 336. Only headers are read: PIL's
  ``Image.open(...).size``; DICOM Rows/Columns (``stop_before_pixels``; a series folder: the series
  its ``ImageRef.series`` selects, else the first listed); NIfTI ``shape[:2]`` from the nibabel
  header; NPY/NPZ the header's last two axes (H, W).
- ``non_radiology``: RadFM removed non-radiologic images, PubMedVision used a CLIP classifier.
  ``ctx.classifier`` is anything with ``is_medical(path) -> bool``; the default `GreyscaleHeuristic`
  is described there with its limits.

An image that cannot be opened is dropped as ``image_unreadable`` by the image filters (a missing
file is not evidence of a good image).
"""

from __future__ import annotations

import math
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medmllm.data.curate.dedup import DEFAULT_NGRAM, conversation_text, count_ngrams, output_text
from medmllm.data.schema import ImageRef, Sample
from medmllm.errors import MedMLLMError

__all__ = [
    "FILTERS",
    "FilterContext",
    "FilterRun",
    "GreyscaleHeuristic",
    "ImageClassifier",
    "apply_filters",
    "estimate_tokens",
    "image_size",
    "register_filter",
]

IMAGE_UNREADABLE = "image_unreadable"

Filter = Callable[[Sample, "FilterContext"], "str | None"]
FILTERS: dict[str, Filter] = {}


def register_filter(name: str) -> Callable[[Filter], Filter]:
    """Decorator: add a filter to `FILTERS` under ``name`` (its default drop reason)."""

    def add(fn: Filter) -> Filter:
        FILTERS[name] = fn
        return fn

    return add


# --------------------------------------------------------------------------- images


@runtime_checkable
class ImageClassifier(Protocol):
    """Decides whether an image file is a medical (radiology) image."""

    def is_medical(self, path: Path) -> bool: ...


_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass
class GreyscaleHeuristic:
    """Default `ImageClassifier`: radiographs, CT and MR slices are grey; charts are mostly white.

    DICOM, NIfTI and NPY/NPZ files are medical by their format. A 2D image (PNG, JPEG, ...) is read
    as a thumbnail of at most ``thumbnail`` pixels and is *not* medical when:

    - more than ``max_colour_fraction`` of its pixels have a chroma ``max(R,G,B) - min(R,G,B)``
      above ``colour_chroma`` (of 255): photographs, slides, coloured figures;
    - more than ``max_white_fraction`` of its pixels are near white (>= 96% of the range): charts,
      tables, scanned documents, diagrams;
    - it is nearly uniform (standard deviation under 1% of the range): blank or placeholder images.

    Limits: colour *medical* images count as non-radiology (pathology, dermatology, endoscopy,
    fundus photos: right for RadFM's "non-radiologic" rule) and so do colour overlays on radiology
    (Doppler ultrasound, PET-CT fusion, annotated arrows in colour): wrong. Greyscale non-medical
    images with a dark background (grey photos, some plots) pass. It is a cheap first pass, not
    PubMedVision's trained classifier (91% accuracy): plug in a real one for web-scale data.
    """

    thumbnail: int = 256
    colour_chroma: int = 40
    max_colour_fraction: float = 0.05
    max_white_fraction: float = 0.5
    min_std: float = 0.01

    def is_medical(self, path: Path) -> bool:
        from PIL import Image

        from medmllm.scans.read import detect_format

        path = Path(path)
        if detect_format(path) != "image":
            return True
        with Image.open(path) as img:
            img.draft("RGB" if img.mode not in _GREY_MODES else img.mode, (self.thumbnail, self.thumbnail))  # JPEG: decode at 1/2..1/8 scale
            img.thumbnail((self.thumbnail, self.thumbnail))
            if img.mode in _GREY_MODES:
                grey = np.asarray(img.convert("F") if img.mode != "LA" else img.convert("L"), dtype=np.float64)
                chroma_fraction = 0.0
            else:
                rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
                chroma_fraction = float(((rgb.max(-1) - rgb.min(-1)) > self.colour_chroma).mean())
                grey = rgb.mean(-1)
        if chroma_fraction > self.max_colour_fraction:
            return False
        lo, hi = (0.0, 255.0) if grey.max() <= 255 else (float(grey.min()), float(grey.max()))
        span = max(hi - lo, 1e-9)
        if float(((grey - lo) / span >= 0.96).mean()) > self.max_white_fraction:
            return False
        return float(grey.std()) / span >= self.min_std


def image_size(path: str | Path, series: str | None = None) -> tuple[int, int]:
    """``(height, width)`` of an image or scan's in-plane grid, from its header only.

    Args:
        path: a PNG/JPEG/BMP/TIFF, DICOM file or folder, NIfTI, NPY or NPZ (detected by content).
        series: for a DICOM folder, a series selector (`medmllm.scans.SeriesSelector` text form).

    Raises:
        ScanError: missing or unrecognised file, or no matching series.
    """
    from medmllm.errors import ScanError
    from medmllm.scans.dicom import quiet_pydicom
    from medmllm.scans.read import detect_format

    path = Path(path)
    kind = detect_format(path)
    if kind == "image":
        from PIL import Image

        with Image.open(path) as img:
            width, height = img.size
        return int(height), int(width)
    if kind == "dicom":
        import pydicom

        with quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if kind in ("dicom-folder", "dicomdir"):
        from medmllm.scans import SeriesSelector, list_series

        listing = list_series(path if kind == "dicom-folder" else path.parent)
        selector = SeriesSelector.parse(series) if series else None
        chosen = [s for s in listing if selector is None or selector.matches(s)]
        if not chosen:
            raise ScanError(path, f"no series matches {series!r}")
        return chosen[0].rows, chosen[0].columns
    if kind == "nifti":
        import nibabel

        shape = nibabel.load(str(path)).shape  # header only: the data stays on disk
        return (int(shape[1]) if len(shape) > 1 else 1), int(shape[0])  # (i, j) = (columns, rows)
    shape = _numpy_header_shape(path, kind)
    if len(shape) == 4 or (len(shape) == 3 and shape[-1] in (3, 4)):  # (..., H, W, C)
        shape = shape[:-1]
    if len(shape) < 2:
        raise ScanError(path, f"has shape {list(shape)}; expected at least (H, W)")
    return int(shape[-2]), int(shape[-1])


def _numpy_header_shape(path: Path, kind: str) -> tuple[int, ...]:
    from medmllm.scans.read import _npy_shape

    if kind == "npy":
        with open(path, "rb") as f:
            return tuple(_npy_shape(f))
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".npy")]
        key = next((n for n in ("voxels.npy", "image.npy") if n in names), None) or next(n for n in names if n != "spacing.npy")
        with zf.open(key) as f:
            return tuple(_npy_shape(f))


# --------------------------------------------------------------------------- context


def estimate_tokens(text: str) -> int:
    """Fast token estimate: one per CJK character plus one per 4 other characters."""
    cjk = len(_CJK_CHAR.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


_CJK_CHAR = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f]")


@dataclass
class FilterContext:
    """Settings the filters read. Defaults are the papers' (see the module docstring).

    Attributes:
        root: folder that relative image paths are relative to (the JSONL file's folder).
        required_targets: target keys that must be present and non-blank; None: every target the
            sample has must be non-blank.
        required_sections: ``[Section]`` names that must be present and non-blank in the last
            assistant turn (e.g. ``("Findings", "Impression")``); empty: not checked.
        require_assistant_text: every assistant turn must have text.
        max_tokens: ``too_long`` drops samples with more tokens than this (P2Med: 4,000).
        tokenizer: counts tokens (Hugging Face tokenizer with ``encode``, or a callable returning a
            sequence); None: `estimate_tokens`.
        text_of: the text ``too_long`` measures (default: every turn, what the LLM reads).
        ngram, min_ngrams: ``few_ngrams`` drops samples with fewer than ``min_ngrams`` word
            ``ngram``-grams (P2Med: 5 and 5).
        ngram_text_of: the text ``few_ngrams`` counts (default: the ground-truth output).
        min_height, min_width: ``small_image`` drops samples with an image smaller than this in
            either dimension (PubMedVision: 336 x 336).
        classifier: ``non_radiology``'s `ImageClassifier`.
    """

    root: str | Path | None = None
    required_targets: Sequence[str] | None = None
    required_sections: Sequence[str] = ()
    require_assistant_text: bool = True
    max_tokens: int = 4000
    tokenizer: Any = None
    text_of: Callable[[Sample], str] = conversation_text
    ngram: int = DEFAULT_NGRAM
    min_ngrams: int = 5
    ngram_text_of: Callable[[Sample], str] = output_text
    min_height: int = 336
    min_width: int = 336
    classifier: ImageClassifier = field(default_factory=GreyscaleHeuristic)

    def image_path(self, ref: ImageRef) -> Path:
        path = Path(ref.path)
        return path if path.is_absolute() or self.root is None else Path(self.root) / path

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return estimate_tokens(text)
        if hasattr(self.tokenizer, "encode"):
            try:
                return len(self.tokenizer.encode(text, add_special_tokens=False))
            except TypeError:  # an encode() without that keyword (tiktoken, sentencepiece)
                return len(self.tokenizer.encode(text))
        return len(self.tokenizer(text))


# --------------------------------------------------------------------------- filters


@register_filter("missing_output")
def missing_output(sample: Sample, ctx: FilterContext) -> str | None:
    """An empty assistant turn, a missing/blank required target, or a missing/blank required section."""
    assistant = [t for t in sample.turns if t.role == "assistant"]
    if ctx.require_assistant_text and any(not t.text.strip() for t in assistant):
        return "missing_output"
    names = sample.targets.keys() if ctx.required_targets is None else ctx.required_targets
    if any(not sample.targets.get(name, "").strip() for name in names):
        return "missing_output"
    if ctx.required_sections:
        from medmllm.data.templates import parse_sections

        text = assistant[-1].text if assistant else ""
        if any(not value for value in parse_sections(text, ctx.required_sections).values()):
            return "missing_output"
    return None


@register_filter("too_long")
def too_long(sample: Sample, ctx: FilterContext) -> str | None:
    """More than ``ctx.max_tokens`` tokens in ``ctx.text_of(sample)``."""
    return "too_long" if ctx.count_tokens(ctx.text_of(sample)) > ctx.max_tokens else None


@register_filter("few_ngrams")
def few_ngrams(sample: Sample, ctx: FilterContext) -> str | None:
    """Fewer than ``ctx.min_ngrams`` word ``ctx.ngram``-grams in ``ctx.ngram_text_of(sample)``."""
    return "few_ngrams" if count_ngrams(ctx.ngram_text_of(sample), ctx.ngram) < ctx.min_ngrams else None


@register_filter("small_image")
def small_image(sample: Sample, ctx: FilterContext) -> str | None:
    """An image whose in-plane size is under ``ctx.min_height x ctx.min_width`` (header only)."""
    for ref in sample.images:
        try:
            height, width = image_size(ctx.image_path(ref), ref.series)
        except (MedMLLMError, OSError, ValueError, StopIteration):
            return IMAGE_UNREADABLE
        if height < ctx.min_height or width < ctx.min_width:
            return "small_image"
    return None


@register_filter("non_radiology")
def non_radiology(sample: Sample, ctx: FilterContext) -> str | None:
    """An image that ``ctx.classifier.is_medical`` rejects."""
    for ref in sample.images:
        try:
            medical = ctx.classifier.is_medical(ctx.image_path(ref))
        except (MedMLLMError, OSError, ValueError):
            return IMAGE_UNREADABLE
        if not medical:
            return "non_radiology"
    return None


# --------------------------------------------------------------------------- runner


class FilterRun(Iterator[Sample]):
    """The kept samples of a stream, lazily, with the count of every drop by reason.

    Attributes:
        dropped: Counter of drop reasons (also added to the ``counter`` given to `apply_filters`).
        seen, kept: samples read and samples passed on so far.
    """

    def __init__(self, samples: Iterable[Sample], filters: list[tuple[str, Filter]], ctx: FilterContext, counter: Counter | None, on_drop: Callable[[Sample, str], None] | None):
        self._samples = iter(samples)
        self._filters = filters
        self._ctx = ctx
        self._counter = counter
        self._on_drop = on_drop
        self.dropped: Counter[str] = Counter()
        self.seen = 0
        self.kept = 0

    def __iter__(self) -> FilterRun:
        return self

    def __next__(self) -> Sample:
        for sample in self._samples:
            self.seen += 1
            reason = self._reason(sample)
            if reason is None:
                self.kept += 1
                return sample
            self.dropped[reason] += 1
            if self._counter is not None:
                self._counter[reason] += 1
            if self._on_drop is not None:
                self._on_drop(sample, reason)
        raise StopIteration

    def _reason(self, sample: Sample) -> str | None:
        for name, fn in self._filters:
            reason = fn(sample, self._ctx)
            if reason is not None:
                return str(reason) or name
        return None

    def summary(self) -> dict[str, Any]:
        """``{"seen", "kept", "dropped": {reason: n}}``; seen == kept + sum(dropped)."""
        return {"seen": self.seen, "kept": self.kept, "dropped": dict(self.dropped)}


def apply_filters(
    samples: Iterable[Sample],
    names: Sequence[str] | None = None,
    ctx: FilterContext | None = None,
    *,
    counter: Counter | None = None,
    on_drop: Callable[[Sample, str], None] | None = None,
) -> FilterRun:
    """Run filters over ``samples`` lazily; a sample is dropped by the first filter that objects.

    Args:
        samples: any iterable of samples (a stream from `read_samples` stays a stream).
        names: filter names from `FILTERS`, in the order they run (default: all, registry order;
            put cheap text filters before image filters).
        ctx: settings (default `FilterContext()`).
        counter: a Counter that each drop reason is also added to (shared across runs).
        on_drop: called with ``(sample, reason)`` for each dropped sample (e.g. to log its id).

    Returns:
        A `FilterRun`: iterate it for the kept samples; its ``dropped`` Counter and ``summary()``
        account for every sample read.
    """
    names = list(FILTERS) if names is None else list(names)
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise MedMLLMError(f"unknown filter(s) {unknown}; known: {sorted(FILTERS)}")
    return FilterRun(samples, [(n, FILTERS[n]) for n in names], ctx or FilterContext(), counter, on_drop)
