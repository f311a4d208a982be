"""Benchmark: what holding freed memory (`medmllm.allocator`) buys a CPU training step.

Run by hand, not by the test suite (see benchmarks/README.md):

    PYTHONPATH=src python benchmarks/allocator.py [--steps 3] [--write benchmarks/RESULTS.md]

A training step as the demo's stages 2-3 take it: the `demo` preset (SmolLM2-135M-Instruct, needs
`medmllm models fetch smollm2-135m-instruct`; random vision weights), the LLM's own weights
trained, forward + backward + fused Adam, fp32, batch 8 of MiniRad report conversations over a
visit (2-3 exams, earlier reports in the conversation): the 8 longest and 8 of median length.
Each allocator runs in its own process (mallopt cannot be undone), one after the other:

    glibc defaults   the anchor: blocks over the mmap threshold (at most 32 MB) mapped afresh and
                     unmapped on free, the heap's free top trimmed
    held (ours)      `hold_freed_memory()`: no mmap, no trimming, freed pages reused

Reported per batch: the median step time of ``--steps`` after one warm-up step, the minor page
faults per step, and the process's peak memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from results import machine, publish  # noqa: E402  (benchmarks/results.py, beside this script)

SECTION = "# Allocator benchmark"
MODES = {"system": "glibc defaults (anchor)", "held": "held (ours)"}


def visit_batches(root: Path, processor) -> dict[str, list]:
    """The 8 longest and 8 median-length report conversations of a small MiniRad, as messages."""
    from medmllm.data.io import read_samples
    from medmllm.synth.minirad import MiniRadConfig, generate

    generate(root, MiniRadConfig(n=400, seed=0, xray_size=(64, 64), ct_shape=(16, 64, 64), modalities={"X-ray": 0.6, "CT": 0.4}))
    visits = [s for s in read_samples(root / "samples.jsonl") if s.task.startswith("p2med/report") and len(s.images) > 1]
    messages = [s.to_messages(root) for s in visits]
    order = sorted(range(len(messages)), key=lambda i: processor.count_tokens(messages[i]))
    middle = len(order) // 2
    return {"longest": [messages[i] for i in order[-8:]], "median": [messages[i] for i in order[middle - 4 : middle + 4]]}


def worker(mode: str, steps: int) -> dict:
    import torch

    from medmllm.allocator import hold_freed_memory
    from medmllm.model.adapters import set_trainable
    from medmllm.model.factory import build

    held = hold_freed_memory() if mode == "held" else False
    torch.manual_seed(0)
    model, processor = build("demo")
    set_trainable(model, vision=False, perceiver=False, llm=True)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-7, fused=True)
    out = {"held": held, "batches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, messages in visit_batches(Path(tmp), processor).items():
            batch = dict(processor(messages))

            def step(batch=batch):
                model(**batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step()  # warm-up
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times = []
            for _ in range(steps):
                started = time.perf_counter()
                step()
                times.append(time.perf_counter() - started)
            out["batches"][name] = {
                "tokens": int(batch["attention_mask"].numel()),
                "seconds": statistics.median(times),
                "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps,
            }
    out["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps)))
        return
    import torch

    started = datetime.now(timezone.utc)
    runs = {}
    for mode in MODES:
        done = subprocess.run([sys.executable, __file__, "--worker", mode, "--steps", str(args.steps)],
                              capture_output=True, text=True, check=True)
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    anchor, ours = runs["system"], runs["held"]
    if not ours["held"]:
        sys.exit("hold_freed_memory() did nothing here (not glibc, or MEDMLLM_HOLD_MEMORY=0): nothing to compare")
    lines = [SECTION, "",
             f"`benchmarks/allocator.py --steps {args.steps}`, {started:%Y-%m-%d %H:%M} UTC. Machine: {machine()}; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Demo preset, the LLM's own weights trained (forward + backward + fused Adam, fp32), "
             "batch 8 of MiniRad visit report conversations.", "",
             "| batch (padded tokens) | allocator | median step s | page faults per step | vs anchor |", "|---|---|---:|---:|---:|"]
    for name, base in anchor["batches"].items():
        for mode, run in runs.items():
            row = run["batches"][name]
            ratio = f"{base['seconds'] / row['seconds']:.2f}x faster" if mode == "held" else ""
            lines.append(f"| {name} ({row['tokens']}) | {MODES[mode]} | {row['seconds']:.2f} | {row['faults']:,.0f} | {ratio} |")
    lines += ["", f"Peak memory: {anchor['peak_gib']:.2f} GiB with glibc's defaults, {ours['peak_gib']:.2f} GiB held "
              f"({ours['peak_gib'] / anchor['peak_gib'] - 1:+.0%}).", ""]
    publish(lines, SECTION, args.write)


if __name__ == "__main__":
    main()
