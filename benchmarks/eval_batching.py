"""Benchmark: how the evaluation runner batches generation, on a finished `medmllm demo` folder.

Run by hand, not by the test suite:

    PYTHONPATH=src python benchmarks/eval_batching.py demo-out --write benchmarks/RESULTS.md

For each part of the demo's benchmark (diagnosis, reports, follow-up), the anchor is the runner as it
was: batches of ``--anchor-batch-size`` in the benchmark's order. Each other row orders the prompts
longest first (`medmllm.eval.runner.in_prompt_length_order`: a batch then holds prompts of about one
length, so left padding wastes little of the prefill) at one batch size. One process, one model (the
trained one), the rows one after another. Prints (and with ``--write`` saves as RESULTS.md's
``# Evaluation batching benchmark``) one table per part: seconds, the ratio to the anchor, and how
many greedy outputs differ from the anchor's. `medmllm.demo.pipeline.EVAL_BATCH_SIZES` takes the
fastest batch of each part.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, replace_section  # noqa: E402  (benchmarks/results.py, beside this script)

HEADING = "# Evaluation batching benchmark"


def time_part(runner, adapter, bench: Path, batch_sizes: list[int], anchor_batch_size: int) -> list[str]:
    """Markdown rows: the anchor, then longest-first at each batch size."""
    sorted_order = runner.in_prompt_length_order
    rows, anchor = [], None
    for label, batch_size, ordered in [(f"benchmark order, batch {anchor_batch_size} (anchor)", anchor_batch_size, False),
                                       *((f"longest prompt first, batch {b}", b, True) for b in batch_sizes)]:
        adapter.batch_size = batch_size
        runner.in_prompt_length_order = sorted_order if ordered else (lambda samples, adapter: samples)
        try:
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                runner.run_eval(adapter, str(bench), out, resamples=10)
                seconds = time.perf_counter() - started
                rows_out = map(json.loads, (Path(out) / "predictions.jsonl").read_text().splitlines())
                predictions = {r["id"]: r.get("prediction") for r in rows_out}
        finally:
            runner.in_prompt_length_order = sorted_order
        anchor = anchor or (seconds, predictions)
        differ = sum(predictions[i] != anchor[1][i] for i in predictions)
        rows.append(f"| {label} | {seconds:.1f} | {seconds / anchor[0]:.2f} | {differ} of {len(predictions)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo", type=Path, help="a finished `medmllm demo` output folder")
    parser.add_argument("--parts", nargs="+", choices=("diagnosis", "reports", "follow-up"), default=["diagnosis", "reports", "follow-up"])
    parser.add_argument("--model", default="run/disease-balanced/model", help="model folder, relative to DEMO")
    parser.add_argument("--anchor-batch-size", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--write", type=Path, help="save the report as this file's evaluation batching section")
    args = parser.parse_args()

    import torch

    import medmllm.eval.runner as runner
    from medmllm.demo.benchmark import PARTS
    from medmllm.eval.adapters import build_adapter

    started = datetime.now(timezone.utc)
    adapter = build_adapter("medmllm", args.demo / args.model)
    lines = [HEADING, "", f"`benchmarks/eval_batching.py`, {started:%Y-%m-%d %H:%M} UTC. Machine: {machine()}; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, precision {adapter.precision}. Model: `{args.model}` of a `medmllm demo` folder; greedy.", ""]
    for part in args.parts:
        bench = args.demo / "data" / "benchmark" / f"{part}.jsonl"
        adapter.max_new_tokens = PARTS[part][1]  # as the demo asks
        n = sum(1 for line in bench.read_text().splitlines() if line.strip())
        lines += [f"## {part}: {n} prompts, max_new_tokens {adapter.max_new_tokens}", "",
                  "| batches | seconds | ratio to the anchor | outputs that differ from the anchor's |", "|---|---:|---:|---:|",
                  *time_part(runner, adapter, bench, args.batch_sizes, args.anchor_batch_size), ""]
        print("\n".join(lines[-(len(args.batch_sizes) + 6):]), flush=True)
    if args.write:
        replace_section(args.write, HEADING, "\n".join(lines))
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
