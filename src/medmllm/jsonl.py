"""Reading JSONL with file:line in every error. Imports nothing heavy: `medmllm eval score` and the
labeler read their inputs with it without paying for pydantic or torch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from medmllm.errors import MedMLLMError


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of any JSONL file; a line that is not a JSON object is an error."""
    path = Path(path)
    for number, line in numbered_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MedMLLMError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise MedMLLMError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        yield number, obj


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of the non-blank lines of a UTF-8 text file; bytes that are not
    UTF-8 are an error naming the line (decoded line by line, so the number is exact)."""
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise MedMLLMError(f"{path}:{number}: invalid UTF-8, not UTF-8 text (byte {e.start + 1} of the line)") from None
                if line.strip():
                    yield number, line
    except FileNotFoundError:
        raise MedMLLMError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError) as e:
        raise MedMLLMError(f"{path}: cannot read ({e.strerror or e})") from None
