"""Keep freed memory in the process for training and evaluation on a CPU (glibc's malloc).

PyTorch's CPU tensors come from ``malloc``. glibc serves every block over its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and unmaps it on ``free``, and trims the heap's free top
back to the system. A training step allocates and frees the same large activations every time
(a 135M LLM at batch 8 x 646 tokens: 32 MB MLP activations, a 470 MB loss softmax), so each step
pays again for the kernel to find and zero every 4 KB page: 984,000 page faults in one step of the
demo's longest batch on a 2-core Xeon. Served from the heap and never trimmed, the pages stay
mapped and are reused: that step 1.35x faster, peak memory +3% (benchmarks/allocator.py), the
whole `medmllm demo` 14.3 instead of 16.8 minutes (docs/training.md, "Speed"). Results do not
change: only where the bytes live.

``MEDMLLM_HOLD_MEMORY=0`` leaves glibc's defaults (a process that must give memory back between
steps, e.g. beside other jobs). Other C libraries (macOS, musl) are left alone; so is a GPU's
memory, which PyTorch's caching allocator already keeps.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

logger = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
ENV = "MEDMLLM_HOLD_MEMORY"

_held = False


def hold_freed_memory() -> bool:
    """Serve every allocation from the heap (no mmap) and never trim it; once per process.

    Returns whether glibc's malloc now holds freed memory (False on other C libraries or with
    ``MEDMLLM_HOLD_MEMORY=0``)."""
    global _held
    if _held:
        return True
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success. Trim threshold -1 disables trimming (mallopt(3)).
    _held = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    if _held:
        logger.debug("glibc malloc: mmap off, trimming off (freed memory is reused, not returned)")
    return _held
