"""RESULTS.md bookkeeping shared by the benchmarks: each script owns one ``# ...`` section."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, cores and memory, for the line under each results heading."""
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} vCPUs, {mem:.1f} GiB RAM, no GPU"


def replace_section(path: Path, heading: str, text: str) -> None:
    """Replace the section of ``path`` that starts with the line ``heading`` (up to the next ``# `` heading), or append it."""
    old = path.read_text() if path.exists() else ""  # read now: other benchmarks may have written since
    start = old.find(heading + "\n")
    if start < 0:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + text
    else:
        end = old.find("\n# ", start + len(heading))
        new = old[:start] + text + ("\n" + old[end + 1 :] if end >= 0 else "")
    path.write_text(new.rstrip("\n") + "\n")


def publish(lines: list[str], heading: str, path: Path | None) -> None:
    """Print a benchmark's report and, when ``path`` is given, replace its section there."""
    text = "\n".join(lines)
    print(text)
    if path:
        replace_section(path, heading, text)
