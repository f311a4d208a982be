"""Benchmark: one training step (forward + backward) of MedMLLM vs a LLaVA-style connector and RadFM's splice.

Run by hand, not by the test suite (see benchmarks/README.md):

    PYTHONPATH=src python benchmarks/model.py [--write benchmarks/RESULTS.md]
    PYTHONPATH=src python benchmarks/model.py --device cuda --dtype bf16 --preset p2med-8b   # on a GPU

Every model has RANDOM weights in the preset's shape (nothing is downloaded), batch size 1, all
parameters trainable. Per (images per sample, depth) configuration three connectors are timed:

    ours    vision encoder -> perceiver (num_latents tokens per image) -> Linear, written into the
            <image_patch> positions by index (`MedMLLMForCausalLM.embed`, masked_scatter)
    llava   the same vision encoder -> Linear-GELU-Linear on EVERY patch token, all of them fed to
            the LLM (one placeholder per patch token), as LLaVA's MLP projector does
    radfm   the same encoder + perceiver, but the input embeddings are built as RadFM's released
            code does (Model/RadFM/my_embedding_layer.py): one_hot(ids, V + n_images * L) @
            [embedding table; visual tokens]

Each (configuration, connector) runs in its own subprocess: the median of up to ``--runs`` steps
after ``--warmup`` steps (fewer when a step is slow: the timed steps stop after ``--budget-s``),
and the peak memory (CPU: ru_maxrss; CUDA: torch.cuda.max_memory_allocated). Configurations run
in increasing size; one whose peak memory or step time, extrapolated linearly in sequence length
from the same connector's smaller configurations, exceeds ``--max-mem-gib`` / ``--max-step-s`` is
skipped, and a worker whose warm-up step exceeds ``--max-step-s`` stops there. On a shared
machine the script waits before each worker until other jobs leave the CPU and runs a worker again
when they used more than 0.2 core meanwhile (``--wait-idle-s`` caps the waiting); the report's
``others`` column gives the cores other jobs used during each worker.

Also reported: the visual tokens P2Med's CLIP ViT-L/14-336 gives a 30-slice CT without a perceiver
(counted on a tiny CLIP with the same patching), and the embedding splice alone (RadFM's one-hot
matmul vs our masked_scatter) for a 2,048-token sequence with 4 images, at the preset's and a 7B
(Llama-2) vocabulary.

On a GPU (``--device cuda --dtype bf16``) the models are built on the device, use SDPA and
gradient checkpointing (``--no-grad-ckpt`` to turn it off), and the report adds the model FLOPs
utilisation: 6 x LLM parameters x sequence tokens + 6 x vision parameters x visual tokens.
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
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from results import replace_section  # benchmarks/results.py, beside this script
from torch import nn

from medmllm.model.configuration import MedMLLMConfig
from medmllm.model.factory import PRESETS
from medmllm.model.modeling import MedMLLMForCausalLM
from medmllm.model.vision import ViT3D

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SECTION = "# Model benchmark"
# Dense bf16/fp16 tensor-core peaks (TFLOP/s, no sparsity), first match on the device name wins.
PEAK_TFLOPS_16BIT = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0)]
SEVEN_B = ("Llama-2-7B", 32000, 4096, 32)  # name, vocabulary, hidden size, latents per image
SPLICE_SEQ, SPLICE_IMAGES = 2048, 4


# --- the two comparison connectors ---------------------------------------------------------------


class LlavaStyle(MedMLLMForCausalLM):
    """(a) LLaVA's connector on our encoder: a 2-layer MLP on every patch token, no perceiver."""

    def __init__(self, config: MedMLLMConfig, language_model=None):
        super().__init__(config, language_model=language_model)
        dim, hidden = self.vision_encoder.hidden_size, config.text_config.hidden_size
        self.perceiver = nn.Identity()
        self.projector = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def encode_images(self, pixel_values, image_mask, image_sizes=None, image_exam_index=None):
        """(n_images, patch tokens, E): every image is full size here, so one encoder batch."""
        images = pixel_values[image_mask].to(self.projector[0].weight.dtype)  # (n, C, D, H, W)
        return self.projector(self.vision_encoder(images))


