"""Reading and writing JSONL of samples: streaming, with file:line in every error, atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from medmllm.data.schema import Sample, parse_sample
from medmllm.errors import MedMLLMError
from medmllm.jsonl import numbered_lines, read_jsonl  # noqa: F401  (read_jsonl: part of this module's API)
from medmllm.scans.write import atomic_path


def read_samples(path: str | Path, *, skip_invalid: bool = False, errors: list[str] | None = None) -> Iterator[Sample]:
    """Samples of a JSONL file, one at a time (memory stays flat for any file size).

    A malformed line raises `MedMLLMError` "FILE:LINE: problem"; with ``skip_invalid`` it is
    appended to ``errors`` instead (never dropped silently). Blank lines are allowed.
    """
    path = Path(path)
    for number, line in numbered_lines(path):
        try:
            yield parse_sample(line, f"{path}:{number}")
        except MedMLLMError as e:
            if not skip_invalid:
                raise
            if errors is not None:
                errors.append(str(e))


def write_samples(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples as canonical JSONL, atomically; returns how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for sample in samples:
            f.write(sample.to_json())
            f.write("\n")
            n += 1
    return n


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write plain JSON objects one per line, atomically."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n
