"""Stage 1 of the data flow: files on disk -> `Scan` -> model-ready volumes.

- `read(path)`: DICOM (file, series folder, multi-series folder, multi-frame, DICOMDIR), NIfTI,
  PNG/JPEG/BMP/TIFF, NPY/NPZ -> `Scan` in the canonical orientation (see `scan.py`).
- `prepare(scan, recipe)`: windows, normalisation, resampling, resizing, depth policy.
- `deidentify(in, out)`: DICOM PS3.15 Basic Application Level Confidentiality Profile.
"""

from medmllm.errors import ScanError
from medmllm.scans.scan import CANONICAL_ORIENTATION, Scan

__all__ = ["Scan", "ScanError", "CANONICAL_ORIENTATION"]

from medmllm.scans.deid import deidentify  # noqa: E402
from medmllm.scans.dicom import SeriesInfo, SeriesSelector, list_series  # noqa: E402
from medmllm.scans.prepare import RECIPES, Recipe, get_recipe, prepare, stack_series  # noqa: E402
from medmllm.scans.read import read  # noqa: E402

__all__ += ["read", "list_series", "SeriesInfo", "SeriesSelector", "deidentify"]
__all__ += ["prepare", "stack_series", "Recipe", "RECIPES", "get_recipe"]