def radfm_splice(input_ids: torch.Tensor, table: torch.Tensor, visual: torch.Tensor, patch_id: int) -> torch.Tensor:
    """RadFM's MyEmbedding.forward: the k-th image slot of a row reads row V + k of
    [table; that row's visual tokens], through a dense one-hot matmul.

    input_ids (B, S); table (V, E); visual (B, T, E) with T = images x latents of each row.
    """
    b, v = input_ids.shape[0], table.shape[0]
    slots = input_ids == patch_id
    ids = input_ids.masked_scatter(slots, v + torch.arange(visual.shape[1], device=input_ids.device).repeat(b))
    weight = torch.cat([table.unsqueeze(0).repeat(b, 1, 1), visual], dim=1)  # (B, V + T, E)
    one_hot = F.one_hot(ids, weight.shape[1]).to(weight.dtype)  # (B, S, V + T)
    return torch.matmul(one_hot, weight)


def index_splice(input_ids: torch.Tensor, table: torch.Tensor, visual: torch.Tensor, patch_id: int) -> torch.Tensor:
    """Ours, as `MedMLLMForCausalLM.embed` does it: embedding lookup, then masked_scatter."""
    slots = (input_ids == patch_id).unsqueeze(-1)
    return F.embedding(input_ids, table).masked_scatter(slots, visual.to(table.dtype))


class RadFMSplice(MedMLLMForCausalLM):
    """(b) our encoder + perceiver, embeddings built by RadFM's one-hot matmul instead of our scatter."""

    def embed(self, input_ids, pixel_values=None, image_mask=None, image_sizes=None, image_exam_index=None):
        visual = self.encode_images(pixel_values, image_mask, image_sizes, image_exam_index)  # (n_images, L, E)
        visual = visual.reshape(input_ids.shape[0], -1, visual.shape[-1])  # every row has the same images here
        return radfm_splice(input_ids, self.get_input_embeddings().weight, visual, self.config.image_patch_token_id)


VARIANTS = {"ours": MedMLLMForCausalLM, "llava": LlavaStyle, "radfm": RadFMSplice}
LABELS = {"ours": "ours (perceiver + index splice)", "llava": "(a) LLaVA-style MLP, all patches", "radfm": "(b) RadFM one-hot splice"}


# --- model, inputs, FLOPs ------------------------------------------------------------------------


def build_model(variant: str, args) -> MedMLLMForCausalLM:
    """A random-weight model of ``args.preset`` with three unused vocabulary ids as image tokens."""
    from transformers import AutoConfig, AutoModelForCausalLM

    preset = PRESETS[args.preset]
    text = dict(preset.text_config)
    llm_config = AutoConfig.for_model(text.pop("model_type"), **text)
    vocab = llm_config.vocab_size
    vision = dict(preset.vision_config)
    if preset.vision_encoder == "vit3d":  # the demo tower stops at 32 slices; its depth table only grows
        vision["max_depth"] = max(vision.get("max_depth", 64), max(args.depths))
    dtype = DTYPES[args.dtype]
    with torch.device(args.device):
        llm = AutoModelForCausalLM.from_config(llm_config, dtype=dtype, attn_implementation="sdpa")
        config = MedMLLMConfig(
            text_config=llm.config, vision_encoder=preset.vision_encoder, vision_config=vision, **preset.config,
            image_start_token_id=vocab - 3, image_end_token_id=vocab - 2, image_patch_token_id=vocab - 1,
        )
        model = VARIANTS[variant](config, language_model=llm)
    model.to(dtype).train()
    model.requires_grad_(True)
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        tower = getattr(model.vision_encoder, "model", None)  # an hf2d tower checkpoints itself
        if tower is not None and getattr(tower, "supports_gradient_checkpointing", False):
            if hasattr(tower, "activation_checkpointing_enable"):  # transformers >= 5.x
                tower.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def in_plane_size(args) -> int:
    if args.size:
        return args.size
    preset = PRESETS[args.preset]
    if preset.vision_encoder == "hf2d":
        return int(preset.vision_config["hf_config"]["image_size"])
    return int(preset.config["image_recipe_3d"]["size"][0])


