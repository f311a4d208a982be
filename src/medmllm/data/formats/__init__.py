"""Dataset formats: published medical VQA/report datasets and chat formats in, `Sample` JSONL out.

One module per dataset family, each documenting the exact layout it reads; this registry maps a
format name to its importer (and exporter, where the format can hold our samples). Adding a
format = one new module + one line in `IMPORTERS` (and `EXPORTERS`).

``import_samples(fmt, src, **options)`` yields samples one at a time. Options every importer
takes where they apply:

- ``image_root``: the folder the dataset's image paths start from (each format has a default);
- ``relative_to``: the folder the output JSONL will be in; image paths are written relative to
  it (absolute when not given);
- ``split``, ``source``: see each format.

``check_images=True`` checks that each image file exists and records the missing ones in a
`MissingImages` report (``stream.missing``, or pass your own as ``missing=``); samples with missing
files are still yielded unless ``drop_missing=True`` (then they are counted as dropped).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from medmllm.data.formats._common import MissingImages
from medmllm.data.formats.hf import import_hf
from medmllm.data.formats.llava import export_llava, import_llava
from medmllm.data.formats.medmllm_jsonl import export_medmllm, import_medmllm
from medmllm.data.formats.pathvqa import import_pathvqa
from medmllm.data.formats.pmc_vqa import import_pmc_vqa
from medmllm.data.formats.r2gen import import_r2gen
from medmllm.data.formats.radfm_csv import import_radfm_csv
from medmllm.data.formats.sharegpt import export_sharegpt, import_sharegpt
from medmllm.data.formats.slake import import_slake
from medmllm.data.formats.vqa_rad import import_vqa_rad
from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError

Importer = Callable[..., Iterator[Sample]]
Exporter = Callable[..., int]

IMPORTERS: dict[str, Importer] = {
    "medmllm": import_medmllm,
    "llava": import_llava,
    "sharegpt": import_sharegpt,
    "vqa-rad": import_vqa_rad,
    "slake": import_slake,
    "pathvqa": import_pathvqa,
    "pmc-vqa": import_pmc_vqa,
    "r2gen": import_r2gen,
    "radfm-csv": import_radfm_csv,
    "hf": import_hf,
}

EXPORTERS: dict[str, Exporter] = {
    "medmllm": export_medmllm,
    "llava": export_llava,
    "sharegpt": export_sharegpt,
}


class ImportStream(Iterator[Sample]):
    """The samples of one import, one at a time; ``missing`` is the `MissingImages` report
    (None unless images are checked). Read it after the stream is exhausted."""

    def __init__(self, samples: Iterator[Sample], missing: MissingImages | None, relative_to: Path | None, drop_missing: bool):
        self._samples = samples
        self.missing = missing
        self._relative_to = relative_to
        self._drop = drop_missing

    def __next__(self) -> Sample:
        while True:
            sample = next(self._samples)
            if self.missing is None or self.missing.check(sample, self._relative_to):
                return sample
            if not self._drop:
                return sample
            self.missing.dropped += 1


def import_samples(
    fmt: str,
    src: str | Path,
    *,
    check_images: bool = False,
    missing: MissingImages | None = None,
    drop_missing: bool = False,
    **options,
) -> ImportStream:
    """Samples read from ``src`` in format ``fmt`` (a name in `IMPORTERS`), streamed.

    Raises `MedMLLMError` for an unknown format or option, and (while iterating) for a
    malformed record, naming the file and the record.
    """
    importer = _lookup(IMPORTERS, fmt, "import")
    _check_options(importer, fmt, options)
    if (check_images or drop_missing) and missing is None:
        missing = MissingImages()
    relative_to = options.get("relative_to")
    samples = importer(src, **options)  # a path, or for "hf" also a dataset id
    return ImportStream(samples, missing, Path(relative_to) if relative_to is not None else None, drop_missing)


def export_samples(fmt: str, samples: Iterable[Sample], out: str | Path, **options) -> int:
    """Write ``samples`` to ``out`` in format ``fmt`` (a name in `EXPORTERS`); returns how many were written."""
    exporter = _lookup(EXPORTERS, fmt, "export")
    _check_options(exporter, fmt, options)
    return exporter(samples, Path(out), **options)


def _lookup(table: dict, fmt: str, what: str):
    if fmt not in table:
        known = ", ".join(sorted(table))
        also = "" if what == "import" or fmt not in IMPORTERS else f" ({fmt!r} can only be imported)"
        raise MedMLLMError(f"unknown {what} format {fmt!r}{also}; known: {known}")
    return table[fmt]


def _check_options(function: Callable, fmt: str, options: dict) -> None:
    accepted = [p.name for p in inspect.signature(function).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MedMLLMError(f"format {fmt!r} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(accepted) or 'none'}")


__all__ = ["EXPORTERS", "IMPORTERS", "ImportStream", "MissingImages", "export_samples", "import_samples"]
