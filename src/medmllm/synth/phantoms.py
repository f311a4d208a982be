"""Procedural anatomical phantoms: a chest in Hounsfield units, its radiograph, a brain T1 MRI.

Coordinates
-----------
Every phantom is drawn in an adult-sized *canonical* frame in millimetres, in the canonical
orientation of `medmllm.scans.Scan` (LPS+): ``x`` toward the patient's Left, ``y`` toward
Posterior, ``z`` toward Superior, origin at the centre of the field of view. A `Grid` samples that
frame at voxel centres, ``(D, H, W) = (z, y, x)``; a patient's size is a ``scale`` that multiplies
the voxel spacing (a child of scale 0.7 has the same drawing, 0.7 x smaller in mm), so real
millimetres are canonical millimetres x ``scale``.

Shapes are superquadrics ``|dx/a|^p + |dy/b|^p + |dz/c|^p <= 1`` (p = 2: an ellipsoid) and
cylinders, evaluated on the bounding box of each shape only, with broadcast 1-D axes (no
meshgrid), so a 32 x 64 x 64 chest CT takes a few milliseconds.

Intensity model (the values painted before noise)
-------------------------------------------------
CT (HU): air -1000, lung -850, fat -100 (subcutaneous, mediastinal -90), muscle / soft tissue 40,
liver 55, heart and great vessels 50 / 45, cancellous bone (vertebral bodies, sternum) 350-450,
cortical bone (ribs, clavicles, posterior vertebral arches) 700-900, intervertebral disc 80,
spinal canal 15. Gaussian noise sigma 12 HU after a 0.5-voxel blur (partial volume).
Radiograph: linear attenuation ``mu = mu_water * (1 + HU / 1000)`` (``mu_water`` = 0.02 / mm,
about 60 keV), summed along the antero-posterior axis (a PA projection); the displayed value is
that line integral (white = more attenuation), as a log detector shows it.
T1 MRI (arbitrary units, 0-1000): background 0, scalp fat 850, skull 120, CSF 220, grey matter
480, white matter 720, Rician noise sigma 15.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

HU_AIR, HU_LUNG, HU_FAT, HU_SOFT_TISSUE = -1000.0, -850.0, -100.0, 40.0
HU_BLOOD, HU_HEART, HU_LIVER = 45.0, 50.0, 55.0
HU_CANCELLOUS, HU_CORTICAL = 350.0, 900.0
MU_WATER = 0.02  # 1/mm at about 60 keV
CT_NOISE_HU = 12.0
T1 = {"background": 0.0, "scalp": 850.0, "skull": 120.0, "csf": 220.0, "grey": 480.0, "white": 720.0}
MRI_NOISE = 15.0

CHEST_FOV_MM = (300.0, 360.0, 360.0)  # CT (z, y, x), canonical mm
XRAY_FOV_MM = (360.0, 360.0, 360.0)  # the radiograph covers 36 x 36 cm (z, x)
BRAIN_FOV_MM = (170.0, 230.0, 230.0)


# --------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Grid:
    """Voxel centres of a ``(D, H, W)`` volume covering ``fov_mm`` (z, y, x), centred on 0."""

    shape: tuple[int, int, int]
    fov_mm: tuple[float, float, float]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Canonical mm per voxel (z, y, x); times the patient's scale for real mm."""
        return tuple(f / n for f, n in zip(self.fov_mm, self.shape))

    def axis(self, k: int) -> np.ndarray:
        n, fov = self.shape[k], self.fov_mm[k]
        return ((np.arange(n, dtype=np.float32) + 0.5) * (fov / n) - fov / 2).astype(np.float32)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``z (D,1,1), y (1,H,1), x (1,1,W)`` in canonical mm, for broadcasting."""
        z, y, x = (self.axis(k) for k in range(3))
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def box(self, lo: tuple[float, float, float], hi: tuple[float, float, float]) -> tuple[slice, ...] | None:
        """Index slices of the voxels whose centres lie in [lo, hi] (z, y, x mm); None if empty."""
        out = []
        for k in range(3):
            ax = self.axis(k)
            a, b = np.searchsorted(ax, lo[k], "left"), np.searchsorted(ax, hi[k], "right")
            if a >= b:
                return None
            out.append(slice(int(a), int(b)))
        return tuple(out)

    def sub_axes(self, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z, y, x = (self.axis(k)[box[k]] for k in range(3))
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def index_of(self, point_mm: tuple[float, float, float]) -> tuple[int, int, int]:
        """The voxel containing a point (z, y, x mm), clipped to the grid."""
        return tuple(int(np.clip((p + f / 2) / (f / n), 0, n - 1)) for p, f, n in zip(point_mm, self.fov_mm, self.shape))


def superquadric(grid: Grid, center, axes, power: float = 2.0):
    """(box, mask over the box) of ``sum |d/a|^power <= 1``; center and axes (z, y, x) in mm."""
    box = grid.box(tuple(c - a for c, a in zip(center, axes)), tuple(c + a for c, a in zip(center, axes)))
    if box is None:
        return None, None
    z, y, x = grid.sub_axes(box)
    r = np.abs((z - center[0]) / axes[0]) ** power + np.abs((y - center[1]) / axes[1]) ** power + np.abs((x - center[2]) / axes[2]) ** power
    return box, r <= 1.0


def soft_ellipsoid(grid: Grid, center, axes):
    """(box, fraction in [0, 1]) of an ellipsoid with a one-voxel partial-volume edge; the
    ground-truth mask is ``fraction >= 0.5`` (the voxel centre is inside)."""
    pad = max(grid.spacing)
    box = grid.box(tuple(c - a - pad for c, a in zip(center, axes)), tuple(c + a + pad for c, a in zip(center, axes)))
    if box is None:
        return None, None
    z, y, x = grid.sub_axes(box)
    dz, dy, dx = (z - center[0]) / axes[0], (y - center[1]) / axes[1], (x - center[2]) / axes[2]
    rho = np.sqrt(dz * dz + dy * dy + dx * dx)  # 1 on the surface
    mean_axis = float(np.mean(axes))
    voxel = float(np.exp(np.mean(np.log(grid.spacing))))
    frac = np.clip((1.0 - rho) * mean_axis / voxel + 0.5, 0.0, 1.0)
    return box, frac.astype(np.float32)


def _paint(volume: np.ndarray, box, mask, value: float) -> None:
    if box is not None:
        volume[box][mask] = value


def _cyl(grid: Grid, cy: float, cx: float, ry: float, rx: float, z0: float, z1: float):
    box = grid.box((z0, cy - ry, cx - rx), (z1, cy + ry, cx + rx))
    if box is None:
        return None, None
    _, y, x = grid.sub_axes(box)
    mask = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
    return box, np.broadcast_to(mask, tuple(s.stop - s.start for s in box))


# -------------------------------------------------------------------------------------- chest


@dataclass(frozen=True)
class ChestAnatomy:
    """One patient's chest: size and shape variation, in canonical mm.

    ``heart_scale`` > 1 enlarges the heart (cardiomegaly; transverse diameter ``2 * 58 * heart_scale``
    canonical mm against a thoracic width of 274 canonical mm: cardiothoracic ratio 0.42 x scale).
    """

    scale: float = 1.0  # real mm per canonical mm
    heart_scale: float = 1.0
    right_dome: float = -80.0  # z of the lowest lung point (the costophrenic recess), per side
    left_dome: float = -92.0
    lung_height: float = 125.0  # lung semi-axis along z

    # lung superquadric: centre x = -/+ LUNG_X (right lung at negative x), semi-axes (z, y, x)
    LUNG_X, LUNG_Y, LUNG_Z = 75.0, 5.0, 15.0
    LUNG_AXES_YX = (88.0, 62.0)
    LUNG_POWER = 2.4
    HEART_CENTER = (-60.0, -30.0, 18.0)
    HEART_AXES = (55.0, 50.0, 58.0)

    def lung_center(self, side: str) -> tuple[float, float, float]:
        return (self.LUNG_Z, self.LUNG_Y, self.LUNG_X if side == "left" else -self.LUNG_X)

    def lung_axes(self) -> tuple[float, float, float]:
        return (self.lung_height, *self.LUNG_AXES_YX)

    def dome(self, side: str, y, x):
        """z of the diaphragm under each (y, x): the dome rises 40 mm toward the lung's centre."""
        cz, cy, cx = self.lung_center(side)
        r2 = ((x - cx) / self.LUNG_AXES_YX[1]) ** 2 + ((y - cy) / self.LUNG_AXES_YX[0]) ** 2
        return (self.left_dome if side == "left" else self.right_dome) + 40.0 * np.maximum(0.0, 1.0 - r2)

    def heart(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(centre, semi-axes), both (z, y, x) mm: an enlarged heart grows left and inferiorly."""
        f = self.heart_scale
        cz, cy, cx = self.HEART_CENTER
        az, ay, ax = self.HEART_AXES
        return (cz - 0.3 * az * (f - 1), cy, cx + 0.5 * ax * (f - 1)), (az * (1 + (f - 1) / 2), ay * f, ax * f)

    def heart_diameter_mm(self) -> float:
        """Transverse cardiac diameter in real mm."""
        return 2 * self.heart()[1][2] * self.scale

    def thoracic_width_mm(self) -> float:
        return 2 * (self.LUNG_X + self.LUNG_AXES_YX[1]) * self.scale

    def in_lung(self, side: str, z, y, x):
        """Boolean: inside the ``side`` lung (above the diaphragm, outside the heart)."""
        cz, cy, cx = self.lung_center(side)
        az, ay, ax = self.lung_axes()
        p = self.LUNG_POWER
        inside = np.abs((z - cz) / az) ** p + np.abs((y - cy) / ay) ** p + np.abs((x - cx) / ax) ** p <= 1.0
        (hz, hy, hx), (haz, hay, hax) = self.heart()
        in_heart = ((z - hz) / haz) ** 2 + ((y - hy) / hay) ** 2 + ((x - hx) / hax) ** 2 <= 1.0
        return inside & (z > self.dome(side, y, x)) & ~in_heart


LOBES = {"right": ("right upper lobe", "right middle lobe", "right lower lobe"), "left": ("left upper lobe", "left lower lobe")}


def lobe_of(side: str, z, y):
    """Lobe index (into ``LOBES[side]``) of lung points: the oblique fissure is the plane
    ``z = 60 + 0.93 (y - 80)`` (posterior-superior to anterior-inferior; below it: lower lobe); on
    the right the horizontal fissure ``z = 10`` splits upper from middle lobe."""
    z, y = np.asarray(z, dtype=np.float32), np.asarray(y, dtype=np.float32)
    lower = z < 60.0 + 0.93 * (y - 80.0)
    if side == "left":
        return np.where(lower, 1, 0)
    return np.where(lower, 2, np.where(z < 10.0, 1, 0))


def chest_hu(grid: Grid, anatomy: ChestAnatomy) -> np.ndarray:
    """The chest phantom's HU on ``grid`` (no findings, no noise), float32 ``(D, H, W)``."""
    vol = np.full(grid.shape, HU_AIR, dtype=np.float32)
    zmin, zmax = -grid.fov_mm[0] / 2, grid.fov_mm[0] / 2
    _paint(vol, *_cyl(grid, 0.0, 0.0, 120.0, 170.0, zmin, zmax), HU_FAT)  # body: subcutaneous fat
    _paint(vol, *_cyl(grid, 0.0, 0.0, 110.0, 160.0, zmin, zmax), HU_SOFT_TISSUE)  # muscle
    _paint(vol, *superquadric(grid, (-130.0, 0.0, -50.0), (70.0, 90.0, 110.0)), HU_LIVER)
    _paint(vol, *superquadric(grid, (60.0, -10.0, 0.0), (60.0, 45.0, 35.0)), -90.0)  # mediastinal fat
    for side in ("right", "left"):
        box, _ = superquadric(grid, anatomy.lung_center(side), anatomy.lung_axes())
        if box is None:
            continue
        z, y, x = grid.sub_axes(box)
        mask = anatomy.in_lung(side, z, y, x)
        vol[box][mask] = HU_LUNG
    center, axes = anatomy.heart()
    _paint(vol, *superquadric(grid, center, axes), HU_HEART)
    _paint(vol, *_cyl(grid, -20.0, 5.0, 13.0, 13.0, 0.0, 90.0), HU_BLOOD)  # ascending aorta
    _paint(vol, *_cyl(grid, 55.0, 15.0, 11.0, 11.0, -120.0, 80.0), HU_BLOOD)  # descending aorta
    _paint(vol, *_cyl(grid, -5.0, 0.0, 9.0, 9.0, 40.0, zmax), HU_AIR)  # trachea
    # spine: vertebral bodies with discs, posterior arch, canal
    box, mask = _cyl(grid, 80.0, 0.0, 18.0, 18.0, zmin, zmax)
    if box is not None:
        z, _, _ = grid.sub_axes(box)
        disc = np.broadcast_to(np.mod(z + 1000.0, 28.0) < 6.0, mask.shape)
        vol[box][mask & ~disc] = HU_CANCELLOUS
        vol[box][mask & disc] = 80.0
    _paint(vol, *_cyl(grid, 106.0, 0.0, 12.0, 16.0, zmin, zmax), 700.0)
    _paint(vol, *_cyl(grid, 103.0, 0.0, 6.0, 6.0, zmin, zmax), 15.0)
    # ribs: bands of an elliptic ring, sloping down anteriorly, open at the anterior midline
    box = grid.box((-130.0, -110.0, -160.0), (150.0, 110.0, 160.0))
    if box is not None:
        z, y, x = grid.sub_axes(box)
        e = (y / 105.0) ** 2 + (x / 152.0) ** 2
        ring = (e >= 0.84) & (e <= 1.0)
        band = np.mod(z - 0.4 * y + 1000.0, 30.0) < 9.0
        cartilage = (np.abs(x) < 30.0) & (y < 0.0)
        vol[box][ring & band & ~cartilage] = HU_CORTICAL
    _paint(vol, *superquadric(grid, (20.0, -103.0, 0.0), (90.0, 7.0, 14.0), power=8.0), 450.0)  # sternum
    for sign in (-1.0, 1.0):  # clavicles
        _paint(vol, *superquadric(grid, (150.0, -70.0, sign * 75.0), (8.0, 8.0, 55.0)), 800.0)
    return vol


def chest_ct(grid: Grid, anatomy: ChestAnatomy, findings=(), rng: np.random.Generator | None = None,
             blur: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """A chest CT in HU, float32 ``(D, H, W)``, with ``findings`` inserted and noise; and one
    boolean ground-truth mask per finding. ``findings``: `medmllm.synth.findings.Finding`s.
    ``blur``: the 0.5-voxel partial-volume blur of the anatomy (findings have their own edge)."""
    from medmllm.synth.findings import insert

    vol = chest_hu(grid, anatomy)
    if blur:
        vol = ndimage.gaussian_filter(vol, 0.5, mode="nearest", truncate=2.0)
    masks = [insert(vol, grid, anatomy, f) for f in findings]
    if rng is not None:
        vol += rng.normal(0.0, CT_NOISE_HU, vol.shape).astype(np.float32)
    np.clip(vol, -1024.0, 3071.0, out=vol)
    return vol, masks


def chest_radiograph(size: tuple[int, int], anatomy: ChestAnatomy, findings=(), rng: np.random.Generator | None = None,
                     depth: int = 32) -> tuple[np.ndarray, list[np.ndarray]]:
    """A PA chest radiograph ``(H, W)`` in [0, 1] (white = attenuating), the attenuation line
    integral of the 3-D phantom with its findings; and each finding's 3-D mask on the coarse
    projection grid (``size / 2`` in-plane, ``depth`` antero-posterior). Row 0 is superior;
    column 0 is the patient's right, as a PA film is read."""
    h, w = size
    grid = Grid((max(h // 2, 8), depth, max(w // 2, 8)), XRAY_FOV_MM)
    hu, masks = chest_ct(grid, anatomy, findings, rng=None, blur=False)  # the projection and zoom smooth enough
    mu = np.maximum(MU_WATER * (1.0 + hu / 1000.0), 0.0)
    line = mu.sum(axis=1) * grid.spacing[1]  # (D, W): integral along y (antero-posterior), canonical mm
    image = np.flipud(line) / 6.0  # superior at the top; white (1) = 6, a little above the mediastinum and spine (5.2-5.5)
    image = ndimage.zoom(image, (h / image.shape[0], w / image.shape[1]), order=1)
    if rng is not None:
        image = image + rng.normal(0.0, 0.012, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), masks


# -------------------------------------------------------------------------------------- brain


@dataclass(frozen=True)
class BrainAnatomy:
    """One patient's head, canonical mm."""

    scale: float = 1.0
    ventricle_scale: float = 1.0
    HEAD_AXES = (75.0, 95.0, 74.0)  # (z, y, x), outer scalp
    HEAD_CENTER = (-5.0, 0.0, 0.0)

    def brain_fraction(self, z, y, x):
        """Normalised radius of a point in the head (1 = scalp surface)."""
        (cz, cy, cx), (az, ay, ax) = self.HEAD_CENTER, self.HEAD_AXES
        return np.sqrt(((z - cz) / az) ** 2 + ((y - cy) / ay) ** 2 + ((x - cx) / ax) ** 2)

    def in_brain(self, z, y, x):
        return self.brain_fraction(z, y, x) < 0.85


BRAIN_LOBES = ("frontal lobe", "parietal lobe", "temporal lobe", "occipital lobe")


def brain_lobe_of(z, y, x) -> np.ndarray:
    """Lobe index (into `BRAIN_LOBES`): frontal anterior of y = -25, occipital posterior of y = 50,
    between them temporal below z = -10 and lateral of |x| = 30, else parietal."""
    z, y, x = (np.asarray(v, dtype=np.float32) for v in (z, y, x))
    temporal = (z < -10.0) & (np.abs(x) > 30.0)
    return np.where(y < -25.0, 0, np.where(y > 50.0, 3, np.where(temporal, 2, 1)))


def brain_t1(grid: Grid, anatomy: BrainAnatomy) -> np.ndarray:
    """T1 intensities of the head phantom (no findings, no noise), float32 ``(D, H, W)``."""
    z, y, x = grid.axes()
    rho = anatomy.brain_fraction(z, y, x)
    folds = 0.035 * np.sin(z * 0.22) * np.sin(y * 0.19) * np.sin(x * 0.25)  # gyri: a wavy grey/white boundary
    vol = np.full(grid.shape, T1["background"], dtype=np.float32)
    vol[rho < 1.0] = T1["scalp"]
    vol[rho < 0.94] = T1["skull"]
    vol[rho < 0.88] = T1["csf"]
    vol[rho < 0.85] = T1["grey"]
    vol[rho < 0.75 + folds] = T1["white"]
    vs = anatomy.ventricle_scale
    for sign in (-1.0, 1.0):
        _paint(vol, *superquadric(grid, (10.0, -5.0, sign * 11.0), (14.0 * vs, 32.0 * vs, 7.0 * vs)), T1["csf"])
    _paint(vol, *superquadric(grid, (-20.0, 0.0, 0.0), (12.0, 12.0, 12.0)), T1["grey"])  # deep grey nuclei (thalami)
    return vol


def brain_mri(grid: Grid, anatomy: BrainAnatomy, findings=(), rng: np.random.Generator | None = None,
              base: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """A T1 brain MRI (float32 ``(D, H, W)``, 0-1000) with findings and Rician noise, and the
    findings' masks. ``base``: a real T1 volume already on ``grid`` and scaled to these
    intensities, used instead of the phantom."""
    from medmllm.synth.findings import insert

    vol = ndimage.gaussian_filter(brain_t1(grid, anatomy), 0.5, mode="nearest", truncate=2.0) if base is None else base.astype(np.float32, copy=True)
    masks = [insert(vol, grid, anatomy, f) for f in findings]
    if rng is not None:
        n1 = rng.normal(0.0, MRI_NOISE, vol.shape).astype(np.float32)
        n2 = rng.normal(0.0, MRI_NOISE, vol.shape).astype(np.float32)
        vol = np.sqrt((vol + n1) ** 2 + n2 ** 2)
    return np.clip(vol, 0.0, 1000.0).astype(np.float32), masks