def encoder_tokens(encoder: nn.Module, depth: int, size: int) -> int:
    """Tokens the vision encoder gives one (depth, size, size) image."""
    if isinstance(encoder, ViT3D):
        pd, ph, pw = encoder.patch_size
        return -(-depth // pd) * (size // ph) * (size // pw)
    return depth * encoder.positional.shape[0]  # HFSliceEncoder: slices x tokens per slice


def build_inputs(model: MedMLLMForCausalLM, n_images: int, depth: int, size: int, text_tokens: int, device) -> dict:
    """Half the text, then each image as <image> + k x <image_patch> + </image>, then the rest."""
    cfg = model.config
    per_image = cfg.num_latents if not isinstance(model, LlavaStyle) else encoder_tokens(model.vision_encoder, depth, size)
    g = torch.Generator().manual_seed(0)
    vocab = cfg.text_config.vocab_size
    image = torch.tensor([cfg.image_start_token_id, *[cfg.image_patch_token_id] * per_image, cfg.image_end_token_id])
    half = text_tokens // 2
    ids = torch.cat([torch.randint(0, vocab - 3, (half,), generator=g), *[image] * n_images,
                     torch.randint(0, vocab - 3, (text_tokens - half,), generator=g)])[None]
    labels = ids.masked_fill(ids >= vocab - 3, -100)
    pixels = torch.rand(1, n_images, cfg.image_channels, depth, size, size, generator=g)
    dtype = next(model.vision_encoder.parameters()).dtype
    return {"input_ids": ids.to(device), "labels": labels.to(device), "pixel_values": pixels.to(device, dtype),
            "image_mask": torch.ones(1, n_images, dtype=torch.bool, device=device)}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_flops(model: MedMLLMForCausalLM, seq: int, visual_tokens: int) -> float:
    """6 N T for the LLM (the input embedding only where it is also the output head) plus
    6 N T for encoder + connector over the encoder's tokens (an upper bound for the perceiver,
    whose latents-side layers see only L tokens)."""
    llm = model.language_model
    tied = llm.get_output_embeddings().weight is llm.get_input_embeddings().weight
    llm_params = count(llm) - (0 if tied else llm.get_input_embeddings().weight.numel())
    vision_params = count(model.vision_encoder) + count(model.perceiver) + count(model.projector)
    return 6.0 * llm_params * seq + 6.0 * vision_params * visual_tokens


def peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if args.device != "cuda" or args.dtype == "fp32":
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_TFLOPS_16BIT if key in name), None)


