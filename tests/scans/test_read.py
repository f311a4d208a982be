"""Reading real scans: NIfTI, DICOM (file, series, multi-series, multi-frame, DICOMDIR, codecs), images, NumPy."""

from __future__ import annotations

import random

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from medmllm.errors import ScanError
from medmllm.scans import SeriesSelector, list_series, read
from medmllm.scans.write import write_dicom_series, write_nifti
from tests.conftest import dicom_test_file, nibabel_test_file


def lps_reference(path):
    """Independent canonical form: nibabel's RAS reorientation, then flip x and y, then (z, y, x)."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    ras = np.asarray(img.dataobj, dtype=np.float32)
    return np.ascontiguousarray(ras[::-1, ::-1, :].transpose(2, 1, 0)), tuple(float(v) for v in img.header.get_zooms()[:3][::-1])


# --------------------------------------------------------------------------- NIfTI


def test_head_ct_geometry_and_hounsfield_units(head_ct_path, head_ct):
    assert head_ct.shape == (108, 256, 256)
    assert head_ct.spacing == pytest.approx((1.5, 0.957031, 0.957031), abs=1e-5)
    assert head_ct.orientation == "LPS"
    assert head_ct.value_range == (-1024.0, 2986.0)
    assert (head_ct.modality, head_ct.unit) == ("CT", "HU")
    ref, spacing = lps_reference(head_ct_path)
    np.testing.assert_array_equal(head_ct.voxels, ref)
    assert head_ct.spacing == pytest.approx(spacing)


def test_brain_mri_matches_nibabel_canonical(brain_mri_path):
    scan = read(brain_mri_path, modality="MR")
    ref, spacing = lps_reference(brain_mri_path)
    assert scan.shape == (181, 217, 181)
    np.testing.assert_array_equal(scan.voxels, ref)
    assert (scan.modality, scan.unit) == ("MR", "")
    assert scan.value_range[0] >= 0  # an MRI is not mistaken for CT


@pytest.mark.parametrize("codes", ["RAS", "LAS", "PIR", "ASL", "SRA", "IPL"])
def test_any_nifti_orientation_reads_to_the_same_canonical_volume(tmp_path, head_ct, codes):
    """Write the CT in another axis layout (permuted + flipped data and affine), read it back."""
    from nibabel import orientations as nio

    canonical_img = nib.load(str(write_nifti(head_ct, tmp_path / "lps.nii.gz")))
    transform = nio.ornt_transform(nio.io_orientation(canonical_img.affine), nio.axcodes2ornt(tuple(codes)))
    moved = canonical_img.as_reoriented(transform)
    assert "".join(nib.aff2axcodes(moved.affine)) == codes
    path = tmp_path / f"{codes}.nii.gz"
    nib.save(moved, str(path))
    back = read(path)
    np.testing.assert_array_equal(back.voxels, head_ct.voxels)
    assert back.spacing == pytest.approx(head_ct.spacing)


def test_4d_nifti_needs_a_volume_choice():
    path = nibabel_test_file("example4d.nii.gz")
    with pytest.raises(ScanError, match="4D with 2 volumes; choose one with --volume"):
        read(path)
    data = np.asarray(nib.load(str(path)).dataobj)
    vol1 = read(path, volume=1)
    assert vol1.shape == (data.shape[2], data.shape[1], data.shape[0])
    assert np.isclose(vol1.voxels.sum(), data[..., 1].astype(np.float64).sum(), rtol=1e-6)
    with pytest.raises(ScanError, match="out of range"):
        read(path, volume=2)


# --------------------------------------------------------------------------- DICOM series


def _shuffled_series(tmp_path, scan, name="series", intercept=-1024.0, **kwargs):
    names = [f"IM{n:05d}.dcm" for n in random.Random(7).sample(range(99999), scan.shape[0])]
    write_dicom_series(scan.voxels, scan.spacing, tmp_path / name, rescale_intercept=intercept, file_names=names, **kwargs)
    return tmp_path / name


def test_head_ct_as_dicom_series_with_shuffled_names_reads_back_exactly(tmp_path, head_ct):
    folder = _shuffled_series(tmp_path, head_ct, intercept=-1000.0, origin=(-120.0, -130.0, 40.0))
    # File names and InstanceNumber are both out of order on purpose.
    files = sorted(folder.iterdir())
    z_by_name = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    assert z_by_name != sorted(z_by_name)
    stored = pydicom.dcmread(files[0]).pixel_array
    assert stored.min() >= -24 and float(pydicom.dcmread(files[0]).RescaleIntercept) == -1000.0  # HU needs the rescale

    back = read(folder)
    assert back.shape == head_ct.shape
    assert back.spacing == pytest.approx(head_ct.spacing, abs=1e-6)
    assert back.orientation == "LPS"
    assert (back.modality, back.unit) == ("CT", "HU")
    np.testing.assert_array_equal(back.voxels, head_ct.voxels)
    assert back.warnings == []


def _ct_block(depth=12, size=16, seed=0):
    from medmllm.scans import Scan

    rng = np.random.default_rng(seed)
    return Scan(voxels=rng.integers(-1024, 2000, size=(depth, size, size)).astype(np.float32), spacing=(2.5, 0.7, 0.7), modality="CT")


def test_gaps_and_uneven_spacing_are_reported(tmp_path):
    scan = _ct_block()
    folder = _shuffled_series(tmp_path, scan)
    files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    files[5].unlink()  # one missing slice
    gap = read(folder)
    assert gap.shape[0] == 11
    assert any(w.startswith("gap: about 1 slice(s) missing") for w in gap.warnings)
    assert gap.spacing[0] == pytest.approx(2.5)

    ds = pydicom.dcmread(files[8])
    ds.ImagePositionPatient = [0.0, 0.0, float(ds.ImagePositionPatient[2]) + 0.4]
    ds.save_as(files[8])
    uneven = read(folder)
    assert any(w.startswith("uneven slice spacing") for w in uneven.warnings)


def test_several_series_in_one_folder_are_listed_and_selected(tmp_path):
    plain = _ct_block(seed=1)
    enhanced = _ct_block(depth=8, seed=2)
    thin = _ct_block(depth=20, seed=3)
    thin.spacing = (1.0, 0.7, 0.7)
    _shuffled_series(tmp_path, plain, name="exam/a", series_description="Lung 5.0 mm")
    _shuffled_series(tmp_path, enhanced, name="exam/b", series_description="Lung 5.0 mm C+", contrast_agent="Iohexol")
    _shuffled_series(tmp_path, thin, name="exam/c", series_description="Mediastinum 1.0 mm")
    folder = tmp_path / "exam"

    listing = list_series(folder)
    assert sorted(s.images for s in listing) == [8, 12, 20]
    with pytest.raises(ScanError, match="3 series mixed in one folder"):
        read(folder)
    assert read(folder, series="description=lung,contrast=no").shape[0] == 12
    assert read(folder, series="description=lung,contrast=yes").shape[0] == 8
    got = read(folder, series=SeriesSelector(thickness=1.0))
    np.testing.assert_array_equal(got.voxels, thin.voxels)
    with pytest.raises(ScanError, match="2 series mixed"):
        read(folder, series="description=lung")
    with pytest.raises(ScanError, match="no series matches"):
        read(folder, series="thickness=3")
    with pytest.raises(ScanError, match="unknown series selector key"):
        read(folder, series="colour=red")


def test_dicomdir_lists_every_series_and_reads_one():
    dicomdir = dicom_test_file("DICOMDIR")
    listing = list_series(dicomdir.parent)
    assert len(listing) == 13
    with pytest.raises(ScanError, match="13 series mixed"):
        read(dicomdir)
    brain = next(s for s in listing if s.description == "Routine Brain")
    scan = read(dicomdir, series=f"index={brain.index}")
    assert scan.shape == (4, 16, 16) and scan.modality == "CT" and scan.unit == "HU"


# --------------------------------------------------------------------------- DICOM files


def test_single_ct_file_in_hounsfield_units():
    path = dicom_test_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    scan = read(path)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(scan.voxels[0], expected)
    assert scan.shape == (1, 128, 128) and scan.unit == "HU"
    assert scan.spacing[1:] == pytest.approx((0.661468, 0.661468))


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_compressed_and_other_transfer_syntaxes_decode_losslessly(name):
    reference = read(dicom_test_file("MR_small.dcm"))
    scan = read(dicom_test_file(name))
    np.testing.assert_array_equal(scan.voxels, reference.voxels)


@pytest.mark.parametrize("lossless,uncompressed", [("RG1_J2KR.dcm", "RG1_UNCR.dcm"), ("US1_J2KR.dcm", "US1_UNCR.dcm"), ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm")])
def test_pydicom_data_lossless_pairs_agree(lossless, uncompressed):
    np.testing.assert_array_equal(read(dicom_test_file(lossless)).voxels, read(dicom_test_file(uncompressed)).voxels)


def test_monochrome1_is_inverted():
    path = dicom_test_file("RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    scan = read(path)
    stored = ds.pixel_array.astype(np.float32)
    np.testing.assert_array_equal(scan.voxels[0], (2 ** int(ds.BitsStored) - 1) - stored)
    # The darkest stored value (bright on a MONOCHROME1 display) becomes the brightest.
    assert np.unravel_index(np.argmax(scan.voxels[0]), stored.shape) == np.unravel_index(np.argmin(stored), stored.shape)
    assert scan.modality == "CR" and scan.orientation == ""


def test_rgb_is_kept_as_channels():
    scan = read(dicom_test_file("SC_rgb.dcm"))
    assert scan.voxels.shape == (1, 100, 100, 3) and scan.channels == 3
    ds = pydicom.dcmread(dicom_test_file("SC_rgb.dcm"))
    np.testing.assert_array_equal(scan.voxels[0], ds.pixel_array)


def test_enhanced_multiframe_ct_uses_functional_groups():
    path = dicom_test_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    scan = read(path)
    assert scan.shape == (2, 512, 512) and scan.unit == "HU"
    assert scan.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    # The image's rows run toward patient Right (IOP -1,0,0): canonical flips W.
    frames = ds.pixel_array.astype(np.float32) - 1024.0
    positions = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    order = np.argsort(positions)
    np.testing.assert_array_equal(scan.voxels, frames[order][:, :, ::-1])


def test_multiframe_mr_without_positions_keeps_stored_order():
    path = dicom_test_file("emri_small.dcm")
    scan = read(path)
    np.testing.assert_array_equal(scan.voxels, pydicom.dcmread(path).pixel_array.astype(np.float32))
    assert scan.spacing[0] == pytest.approx(1.2)
    assert any("without positions" in w for w in scan.warnings)


# --------------------------------------------------------------------------- 2D images and NumPy


def test_png_grey_8_and_16_bit_and_rgb(tmp_path):
    grey = (np.arange(64 * 48) % 251).reshape(48, 64).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    scan = read(tmp_path / "g.png")
    assert scan.voxels.shape == (1, 48, 64)
    np.testing.assert_array_equal(scan.voxels[0], grey)

    deep = (np.arange(32 * 32) * 61).reshape(32, 32).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    np.testing.assert_array_equal(read(tmp_path / "d.png").voxels[0], deep)

    rgb = np.stack([grey, grey[::-1], grey[:, ::-1]], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    scan = read(tmp_path / "c.bmp")
    assert scan.channels == 3
    np.testing.assert_array_equal(scan.voxels[0], rgb)


def test_jpeg_and_multipage_tiff(tmp_path):
    img = (np.indices((40, 30)).sum(0) * 3).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.jpg", quality=95)
    assert read(tmp_path / "x.jpg").voxels.shape == (1, 40, 30)
    pages = [Image.fromarray((img + k).astype(np.uint8)) for k in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    scan = read(tmp_path / "stack.tif")
    assert scan.shape == (3, 40, 30)
    np.testing.assert_array_equal(scan.voxels[2], img + 2)


def test_npy_and_npz(tmp_path):
    vol = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float64)
    np.save(tmp_path / "v.npy", vol)
    np.testing.assert_allclose(read(tmp_path / "v.npy").voxels, vol.astype(np.float32))
    np.savez(tmp_path / "v.npz", voxels=vol, spacing=np.array([3.0, 0.5, 0.5]))
    scan = read(tmp_path / "v.npz")
    assert scan.spacing == (3.0, 0.5, 0.5)
    np.save(tmp_path / "img.npy", vol[0])
    assert read(tmp_path / "img.npy").shape == (1, 6, 7)
    np.savez(tmp_path / "two.npz", a=vol, b=vol)
    with pytest.raises(ScanError, match="name the scan 'voxels'"):
        read(tmp_path / "two.npz")


def test_nifti_round_trip_through_write_nifti(tmp_path, head_ct):
    path = write_nifti(head_ct, tmp_path / "ct.nii.gz")
    back = read(path)
    np.testing.assert_array_equal(back.voxels, head_ct.voxels)
    assert back.spacing == pytest.approx(head_ct.spacing)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_gzip_nifti_reads_the_same_without_isal(monkeypatch, head_ct_path, head_ct):
    """ISA-L is a speed-up only: with it missing, zlib gives identical voxels."""
    import sys

    monkeypatch.setitem(sys.modules, "isal.igzip", None)
    monkeypatch.setitem(sys.modules, "isal", None)
    np.testing.assert_array_equal(read(head_ct_path).voxels, head_ct.voxels)


def test_pydicom_warnings_that_quote_file_values_never_reach_logs(tmp_path, caplog, recwarn):
    """pydicom warns (and logs) with the offending value quoted; a reader must not pass that on."""
    import logging

    write_dicom_series(np.zeros((2, 4, 4), np.float32), (1, 1, 1), tmp_path / "s", patient_name="DOE^JANE")
    for f in (tmp_path / "s").iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.826.DOE.JANE"  # not a valid UI: pydicom warns and logs, quoting it
        ds.save_as(f)
    recwarn.clear()  # the set-up above warned too; only the reader's own messages count
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    read(tmp_path / "s")
    list_series(tmp_path / "s")
    assert not any("DOE" in r.getMessage() for r in caplog.records)
    assert not any("DOE" in str(w.message) for w in recwarn)
