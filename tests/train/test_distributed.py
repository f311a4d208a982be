"""Many processes and killed processes: DDP over 2 CPU processes (gloo) trains exactly like one
process with the same global batch, and a run killed with SIGKILL resumes to the same weights.

Both launch the real CLI in subprocesses (``torchrun -m medmllm train`` and ``accelerate launch``),
as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

REPORTS = ["The lungs are clear.", "Patchy consolidation in the right lower lobe.", "The heart size is normal.",
           "Small left pleural effusion.", "No acute cardiopulmonary process.", "Mild cardiomegaly."]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Six samples: 3D, 2D and text-only, images relative to the JSONL."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    np.save(root / "images" / "ct.npy", np.random.RandomState(0).rand(8, 32, 32).astype(np.float32))
    Image.fromarray((np.random.RandomState(1).rand(32, 32) * 255).astype(np.uint8)).save(root / "images" / "xray.png")
    rows = []
    for i, report in enumerate(REPORTS):
        image = ["images/ct.npy", "images/xray.png", None][i % 3]
        content = [{"type": "text", "text": "Please caption this scan with findings."}]
        images = []
        if image:
            content.insert(0, {"type": "image", "image": 0})
            images = [{"path": image}]
        rows.append({"id": str(i), "task": "report", "images": images,
                     "turns": [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": report}]}]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_recipe(path: Path, data: Path, out: Path, *, batch_size: int, max_steps: int, save_steps: int | None = None,
                 lora: bool = False) -> Path:
    stage = {"name": "s", "train": {"vision": True, "perceiver": True, "llm": not lora, "embeddings": False},
             "max_steps": max_steps, "batch_size": batch_size, "learning_rate": 1e-3, "warmup_ratio": 0.1, "lr_scheduler": "cosine"}
    if lora:
        stage["lora"] = {"r": 4, "alpha": 8, "dropout": 0.1}  # dropout: the resumed run must restore the RNG too
    recipe = {"model": {"preset": "tiny"}, "data": {"train": str(data / "train.jsonl")},
              "run": {"output_dir": str(out), "precision": "fp32", "save_steps": save_steps, "save_total_limit": 2, "logging_steps": 1, "report_to": []},
              "stages": [stage]}
    path.write_text(json.dumps(recipe))  # YAML is a superset of JSON
    return path


def env() -> dict:
    # One thread per process: two processes on two shared cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(*launcher: str, recipe: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [*launcher, "-m", "medmllm", "train", str(recipe), *extra]
    result = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "s" / "model" / "model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


def test_ddp_two_cpu_processes_equal_one_process_with_the_same_global_batch(data, tmp_path):
    one = write_recipe(tmp_path / "one.yaml", data, tmp_path / "one", batch_size=2, max_steps=3)
    two = write_recipe(tmp_path / "two.yaml", data, tmp_path / "two", batch_size=1, max_steps=3)
    train(sys.executable, recipe=one)
    result = train(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), recipe=two)
    assert result.stdout.count("stage s:") == 1  # the first process reports, the second is quiet

    single, ddp = weights(tmp_path / "one"), weights(tmp_path / "two")
    start = load_start_weights(one)
    moved = max((single[k] - start[k]).abs().max().item() for k in single)
    assert moved > 1e-3  # training really changed the weights, so equality below means something
    assert_same_weights(single, ddp, atol=1e-4)  # float sums in another order, nothing more
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "s" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
              for run in ("one", "two")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_accelerate_launch_runs_the_same_ddp(data, tmp_path):
    one = write_recipe(tmp_path / "one.yaml", data, tmp_path / "one", batch_size=2, max_steps=2)
    two = write_recipe(tmp_path / "two.yaml", data, tmp_path / "two", batch_size=1, max_steps=2)
    train(sys.executable, recipe=one)
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "recipes" / "accelerate" / "cpu-ddp.yaml"),
                  "--main_process_port", str(free_port())]
    train(*accelerate, recipe=two)
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"), atol=1e-4)


def load_start_weights(recipe: Path) -> dict[str, torch.Tensor]:
    from transformers import set_seed

    from medmllm.train import load_recipe
    from medmllm.train.trainer import load_start

    loaded = load_recipe(recipe)
    set_seed(loaded.run.seed)
    model, _ = load_start(loaded, 0)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_sigkill_mid_run_then_resume_ends_with_the_weights_of_an_uninterrupted_run(data, tmp_path):
    """Kill the training process as soon as its second checkpoint appears (possibly while a later one is
    being written), resume, and compare with a run that was never interrupted: same data order
    (Trainer skips the batches already seen), optimiser, scheduler and RNG state (LoRA dropout),
    and the perceiver/vision weights a LoRA stage trains beside its adapters (peft saves only the
    adapters: without trained_outside_adapters.safetensors they came back untrained)."""
    steps = 12
    whole = write_recipe(tmp_path / "whole.yaml", data, tmp_path / "whole", batch_size=2, max_steps=steps, save_steps=2, lora=True)
    killed = write_recipe(tmp_path / "killed.yaml", data, tmp_path / "killed", batch_size=2, max_steps=steps, save_steps=2, lora=True)
    train(sys.executable, recipe=whole)

    checkpoints = tmp_path / "killed" / "s" / "checkpoints"
    process = subprocess.Popen([sys.executable, "-m", "medmllm", "train", str(killed)], env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (checkpoints / "checkpoint-4").exists():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint-4 in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "s" / "DONE").exists()  # killed before the end
    # Only whole checkpoints: the staging folder may hold a torn one, never checkpoints/.
    for folder in checkpoints.glob("checkpoint-*"):
        assert (folder / "trainer_state.json").exists() and (folder / "optimizer.pt").exists()
    assert len(list(checkpoints.glob("checkpoint-*"))) <= 2  # save_total_limit

    train(sys.executable, recipe=killed, extra=("--resume",))
    state = json.loads((checkpoints / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == steps
    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "killed"), atol=1e-6)
    logged = [json.loads(line)["step"] for line in (tmp_path / "killed" / "s" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert logged[-1] == steps and min(logged) == 1  # the log continues after the resume