# --- memory and timing ---------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def memory_gib(device: str) -> float:
    """CPU: the process's peak RSS so far; CUDA: peak allocated since the last reset."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def timed_runs(step, args) -> tuple[list[float], str | None]:
    """Warm-up steps, then up to ``args.runs`` timed steps within ``args.budget_s``."""
    for _ in range(args.warmup):
        first = step()
        if first > args.max_step_s:
            return [first], f"warm-up step {first:.0f} s > {args.max_step_s:.0f} s"
    times = []
    while len(times) < args.runs and (not times or sum(times) + statistics.median(times) <= args.budget_s):
        times.append(step())
    return times, None


def model_worker(variant: str, n_images: int, depth: int, args) -> dict:
    model = build_model(variant, args)
    size = in_plane_size(args)
    inputs = build_inputs(model, n_images, depth, size, args.text_tokens, args.device)
    tokens_per_image = encoder_tokens(model.vision_encoder, depth, size)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = memory_gib(args.device) if args.device != "cuda" else torch.cuda.memory_allocated() / 2**30

    def step() -> float:
        model.zero_grad(set_to_none=True)
        sync(args.device)
        start = time.perf_counter()
        model(**inputs).loss.backward()
        sync(args.device)
        return time.perf_counter() - start

    times, skipped = timed_runs(step, args)
    seq = inputs["input_ids"].shape[1]
    peak = memory_gib(args.device)
    result = {
        "variant": variant, "images": n_images, "depth": depth, "seq": seq,
        "visual_per_image": tokens_per_image if variant == "llava" else model.config.num_latents,
        "runs": len(times), "step_s": statistics.median(times), "best_s": min(times),
        "peak_gib": peak, "rise_gib": peak - baseline, "skipped": skipped,
        "flops": model_flops(model, seq, n_images * tokens_per_image),
        "params": count(model),
    }
    return result


def splice_worker(method: str, vocab: int, hidden: int, latents: int, args) -> dict:
    """Forward and forward + backward of the embedding splice alone, gradients for table and visual."""
    device, dtype = args.device, DTYPES[args.dtype]
    torch.manual_seed(0)
    patch_id, visual_tokens = vocab - 1, SPLICE_IMAGES * latents
    text = SPLICE_SEQ - visual_tokens - 2 * SPLICE_IMAGES
    image = [vocab - 3, *[patch_id] * latents, vocab - 2]
    per_gap = text // (SPLICE_IMAGES + 1)
    pieces = []
    for k in range(SPLICE_IMAGES + 1):  # text, image, text, image, ..., text
        n = per_gap if k < SPLICE_IMAGES else text - per_gap * SPLICE_IMAGES
        pieces.append(torch.randint(0, vocab - 3, (n,)))
        if k < SPLICE_IMAGES:
            pieces.append(torch.tensor(image))
    ids = torch.cat(pieces)[None].to(device)
    # Filled in place, so that the baseline of the memory rise holds no temporary copy of the table.
    table = torch.empty(vocab, hidden, device=device, dtype=dtype).normal_(std=0.02).requires_grad_()
    visual = torch.empty(1, visual_tokens, hidden, device=device, dtype=dtype).normal_().requires_grad_()
    grad = torch.empty(1, SPLICE_SEQ, hidden, device=device, dtype=dtype).normal_()
    splice = {"radfm": radfm_splice, "ours": index_splice}[method]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = memory_gib(device) if device != "cuda" else torch.cuda.memory_allocated() / 2**30

    def forward() -> float:
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            splice(ids, table, visual, patch_id)
        sync(device)
        return time.perf_counter() - start

    def forward_backward() -> float:
        table.grad = visual.grad = None
        sync(device)
        start = time.perf_counter()
        splice(ids, table, visual, patch_id).backward(grad)
        sync(device)
        return time.perf_counter() - start

    fwd, _ = timed_runs(forward, args)
    both, _ = timed_runs(forward_backward, args)
    check = splice(ids, table.detach(), visual.detach(), patch_id)
    reference = index_splice(ids, table.detach(), visual.detach(), patch_id)
    return {"method": method, "vocab": vocab, "hidden": hidden, "latents": latents, "runs": len(both),
            "forward_ms": statistics.median(fwd) * 1000, "forward_best_ms": min(fwd) * 1000,
            "step_ms": statistics.median(both) * 1000, "step_best_ms": min(both) * 1000,
            "rise_gib": memory_gib(device) - baseline, "max_abs_diff": float((check - reference).abs().max())}


# --- computed, not run ---------------------------------------------------------------------------


def p2med_visual_tokens(slices: int = 30) -> dict:
    """Tokens per slice of p2med-8b's CLIP ViT-L/14-336, counted on a 1-layer CLIP with the same patching."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    hf = PRESETS["p2med-8b"].vision_config["hf_config"]
    tiny = CLIPVisionConfig(image_size=hf["image_size"], patch_size=hf["patch_size"], hidden_size=32, intermediate_size=64,
                            num_hidden_layers=1, num_attention_heads=2)
    with torch.no_grad():
        out = CLIPVisionModel(tiny)(pixel_values=torch.zeros(1, 3, hf["image_size"], hf["image_size"])).last_hidden_state
    per_slice = out.shape[1]
    patches = (hf["image_size"] // hf["patch_size"]) ** 2
    latents = PRESETS["p2med-8b"].config["num_latents"]
    return {"slices": slices, "image_size": hf["image_size"], "patch_size": hf["patch_size"], "patches": patches,
            "per_slice": per_slice, "without_perceiver": slices * per_slice, "without_cls": slices * patches, "with_perceiver": latents,
            "context": PRESETS["p2med-8b"].text_config["max_position_embeddings"]}


# --- driver --------------------------------------------------------------------------------------


def common_args(args) -> list[str]:
    out = ["--preset", args.preset, "--device", args.device, "--dtype", args.dtype, "--runs", str(args.runs),
           "--warmup", str(args.warmup), "--budget-s", str(args.budget_s), "--max-step-s", str(args.max_step_s),
           "--text-tokens", str(args.text_tokens), "--depths", *map(str, args.depths)]
    if args.size:
        out += ["--size", str(args.size)]
    if args.peak_tflops:
        out += ["--peak-tflops", str(args.peak_tflops)]
    out.append("--grad-ckpt" if args.grad_ckpt else "--no-grad-ckpt")
    return out


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all cores have been busy since boot, CPU seconds of our finished subprocesses)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, children.ru_utime + children.ru_stime


