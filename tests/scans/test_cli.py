"""`medmllm scan ...` through the real entry point, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from medmllm.scans.write import write_dicom_series


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "medmllm", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_info_json_has_the_documented_keys(head_ct_path):
    info = json.loads(run("scan", "info", head_ct_path, "--json").stdout)
    assert {"modality", "shape", "spacing", "orientation", "value_range", "unit", "series"} <= set(info)
    assert info["shape"] == [108, 256, 256]
    assert info["spacing"] == pytest.approx([1.5, 0.957031, 0.957031], abs=1e-5)
    assert info["value_range"] == [-1024.0, 2986.0]
    assert (info["modality"], info["unit"], info["orientation"]) == ("CT", "HU", "LPS")
    assert info["series"] == []


def test_info_on_a_folder_lists_series_and_never_prints_identifiers(tmp_path):
    vol = np.random.default_rng(0).integers(-1000, 1000, (4, 8, 8)).astype(np.float32)
    who = dict(patient_name="DOE^JANE^Q", patient_id="MRN-99887766")
    write_dicom_series(vol, (5.0, 0.7, 0.7), tmp_path / "exam", series_description="Lung 5.0 mm", **who)
    write_dicom_series(vol[:2], (1.0, 0.7, 0.7), tmp_path / "exam", series_description="Bone 1.0 mm", file_names=["b1.dcm", "b2.dcm"], **who)
    proc = run("scan", "info", tmp_path / "exam", "--json")
    info = json.loads(proc.stdout)
    assert sorted(s["description"] for s in info["series"]) == ["Bone 1.0 mm", "Lung 5.0 mm"]
    assert info["shape"] is None  # several series and no selector: listing only
    chosen = json.loads(run("scan", "info", tmp_path / "exam", "--json", "--series", "thickness=5").stdout)
    assert chosen["shape"] == [4, 8, 8] and chosen["series_description"] == "Lung 5.0 mm"
    for out in (proc.stdout + proc.stderr, run("scan", "info", tmp_path / "exam").stdout, run("scan", "info", tmp_path / "exam", "--series", "index=0").stdout):
        assert "DOE" not in out and "JANE" not in out and "99887766" not in out


def test_preview_writes_a_mosaic(tmp_path, head_ct_path):
    out = tmp_path / "ct.png"
    run("scan", "preview", head_ct_path, "-o", out, "--window", "brain", "--tiles", "9")
    img = np.asarray(Image.open(out))
    assert img.ndim == 2 and img.shape[0] == img.shape[1] == 3 * 256
    assert img.max() == 255 and img.min() == 0


def test_preview_refuses_a_bad_window_before_reading(tmp_path, head_ct_path):
    proc = run("scan", "preview", head_ct_path, "-o", tmp_path / "x.png", "--window", "lungs", check=False)
    assert proc.returncode == 1 and "unknown window 'lungs'" in proc.stderr and not (tmp_path / "x.png").exists()


def test_help_is_fast_and_lists_the_scan_app():
    proc = run("--help")
    assert "scan" in proc.stdout
    # the CLI must not import the heavy stack just to answer --help
    code = "import sys; sys.argv=['medmllm','--help']\ntry:\n from medmllm.cli import main; main()\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'nibabel' in sys.modules, 'pydicom' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[-1]
    assert out == "False False False"


def test_deid_command_writes_de_identified_series_that_reads_back(tmp_path):
    vol = np.random.default_rng(1).integers(-1000, 1000, (3, 8, 8)).astype(np.float32)
    write_dicom_series(vol, (2.0, 0.5, 0.5), tmp_path / "DOE_JANE", patient_name="DOE^JANE", patient_id="MRN-123456")
    out = tmp_path / "clean"
    proc = run("scan", "deid", tmp_path / "DOE_JANE", out, "--salt", "k")
    assert "3 files written" in proc.stdout
    files = [p for p in out.rglob("*.dcm")]
    assert len(files) == 3
    for f in files:
        raw = f.read_bytes()
        assert b"DOE" not in raw and b"MRN-123456" not in raw and "DOE" not in str(f)
    series_dir = files[0].parent
    from medmllm.scans import read

    np.testing.assert_array_equal(read(series_dir).voxels, vol)
    bad = run("scan", "deid", tmp_path / "DOE_JANE", tmp_path / "DOE_JANE" / "inside", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_prepare_command_writes_a_model_ready_nifti(tmp_path, head_ct_path):
    from medmllm.scans import read

    out = tmp_path / "ct_radfm.nii.gz"
    proc = run("scan", "prepare", head_ct_path, "-o", out, "--recipe", "radfm-3d")
    assert "shape [64, 256, 256]" in proc.stdout
    back = read(out)
    assert back.shape == (64, 256, 256)
    assert back.voxels.min() >= 0.0 and back.voxels.max() <= 1.0
    bad = run("scan", "prepare", head_ct_path, "-o", tmp_path / "x.nii.gz", "--recipe", "radfm-4d", check=False)
    assert bad.returncode == 1 and "unknown recipe 'radfm-4d'" in bad.stderr and not (tmp_path / "x.nii.gz").exists()


def test_demo_scans_tour_runs_end_to_end(tmp_path, head_ct_path):
    """The scans part of `medmllm demo` (the rest is tests/demo, on the tiny preset)."""
    out = tmp_path / "demo"
    proc = run("demo", "-o", out, "--scans", head_ct_path.parent, "--scans-only")
    assert "pixels unchanged: True" in proc.stdout and "max |HU difference| = 0" in proc.stdout
    for name in ("head_ct_brain_window.png", "brain_t1_mri.png", "head_ct_p2med-ct.nii.gz", "head_ct_radfm-3d.nii.gz"):
        assert (out / name).stat().st_size > 1000
