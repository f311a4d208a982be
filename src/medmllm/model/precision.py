"""Which mixed precision a run uses: one rule for training (`medmllm.train.trainer.precision_flags`)
and generation (`medmllm.eval.adapters.MedMLLMAdapter`).

``auto``: bf16 autocast on a GPU that has it (else fp16), bf16 autocast on a CPU with native bf16
matrix units (AVX512-BF16 or AMX: recent Xeon and EPYC), fp32 on other CPUs. Weights stay fp32;
autocast runs the matrix products in bf16. Measured on a 2-core EPYC with AVX512-BF16
(benchmarks/cpu_step.py, RESULTS.md "CPU step benchmark"): a LoRA step of the demo preset 2.9x and
greedy report generation 1.3x faster than fp32.
"""

from __future__ import annotations

import contextlib

import torch

from medmllm.errors import MedMLLMError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX tiles); without
    them oneDNN emulates bf16 and autocast is slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` (one of `PRECISIONS`) on ``device``; a
    choice the device cannot run is an error."""
    if precision not in PRECISIONS:
        raise MedMLLMError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if not cuda and precision == "fp16":
        raise MedMLLMError("precision fp16 needs a GPU; use auto, bf16 or fp32 on the CPU")
    if not cuda and precision == "bf16" and not cpu_has_native_bf16():
        raise MedMLLMError("precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), where it is slower than fp32; use auto or fp32")
    return precision


def autocast(precision: str, device: str | torch.device):
    """A context that runs the model in ``resolve_precision(precision, device)`` (nothing for fp32)."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if resolved == "bf16" else torch.float16)


__all__ = ["PRECISIONS", "autocast", "cpu_has_native_bf16", "resolve_precision"]