def wait_for_idle(args) -> None:
    """Before a worker: wait (within ``args.wait_idle_s`` for the whole run) while other jobs use > 0.25 core."""
    while args.wait_idle_s > 0:
        before, _ = cpu_seconds()
        time.sleep(1.0)
        if cpu_seconds()[0] - before < 0.25:
            return
        time.sleep(4.0)
        args.wait_idle_s -= 5.0
        args.waited_s += 5.0


def run_worker(args, *worker_args) -> dict:
    """A worker; run once more (after waiting for an idle machine) when other jobs used > 0.2 core meanwhile."""
    result = run_worker_once(args, *worker_args)
    if result.get("others_cores", 0.0) > 0.2 and args.wait_idle_s > 0:
        args.reruns += 1
        result = run_worker_once(args, *worker_args)
    return result


def run_worker_once(args, *worker_args) -> dict:
    """One worker subprocess; adds ``others_cores``: the cores other jobs kept busy meanwhile, on average."""
    cmd = [sys.executable, __file__, *common_args(args), "--worker", *map(str, worker_args)]
    timeout = args.max_step_s * (args.warmup + 2) + args.budget_s + 300
    wait_for_idle(args)
    busy0, ours0 = cpu_seconds()
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"worker timed out after {timeout:.0f} s"}
    busy1, ours1 = cpu_seconds()
    others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (time.perf_counter() - start)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"skipped": f"worker failed (exit {done.returncode}: {last[:200]})"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "others_cores": others}


def extrapolate(points: list[tuple[int, float]], seq: int) -> float | None:
    """Linear in sequence length through the shortest and the longest measured point (None below two)."""
    points = sorted(points)
    if len(points) < 2 or points[0][0] == points[-1][0]:
        return None
    (s0, y0), (s1, y1) = points[0], points[-1]
    return y1 + (y1 - y0) / (s1 - s0) * (seq - s1)


def planned_seq(variant: str, n_images: int, depth: int, args, probe: dict) -> int:
    per_image = probe["encoder_tokens"][depth] if variant == "llava" else probe["num_latents"]
    return args.text_tokens + n_images * (per_image + 2)


def shape_probe(args) -> dict:
    """Token counts without building the LLM: the encoder alone."""
    from medmllm.model.vision import build_vision_encoder

    preset = PRESETS[args.preset]
    vision = dict(preset.vision_config)
    if preset.vision_encoder == "vit3d":
        vision["max_depth"] = max(vision.get("max_depth", 64), max(args.depths))
    config = MedMLLMConfig(vision_encoder=preset.vision_encoder, vision_config=vision, **preset.config)
    encoder = build_vision_encoder(config)
    size = in_plane_size(args)
    return {"num_latents": config.num_latents, "size": size, "encoder_tokens": {d: encoder_tokens(encoder, d, size) for d in args.depths}}


