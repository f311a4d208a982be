"""Phantoms and findings: intensities where the anatomy is, findings where their truth says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medmllm.synth import phantoms as ph
from medmllm.synth.findings import FINDING_TYPES, Course, Finding, course_factors, place

GRID = ph.Grid((32, 64, 64), ph.CHEST_FOV_MM)


def _voxel_hu(volume, grid, point):
    return float(volume[grid.index_of(point)])


def test_chest_ct_has_the_tissues_at_their_places():
    anatomy = ph.ChestAnatomy()
    hu, _ = ph.chest_ct(GRID, anatomy, rng=np.random.default_rng(0))
    assert hu.dtype == np.float32 and hu.shape == GRID.shape
    assert _voxel_hu(hu, GRID, (140.0, -170.0, -170.0)) < -950  # air outside the body (corner)
    for side in ("left", "right"):
        z, y, x = anatomy.lung_center(side)
        assert -900 < _voxel_hu(hu, GRID, (z + 40, y, x)) < -800  # lung parenchyma ~ -850
    assert 20 < _voxel_hu(hu, GRID, anatomy.heart()[0]) < 80  # heart / blood 40-60 (+ noise)
    _, iy, ix = GRID.index_of((0.0, 80.0, 0.0))
    spine = hu[:, iy, ix]
    assert spine.max() > 300 and (spine < 150).any()  # vertebral bodies (cancellous bone) and discs
    assert hu.max() > 700 and hu.min() >= -1024  # cortical bone (ribs, clavicles)
    fat = hu[16, 32, 1:64]  # a lateral line: fat at the body edge, between air and muscle
    assert ((fat > -160) & (fat < -40)).any()


def test_nodule_in_the_left_lower_lobe_is_soft_tissue_there():
    rng = np.random.default_rng(7)
    for _ in range(20):  # sample until the lobe draw gives the left lower lobe
        nodule = place("nodule", rng, scale=1.0)
        if nodule.region == "left lower lobe":
            break
    assert nodule.region == "left lower lobe" and nodule.side == "left"
    nodule = dataclasses.replace(nodule, size_mm=14.0, axes=(7.0, 7.0, 7.0))
    anatomy = ph.ChestAnatomy()
    hu, (mask,) = ph.chest_ct(GRID, anatomy, [nodule], rng=np.random.default_rng(0))
    assert mask.any()
    assert 0 < _voxel_hu(hu, GRID, nodule.center) < 80  # soft tissue at its centre
    assert hu[mask].min() > -500  # every voxel whose centre is inside is at least half nodule (partial volume)
    z, y, x = (ax.squeeze() for ax in GRID.axes())
    zz, yy, xx = np.nonzero(mask)
    assert (x[xx] > 0).all()  # patient's left (x toward Left)
    assert (ph.lobe_of("left", z[zz], y[yy]) == 1).all()  # below the oblique fissure
    assert np.abs(z[zz].mean() - nodule.center[0]) < 10 and np.abs(x[xx].mean() - nodule.center[2]) < 6
    without, _ = ph.chest_ct(GRID, anatomy, [], rng=np.random.default_rng(0))
    assert without[mask].mean() < -600  # the same voxels are lung without the nodule
    spacing = GRID.spacing
    extent_x = (xx.max() - xx.min() + 1) * spacing[2]
    assert 14.0 - spacing[2] <= extent_x <= 14.0 + spacing[2]  # its size in mm, to a voxel


def test_effusion_is_dependent_posterior_and_inferior():
    anatomy = ph.ChestAnatomy()
    effusion = Finding("pleural effusion", "right", "right pleural space", 50.0, extent=50.0)
    hu, (mask,) = ph.chest_ct(GRID, anatomy, [effusion])
    z, y, x = GRID.axes()
    lung = anatomy.in_lung("right", z, y, x)
    zz, yy, xx = np.nonzero(mask)
    lz, ly, _ = np.nonzero(lung)
    assert mask.sum() > 20 and (mask <= lung).all()
    assert yy.mean() > ly.mean() + 3 and zz.mean() < lz.mean() - 3  # posterior (H up) and inferior (D down)
    assert (x.squeeze()[xx] < 0).all()  # right side
    assert np.abs(hu[mask] - 10).max() < 20  # fluid ~ 10 HU (blur at the edge)


def test_pneumothorax_is_air_at_the_apex_and_cardiomegaly_enlarges_the_heart():
    anatomy = ph.ChestAnatomy()
    ptx = Finding("pneumothorax", "left", "left apex", 30.0, extent=30.0)
    hu, (mask,) = ph.chest_ct(GRID, anatomy, [ptx])
    assert mask.any() and hu[mask].mean() < -980
    zz, _, _ = np.nonzero(mask)
    assert GRID.axis(0)[zz].mean() > anatomy.lung_center("left")[0]
    big = ph.ChestAnatomy(heart_scale=1.4)
    assert big.heart_diameter_mm() / big.thoracic_width_mm() > 0.5 > anatomy.heart_diameter_mm() / anatomy.thoracic_width_mm()


def test_radiograph_shows_an_effusion_as_a_whiter_lower_zone_on_its_side():
    anatomy = ph.ChestAnatomy()
    clear, _ = ph.chest_radiograph((128, 128), anatomy)
    fluid, _ = ph.chest_radiograph((128, 128), anatomy, [Finding("pleural effusion", "left", "left pleural space", 70.0, extent=70.0)])
    assert clear.shape == (128, 128) and clear.min() >= 0 and clear.max() <= 1
    lower_left = (slice(75, 100), slice(80, 110))  # lower zone; columns right of centre = patient's left on a PA film
    lower_right = (slice(75, 100), slice(18, 48))
    assert fluid[lower_left].mean() > clear[lower_left].mean() + 0.02
    assert fluid[lower_right].mean() == pytest.approx(clear[lower_right].mean(), abs=1e-3)
    assert clear[64, 2] < clear[64, 64]  # the mediastinum attenuates more than the lateral edge


def test_brain_t1_orders_white_grey_csf_and_a_mass_is_hypointense():
    grid = ph.Grid((32, 64, 64), ph.BRAIN_FOV_MM)
    anatomy = ph.BrainAnatomy()
    t1 = ph.brain_t1(grid, anatomy)
    z, y, x = grid.axes()
    rho = anatomy.brain_fraction(z, y, x)
    white, grey, csf = t1[rho < 0.6].mean(), t1[(rho > 0.8) & (rho < 0.84)].mean(), t1[(rho > 0.86) & (rho < 0.88)].mean()
    assert white > grey > csf
    mass = place("brain mass", np.random.default_rng(1), scale=1.0)
    vol, (mask,) = ph.brain_mri(grid, anatomy, [mass], rng=np.random.default_rng(0))
    assert mask.any() and vol[mask].mean() < 0.75 * ph.T1["white"]
    assert mass.region.split()[0] == mass.side == ("left" if mass.center[2] > 0 else "right")


@pytest.mark.parametrize("course", ["increasing", "stable", "decreasing", "resolving"])
def test_courses_change_size_as_named(course):
    factors = course_factors(course, 3, np.random.default_rng(0))
    c = Course(place("consolidation", np.random.default_rng(2), 1.0), course, factors)
    changes = [c.change(k) for k in range(3)]
    expected = {"increasing": [None, "increased", "increased"], "stable": [None, "unchanged", "unchanged"],
                "decreasing": [None, "decreased", "decreased"], "resolving": [None, "decreased", "resolved"]}[course]
    assert changes == expected
    assert (c.at(2, 1.0) is None) == (course == "resolving")


def test_every_placed_finding_has_a_valid_region():
    rng = np.random.default_rng(3)
    for name, kind in FINDING_TYPES.items():
        for _ in range(5):
            f = place(name, rng, scale=0.8)
            assert f.size_mm > 0
            if name in ("nodule", "mass", "consolidation", "atelectasis"):
                assert f.region in ph.LOBES[f.side]
                assert ph.ChestAnatomy(scale=0.8).in_lung(f.side, *f.center)
            elif kind.family == "brain":
                assert f.region.split(" ", 1)[1] in ph.BRAIN_LOBES


def test_large_growing_findings_still_fit_a_small_child():
    rng = np.random.default_rng(11)
    anatomy = ph.ChestAnatomy(scale=0.59)  # a 1-year-old
    for name in ("mass", "nodule", "consolidation"):
        for _ in range(10):
            f = place(name, rng, scale=0.59, growth=1.96)  # the largest growth of an increasing course
            z, y, x = f.center
            reach = [a * (1.96 if name != "consolidation" else 0) for a in f.axes]
            assert anatomy.in_lung(f.side, z + reach[0], y, x) and anatomy.in_lung(f.side, z, y, x - reach[2])
    for _ in range(10):
        f = place("brain mass", rng, scale=0.85, growth=1.96)
        assert ph.BrainAnatomy().brain_fraction(*f.center) + max(f.axes) * 1.96 / 74.0 < 0.85
