"""Benchmark: `medmllm serve` throughput and latency, dynamic batching vs one request at a time.

Run by hand, not by the test suite:

    PYTHONPATH=src python benchmarks/serve.py [--clients 1 8 32] [--write benchmarks/RESULTS.md]

The server runs the ``demo`` preset (SmolLM2-135M-Instruct, from ``medmllm models fetch
smollm2-135m-instruct``; its vision part is random) on the CPU in a subprocess, on a loopback
port, once with the engine's dynamic batching (``--max-batch`` rows per generate call) and once
with ``max_batch_size=1`` (one request at a time, the baseline). Clients are asyncio tasks in
this process (httpx, closed loop: each sends its next request when the previous one is answered),
``--clients`` of them at a time, ``--rounds`` requests each (at least ``--min-requests`` in all).
Every request is a greedy chat completion (temperature 0, ``--max-tokens``) of a radiology
question, half of them with a 64 x 64 PNG as a data URI; both servers get the same requests and
so generate the same tokens. Reported: requests per second, generated tokens per second, p50 and
p95 latency, the largest batch the engine formed, and throughput batched / one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from results import machine, replace_section  # benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parents[1]
SECTION = "# Serving benchmark"
QUESTIONS = [
    "Describe the findings of this chest X-ray.",
    "Is there a pleural effusion?",
    "What is the most likely diagnosis for a patchy consolidation in the right lower lobe?",
    "List three causes of cardiomegaly.",
    "Write the impression for a normal head CT.",
    "What does a ground-glass opacity mean?",
    "Summarise: no pneumothorax, heart size normal, lungs clear.",
    "Which window is used to read lung parenchyma on CT?",
]


def serve(args) -> None:
    """The server process: demo preset in memory, uvicorn on 127.0.0.1:PORT, no API key (loopback)."""
    import torch
    import uvicorn

    from medmllm.model.factory import build
    from medmllm.serve.app import create_app
    from medmllm.serve.engine import EngineConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, processor = build("demo")
    model.eval()
    config = EngineConfig(max_batch_size=args.serve_batch, batch_wait_ms=args.batch_wait_ms, max_queue=1024, request_timeout_s=3600)
    app = create_app(model=model, processor=processor, model_id="demo", api_keys=None, data_dir=args.data_dir, engine_config=config)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def png_data_uri(seed: int) -> str:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def request_body(k: int, max_tokens: int) -> dict:
    question = {"type": "text", "text": QUESTIONS[k % len(QUESTIONS)]}
    content = [{"type": "image_url", "image_url": {"url": png_data_uri(k)}}, question] if k % 2 else [question]
    return {"model": "demo", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0}


async def load(base_url: str, clients: int, total: int, max_tokens: int) -> dict:
    """``clients`` closed-loop clients sending ``total`` requests; latencies and tokens."""
    import httpx

    latencies, tokens, counter = [], 0, iter(range(total))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for k in counter:
            start = time.perf_counter()
            response = await http.post("/v1/chat/completions", json=request_body(k, max_tokens))
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)
            tokens += response.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=base_url, timeout=3600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
        stats = (await http.get("/v1/engine/stats")).json()
    latencies.sort()
    return {"clients": clients, "requests": total, "wall_s": wall, "rps": total / wall, "tokens_per_s": tokens / wall,
            "tokens": tokens, "p50_s": statistics.median(latencies), "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
            "max_batch_seen": stats["max_batch_size_seen"], "batch_sizes": stats["batch_sizes"]}


def run_server(args, batch: int, port: int) -> subprocess.Popen:
    command = [sys.executable, __file__, "--serve", "--serve-batch", str(batch), "--port", str(port), "--threads", str(args.threads),
               "--batch-wait-ms", str(args.batch_wait_ms), "--data-dir", str(args.data_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(command, env=env)


async def wait_healthy(base_url: str, process: subprocess.Popen, timeout_s: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base_url) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit("the server process exited")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit("the server did not start")


def measure(args, batch: int, port: int) -> list[dict]:
    process = run_server(args, batch, port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_healthy(base_url, process))
        asyncio.run(load(base_url, 2, 4, args.max_tokens))  # warm-up
        rows = []
        for clients in args.clients:
            row = asyncio.run(load(base_url, clients, max(args.min_requests, clients * args.rounds), args.max_tokens))
            row["max_batch"] = batch
            print(json.dumps(row), flush=True)
            rows.append(row)
        return rows
    finally:
        process.terminate()
        process.wait(60)


def report(batched: list[dict], single: list[dict], args, minutes: float, load: tuple[float, float]) -> str:
    import torch
    import transformers

    lines = [
        SECTION, "",
        f"Generated by `PYTHONPATH=src python benchmarks/serve.py`; the run took {minutes:.1f} min.", "",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()} (server torch threads {args.threads})",
        f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}",
        f"- Load average (1 min) before / after the run: {load[0]:.1f} / {load[1]:.1f} (the machine is shared: other jobs slow both "
        "engines, the one-at-a-time runs (longer) more often).",
        "- Model: preset `demo` (SmolLM2-135M-Instruct weights, random vision part), fp32, CPU, served by `create_app` + uvicorn in a "
        "subprocess on a loopback port; clients: asyncio + httpx in another process, closed loop.",
        f"- Requests: greedy chat completions, max_tokens {args.max_tokens}, half with a 64 x 64 PNG data URI; both servers answer "
        "the same requests with the same tokens (greedy).",
        f"- Batched: `EngineConfig(max_batch_size={args.max_batch}, batch_wait_ms={args.batch_wait_ms:g})`; one at a time: "
        "`max_batch_size=1`. Largest batch: the engine's `max_batch_size_seen` since the server started (the warm-up "
        "requests, 2 clients, included).", "",
        "| clients | engine | requests | req/s | tokens/s | p50 latency (s) | p95 latency (s) | largest batch | req/s batched / one at a time |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, s in zip(batched, single):
        for row, name in ((s, "one at a time"), (b, "batched")):
            ratio = f"{b['rps'] / s['rps']:.2f}x" if row is b else ""
            lines.append(f"| {row['clients']} | {name} | {row['requests']} | {row['rps']:.2f} | {row['tokens_per_s']:.1f} | "
                         f"{row['p50_s']:.2f} | {row['p95_s']:.2f} | {row['max_batch_seen']} | {ratio} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3, help="requests per client (at least --min-requests in all)")
    parser.add_argument("--min-requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32, help="the batched engine's max_batch_size")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads of the server")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/medmllm-serve-bench"))
    parser.add_argument("--write", type=Path, help=f"also write the report as the `{SECTION}` section of this file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    single = measure(args, 1, args.port)
    batched = measure(args, args.max_batch, args.port + 1)
    text = report(batched, single, args, (time.perf_counter() - start) / 60, (load_before, os.getloadavg()[0]))
    print(text)
    if args.write:
        replace_section(args.write, SECTION, text)


if __name__ == "__main__":
    main()
