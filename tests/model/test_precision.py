"""The one mixed-precision rule of training and generation (medmllm.model.precision)."""

from __future__ import annotations

import pytest
import torch

from medmllm.errors import MedMLLMError
from medmllm.model import precision as mp


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_is_bf16_exactly_when_the_cpu_has_native_bf16(monkeypatch, native):
    monkeypatch.setattr(mp, "cpu_has_native_bf16", lambda: native)
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

