"""The one mixed-precision rule of training and generation (medmllm.model.precision)."""

from __future__ import annotations

import pytest
import torch

from medmllm.errors import MedMLLMError
from medmllm.model import precision as mp


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_is_bf16_exactly_when_the_cpu_has_native_bf16_that_is_faster(monkeypatch, native):
    monkeypatch.setattr(mp, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(mp, "cpu_bf16_is_faster", lambda: native)
    assert mp.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert mp.resolve_precision("fp32", "cpu") == "fp32"
    if native:
        assert mp.resolve_precision("bf16", "cpu") == "bf16"
        assert mp.autocast("auto", "cpu").fast_dtype == torch.bfloat16
    else:
        with pytest.raises(MedMLLMError, match="no native bf16"):
            mp.resolve_precision("bf16", "cpu")
        assert not isinstance(mp.autocast("auto", "cpu"), torch.autocast)


def test_fp16_on_the_cpu_and_unknown_names_are_clear_errors():
    with pytest.raises(MedMLLMError, match="fp16 needs a GPU"):
        mp.resolve_precision("fp16", "cpu")
    with pytest.raises(MedMLLMError, match="one of auto, fp32, bf16, fp16"):
        mp.resolve_precision("half", "cpu")


def test_auto_stays_fp32_on_a_cpu_whose_native_bf16_measures_slower(monkeypatch):
    # an Intel Xeon that reports AVX512-BF16 ran the demo's training steps ~9x slower in bf16
    monkeypatch.setattr(mp, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(mp, "cpu_bf16_is_faster", lambda: False)
    assert mp.resolve_precision("auto", "cpu") == "fp32"
    assert mp.resolve_precision("bf16", "cpu") == "bf16"  # asked for by name, it is still allowed


@pytest.fixture
def fresh_probe():
    """The probe's cached answer forgotten before and after, so that no fake clock's answer outlives its test."""
    mp.cpu_bf16_is_faster.cache_clear()
    yield
    mp.cpu_bf16_is_faster.cache_clear()


def test_the_bf16_probe_times_real_products_and_needs_native_bf16(monkeypatch, fresh_probe):
    monkeypatch.setattr(mp, "cpu_has_native_bf16", lambda: False)
    assert mp.cpu_bf16_is_faster() is False  # no native bf16: never measured, never faster
    mp.cpu_bf16_is_faster.cache_clear()
    monkeypatch.setattr(mp, "cpu_has_native_bf16", lambda: True)
    clock = iter(range(0, 1000, 1))
    monkeypatch.setattr(mp.time, "perf_counter", lambda: next(clock))  # every product takes 1 tick: not 1.1x faster
    assert mp.cpu_bf16_is_faster() is False
    mp.cpu_bf16_is_faster.cache_clear()
    ticks = iter([0, 10] * 5 + [0, 1] * 5)  # fp32 products 10 ticks, bf16 products 1 tick
    monkeypatch.setattr(mp.time, "perf_counter", lambda: next(ticks))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert mp.cpu_bf16_is_faster() is True
    assert torch.equal(torch.rand(3), expected)  # measuring did not move a seeded run's random numbers
