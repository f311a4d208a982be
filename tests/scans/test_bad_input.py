"""Bad input: one clear line naming the file and the problem, a non-zero exit, no traceback,
and no allocation beyond the configured limit."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medmllm.errors import ScanError
from medmllm.scans import read
from medmllm.scans.write import write_dicom_series
from tests.conftest import dicom_test_file


def _truncated_dicom(tmp_path):
    data = dicom_test_file("CT_small.dcm").read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[: len(data) - 5000])
    return path


def _random_bytes(tmp_path):
    path = tmp_path / "random.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def _empty(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.touch()
    return path


def _nan_nifti(tmp_path):
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), np.nan, dtype=np.float32), np.eye(4)), str(path))
    return path


def _huge_nifti(tmp_path):
    """A 352-byte file whose header declares 30000^3 voxels."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.int16)
    path = tmp_path / "huge.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 4)
    return path


def _huge_dicom(tmp_path):
    ds = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    path = tmp_path / "huge.dcm"
    ds.save_as(path)
    return path


def _huge_npy(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000, 100)})
    return path


def _no_pixels(tmp_path):
    ds = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path)
    return path


def _text_png(tmp_path):
    path = tmp_path / "xray.png"
    path.write_text("this is not an image\n")
    return path


def _two_series(tmp_path):
    vol = np.zeros((3, 8, 8), dtype=np.float32)
    write_dicom_series(vol, (1, 1, 1), tmp_path / "mixed", file_names=[f"a{k}.dcm" for k in range(3)])
    write_dicom_series(vol, (1, 1, 1), tmp_path / "mixed", file_names=[f"b{k}.dcm" for k in range(3)])
    return tmp_path / "mixed"


def _zero_nifti(tmp_path):
    path = tmp_path / "zero.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 6), dtype=np.int16), np.eye(4)), str(path))
    return path


def _zero_dicom(tmp_path):
    ds = pydicom.dcmread(dicom_test_file("CT_small.dcm"))
    ds.Rows = 0
    path = tmp_path / "zero.dcm"
    ds.save_as(path)
    return path


def _truncated_nifti_gz(tmp_path, head_ct_path):
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(head_ct_path.read_bytes()[:200000])
    return path


def _two_slices_same_place(tmp_path):
    vol = np.zeros((2, 8, 8), dtype=np.float32)
    write_dicom_series(vol, (1, 1, 1), tmp_path / "dup", file_names=["a.dcm", "b.dcm"], series_uid="1.2.3.4")
    ds = pydicom.dcmread(tmp_path / "dup" / "b.dcm")
    ds.ImagePositionPatient = pydicom.dcmread(tmp_path / "dup" / "a.dcm").ImagePositionPatient
    ds.save_as(tmp_path / "dup" / "b.dcm")
    return tmp_path / "dup"


CASES = {
    "truncated DICOM": (_truncated_dicom, "cannot decode pixel data|not a readable DICOM"),
    "random bytes": (_random_bytes, "not a recognised scan format"),
    "empty file": (_empty, r"is empty \(0 bytes\)"),
    "NIfTI full of NaN": (_nan_nifti, "no finite values"),
    "enormous NIfTI header": (_huge_nifti, "declares .* GiB of voxels"),
    "enormous DICOM header": (_huge_dicom, "declares .* GiB of voxels"),
    "enormous NPY header": (_huge_npy, "declares .* GiB of voxels"),
    "DICOM without pixel data": (_no_pixels, "has no pixel data"),
    "text named .png": (_text_png, r"named \.png but its content is text"),
    "two series mixed": (_two_series, "2 series mixed in one folder"),
    "zero-sized NIfTI": (_zero_nifti, "zero-sized dimension"),
    "zero-sized DICOM": (_zero_dicom, "zero-sized image"),
    "two slices in one place": (_two_slices_same_place, "share one slice position"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_clear_line(tmp_path, case):
    make, pattern = CASES[case]
    path = make(tmp_path)
    with pytest.raises(ScanError, match=pattern) as err:
        read(path, max_bytes=2**30)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path)) or str(path) in message


def test_truncated_gzip_nifti(tmp_path, head_ct_path):
    path = _truncated_nifti_gz(tmp_path, head_ct_path)
    with pytest.raises(ScanError, match="cannot read as nifti") as err:
        read(path)
    assert "\n" not in str(err.value)


def test_limit_is_configurable(tmp_path, head_ct_path, monkeypatch):
    with pytest.raises(ScanError, match="over the limit of 0.0 GiB"):
        read(head_ct_path, max_bytes=1000)
    monkeypatch.setenv("MEDMLLM_MAX_SCAN_BYTES", "1000")
    with pytest.raises(ScanError, match="MEDMLLM_MAX_SCAN_BYTES"):
        read(head_ct_path)
    monkeypatch.setenv("MEDMLLM_MAX_SCAN_BYTES", str(30 * 2**20))
    assert read(head_ct_path).shape == (108, 256, 256)