def run_models(args) -> list[dict]:
    probe = shape_probe(args)
    configs = sorted(((n, d) for n in args.images for d in args.depths), key=lambda c: (c[0] * c[1], c[0]))
    measured = {v: {"mem": [], "time": []} for v in args.variants}
    rows = []
    for n_images, depth in configs:
        for variant in args.variants:
            seq = planned_seq(variant, n_images, depth, args, probe)
            mem = extrapolate(measured[variant]["mem"], seq)
            step = extrapolate(measured[variant]["time"], seq)
            if mem is not None and mem > args.max_mem_gib:
                row = {"skipped": f"predicted peak {mem:.1f} GiB > {args.max_mem_gib:.0f} GiB"}
            elif step is not None and step > args.max_step_s:
                row = {"skipped": f"predicted step {step:.0f} s > {args.max_step_s:.0f} s"}
            else:
                row = run_worker(args, "model", variant, n_images, depth)
            row.update(variant=variant, images=n_images, depth=depth, seq=seq)
            row.setdefault("visual_per_image", probe["encoder_tokens"][depth] if variant == "llava" else probe["num_latents"])
            if "peak_gib" in row:
                measured[variant]["mem"].append((seq, row["peak_gib"]))
                measured[variant]["time"].append((seq, row["best_s"]))  # the best: less sensitive to other jobs
            rows.append(row)
            print(f"model {variant} {n_images}x{depth}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return rows


def run_splices(args) -> list[dict]:
    text = PRESETS[args.preset].text_config
    settings = [(f"{args.preset}", text["vocab_size"], text["hidden_size"], PRESETS[args.preset].config["num_latents"]), SEVEN_B]
    rows = []
    for name, vocab, hidden, latents in settings:
        for method in ("ours", "radfm"):
            row = {"name": name, **run_worker(args, "splice", method, vocab, hidden, latents)}
            rows.append(row)
            print(f"splice {name} {method}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return rows


def environment(args) -> dict:
    import transformers

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    models = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")]
    with open("/proc/meminfo") as f:
        ram_gib = int(f.readline().split()[1]) / 2**20  # MemTotal, KiB
    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": models[0] if models else platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(ram_gib, 1),
        "versions": {"Python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
    }
    return env


# --- report --------------------------------------------------------------------------------------


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def report(env: dict, rows: list[dict], splices: list[dict], p2med: dict, args, wall_s: float) -> str:
    command = "PYTHONPATH=src python benchmarks/model.py" + ("" if args.device == "cpu" else f" --device {args.device}") + (
        "" if args.dtype == "fp32" else f" --dtype {args.dtype}") + ("" if args.preset == "demo" else f" --preset {args.preset}")
    preset = PRESETS[args.preset]
    machine = f"{env['cpu']}, {env['cores']} cores (torch threads {env['torch_threads']}), {env['ram_gib']} GiB RAM"
    machine += f", GPU {env['gpu']}" if env["gpu"] else ", no GPU"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    others = [r["others_cores"] for r in [*rows, *splices] if "others_cores" in r]
    size = in_plane_size(args)
    cuda = args.device == "cuda"
    peak = peak_tflops(args)
    memory_name = "peak allocated (GiB)" if cuda else "peak RSS (GiB)"
    lines = [
        SECTION, "",
        f"Generated by `{command}` (see benchmarks/README.md); the whole run took {wall_s / 60:.1f} min"
        + (f", {args.waited_s / 60:.1f} of them waiting for other jobs to leave the CPU" if args.waited_s else "")
        + (f"; {args.reruns} disturbed worker(s) were run again" if args.reruns else "") + ".", "",
        f"- Date: {env['date']}",
        f"- Machine: {machine}",
        f"- Versions: {versions}",
        f"- Model: preset `{args.preset}` with RANDOM weights ({preset.description}); {args.dtype}, batch size 1, all "
        f"parameters trainable, SDPA attention{', gradient checkpointing' if args.grad_ckpt else ''}. Images {size} x {size} "
        f"in-plane, {args.text_tokens} text tokens (half before the images, half after); loss on the text tokens.",
        f"- Step = forward + backward (gradients set to None before each, no optimiser). Median and best of up to "
        f"{args.runs} steps after {args.warmup} warm-up step(s); slow configurations get fewer (the timed steps stop "
        f"after {args.budget_s:.0f} s), the runs column says how many. The best is less sensitive to other jobs.",
        f"- Memory: {'torch.cuda.max_memory_allocated' if cuda else 'ru_maxrss'} of a subprocess per (configuration, "
        f"connector): the peak includes the runtime, weights and gradients; rise = peak minus the value after the model "
        f"and inputs were built (gradients + activations).",
    ]
    if others:
        lines.append(f"- Other jobs: the machine was shared. Column `others` = the cores that other processes kept busy, on "
                     f"average, while that worker ran (/proc/stat minus the worker's own CPU time): {min(others):.2f} to "
                     f"{max(others):.2f} of {env['cores']}. Rows above about 0.2 are slowed down, their medians more than "
                     f"their bests. Before each worker the script waited for the machine to be idle ({args.waited_s:.0f} s in all), "
                     f"and ran a worker again when other jobs had used more than 0.2 core ({args.reruns} reruns).")
    if preset.vision_encoder == "vit3d" and max(args.depths) > preset.vision_config.get("max_depth", 64):
        lines.append(f"- The preset's vit3d stops at {preset.vision_config['max_depth']} slices; its depth position table "
                     f"was enlarged to {max(args.depths)} here (a few hundred parameters, nothing else changes).")
    lines += [
        "",
        "## Forward + backward per connector",
        "",
        "Visual tokens / image: ours and (b) `num_latents`; (a) every patch token of the encoder. Sequence = text + "
        "images x (visual tokens + `<image>` + `</image>`). Ratios: the connector's value / ours, same configuration.",
        "",
    ]
    header = (f"| images x depth | connector | visual tokens / image | sequence | runs | step (s), median / best | "
              f"step / ours, median / best | {memory_name} | rise (GiB) | peak / ours | others |")
    align = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if cuda:
        header += " model TFLOP/s | MFU |"
        align += "---:|---:|"
    lines += [header, align]
    context = preset.text_config.get("max_position_embeddings")
    ours = {(r["images"], r["depth"]): r for r in rows if r["variant"] == "ours"}
    for r in rows:
        base = ours.get((r["images"], r["depth"]), {})
        over = context is not None and r["seq"] > context
        cells = [f"{r['images']} x {r['depth']}", LABELS[r["variant"]], f"{r['visual_per_image']:,}", f"{r['seq']:,}" + (" *" if over else "")]
        if "step_s" not in r:
            cells += ["", f"skipped: {r['skipped']}", "", "", "", "", ""] + (["", ""] if cuda else [])
            lines.append("| " + " | ".join(cells) + " |")
            continue
        warm_only = bool(r.get("skipped"))  # stopped after a warm-up step over --max-step-s
        step = f"{r['step_s']:.2f} (one warm-up step, > {args.max_step_s:.0f} s: not repeated)" if warm_only else f"{r['step_s']:.2f} / {r['best_s']:.2f}"
        step_ratio = peak_ratio = ""
        if r["variant"] != "ours" and "step_s" in base:
            step_ratio = f"~{r['step_s'] / base['step_s']:.1f}" if warm_only else (
                f"{r['step_s'] / base['step_s']:.2f} / {r['best_s'] / base['best_s']:.2f}")
            peak_ratio = fmt_ratio(r["peak_gib"] / base["peak_gib"])
        cells += [str(r["runs"]), step, step_ratio, f"{r['peak_gib']:.2f}", f"{r['rise_gib']:.2f}", peak_ratio, f"{r.get('others_cores', 0):.2f}"]
        if cuda:
            achieved = r["flops"] / r["step_s"] / 1e12
            cells += [f"{achieved:.1f}", f"{achieved / peak:.1%}" if peak else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [r for r in rows if "step_s" not in r]
    warm_only = [r for r in rows if "step_s" in r and r.get("skipped")]
    lines += [""]
    if any(context is not None and r["seq"] > context for r in rows):
        lines += [f"\\* longer than the LLM's {context:,}-token context (`max_position_embeddings`); RoPE runs anyway.", ""]
    lines += [f"Skipped: {len(skipped)} of {len(rows)} runs; stopped after the warm-up step: {len(warm_only)}. A configuration is "
              f"skipped when its peak memory or step time, extrapolated linearly in sequence length from the same "
              f"connector's measured configurations, exceeds {args.max_mem_gib:.0f} GiB or {args.max_step_s:.0f} s; a worker "
              f"whose warm-up step takes longer than {args.max_step_s:.0f} s reports that step and stops.", ""]

    lines += [
        "## Visual tokens of a 30-slice CT with P2Med's tower (computed, not run)", "",
        f"`p2med-8b` encodes every slice with CLIP ViT-L/14-{p2med['image_size']}: ({p2med['image_size']} / "
        f"{p2med['patch_size']})^2 = {p2med['patches']} patches, and the tower's last_hidden_state (what `HFSliceEncoder` "
        f"takes; counted on a 1-layer CLIP with the same patching) has {p2med['per_slice']} tokens per slice "
        f"(patches + CLS).", "",
        "| | visual tokens for 30 slices |", "|---|---:|",
        f"| without a perceiver, all tokens of last_hidden_state | {p2med['without_perceiver']:,} |",
        f"| without a perceiver, CLS dropped (P2Med's 30 x 576 figure) | {p2med['without_cls']:,} |",
        f"| with the perceiver (`num_latents`) | {p2med['with_perceiver']} |",
        "",
        f"That is {p2med['without_perceiver'] / p2med['with_perceiver']:.0f} x fewer tokens, and {p2med['without_cls']:,} "
        f"is {p2med['without_cls'] / p2med['context']:.1f} x the {p2med['context']:,}-token context of the preset's Llama.", "",
    ]

    lines += [
        f"## Embedding splice alone: {SPLICE_SEQ:,} tokens with {SPLICE_IMAGES} images", "",
        "Where (b) differs from ours. RadFM: one_hot(ids, V + images x L) @ [table; visual]; ours: embedding lookup + "
        "masked_scatter. Backward computes the gradients of the table and of the visual tokens. Each row is its own "
        "subprocess; rise = ru_maxrss peak minus the value after the inputs were built. Max |diff| = largest difference "
        "of the two outputs.", "",
        "| vocabulary x hidden (latents / image) | method | forward (ms), median / best | forward + backward (ms), median / best | "
        "runs | rise (GiB) | one-hot matmul GFLOP (fwd) | (b) / ours, fwd + bwd, median / best | max \\|diff\\| | others |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(s["name"], s.get("method")): s for s in splices}
    for s in splices:
        if "step_ms" not in s:
            lines.append(f"| {s['name']} | {s.get('method', '?')} | skipped: {s['skipped']} | | | | | | | |")
            continue
        width = s["vocab"] + SPLICE_IMAGES * s["latents"]
        gflop = f"{2 * SPLICE_SEQ * width * s['hidden'] / 1e9:.0f}" if s["method"] == "radfm" else ""
        ours_row = by_key.get((s["name"], "ours"), {})
        ratio = ""
        if s["method"] == "radfm" and "step_ms" in ours_row:
            ratio = f"{s['step_ms'] / ours_row['step_ms']:.1f} / {s['step_best_ms'] / ours_row['step_best_ms']:.1f}"
        lines.append(f"| {s['name']}: {s['vocab']:,} x {s['hidden']:,} ({s['latents']}) | {s['method']} | "
                     f"{s['forward_ms']:.1f} / {s['forward_best_ms']:.1f} | {s['step_ms']:.1f} / {s['step_best_ms']:.1f} | "
                     f"{s['runs']} | {s['rise_gib']:.2f} | {gflop} | {ratio} | {s['max_abs_diff']:.1e} | {s.get('others_cores', 0):.2f} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", choices=list(PRESETS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--images", type=int, nargs="+", default=[1, 4, 16], help="images per sample")
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64], help="slices per image")
    parser.add_argument("--size", type=int, help="in-plane size (default: the preset's 3D recipe / tower image size)")
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--runs", type=int, default=7, help="timed steps at most")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=20.0, help="stop adding timed steps after this many seconds")
    parser.add_argument("--max-step-s", type=float, default=60.0, help="skip configurations whose step would take longer")
    parser.add_argument("--max-mem-gib", type=float, help="skip configurations that would need more (default 16 GiB on CPU, 90%% of the GPU)")
    parser.add_argument("--peak-tflops", type=float, help="device peak for the MFU (default: known bf16 peaks of H100/H200/A100)")
    parser.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=None, help="gradient checkpointing (default: on for cuda)")
    parser.add_argument("--no-splice", action="store_true", help="skip the splice-alone measurement")
    parser.add_argument("--wait-idle-s", type=float, default=300.0,
                        help="wait for other jobs to leave the CPU before each worker (and rerun a disturbed one), "
                             "at most this long over the whole run")
    parser.add_argument("--write", type=Path, help="also write the report as the `# Model benchmark` section of this file")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)  # model VARIANT IMAGES DEPTH | splice METHOD V E L
    args = parser.parse_args()
    args.waited_s, args.reruns = 0.0, 0
    if args.grad_ckpt is None:
        args.grad_ckpt = args.device == "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    if args.max_mem_gib is None:
        args.max_mem_gib = 0.9 * torch.cuda.get_device_properties(0).total_memory / 2**30 if args.device == "cuda" else 16.0

    if args.worker:
        kind, *rest = args.worker
        if kind == "model":
            print(json.dumps(model_worker(rest[0], int(rest[1]), int(rest[2]), args)))
        else:
            print(json.dumps(splice_worker(rest[0], *map(int, rest[1:]), args)))
        return

    start = time.perf_counter()
    p2med = p2med_visual_tokens()
    rows = run_models(args)
    splices = [] if args.no_splice else run_splices(args)
    text = report(environment(args), rows, splices, p2med, args, time.perf_counter() - start)
    print(text)
    if args.write:
        replace_section(args.write, SECTION, text)


if __name__ == "__main__":
    main()
