"""Tests of `medmllm.scans.prepare`: windows, normalisation, geometry, stacking, real head CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from medmllm.errors import MedMLLMError, ScanError
from medmllm.scans.prepare import (
    RECIPES,
    WINDOWS,
    Recipe,
    get_recipe,
    prepare,
    radfm_depth,
    stack_series,
    target_shape,
)
from medmllm.scans.scan import Scan

HEAD_CT = Path(__file__).parents[2].parent / "shared/data/scans/head_ct.nii.gz"


def ct(values) -> Scan:
    """A one-row CT image (1, 1, N) in HU."""
    return Scan(np.asarray(values, dtype=np.float32).reshape(1, 1, -1), modality="CT", unit="HU")


def volume(shape=(40, 64, 48), spacing=(1.25, 0.8, 0.8), seed=0) -> Scan:
    rng = np.random.default_rng(seed)
    return Scan(rng.normal(0, 400, shape).astype(np.float32), spacing=spacing, modality="CT", unit="HU")


# --- intensity -----------------------------------------------------------------------------------


def test_lung_window_known_values():
    out = prepare(ct([-3000, -1100, -500, 100, 3000]), Recipe(intensity="window", window="lung"))
    np.testing.assert_array_equal(out.voxels.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.voxels.dtype == np.float32
    assert out.unit == ""  # no longer HU: cannot be windowed twice


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_named_windows_map_bounds_and_level(name):
    level, width = WINDOWS[name]
    values = [level - width / 2, level - width / 4, level, level + width / 2]
    out = prepare(ct(values), Recipe(intensity="window", window=name))
    np.testing.assert_allclose(out.voxels.ravel(), [0.0, 0.25, 0.5, 1.0], atol=1e-7)


def test_custom_window():
    out = prepare(ct([0, 50, 100, 150]), Recipe(intensity="window", window=(100, 100)))
    np.testing.assert_array_equal(out.voxels.ravel(), [0.0, 0.0, 0.5, 1.0])


def test_window_needs_hounsfield_units():
    mr = Scan(np.zeros((2, 3, 3), np.float32), modality="MR", source="brain.nii")
    with pytest.raises(ScanError, match="brain.nii.*Hounsfield"):
        prepare(mr, "p2med-ct")


def test_minmax_exact():
    out = prepare(ct([-10, 0, 10, 30]), Recipe(intensity="minmax"))
    np.testing.assert_array_equal(out.voxels.ravel(), [0.0, 0.25, 0.5, 1.0])


def test_minmax_of_constant_image_is_zero():
    out = prepare(ct([7, 7, 7]), Recipe(intensity="minmax"))
    np.testing.assert_array_equal(out.voxels.ravel(), [0.0, 0.0, 0.0])


def test_percentile_clips_and_scales():
    # 0..1000: the 0.5 / 99.5 percentiles ("linear") are exactly 5 and 995.
    values = np.arange(1001, dtype=np.float32)
    out = prepare(Scan(values.reshape(1, 1, -1), modality="MR"), "mri").voxels.ravel()
    assert out[0] == 0.0 and out[5] == 0.0 and out[995] == 1.0 and out[1000] == 1.0
    np.testing.assert_allclose(out[500], 0.5, atol=1e-7)
    np.testing.assert_allclose(out[100], 95 / 990, atol=1e-7)


def test_custom_percentiles():
    values = np.arange(101, dtype=np.float32).reshape(1, 1, -1)
    out = prepare(Scan(values), Recipe(intensity="percentile", percentiles=(10, 90))).voxels.ravel()
    assert out[10] == 0.0 and out[90] == 1.0
    np.testing.assert_allclose(out[50], 0.5, atol=1e-7)


def test_none_keeps_values_and_unit_without_aliasing_the_input():
    scan = volume(shape=(2, 4, 4))
    out = prepare(scan, Recipe(intensity="none"))
    np.testing.assert_array_equal(out.voxels, scan.voxels)
    assert out.unit == "HU"
    assert not np.shares_memory(out.voxels, scan.voxels)


# --- non-finite input ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_nan_is_a_scan_error(name):
    scan = volume(shape=(6, 8, 8))
    scan.voxels[3, 4, 4] = np.nan
    scan.source = "nan.nii.gz"
    with pytest.raises(ScanError, match="nan.nii.gz.*contains NaN"):
        prepare(scan, name)


def test_infinity_is_clipped_by_a_window_but_an_error_for_minmax():
    scan = ct([-np.inf, -500, np.inf])
    np.testing.assert_array_equal(prepare(scan, Recipe(intensity="window", window="lung")).voxels.ravel(), [0, 0.5, 1])
    with pytest.raises(ScanError, match="infinite"):
        prepare(scan, Recipe(intensity="minmax"))


# --- geometry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "expected"),
    [(1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 8), (7, 8), (10, 12), (30, 32), (62, 64), (64, 64), (65, 64),
     (108, 64)],
)
def test_radfm_depth_policy(depth, expected):
    # Nearest multiple of 4; ties (4k + 2) round up; clamped to [4, 64].
    assert radfm_depth(depth) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("p2med-xray", (40, 336, 336)),
        ("p2med-ct", (10, 336, 336)),  # 40 slices x 1.25 mm = 50 mm -> 10 slices of 5.0 mm
        ("radfm-2d", (40, 512, 512)),
        ("radfm-3d", (40, 256, 256)),
        ("mri", (40, 64, 48)),
    ],
)
def test_named_recipe_shapes_on_a_volume(name, expected):
    out = prepare(volume(), name)
    assert out.shape == expected
    assert out.voxels.dtype == np.float32
    assert out.voxels.min() >= 0.0 and out.voxels.max() <= 1.0


@pytest.mark.parametrize(
    ("name", "expected"), [("p2med-xray", (1, 336, 336)), ("radfm-2d", (4, 512, 512)), ("radfm-3d", (4, 256, 256))]
)
def test_named_recipe_shapes_on_an_image(name, expected):
    assert prepare(volume(shape=(1, 30, 20)), name).shape == expected


def test_spacing_keeps_the_physical_extent():
    out = prepare(volume(), "p2med-ct")
    np.testing.assert_allclose(out.spacing, (1.25 * 40 / 10, 0.8 * 64 / 336, 0.8 * 48 / 336))


def test_resampling_rounds_half_up_and_skips_none_axes():
    recipe = Recipe(intensity="none", spacing=(2.0, None, 0.5))
    assert target_shape((5, 7, 9), (1.0, 3.0, 1.0), recipe) == (3, 7, 18)  # 5 * 1 / 2 = 2.5 -> 3
    out = prepare(Scan(np.zeros((5, 7, 9), np.float32), spacing=(1.0, 3.0, 1.0)), recipe)
    np.testing.assert_allclose(out.spacing, (5 / 3, 3.0, 0.5))


def test_size_and_depth_apply_after_resampling():
    recipe = Recipe(spacing=(2.0, 2.0, 2.0), size=(10, 12), depth="radfm")
    # z: 30 slices x 1 mm -> 15 at 2 mm -> radfm 16; (H, W) from size, not from the spacing.
    assert target_shape((30, 50, 50), (1.0, 1.0, 1.0), recipe) == (16, 10, 12)


def test_trilinear_matches_scipy_zoom_order_1():
    # align_corners=False == scipy's grid_mode=True; torch clamps at the border == mode="nearest".
    voxels = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    for shape in [(3, 9, 4), (8, 3, 11), (5, 6, 14)]:
        out = prepare(Scan(voxels), Recipe(intensity="none", size=shape[1:], depth=shape[0])).voxels
        zoom = np.divide(shape, voxels.shape)
        ref = ndimage.zoom(voxels.astype(np.float64), zoom, order=1, grid_mode=True, mode="nearest")
        assert out.shape == ref.shape == shape
        np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 20, 12), (9, 20, 12), (13, 5, 30), (9, 11, 7), (1, 8, 8)])
def test_separable_passes_equal_one_trilinear_call(shape):
    torch = pytest.importorskip("torch")
    voxels = np.random.default_rng(3).random((9, 11, 7)).astype(np.float32)
    out = prepare(Scan(voxels), Recipe(intensity="none", size=shape[1:], depth=shape[0])).voxels
    volume_5d = torch.from_numpy(voxels)[None, None]
    ref = torch.nn.functional.interpolate(volume_5d, size=shape, mode="trilinear", align_corners=False)
    np.testing.assert_allclose(out, ref[0, 0].numpy(), atol=1e-6)


def test_bilinear_known_values():
    # Output pixel centres of [0, 1] resized to 4 sit at -0.25, 0.25, 0.75, 1.25 (clamped at the border).
    out = prepare(Scan(np.array([[[0.0, 1.0]]], np.float32)), Recipe(intensity="none", size=(1, 4)))
    np.testing.assert_allclose(out.voxels, [[[0.0, 0.25, 0.75, 1.0]]])


def test_2d_image_replicated_along_depth():
    image = volume(shape=(1, 30, 20))
    out = prepare(image, "radfm-2d").voxels
    plane = prepare(image, Recipe(intensity="minmax", size=(512, 512))).voxels[0]
    assert out.shape == (4, 512, 512)
    for d in range(4):
        np.testing.assert_array_equal(out[d], plane)
    # ... which is exactly what trilinear interpolation from one slice gives.
    two_slices = Scan(np.concatenate([image.voxels, image.voxels]), modality="CT", unit="HU")
    np.testing.assert_allclose(prepare(two_slices, "radfm-2d").voxels, out, atol=1e-6)


# --- colour --------------------------------------------------------------------------------------


def test_colour_to_grey_with_bt601_luma():
    rgb = np.zeros((1, 1, 4, 3), np.float32)
    rgb[0, 0, 0] = (255, 0, 0)
    rgb[0, 0, 1] = (0, 255, 0)
    rgb[0, 0, 2] = (0, 0, 255)
    rgb[0, 0, 3] = (255, 255, 255)
    out = prepare(Scan(rgb), Recipe(intensity="none"))
    assert out.voxels.shape == (1, 1, 4)
    np.testing.assert_allclose(out.voxels.ravel(), [0.299 * 255, 0.587 * 255, 0.114 * 255, 255], rtol=1e-6)


def test_colour_kept_resizes_each_channel_like_a_grey_image():
    rgb = np.random.default_rng(2).random((1, 12, 10, 3)).astype(np.float32)
    recipe = Recipe(intensity="none", size=(7, 15), colour="keep", depth=2)
    out = prepare(Scan(rgb), recipe)
    assert out.voxels.shape == (2, 7, 15, 3) and out.channels == 3
    for c in range(3):
        grey = prepare(Scan(np.ascontiguousarray(rgb[..., c])), recipe).voxels
        np.testing.assert_allclose(out.voxels[..., c], grey, atol=1e-7)


def test_colour_minmax_is_joint_over_channels():
    rgb = np.zeros((1, 1, 2, 3), np.float32)
    rgb[0, 0, 1] = (10, 20, 40)
    out = prepare(Scan(rgb), Recipe(colour="keep")).voxels
    np.testing.assert_allclose(out[0, 0, 1], [0.25, 0.5, 1.0])


def test_grey_needs_three_channels():
    with pytest.raises(ScanError, match="3 channels"):
        prepare(Scan(np.zeros((1, 2, 2, 4), np.float32)), Recipe())


# --- stacking ------------------------------------------------------------------------------------


def test_stack_series_pads_zeros_at_the_end_of_z():
    plain = Scan(np.full((3, 4, 5), 0.5, np.float32))
    contrast = Scan(np.full((5, 4, 5), 0.25, np.float32))
    stacked = stack_series([plain, contrast])
    assert stacked.shape == (2, 5, 4, 5) and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked[0, :3], 0.5)
    np.testing.assert_array_equal(stacked[0, 3:], 0.0)  # padding after the last slice (superior end)
    np.testing.assert_array_equal(stacked[1], 0.25)


def test_stack_series_of_prepared_ct_series():
    series = [prepare(volume(shape=(n, 32, 32), seed=n), "p2med-ct") for n in (20, 45)]
    stacked = stack_series(series)
    assert stacked.shape == (2, series[1].shape[0], 336, 336)


def test_stack_series_rejects_different_in_plane_shapes():
    a = Scan(np.zeros((3, 4, 5), np.float32), source="plain")
    b = Scan(np.zeros((3, 4, 6), np.float32), source="contrast")
    with pytest.raises(ScanError, match=r"contrast.*in-plane shape \(4, 6\).*\(4, 5\)"):
        stack_series([a, b])


def test_stack_series_rejects_empty_and_colour():
    with pytest.raises(MedMLLMError, match="at least one"):
        stack_series([])
    with pytest.raises(ScanError, match="colour"):
        stack_series([Scan(np.zeros((1, 2, 2, 3), np.float32))])


# --- recipes -------------------------------------------------------------------------------------


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(MedMLLMError, match="unknown recipe 'nope'") as info:
        get_recipe("nope")
    for name in ("p2med-xray", "p2med-ct", "radfm-2d", "radfm-3d", "mri"):
        assert name in str(info.value)
    with pytest.raises(MedMLLMError, match="unknown recipe"):
        prepare(volume(shape=(2, 2, 2)), "nope")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"intensity": "zscore"}, "intensity"),
        ({"intensity": "window"}, "needs a window"),
        ({"intensity": "window", "window": "liver"}, "unknown window 'liver'"),
        ({"intensity": "window", "window": (40, 0)}, "width must be positive"),
        ({"window": "lung"}, "set intensity 'window'"),
        ({"percentiles": (99, 1)}, "percentiles"),
        ({"percentiles": (1,)}, "percentiles"),
        ({"size": ("big", 3)}, "numbers expected"),
        ({"spacing": (1.0, -1.0, None)}, "spacing"),
        ({"size": (0, 10)}, "size"),
        ({"depth": "nearest"}, "depth"),
        ({"depth": 0}, "depth"),
        ({"colour": "rgb"}, "colour"),
    ],
)
def test_invalid_recipes_are_clear_errors(fields, match):
    with pytest.raises(MedMLLMError, match=match):
        Recipe(**fields)


def test_recipe_from_dict():
    data = {"intensity": "window", "window": "lung", "spacing": [5.0, None, None], "size": [336, 336]}
    recipe = Recipe.from_dict(data)
    assert (recipe.window, recipe.spacing, recipe.size) == ("lung", (5.0, None, None), (336, 336))
    with pytest.raises(MedMLLMError, match="unknown recipe field.*windw"):
        Recipe.from_dict({"windw": "lung"})


def test_named_recipes_are_documented():
    assert {"p2med-xray", "p2med-ct", "radfm-2d", "radfm-3d", "mri"} <= set(RECIPES)
    assert all(recipe.description for recipe in RECIPES.values())
    assert RECIPES["p2med-ct"].window_bounds == (-1100.0, 100.0)


# --- purity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_deterministic_and_input_untouched(name):
    scan = volume(shape=(9, 20, 16))
    before = scan.voxels.copy()
    first, second = prepare(scan, name), prepare(scan, name)
    np.testing.assert_array_equal(first.voxels, second.voxels)
    np.testing.assert_array_equal(scan.voxels, before)
    assert scan.spacing == (1.25, 0.8, 0.8) and scan.unit == "HU"
    assert not np.shares_memory(first.voxels, scan.voxels)


def test_flipped_and_read_only_views_are_accepted():
    base = volume(shape=(4, 6, 6)).voxels
    view = base[::-1, ::-1]
    view.flags.writeable = False
    out = prepare(Scan(view, modality="CT", unit="HU"), "radfm-3d")
    expected = prepare(Scan(np.ascontiguousarray(view), modality="CT", unit="HU"), "radfm-3d")
    np.testing.assert_array_equal(out.voxels, expected.voxels)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 9), st.integers(1, 9)),
    level=st.floats(-1000, 1000),
    width=st.floats(1, 4000),
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    depth=st.one_of(st.just("keep"), st.just("radfm"), st.integers(1, 9)),
)
def test_window_output_is_in_unit_range_with_the_promised_shape(shape, level, width, size, depth):
    scan = Scan(np.random.default_rng(0).normal(0, 800, shape).astype(np.float32), unit="HU")
    recipe = Recipe(intensity="window", window=(level, width), size=size, depth=depth)
    out = prepare(scan, recipe)
    assert out.shape == target_shape(scan.shape, scan.spacing, recipe)
    assert out.voxels.min() >= 0.0 and out.voxels.max() <= 1.0


# --- the real head CT ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_ct() -> Scan:
    if not HEAD_CT.exists():
        pytest.skip(f"real head CT not found at {HEAD_CT} (only present in the medmllm workspace)")
    nib = pytest.importorskip("nibabel")
    image = nib.load(HEAD_CT)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    # RAS (x, y, z) -> canonical LPS (z, y, x): flip x and y, then reverse the axes.
    data = np.asarray(image.dataobj)[::-1, ::-1, :].transpose(2, 1, 0)
    zooms = image.header.get_zooms()
    return Scan(np.ascontiguousarray(data, dtype=np.float32), spacing=(zooms[2], zooms[1], zooms[0]),
                modality="CT", unit="HU", orientation="LPS", source=str(HEAD_CT))


def test_head_ct_p2med(head_ct):
    assert head_ct.shape == (108, 256, 256)
    out = prepare(head_ct, "p2med-ct")
    assert out.shape == (32, 336, 336)  # 108 x 1.5 mm = 162 mm -> 32 slices of 5.06 mm
    assert out.voxels.dtype == np.float32
    assert out.voxels.min() >= 0.0 and out.voxels.max() == 1.0  # bone lies above the lung window
    # Air (about -1000 HU) in the corners maps to (-1000 + 1100) / 1200.
    np.testing.assert_allclose(np.median(out.voxels[:, :16, :16]), 100 / 1200, atol=0.02)
    np.testing.assert_allclose(out.spacing[0], 162 / 32, rtol=1e-6)


def test_head_ct_radfm_3d(head_ct):
    out = prepare(head_ct, "radfm-3d")
    assert out.shape == (64, 256, 256)
    assert out.voxels.min() >= 0.0 and out.voxels.max() <= 1.0
