"""Benchmark: read + prepare the head CT with medmllm vs the equivalent MONAI transform chain.

Run by hand, not by the test suite (see benchmarks/README.md):

    PYTHONPATH=src python benchmarks/scans.py [--runs 20] [--warmup 3] [--write benchmarks/RESULTS.md]

Peak memory: each (recipe, pipeline) in its own subprocess, the ru_maxrss rise over its first
read + prepare after the imports. Times: one subprocess per recipe that alternates the runs of the
two pipelines, so both see the same background load; the median and the best of ``--runs`` runs
after ``--warmup`` runs. "total" = read the file + prepare; "prepare" = prepare an already-read
volume.

The MONAI chain (MONAI's axis order is (C, x, y, z)):
    LoadImage(image_only=True, ensure_channel_first=True) -> Orientation(axcodes="LPS")
    -> ScaleIntensityRange(lo, hi, 0, 1, clip=True) for a window / ScaleIntensity(0, 1) for min-max
    -> Resize(spatial_size=(W', H', D'), mode="trilinear")
with (D', H', W') the shape medmllm's recipe produces, so both do the same single interpolation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from results import replace_section  # benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parents[1]
HEAD_CT = REPO.parent / "shared/data/scans/head_ct.nii.gz"
RECIPE_NAMES = ("radfm-3d", "p2med-ct")


# --- the two pipelines: each returns (read, prepare) callables ---------------------------------


def medmllm_pipeline(path: Path, recipe_name: str):
    from medmllm.scans import read
    from medmllm.scans.prepare import prepare

    def read_file():
        return read(path)

    def prepare_scan(scan):
        return prepare(scan, recipe_name).voxels  # (D, H, W)

    return read_file, prepare_scan


def monai_pipeline(path: Path, recipe_name: str):
    from monai.transforms import (
        Compose,
        LoadImage,
        Orientation,
        Resize,
        ScaleIntensity,
        ScaleIntensityRange,
    )

    from medmllm.scans import read
    from medmllm.scans.prepare import get_recipe, target_shape

    recipe = get_recipe(recipe_name)
    header = read(path)  # only for the target shape, which depends on the spacing
    depth, height, width = target_shape(header.shape, header.spacing, recipe)
    if recipe.intensity == "window":
        lo, hi = recipe.window_bounds
        intensity = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    elif recipe.intensity == "minmax":
        intensity = ScaleIntensity(minv=0.0, maxv=1.0)
    else:
        sys.exit(f"{recipe_name}: no MONAI equivalent wired up for intensity {recipe.intensity!r}")
    load = LoadImage(image_only=True, ensure_channel_first=True)
    chain = Compose(
        [Orientation(axcodes="LPS"), intensity, Resize(spatial_size=(width, height, depth), mode="trilinear")]
    )

    def read_file():
        return load(str(path))

    def prepare_image(image):
        return chain(image)[0].permute(2, 1, 0).numpy()  # (x, y, z) -> (z, y, x) = (D, H, W)

    return read_file, prepare_image


# --- workers: each in its own process ------------------------------------------------------------


PIPELINE_FACTORIES = {"medmllm": medmllm_pipeline, "monai": monai_pipeline}


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_worker(pipeline: str, recipe_name: str, path: Path, out: Path) -> dict:
    """Peak memory of one first read + prepare, and its output saved to ``out``."""
    import torch  # noqa: F401 -- imported before the baseline, like every library either side needs

    read_file, prepare_it = PIPELINE_FACTORIES[pipeline](path, recipe_name)
    baseline = maxrss_mib()
    result = prepare_it(read_file())
    peak = maxrss_mib() - baseline
    np.save(out, np.ascontiguousarray(result, dtype=np.float32))
    return {"peak_mib": peak, "shape": list(result.shape)}


def timing_worker(recipe_name: str, path: Path, runs: int, warmup: int) -> dict:
    """Median and best times of both pipelines, their runs interleaved so both see the same load."""
    pipelines = {name: factory(path, recipe_name) for name, factory in PIPELINE_FACTORIES.items()}
    loaded = {name: read_file() for name, (read_file, _) in pipelines.items()}
    jobs = {}
    for name, (read_file, prepare_it) in pipelines.items():
        jobs[name, "total"] = lambda r=read_file, p=prepare_it: p(r())
        jobs[name, "prepare"] = lambda p=prepare_it, x=loaded[name]: p(x)
    times = {key: [] for key in jobs}
    for i in range(warmup + runs):
        for key, job in jobs.items():
            start = time.perf_counter()
            job()
            if i >= warmup:
                times[key].append((time.perf_counter() - start) * 1000)
    result = {name: {} for name in pipelines}
    for (name, what), values in times.items():
        result[name][f"{what}_ms"] = statistics.median(values)
        result[name][f"{what}_best_ms"] = min(values)
    return result


# --- driver ------------------------------------------------------------------------------------


def run_worker(args, *worker_args: str) -> dict:
    cmd = [sys.executable, __file__, "--path", str(args.path), "--runs", str(args.runs),
           "--warmup", str(args.warmup), "--worker", *worker_args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"worker {' '.join(worker_args)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment() -> dict:
    import monai
    import nibabel
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    models = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")]
    with open("/proc/meminfo") as f:
        ram_gib = int(f.readline().split()[1]) / 2**20  # MemTotal, KiB
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": models[0] if models else platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(ram_gib, 1),
        "python": platform.python_version(),
        "versions": {"torch": torch.__version__, "monai": monai.__version__, "numpy": np.__version__,
                     "nibabel": nibabel.__version__},
    }


def report(env: dict, rows: list[dict], args) -> str:
    command = f"PYTHONPATH=src python benchmarks/scans.py --runs {args.runs} --warmup {args.warmup}"
    machine = f"{env['cpu']}, {env['cores']} cores (torch threads {env['torch_threads']}), {env['ram_gib']} GiB RAM"
    versions = ", ".join(f"{name} {version}" for name, version in [("Python", env["python"]), *env["versions"].items()])
    lines = [
        "# Scan preparation benchmark",
        "",
        f"Generated by `{command}` (see benchmarks/README.md).",
        "",
        f"- Date: {env['date']}",
        f"- Machine: {machine}, no GPU",
        f"- Versions: {versions}",
        f"- Input: `{args.path.name}`, 256 x 256 x 108 int16 HU, spacing 0.957 x 0.957 x 1.5 mm, gzip NIfTI",
        f"- Times: median (and best) of {args.runs} runs after {args.warmup} warm-up runs; the runs of the two",
        "  pipelines alternate in one process, so both see the same background load.",
        "  Total = read the file + prepare; prepare only = the transforms on an already-read volume.",
        "- Peak memory: rise of ru_maxrss over the first read + prepare, after the imports, one process each.",
        "- Max |diff|: largest absolute difference of the two outputs, MONAI's permuted to (D, H, W).",
        "",
    ]
    measures = [
        ("total (read + prepare), median ms", "total_ms", ".1f"),
        ("total, best ms", "total_best_ms", ".1f"),
        ("prepare only, median ms", "prepare_ms", ".1f"),
        ("prepare only, best ms", "prepare_best_ms", ".1f"),
        ("peak memory, MiB", "peak_mib", ".0f"),
    ]
    for row in rows:
        ours, theirs = row["medmllm"], row["monai"]
        lines += [f"## `{row['recipe']}` -> (D, H, W) = {tuple(ours['shape'])}", "",
                  "| | medmllm | MONAI | ratio medmllm / MONAI |", "|---|---:|---:|---:|"]
        for label, key, fmt in measures:
            lines.append(f"| {label} | {ours[key]:{fmt}} | {theirs[key]:{fmt}} | {ours[key] / theirs[key]:.2f} |")
        lines += [f"| max \\|diff\\| of outputs | {row['max_abs_diff']:.2e} | | |", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=HEAD_CT)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPE_NAMES))
    parser.add_argument("--write", type=Path, help="also write the Markdown report here")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)  # memory PIPELINE RECIPE OUT | timing RECIPE
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "memory":
            print(json.dumps(memory_worker(rest[0], rest[1], args.path, Path(rest[2]))))
        else:
            print(json.dumps(timing_worker(rest[0], args.path, args.runs, args.warmup)))
        return
    if not args.path.exists():
        sys.exit(f"{args.path} not found; pass --path to a CT NIfTI")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe_name in args.recipes:
            outputs = {name: Path(tmp) / f"{name}.npy" for name in PIPELINE_FACTORIES}
            row = {"recipe": recipe_name, **run_worker(args, "timing", recipe_name)}
            for name, out in outputs.items():
                row[name].update(run_worker(args, "memory", name, recipe_name, str(out)))
            ours, theirs = (np.load(out) for out in outputs.values())
            if ours.shape != theirs.shape:
                sys.exit(f"{recipe_name}: shapes differ, medmllm {ours.shape} vs MONAI {theirs.shape}")
            row["max_abs_diff"] = float(np.abs(ours - theirs).max())
            rows.append(row)
            print(f"{recipe_name}: {json.dumps(row)}", file=sys.stderr)
    text = report(environment(), rows, args)
    print(text)
    if args.write:
        replace_section(args.write, "# Scan preparation benchmark", text)


if __name__ == "__main__":
    main()
