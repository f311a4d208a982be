"""`Scan`: the one in-memory form of every image medmllm reads.

Canonical orientation
---------------------
A volume's voxels are indexed ``(D, H, W)`` = ``(z, y, x)`` in the DICOM patient coordinate
system (LPS+): ``W`` increases toward the patient's Left, ``H`` toward Posterior, ``D`` toward
Superior. Displayed with ``imshow(voxels[d])``, an axial slice therefore appears the way radiologists
read it (patient's right on the image's left, anterior at the top), and ``D`` runs from the feet to
the head. This is what an axial DICOM series already is, so DICOM needs no flips; NIfTI (RAS+) is
reoriented. ``orientation`` holds nibabel axis codes for (x=W, y=H, z=D): ``"LPS"`` for every volume
read from DICOM geometry or NIfTI. Single images (D = 1) keep their in-plane layout; their
``orientation`` says what it is (e.g. ``"LPS"`` for an axial slice) or ``""`` when unknown (PNG, CR).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

CANONICAL_ORIENTATION = "LPS"


@dataclass
class Scan:
    """One image or volume, with only de-identified metadata.

    Attributes:
        voxels: float32, ``(D, H, W)``, or ``(D, H, W, C)`` for colour images (C = 3, RGB).
            CT is in Hounsfield units; MONOCHROME1 is already inverted (high = bright).
        spacing: voxel size in mm, ``(z, y, x)``. ``(1.0, 1.0, 1.0)`` when the file does not say.
        modality: DICOM modality code (``CT``, ``MR``, ``CR``, ``DX``, ``US``, ``PT``, ``OT`` ...).
        orientation: nibabel axis codes of (x=W, y=H, z=D); see the module docstring.
        series_description: free text of the series (e.g. ``"Lung 5.0 mm"``), never a patient field.
        acquisition_datetime: when the image was acquired, or None.
        source: the path the scan was read from.
        unit: ``"HU"`` for CT, ``""`` otherwise.
        slice_thickness: mm, when the file says.
        contrast: True / False when known (DICOM ContrastBolusAgent or description), else None.
        warnings: geometry problems found while reading (gaps, uneven spacing ...).
    """

    voxels: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    modality: str = "OT"
    orientation: str = ""
    series_description: str = ""
    acquisition_datetime: datetime | None = None
    source: str = ""
    unit: str = ""
    slice_thickness: float | None = None
    contrast: bool | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.voxels.ndim not in (3, 4):
            raise ValueError(f"voxels must be (D, H, W) or (D, H, W, C), got shape {self.voxels.shape}")
        if self.voxels.dtype != np.float32:
            self.voxels = self.voxels.astype(np.float32)
        self.spacing = tuple(float(s) for s in self.spacing)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``, without the channel axis."""
        return tuple(int(s) for s in self.voxels.shape[:3])

    @property
    def channels(self) -> int:
        """1 for grey images, 3 for RGB."""
        return 1 if self.voxels.ndim == 3 else int(self.voxels.shape[3])

    @property
    def is_3d(self) -> bool:
        return self.shape[0] > 1

    @property
    def value_range(self) -> tuple[float, float]:
        finite = self.voxels[np.isfinite(self.voxels)]
        if finite.size == 0:
            return (float("nan"), float("nan"))
        return (float(finite.min()), float(finite.max()))

    def info(self) -> dict:
        """The de-identified summary that ``medmllm scan info --json`` prints."""
        return {
            "modality": self.modality,
            "shape": list(self.shape),
            "channels": self.channels,
            "spacing": [round(s, 6) for s in self.spacing],
            "orientation": self.orientation,
            "value_range": list(self.value_range),
            "unit": self.unit,
            "series_description": self.series_description,
            "slice_thickness": self.slice_thickness,
            "contrast": self.contrast,
            "acquisition_datetime": self.acquisition_datetime.isoformat() if self.acquisition_datetime else None,
            "warnings": list(self.warnings),
        }
