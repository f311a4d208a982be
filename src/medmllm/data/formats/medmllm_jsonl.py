"""medmllm's own JSONL (docs/data-format.md), so that any format converts to any other.

Layout: one canonical `Sample` JSON object a line; image paths relative to the file's folder, or
absolute. Reading is streamed (`read_samples`); writing is atomic (`write_samples`).

Import rebases relative image paths from the file's folder to ``relative_to`` (absolute when
None); export rebases them from ``relative_to`` to the output's folder. Absolute paths stay
absolute. With ``relative_to`` = the file's own folder nothing changes, so reading and writing a
file gives it back byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from medmllm.data.formats._common import as_ref_path, resolve_ref_path
from medmllm.data.io import read_samples, write_samples
from medmllm.data.schema import Sample


def import_medmllm(src: Path, *, relative_to: Path | None = None) -> Iterator[Sample]:
    src = Path(src)
    for sample in read_samples(src):
        yield _rebase(sample, src.parent, relative_to)


def export_medmllm(samples: Iterable[Sample], out: Path, *, relative_to: Path | None = None) -> int:
    out = Path(out)
    return write_samples(out, (_rebase(s, relative_to or Path("."), out.parent) for s in samples))


def _rebase(sample: Sample, old: Path, new: Path | None) -> Sample:
    if all(Path(ref.path).is_absolute() for ref in sample.images) or (new is not None and Path(old).absolute() == Path(new).absolute()):
        return sample
    images = [
        ref if Path(ref.path).is_absolute() else ref.model_copy(update={"path": as_ref_path(resolve_ref_path(ref.path, old), new)})
        for ref in sample.images
    ]
    return sample.model_copy(update={"images": images})
