"""Shared fixtures: real scans from ../shared and from pydicom / pydicom-data / nibabel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI replays the same examples every run (a red CI must be reproducible); locally they vary.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED_SCANS = REPO.parent / "shared" / "data" / "scans"


def shared_scan(name: str) -> Path:
    path = SHARED_SCANS / name
    if not path.exists():
        pytest.skip(f"{path} not found: the real test scans live in ../shared/data/scans beside the repository")
    return path


def dicom_test_file(name: str) -> Path:
    """A file from pydicom's or pydicom-data's test files, without touching the network."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not installed (pip install pydicom-data)")
    return Path(path)


def nibabel_test_file(name: str) -> Path:
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / name
    if not path.exists():
        pytest.skip(f"nibabel test file {name} not found")
    return path


@pytest.fixture(scope="session")
def head_ct_path() -> Path:
    return shared_scan("head_ct.nii.gz")


@pytest.fixture(scope="session")
def brain_mri_path() -> Path:
    return shared_scan("brain_t1_mri.nii.gz")


@pytest.fixture(scope="session")
def head_ct(head_ct_path):
    from medmllm.scans import read

    return read(head_ct_path)


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module: tiny matrices are faster on one, and 2 shared cores
    oversubscribed are ~100x slower. Use with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny_model(folder: Path, **overrides) -> Path:
    """The ``tiny`` preset (random weights, seeded) saved with its processor into ``folder``."""
    import torch

    from medmllm.model.factory import build

    torch.manual_seed(0)
    model, processor = build("tiny", **overrides)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
