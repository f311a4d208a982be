"""Reading YAML recipes and reporting pydantic validation errors, the same way everywhere:
one line naming the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medmllm.errors import MedMLLMError


def read_yaml(path: str | Path, kind: str = "recipe") -> Any:
    """The parsed content of a YAML file; a missing file or bad YAML is a one-line `MedMLLMError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MedMLLMError(f"{path}: no such {kind} file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise MedMLLMError(f"{path}: not valid YAML{line} ({getattr(e, 'problem', None) or e})") from None


def describe_validation_error(e: ValidationError, what: str = "sample") -> str:
    """The first problem of a pydantic error as one line: ``field.path: message``."""
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or what
    more = f" ({len(e.errors())} problems)" if len(e.errors()) > 1 else ""
    return f"{where}: {err['msg']}{more}"
