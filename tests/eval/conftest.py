"""Fixtures shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_scan
from tests.eval.bench_fixture import make_bench


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """The small benchmark of `make_bench` (every task family; the shared head CT and brain MRI)."""
    return make_bench(tmp_path_factory.mktemp("bench"), shared_scan("head_ct.nii.gz"), shared_scan("brain_t1_mri.nii.gz"))