def test_some_nan_voxels_are_filled_and_reported(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    data[0, 0, :2] = np.nan
    path = tmp_path / "partial.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    scan = read(path)
    assert np.isfinite(scan.voxels).all()
    assert any("2 NaN/infinite voxels" in w for w in scan.warnings)


@pytest.mark.parametrize("case", ["random bytes", "text named .png", "enormous NIfTI header", "two series mixed", "DICOM without pixel data"])
def test_cli_exits_non_zero_with_one_line_and_no_traceback(tmp_path, case):
    path = CASES[case][0](tmp_path)
    out = tmp_path / "preview.png"
    proc = subprocess.run([sys.executable, "-m", "medmllm", "scan", "preview", str(path), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert not out.exists()
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_missing_path(tmp_path):
    with pytest.raises(ScanError, match="no such file or folder"):
        read(tmp_path / "nope.nii.gz")


# --------------------------------------------------------------------------- property-based


_fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_fuzz
@given(data=st.binary(min_size=1, max_size=2048), name=st.sampled_from(["x.dcm", "x.nii", "x.nii.gz", "x.png", "x.npy", "x.npz", "x.tif", "x"]))
def test_arbitrary_bytes_never_escape_as_anything_but_scan_error(tmp_path, data, name):
    path = tmp_path / name
    path.write_bytes(data)
    try:
        scan = read(path, max_bytes=2**26)
    except ScanError as e:
        assert "\n" not in str(e)
    else:
        assert scan.voxels.dtype == np.float32 and scan.voxels.ndim in (3, 4)


_CT_BYTES = None


@_fuzz
@given(cut=st.integers(min_value=1, max_value=39000), flips=st.lists(st.tuples(st.integers(0, 38999), st.integers(1, 255)), max_size=8))
def test_corrupted_dicom_never_escapes_as_anything_but_scan_error(tmp_path, cut, flips):
    global _CT_BYTES
    if _CT_BYTES is None:
        _CT_BYTES = bytearray(dicom_test_file("CT_small.dcm").read_bytes())
    data = bytearray(_CT_BYTES[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] ^= value
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(bytes(data))
    try:
        read(path, max_bytes=2**26)
    except ScanError as e:
        assert "\n" not in str(e)


@_fuzz
@given(
    # Every axis >= 2: a file with a single slice is a 2D image and keeps its in-plane layout.
    shape=st.tuples(st.integers(2, 6), st.integers(2, 7), st.integers(2, 7)),
    perm=st.permutations([0, 1, 2]),
    flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    zooms=st.tuples(*[st.floats(0.3, 4.0)] * 3),
)
def test_nifti_in_any_axis_order_reads_to_one_canonical_volume(tmp_path, shape, perm, flips, zooms):
    """Reference: build the canonical LPS volume, scramble axes and affine together, read back."""
    from medmllm.scans import Scan
    from medmllm.scans.write import write_nifti

    rng = np.random.default_rng(sum(shape))
    truth = Scan(voxels=rng.normal(size=shape).astype(np.float32), spacing=zooms)
    img = nib.load(str(write_nifti(truth, tmp_path / "t.nii")))
    data, affine = np.asarray(img.dataobj), img.affine.copy()
    for axis, flip in enumerate(flips):
        if flip:
            data = np.flip(data, axis)
            affine[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
            affine[:3, axis] *= -1
    data = data.transpose(perm)
    affine[:, :3] = affine[:, list(perm)]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(tmp_path / "s.nii"))
    back = read(tmp_path / "s.nii")
    np.testing.assert_array_equal(back.voxels, truth.voxels)
    np.testing.assert_allclose(back.spacing, truth.spacing, rtol=1e-5)


@_fuzz
@given(
    depth=st.integers(2, 6),
    slope=st.sampled_from([1.0, 0.5, 2.0]),
    intercept=st.sampled_from([-1024.0, -1000.0, 0.0, 37.0]),
    seed=st.integers(0, 2**16),
)
def test_dicom_series_round_trip_with_any_names_and_rescale(tmp_path, depth, slope, intercept, seed):
    rng = np.random.default_rng(seed)
    stored = rng.integers(-2000, 3000, size=(depth, 6, 5))
    hu = (stored * slope + intercept).astype(np.float32)
    folder = tmp_path / f"s{seed}_{depth}_{slope}_{intercept}"
    names = [f"{n}.dcm" for n in rng.permutation(depth)]
    write_dicom_series(hu, (1.25, 0.5, 0.75), folder, rescale_slope=slope, rescale_intercept=intercept, file_names=names)
    back = read(folder)
    np.testing.assert_array_equal(back.voxels, hu)
    assert back.spacing == pytest.approx((1.25, 0.5, 0.75))
    shutil.rmtree(folder)
