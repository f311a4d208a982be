"""Findings with exact ground truth: what they are, where they go, how they change between exams.

A `Finding` is what one exam shows: ``type``, ``side`` ("left" / "right" / None), ``region`` (lobe,
pleural space, heart, brain lobe), ``size_mm`` (real millimetres, see `FINDING_TYPES` for what size
means per type) and its position in canonical phantom mm. `insert` paints it into a volume and
returns its ground-truth mask (the voxels whose centres are inside it). A `Course` is one finding
over a visit: its size at each exam (progressing, stable, regressing or resolving).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from medmllm.synth import phantoms as ph


@dataclass(frozen=True)
class FindingType:
    name: str
    family: str  # "chest" or "brain"
    disease: str  # the diagnosis it stands for in labels and records
    size_range: tuple[float, float]  # real mm at the first exam (cardiomegaly: heart scale, see phantoms.ChestAnatomy)
    size_means: str
    value: float  # HU (chest) or T1 units (brain) painted
    courses: tuple[str, ...]
    observation: str | None = None  # the CheXpert observation a report of it is labelled with
    max_size: float = float("inf")  # real mm it never exceeds over a course (a nodule stays < 3 cm)


FINDING_TYPES: dict[str, FindingType] = {t.name: t for t in (
    FindingType("nodule", "chest", "pulmonary nodule", (8.0, 20.0), "diameter", 40.0, ("increasing", "stable", "decreasing", "resolving"), "Lung Lesion", 29.0),
    FindingType("mass", "chest", "lung mass", (32.0, 50.0), "largest diameter", 45.0, ("increasing", "stable", "decreasing"), "Lung Lesion", 70.0),
    FindingType("consolidation", "chest", "pneumonia", (30.0, 60.0), "largest diameter", 20.0, ("increasing", "stable", "decreasing", "resolving"), "Consolidation"),
    FindingType("atelectasis", "chest", "atelectasis", (25.0, 50.0), "length", 25.0, ("stable", "decreasing", "resolving"), "Atelectasis"),
    FindingType("pleural effusion", "chest", "pleural effusion", (30.0, 80.0), "fluid height above the posterior costophrenic recess", 10.0,
                ("increasing", "stable", "decreasing", "resolving"), "Pleural Effusion"),
    FindingType("pneumothorax", "chest", "pneumothorax", (15.0, 40.0), "apical distance from the lung to the chest wall", ph.HU_AIR,
                ("increasing", "stable", "decreasing", "resolving"), "Pneumothorax"),
    FindingType("cardiomegaly", "chest", "cardiomegaly", (1.25, 1.5), "transverse cardiac diameter", ph.HU_HEART, ("stable", "increasing"), "Cardiomegaly"),
    FindingType("brain mass", "brain", "brain tumor", (12.0, 30.0), "largest diameter", 380.0, ("increasing", "stable", "decreasing"),
                max_size=40.0),
    FindingType("infarct", "brain", "cerebral infarction", (12.0, 30.0), "largest diameter", 260.0, ("stable", "decreasing")),
)}
CHEST_TYPES = tuple(n for n, t in FINDING_TYPES.items() if t.family == "chest")
BRAIN_TYPES = tuple(n for n, t in FINDING_TYPES.items() if t.family == "brain")


@dataclass(frozen=True)
class Finding:
    """One finding on one exam. ``center`` and ``axes``: canonical mm (z, y, x) of the shape."""

    type: str
    side: str | None
    region: str
    size_mm: float
    center: tuple[float, float, float] | None = None
    axes: tuple[float, float, float] | None = None  # semi-axes in canonical mm (ellipsoidal findings)
    extent: float = 0.0  # canonical mm: effusion height, pneumothorax rim, cardiomegaly heart scale

    def truth(self) -> dict:
        """The ground truth written to labels: type, side, region, size in mm (0.1 mm)."""
        return {"type": self.type, "side": self.side, "region": self.region, "size_mm": round(self.size_mm, 1)}


@dataclass(frozen=True)
class Course:
    """A finding over the exams of a visit: ``first`` scaled by ``factors[k]`` at exam k (0: gone)."""

    first: Finding
    course: str  # increasing / stable / decreasing / resolving
    factors: tuple[float, ...]

    def at(self, k: int, scale: float) -> Finding | None:
        f = self.factors[k]
        if f <= 0:
            return None
        return _scaled(self.first, f, scale)

    def change(self, k: int) -> str | None:
        """How exam k compares with exam k-1: increased, decreased, unchanged, resolved; None at
        the first exam or once it is gone."""
        if k == 0:
            return None
        before, now = self.factors[k - 1], self.factors[k]
        if before <= 0:
            return None
        if now <= 0:
            return "resolved"
        ratio = now / before
        return "increased" if ratio > 1.1 else "decreased" if ratio < 0.9 else "unchanged"


def _scaled(first: Finding, factor: float, scale: float) -> Finding:
    if factor == 1.0:
        return first
    if first.type == "cardiomegaly":  # the excess over a normal heart grows or shrinks
        heart = 1.0 + (first.extent - 1.0) * factor
        return dataclasses.replace(first, extent=heart, size_mm=ph.ChestAnatomy(scale=scale, heart_scale=heart).heart_diameter_mm())
    axes = tuple(a * factor for a in first.axes) if first.axes else None
    return dataclasses.replace(first, size_mm=first.size_mm * factor, axes=axes, extent=first.extent * factor)


def course_factors(course: str, n_exams: int, rng: np.random.Generator) -> tuple[float, ...]:
    if course == "increasing":
        g = rng.uniform(1.2, 1.4)
        return tuple(g**k for k in range(n_exams))
    if course == "decreasing":
        d = rng.uniform(0.6, 0.8)
        return tuple(d**k for k in range(n_exams))
    if course == "resolving":
        return tuple([1.0] + [0.5] * (n_exams - 2) + [0.0])
    return (1.0,) * n_exams


# ----------------------------------------------------------------------------------- sampling


def sample_courses(family: str, n_exams: int, rng: np.random.Generator, scale: float, p_normal: float = 0.3,
                   types: tuple[str, ...] | None = None) -> list[Course]:
    """0 (with probability ``p_normal``), 1 or 2 findings of ``family``, each with a course."""
    if rng.random() < p_normal:
        return []
    pool = list(types or (CHEST_TYPES if family == "chest" else BRAIN_TYPES))
    n = 1 if len(pool) < 2 or rng.random() < 0.65 else 2
    chosen = [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
    out: list[Course] = []
    for name in chosen:
        kind = FINDING_TYPES[name]
        course = kind.courses[int(rng.integers(len(kind.courses)))]
        factors = course_factors(course, n_exams, rng)
        taken = [(c.first.side, c.first.region) for c in out]
        first = place(name, rng, scale, max(factors), taken)
        out.append(Course(first, course, factors))
    return out


def place(name: str, rng: np.random.Generator, scale: float, growth: float = 1.0, taken=()) -> Finding:
    """A finding of type ``name`` at a random position where it fits at ``growth`` x its size,
    avoiding the (side, region) pairs in ``taken``."""
    kind = FINDING_TYPES[name]
    lo, hi = kind.size_range
    hi = min(hi, kind.max_size / growth)
    size = float(rng.uniform(lo, max(lo, hi)))
    if name == "cardiomegaly":
        anatomy = ph.ChestAnatomy(scale=scale, heart_scale=size)
        return Finding(name, None, "heart", anatomy.heart_diameter_mm(), extent=size)
    if kind.family == "brain":
        return _place_brain(kind, rng, scale, size, growth, taken)
    side = ("right", "left")[int(rng.integers(2))]
    anatomy = ph.ChestAnatomy(scale=scale)
    if name == "pleural effusion":
        return Finding(name, side, f"{side} pleural space", size, extent=size / scale)
    if name == "pneumothorax":
        return Finding(name, side, f"{side} apex", size, extent=size / scale)
    lobes = [k for k, lobe in enumerate(ph.LOBES[side]) if (side, lobe) not in taken] or [0]
    if name == "atelectasis":  # plate-like atelectasis lies at the bases
        lobes = [k for k in lobes if ph.LOBES[side][k].endswith(("lower lobe", "middle lobe"))] or lobes
    for attempt in range(1000):
        if attempt and attempt % 8 == 0:
            size *= 0.9  # too large for this patient's lobes (a small child, a grown mass): a smaller one fits
        lobe = lobes[int(rng.integers(len(lobes)))]
        radius = size / 2 / scale
        if name in ("nodule", "mass"):
            axes = (radius * rng.uniform(0.85, 1.0), radius * rng.uniform(0.85, 1.0), radius)
        elif name == "consolidation":
            axes = (radius * rng.uniform(0.6, 0.9), radius * rng.uniform(0.6, 0.9), radius)
        else:  # atelectasis: a thin plate, horizontal
            axes = (6.0, radius * 0.5, radius)
        reach = tuple(a * growth for a in axes) if name in ("nodule", "mass") else (0.0, 0.0, 0.0)
        center = _point_in_lobe(anatomy, side, lobe, reach, rng)
        if center is not None:
            return Finding(name, side, ph.LOBES[side][lobe], size, center=center, axes=axes)
    raise RuntimeError(f"could not place a {name}")  # not reached: sizes shrink to nothing first


def _point_in_lobe(anatomy: ph.ChestAnatomy, side: str, lobe: int, axes, rng: np.random.Generator, tries: int = 25):
    """A random centre whose shape (``axes`` around it, checked at its 6 extreme points) lies
    inside one lobe of the ``side`` lung; None after ``tries``."""
    cz, cy, cx = anatomy.lung_center(side)
    az, ay, ax = anatomy.lung_axes()
    offsets = np.array([(0, 0, 0)] + [tuple(s * a if i == j else 0 for j, a in enumerate(axes)) for i in range(3) for s in (-1, 1)], dtype=np.float32)
    for _ in range(tries):
        c = np.array([rng.uniform(cz - az, cz + az), rng.uniform(cy - ay, cy + ay), rng.uniform(cx - ax, cx + ax)], dtype=np.float32)
        pts = c + offsets
        z, y, x = pts[:, 0], pts[:, 1], pts[:, 2]
        if anatomy.in_lung(side, z, y, x).all() and (ph.lobe_of(side, z, y) == lobe).all():
            return tuple(float(v) for v in c)
    return None


def _place_brain(kind: FindingType, rng, scale: float, size: float, growth: float, taken) -> Finding:
    anatomy = ph.BrainAnatomy(scale=scale)
    radius = size / 2 / scale
    axes = (radius * rng.uniform(0.8, 1.0), radius * rng.uniform(0.8, 1.0), radius)
    # masses anywhere in the white matter, infarcts in the cortex and the white matter under it
    shell = (0.0, 0.7) if kind.name == "brain mass" else (0.55, 0.8)
    for attempt in range(5000):
        if attempt and attempt % 200 == 0:  # no room at this size: a smaller one fits
            size, axes = size * 0.9, tuple(a * 0.9 for a in axes)
        c = np.array([rng.uniform(-60, 50), rng.uniform(-80, 80), rng.uniform(-60, 60)], dtype=np.float32)
        rho = float(anatomy.brain_fraction(*c))
        reach = max(axes) * growth / min(ph.BrainAnatomy.HEAD_AXES)
        if not (shell[0] <= rho <= shell[1] and rho + reach < 0.84) or abs(c[2]) < max(axes) * growth + 4:
            continue  # inside the brain, clear of the midline
        side = "left" if c[2] > 0 else "right"
        region = f"{side} {ph.BRAIN_LOBES[int(ph.brain_lobe_of(*c))]}"
        if (side, region) in taken:
            continue
        return Finding(kind.name, side, region, size, center=tuple(float(v) for v in c), axes=axes)
    raise RuntimeError(f"could not place a {kind.name}")


# ---------------------------------------------------------------------------------- insertion


def insert(volume: np.ndarray, grid: ph.Grid, anatomy, finding: Finding) -> np.ndarray:
    """Paint ``finding`` into ``volume`` (in place) and return its boolean ground-truth mask."""
    mask = np.zeros(volume.shape, dtype=bool)
    kind = FINDING_TYPES[finding.type]
    if finding.type == "cardiomegaly":  # the enlarged heart is part of the anatomy (heart_scale)
        box, inside = ph.superquadric(grid, *anatomy.heart())
        if box is not None:
            mask[box] = inside
        return mask
    if finding.type == "pleural effusion":
        box = grid.box(tuple(c - a for c, a in zip(anatomy.lung_center(finding.side), anatomy.lung_axes())),
                       tuple(c + a for c, a in zip(anatomy.lung_center(finding.side), anatomy.lung_axes())))
        if box is None:
            return mask
        z, y, x = grid.sub_axes(box)
        lowest = anatomy.left_dome if finding.side == "left" else anatomy.right_dome
        back = anatomy.LUNG_Y + anatomy.LUNG_AXES_YX[0]
        # dependent fluid: its level is ``extent`` above the lowest point at the back, 0.5 mm lower per mm forward
        fluid = anatomy.in_lung(finding.side, z, y, x) & (z < lowest + finding.extent - 0.5 * (back - y))
        return _fill(volume, mask, box, fluid, kind.value)
    if finding.type == "pneumothorax":
        center, axes = anatomy.lung_center(finding.side), anatomy.lung_axes()
        box = grid.box(tuple(c - a for c, a in zip(center, axes)), tuple(c + a for c, a in zip(center, axes)))
        if box is None:
            return mask
        z, y, x = grid.sub_axes(box)
        t = finding.extent
        cz, cy, cx = center
        az, ay, ax = axes
        p = anatomy.LUNG_POWER
        # the lung falls away from the apex and the lateral wall: air between it and the chest wall
        shrunk = np.abs((z - (cz - t / 2)) / (az - t / 2)) ** p + np.abs((y - cy) / ay) ** p + np.abs((x - cx) / (ax - t / 2)) ** p <= 1.0
        air = anatomy.in_lung(finding.side, z, y, x) & ~shrunk & (z > cz)
        return _fill(volume, mask, box, air, kind.value)
    box, frac = ph.soft_ellipsoid(grid, finding.center, finding.axes)
    if box is None:
        return mask
    if finding.type in ("consolidation", "atelectasis"):  # airspace disease stops at the fissures and the pleura
        z, y, x = grid.sub_axes(box)  # (nodules and masses are drawn whole: they were placed inside their lobe)
        lobe = ph.LOBES[finding.side].index(finding.region)
        frac = frac * (anatomy.in_lung(finding.side, z, y, x) & (ph.lobe_of(finding.side, z, y) == lobe))
    sub = volume[box]
    sub += frac * (kind.value - sub)  # partial volume: a voxel half covered is half lesion
    mask[box] = frac >= 0.5
    return mask


def _fill(volume: np.ndarray, mask: np.ndarray, box, where: np.ndarray, value: float) -> np.ndarray:
    volume[box][where] = value
    mask[box] = where
    return mask
