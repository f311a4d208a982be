"""Where medmllm keeps things on the user's machine (imports nothing heavy)."""

from __future__ import annotations

import os
from pathlib import Path


def medmllm_home() -> Path:
    """``$MEDMLLM_HOME``, default ``~/.cache/medmllm``; read on every call so tests can move it."""
    return Path(os.environ.get("MEDMLLM_HOME") or Path.home() / ".cache" / "medmllm").expanduser()
