"""Intensity windows (level, width), shared by `prepare` and `preview`."""

from __future__ import annotations

from medmllm.errors import MedMLLMError

# Level / width in the scan's unit (HU for CT). Lung is P2Med's (-500 / 1200).
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-500.0, 1200.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def parse_window(window: str | tuple[float, float]) -> tuple[float, float]:
    """A named window, ``"LEVEL,WIDTH"`` text, or a (level, width) pair -> (level, width)."""
    if isinstance(window, str):
        if window in WINDOWS:
            return WINDOWS[window]
        try:
            level, width = (float(v) for v in window.split(","))
        except ValueError:
            raise MedMLLMError(f"unknown window {window!r}: use one of {', '.join(WINDOWS)} or LEVEL,WIDTH") from None
    else:
        level, width = (float(v) for v in window)
    if width <= 0:
        raise MedMLLMError(f"window width must be positive, got {width:g}")
    return level, width


def window_bounds(window: str | tuple[float, float]) -> tuple[float, float]:
    """(low, high) = (level - width / 2, level + width / 2)."""
    level, width = parse_window(window)
    return level - width / 2, level + width / 2
