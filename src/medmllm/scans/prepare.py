"""`prepare(scan, recipe)`: a `Scan` -> a model-ready `Scan` (windowed / normalised, resized).

Order of operations (each step is skipped when the recipe does not ask for it)
------------------------------------------------------------------------------
0. Checks: a voxel that is NaN is a `ScanError` (never silently spread by interpolation);
   +-inf is an error too, except for a window, which clips it. A window needs ``unit == "HU"``.
1. Colour: ``(D, H, W, 3)`` RGB -> grey with ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``
   (``colour="grey"``), or the channels are kept and go through every later step together.
2. Intensity, on the input grid, into a new float32 tensor (the input is never written):
   ``window``: ``clip((x - lo) / (hi - lo), 0, 1)`` with ``lo, hi = level -/+ width / 2``;
   ``minmax``: ``(x - min) / (max - min)`` (all zeros for a constant image);
   ``percentile``: as window with ``lo, hi`` = the recipe's percentiles (numpy "linear" method);
   ``none``: values kept. Intensity comes before the resize, as in MONAI's chain
   (ScaleIntensityRange, then Resize): the image is interpolated the way it is displayed.
3. One resize to the final ``(D', H', W')``: trilinear interpolation (bilinear in-plane for a
   single image), ``align_corners=False``, no antialiasing, float32, with
   ``torch.nn.functional.interpolate``. Being separable, it runs as a linear pass along D and a
   bilinear pass in-plane (``mode="bilinear"`` both), equal to one ``mode="trilinear"`` call up to
   float rounding (about 1e-7) at half the cost. The target shape is computed first: the recipe's
   ``spacing`` (resampling) only decides the voxel counts ``round_half_up(n * old / new)``, then
   ``size`` replaces (H, W), then the depth policy sets D. So resampling and resizing are one
   interpolation, not two. Without antialiasing, shrinking (e.g. 1.5 mm -> 5 mm slices) samples
   the input between neighbours; it does not average a slab.
4. 2D -> 3D (RadFM): a single image (D = 1) whose target depth is > 1 is replicated along D.
   This is exactly what trilinear interpolation from one slice gives, at no arithmetic cost.

The returned spacing keeps the physical extent: ``new = old * n_old / n_new`` per axis (so it is
the requested spacing up to the rounding of the voxel count). After a window / normalisation the
unit becomes ``""`` (values are no longer HU), which also stops a scan being windowed twice.

Depth policy: ``"keep"``, an int, or ``"radfm"``: the nearest multiple of 4 (the ViT patch depth),
ties (D = 4k + 2) rounded up, then clamped to [4, 64] (1 -> 4, 5 -> 4, 6 -> 8, 30 -> 32, 108 -> 64).

`stack_series` puts several prepared series of one exam into ``(S, D, H, W)``, zero-padding the
shorter ones at the end of z (P2Med's non-contrast + contrast-enhanced CT).

torch is imported inside the functions that need it so that importing this module (and the CLI)
stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medmllm.errors import MedMLLMError, ScanError
from medmllm.scans.scan import Scan
from medmllm.scans.windows import WINDOWS, window_bounds

if TYPE_CHECKING:
    import torch

INTENSITIES = ("window", "minmax", "percentile", "none")
DEPTH_POLICIES = ("keep", "radfm")
COLOURS = ("grey", "keep")
LUMA_601 = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B

RADFM_DEPTH_MULTIPLE = 4  # depth of RadFM's 3D ViT patch (32 x 32 x 4)
RADFM_MAX_DEPTH = 64


@dataclass(frozen=True)
class Recipe:
    """How to turn a `Scan` into model input. The defaults only min-max normalise.

    Attributes:
        intensity: "window" | "minmax" | "percentile" | "none" (see the module docstring).
        window: a name in `WINDOWS`, ``"LEVEL,WIDTH"`` or ``(level, width)`` in HU; required by,
            and only by, intensity "window".
        percentiles: ``(low, high)`` percentiles clipped to 0 and 1 by "percentile".
        spacing: target voxel size ``(z, y, x)`` in mm, None per axis (or for all) = keep.
        size: in-plane ``(H, W)`` after resizing; None = keep (after any resampling).
        depth: "keep", a number of slices, or "radfm" (nearest multiple of 4 in [4, 64]).
        colour: "grey" (BT.601 luma) or "keep" (RGB channels kept) for ``(D, H, W, 3)`` input.
        description: one line on where the recipe comes from.
    """

    intensity: str = "minmax"
    window: str | tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    spacing: tuple[float | None, float | None, float | None] | None = None
    size: tuple[int, int] | None = None
    depth: int | str = "keep"
    colour: str = "grey"
    description: str = ""

    def __post_init__(self) -> None:
        # Sequences may come from YAML/JSON as lists: store tuples so recipes stay hashable.
        for name in ("percentiles", "spacing", "size"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.window, list):
            object.__setattr__(self, "window", tuple(self.window))
        try:
            self._validate()
        except (TypeError, ValueError) as e:  # e.g. a string where YAML should have had a number
            raise MedMLLMError(f"invalid recipe ({e}): numbers expected in percentiles, spacing, size, depth") from None

    def _validate(self) -> None:
        def bad(field: str, problem: str) -> MedMLLMError:
            return MedMLLMError(f"recipe field {field!r}: {problem}")

        if self.intensity not in INTENSITIES:
            raise bad("intensity", f"{self.intensity!r} is not one of {', '.join(INTENSITIES)}")
        if self.intensity == "window":
            if self.window is None:
                raise bad("window", f"intensity 'window' needs a window: one of {', '.join(WINDOWS)} or (level, width)")
            self.window_bounds  # noqa: B018 -- validates the name / the width
        elif self.window is not None:
            raise bad("window", f"is set but intensity is {self.intensity!r}; set intensity 'window'")
        if len(self.percentiles) != 2 or not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise bad("percentiles", f"{self.percentiles} must satisfy 0 <= low < high <= 100")
        if self.spacing is not None and (
            len(self.spacing) != 3 or any(s is not None and not s > 0 for s in self.spacing)
        ):
            raise bad("spacing", f"{self.spacing} must be 3 positive mm values (z, y, x) or None")
        if self.size is not None and (len(self.size) != 2 or any(int(s) != s or s < 1 for s in self.size)):
            raise bad("size", f"{self.size} must be two positive integers (H, W)")
        if isinstance(self.depth, str):
            if self.depth not in DEPTH_POLICIES:
                raise bad("depth", f"{self.depth!r} is not 'keep', 'radfm' or a positive integer")
        elif isinstance(self.depth, bool) or int(self.depth) != self.depth or self.depth < 1:
            raise bad("depth", f"{self.depth!r} is not 'keep', 'radfm' or a positive integer")
        if self.colour not in COLOURS:
            raise bad("colour", f"{self.colour!r} is not one of {', '.join(COLOURS)}")

    @property
    def window_bounds(self) -> tuple[float, float]:
        """``(lo, hi)`` of the window: ``level -/+ width / 2`` (see `medmllm.scans.windows`)."""
        return window_bounds(self.window)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """A recipe from a mapping (e.g. parsed YAML); unknown keys are an error, not ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MedMLLMError(f"unknown recipe field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


RECIPES: dict[str, Recipe] = {
    "p2med-xray": Recipe(
        intensity="minmax",
        size=(336, 336),
        description="P2Med chest X-ray: x and y resized to 336 (intensity: min-max to [0, 1])",
    ),
    "p2med-ct": Recipe(
        intensity="window",
        window="lung",
        spacing=(5.0, None, None),
        size=(336, 336),
        description="P2Med chest CT: lung window L -500 / W 1200, 5.0 mm slices, x and y resized to 336",
    ),
    "radfm-2d": Recipe(
        intensity="minmax",
        size=(512, 512),
        depth="radfm",
        description="RadFM 2D: min-max, 512 x 512, one image replicated to depth 4 (the ViT patch depth)",
    ),
    "radfm-3d": Recipe(
        intensity="minmax",
        size=(256, 256),
        depth="radfm",
        description="RadFM 3D: min-max, 256 x 256, depth the nearest multiple of 4 in [4, 64]",
    ),
    "mri": Recipe(
        intensity="percentile",
        percentiles=(0.5, 99.5),
        description="MRI: clip to the 0.5 / 99.5 percentiles, scale to [0, 1]; geometry kept",
    ),
}


def get_recipe(name: str) -> Recipe:
    """The named recipe; an unknown name is a `MedMLLMError` that lists the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise MedMLLMError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}") from None


def radfm_depth(depth: int) -> int:
    """RadFM's depth: the nearest multiple of 4, ties (4k + 2) up, clamped to [4, 64]."""
    m = RADFM_DEPTH_MULTIPLE
    nearest = (depth + m // 2) // m * m
    return min(max(nearest, m), RADFM_MAX_DEPTH)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def target_shape(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], recipe: Recipe
) -> tuple[int, int, int]:
    """The ``(D', H', W')`` that `prepare` produces from a ``(D, H, W)`` scan of ``spacing`` (mm)."""
    counts = list(shape)
    if recipe.spacing is not None:
        for axis, (n, old, new) in enumerate(zip(shape, spacing, recipe.spacing)):
            if new is not None and n > 1:  # a single slice has no z extent to resample
                counts[axis] = max(1, _round_half_up(n * old / new))
    depth, height, width = counts
    if recipe.size is not None:
        height, width = (int(s) for s in recipe.size)
    if recipe.depth == "radfm":
        depth = radfm_depth(depth)
    elif recipe.depth != "keep":
        depth = int(recipe.depth)
    return depth, height, width


def prepare(scan: Scan, recipe: Recipe | str) -> Scan:
    """Window / normalise and resize ``scan`` as ``recipe`` says; see the module docstring.

    Args:
        scan: voxels ``(D, H, W)`` or ``(D, H, W, C)`` float32, canonical orientation.
        recipe: a `Recipe` or the name of one in `RECIPES`.

    Returns:
        A new `Scan`: voxels ``(D', H', W')`` (or ``(D', H', W', C)`` with ``colour="keep"``),
        float32 in [0, 1] unless the intensity is "none"; spacing updated. ``scan`` is unchanged.
    """
    import torch

    if isinstance(recipe, str):
        recipe = get_recipe(recipe)
    where = scan.source or "<scan>"
    if recipe.intensity == "window" and scan.unit != "HU":
        raise ScanError(
            where,
            f"window {recipe.window!r} needs CT in Hounsfield units, but the unit is {scan.unit!r} "
            f"(modality {scan.modality}); use intensity 'minmax' or 'percentile'",
        )
    shape = target_shape(scan.shape, scan.spacing, recipe)
    with torch.no_grad():
        x = _as_tensor(scan.voxels)
        if x.ndim == 4 and recipe.colour == "grey":
            if x.shape[3] != 3:
                raise ScanError(where, f"colour='grey' needs 3 channels (RGB), got {x.shape[3]}")
            x = x @ torch.tensor(LUMA_601, dtype=x.dtype)  # NaN in any channel stays NaN
        low, high = _finite_range(x, where, inf_ok=recipe.intensity == "window")
        x = _intensity(x, recipe, low, high)
        resized = _resize(x, shape)
        if recipe.intensity != "none":  # interpolation weights sum to 1 only up to rounding: 1.0000001 happens
            resized.clamp_(0.0, 1.0)
        voxels = resized.numpy()
    if np.may_share_memory(voxels, scan.voxels):  # "none" and no resize: never alias the input
        voxels = voxels.copy()
    new_spacing = tuple(old * n / m for old, n, m in zip(scan.spacing, scan.shape, shape))
    return dataclasses.replace(
        scan,
        voxels=voxels,
        spacing=new_spacing,
        unit=scan.unit if recipe.intensity == "none" else "",
        warnings=list(scan.warnings),
    )


def _as_tensor(voxels: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``voxels``' memory (never written); copies only views with negative strides."""
    import torch

    if any(s < 0 for s in voxels.strides):  # flipped views (e.g. from reorientation) cannot be shared
        voxels = np.ascontiguousarray(voxels)
    if not voxels.flags.writeable:
        with warnings.catch_warnings():  # torch warns about read-only arrays; nothing writes to it
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(voxels)
    return torch.from_numpy(voxels)


def _finite_range(x: torch.Tensor, where: str, inf_ok: bool) -> tuple[float, float]:
    """``(min, max)`` of ``x`` in one pass; NaN (and, unless ``inf_ok``, +-inf) is a ScanError."""
    import torch

    low, high = (float(v) for v in torch.aminmax(x))  # aminmax propagates NaN
    if math.isnan(low) or math.isnan(high):
        raise ScanError(where, "contains NaN voxels; fix or mask them before preparing")
    if not inf_ok and (math.isinf(low) or math.isinf(high)):
        raise ScanError(where, "contains infinite voxels; normalisation needs finite values (or use a window)")
    return low, high


def _intensity(x: torch.Tensor, recipe: Recipe, low: float, high: float) -> torch.Tensor:
    """Step 2: a new tensor (same shape) with the recipe's intensity mapping; ``x`` is not written."""
    if recipe.intensity == "none":
        return x
    if recipe.intensity == "window":
        low, high = recipe.window_bounds
    elif recipe.intensity == "percentile":
        low, high = (float(v) for v in np.percentile(x.numpy(), recipe.percentiles))
    if not high > low:  # constant image (or percentiles equal): nothing to scale
        return x.new_zeros(x.shape)
    # The same arithmetic as MONAI's ScaleIntensityRange: (x - lo) / (hi - lo), then clip.
    y = x.sub(low).div_(high - low)
    if recipe.intensity != "minmax":  # min-max is already within [0, 1]
        y.clamp_(0.0, 1.0)
    return y


def _resize(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Steps 3-4: ``x`` (D, H, W[, C]) -> ``shape`` (D', H', W')[, C]; see the module docstring.

    Trilinear interpolation is separable, so it runs as a linear pass along D and a bilinear pass
    in-plane: the same values (up to float rounding) as one trilinear call, at about half the cost.
    Depth goes first when it shrinks and last when it grows, so the in-plane pass has fewer slices.
    """
    import torch.nn.functional as F

    depth, plane = shape[0], shape[1:]
    v = x.unsqueeze(0) if x.ndim == 3 else x.permute(3, 0, 1, 2)  # (C, D, H, W)
    if depth < v.shape[1]:
        v = _resize_depth(v, depth)
    if tuple(v.shape[2:]) != plane:
        c, d, h, w = v.shape  # bilinear treats the C * D slices as independent channels
        flat = v.reshape(1, c * d, h, w)
        v = F.interpolate(flat, size=plane, mode="bilinear", align_corners=False).reshape(c, d, *plane)
    if depth > v.shape[1]:  # one slice (2D -> 3D) is replicated: what linear interpolation gives
        v = v.expand(-1, depth, -1, -1) if v.shape[1] == 1 else _resize_depth(v, depth)
    out = v[0] if x.ndim == 3 else v.permute(1, 2, 3, 0)
    return out.contiguous()


def _resize_depth(v: torch.Tensor, depth: int) -> torch.Tensor:
    """Linear along D of ``v`` (C, D, H, W): bilinear over (D, H * W), the second axis unchanged."""
    import torch.nn.functional as F

    c, d, h, w = v.shape
    flat = v.reshape(1, c, d, h * w)
    return F.interpolate(flat, size=(depth, h * w), mode="bilinear", align_corners=False).reshape(c, depth, h, w)


def stack_series(scans: Sequence[Scan]) -> np.ndarray:
    """Stack prepared series of one exam into ``(S, D, H, W)`` float32, as P2Med does.

    Every series must already have the same ``(H, W)`` (prepare them with the same recipe). The
    shorter ones are padded with zeros along z at the END, i.e. after their last slice: at the
    highest D index, which is the superior (head) end in the canonical orientation. After a window
    or normalisation 0 is the bottom of the intensity range (air for the lung window).
    """
    if not scans:
        raise MedMLLMError("stack_series needs at least one series")
    first = scans[0]
    for scan in scans:
        if scan.voxels.ndim != 3:
            problem = f"cannot stack a colour series {scan.voxels.shape}; prepare it with colour='grey'"
            raise ScanError(scan.source or "<scan>", problem)
        if scan.shape[1:] != first.shape[1:]:
            raise ScanError(
                scan.source or "<scan>",
                f"in-plane shape {scan.shape[1:]} differs from the first series' {first.shape[1:]}; "
                "prepare all series with the same recipe (size) before stacking",
            )
    depth = max(scan.shape[0] for scan in scans)
    out = np.zeros((len(scans), depth, *first.shape[1:]), dtype=np.float32)
    for i, scan in enumerate(scans):
        out[i, : scan.shape[0]] = scan.voxels
    return out


__all__ = ["RECIPES", "WINDOWS", "Recipe", "get_recipe", "prepare", "radfm_depth", "stack_series", "target_shape"]
