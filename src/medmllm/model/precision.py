"""Which mixed precision a run uses: one rule for training (`medmllm.train.trainer.precision_flags`)
and generation (`medmllm.eval.adapters.MedMLLMAdapter`).

``auto``: bf16 autocast on a GPU that has it (else fp16); on a CPU, bf16 autocast where the CPU
has native bf16 (AVX512-BF16 or AMX) *and* a bf16 matrix product measures faster than fp32 there
(`cpu_bf16_is_faster`, ~0.3 s once per process), fp32 elsewhere. Weights stay fp32; autocast runs
the matrix products in bf16. The flag alone is not enough (benchmarks/cpu_step.py, RESULTS.md "CPU
step benchmark"): on a 2-core AMD EPYC with AVX512-BF16 a LoRA step of the demo preset ran 2.4x and
greedy generation 1.5x faster in bf16, on a 2-core Intel Xeon that reports AVX512-BF16 too, 0.59x
and 0.66x (slower), and a full fine-tuning step of the demo's stage 2 took ~46 s against ~5 s in fp32.
"""

from __future__ import annotations

import contextlib
import functools
import time

import torch

from medmllm.errors import MedMLLMError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX tiles); without
    them oneDNN emulates bf16 and autocast is slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


# One LLM projection of a demo-sized batch: (tokens, hidden) @ (hidden, intermediate) of SmolLM2-135M.
PROBE_SHAPE = (1024, 576, 1536)


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_faster(margin: float = 1.1) -> bool:
    """Whether this CPU has native bf16 and a matrix product in bf16 autocast runs at least
    ``margin`` times faster than in fp32 (best of 5 after a warm-up, each; ~0.3 s, once per process)."""
    if not cpu_has_native_bf16():
        return False
    rows, inner, cols = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)  # its own: measuring must not move a seeded run's random numbers
    x, w = torch.randn(rows, inner, generator=generator), torch.randn(inner, cols, generator=generator)

    def best_seconds(context) -> float:
        with context, torch.no_grad():
            x @ w
            times = []
            for _ in range(5):
                started = time.perf_counter()
                x @ w
                times.append(time.perf_counter() - started)
        return min(times)

    fp32 = best_seconds(contextlib.nullcontext())
    bf16 = best_seconds(torch.autocast("cpu", dtype=torch.bfloat16))
    return bf16 * margin <= fp32


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` (one of `PRECISIONS`) on ``device``; a
    choice the device cannot run is an error."""
    if precision not in PRECISIONS:
        raise MedMLLMError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_bf16_is_faster() else "fp32"
    if not cuda and precision == "fp16":
        raise MedMLLMError("precision fp16 needs a GPU; use auto, bf16 or fp32 on the CPU")
    if not cuda and precision == "bf16" and not cpu_has_native_bf16():
        raise MedMLLMError("precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), where it is slower than fp32; use auto or fp32")
    return precision


def training_precision(precision: str) -> str:
    """`resolve_precision` on the device a run trains on (the GPU when there is one)."""
    return resolve_precision(precision, "cuda" if torch.cuda.is_available() else "cpu")


def autocast(precision: str, device: str | torch.device):
    """A context that runs the model in ``resolve_precision(precision, device)`` (nothing for fp32)."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if resolved == "bf16" else torch.float16)


__all__ = ["PRECISIONS", "autocast", "cpu_bf16_is_faster", "cpu_has_native_bf16", "resolve_precision", "training_precision"]
