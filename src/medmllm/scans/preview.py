"""Slice mosaics for people to look at: ``medmllm scan preview``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmllm.scans.scan import Scan
from medmllm.scans.windows import WINDOWS, window_bounds


def mosaic(scan: Scan, *, window: str | tuple[float, float] | None = None, tiles: int = 16, tile_size: int = 256) -> np.ndarray:
    """A uint8 grid of ``tiles`` evenly spaced slices (all of them if fewer), (rows*t, cols*t[, 3]).

    ``window``: a named window (see `medmllm.scans.windows.WINDOWS`), ``(level, width)``, or None
    for the 0.5-99.5 percentile range of the scan.
    """
    from PIL import Image

    depth = scan.shape[0]
    picks = np.unique(np.linspace(0, depth - 1, min(tiles, depth)).round().astype(int))
    lo, hi = window_bounds(window) if window is not None else _percentiles(scan.voxels)
    scale = 255.0 / max(hi - lo, 1e-6)
    cols = int(np.ceil(np.sqrt(len(picks))))
    rows = int(np.ceil(len(picks) / cols))
    h, w = scan.shape[1:]
    # Keep the physical aspect ratio: a pixel is spacing[1] tall and spacing[2] wide.
    aspect = (h * scan.spacing[1]) / max(w * scan.spacing[2], 1e-6)
    th, tw = (tile_size, max(1, round(tile_size / aspect))) if aspect >= 1 else (max(1, round(tile_size * aspect)), tile_size)
    colour = scan.channels == 3
    canvas = np.zeros((rows * th, cols * tw) + ((3,) if colour else ()), dtype=np.uint8)
    for n, d in enumerate(picks):
        tile = np.clip((scan.voxels[d] - lo) * scale, 0, 255).astype(np.uint8)
        tile = np.asarray(Image.fromarray(tile).resize((tw, th), Image.BILINEAR))
        r, c = divmod(n, cols)
        canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
    return canvas


def _percentiles(voxels: np.ndarray) -> tuple[float, float]:
    sample = voxels[:: max(1, voxels.shape[0] // 32)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(lo), float(hi)


def save_preview(scan: Scan, path: str | Path, **kwargs) -> Path:
    """Write `mosaic` as a PNG, atomically."""
    from PIL import Image

    from medmllm.scans.write import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(mosaic(scan, **kwargs)).save(tmp, format="PNG")
    return path


__all__ = ["mosaic", "save_preview", "WINDOWS"]
