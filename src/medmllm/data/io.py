"""Reading and writing JSONL of samples: streaming, with file:line in every error, atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from medmllm.data.schema import Sample, parse_sample
from medmllm.errors import MedMLLMError
from medmllm.scans.write import atomic_path


def read_samples(path: str | Path, *, skip_invalid: bool = False, errors: list[str] | None = None) -> Iterator[Sample]:
    """Samples of a JSONL file, one at a time (memory stays flat for any file size).

    A malformed line raises `MedMLLMError` "FILE:LINE: problem"; with ``skip_invalid`` it is
    appended to ``errors`` instead (never dropped silently). Blank lines are allowed.
    """
    path = Path(path)
    for number, line in _numbered_lines(path):
        try:
            yield parse_sample(line, f"{path}:{number}")
        except MedMLLMError as e:
            if not skip_invalid:
                raise
            if errors is not None:
                errors.append(str(e))


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of any JSONL file; a line that is not a JSON object is an error."""
    path = Path(path)
    for number, line in _numbered_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MedMLLMError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise MedMLLMError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of the non-blank lines of a UTF-8 text file."""
    if not path.is_file():
        raise MedMLLMError(f"{path}: no such file")
    number = 0
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, line
        except UnicodeDecodeError:
            raise MedMLLMError(f"{path}: not UTF-8 text (after line {number})") from None


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
