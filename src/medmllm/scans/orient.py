"""Reorientation of voxel arrays to the canonical (D, H, W) = (S, P, L) layout (see `scan.py`).

Every reader ends here, so NIfTI and DICOM land in the same orientation. Arrays are taken in
"(k, j, i)" order — slice, row, column — with a 4 x 4 affine that maps (k, j, i, 1) to RAS+ mm.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations as nio

# For array axes (0, 1, 2): the RAS world axis it must follow and the sign. axis 0 -> +z (S),
# axis 1 -> -y (P in RAS), axis 2 -> -x (L in RAS).
_CANONICAL_ORNT = np.array([[2, 1], [1, -1], [0, -1]], dtype=float)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Length of each affine column: the voxel size along each array axis, in mm."""
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def axcodes(affine_kji: np.ndarray) -> str:
    """nibabel axis codes of (x=W=i, y=H=j, z=D=k), e.g. "LPS"."""
    affine_ijk = affine_kji[:, [2, 1, 0, 3]]
    return "".join(nio.aff2axcodes(affine_ijk))


def to_canonical(data: np.ndarray, affine_kji: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """Permute and flip ``data`` (k, j, i[, C]) so that it is (D, H, W[, C]) in LPS.

    Oblique volumes are put on the closest axes (no resampling); their obliqueness is kept out
    of the voxels, as ITK and MONAI's Orientation also do.

    Returns:
        (voxels, spacing (z, y, x) in mm, orientation codes). ``voxels`` is a view when possible.
    """
    sizes = voxel_sizes(affine_kji)
    if data.shape[0] == 1:  # a single image keeps its in-plane layout
        return data, (float(sizes[0]), float(sizes[1]), float(sizes[2])), axcodes(affine_kji)
    current = nio.io_orientation(affine_kji)
    transform = nio.ornt_transform(current, _CANONICAL_ORNT)
    out = nio.apply_orientation(data, transform)
    spacing = np.empty(3)
    for axis_in, (axis_out, _flip) in enumerate(transform):
        spacing[int(axis_out)] = sizes[axis_in]
    return out, tuple(float(s) for s in spacing), "LPS"


def canonical_affine(spacing: tuple[float, float, float], origin_lps=(0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS+ affine for a canonical (D, H, W) array written as NIfTI in (x=W, y=H, z=D) order."""
    sz, sy, sx = spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [-origin_lps[0], -origin_lps[1], origin_lps[2]]
    return affine
