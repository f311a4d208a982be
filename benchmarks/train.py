"""Benchmark: training throughput (samples/s, tokens/s) of P2Med's two stage kinds on CPU,
against plain LoRA fine-tuning of the same LLM on the same text with the transformers Trainer.

Run by hand, not by the test suite (see benchmarks/README.md):

    PYTHONPATH=src python benchmarks/train.py [--preset demo] [--steps 12] [--write benchmarks/RESULTS.md]

Data: ``--samples`` samples in a temporary folder, a third each 3D (the real head CT of
``../shared/data/scans``), 2D (PNG slices of it) and text-only, with short radiology reports.
The `demo` preset needs SmolLM2-135M-Instruct (``medmllm models fetch smollm2-135m-instruct``).

Measured, each in the same process one after the other, on the same samples:

    align     `medmllm.train.run_stage`: perceiver + projector trained, vision and LLM frozen
              (the demo recipe's first stage)
    instruct  the same with LoRA on the LLM (r 8, alpha 16) and the perceiver trained (P2Med's
              second and third; the demo recipe now fine-tunes the LLM's top layers instead)
    anchor    the LLM alone (no vision, no perceiver) with the same LoRA through the transformers
              Trainer on the same text with the image parts removed: the cost of the language
              model itself, which the multimodal stages cannot go below

samples/s is the Trainer's ``train_samples_per_second`` over ``--steps`` optimiser steps of
batch 2 x accumulation 2 (first step included, as a user sees it). tokens/s counts what the LLM
processes: text tokens plus, for our stages, each image's ``num_latents + 2`` image tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from results import machine, replace_section  # noqa: E402  (benchmarks/results.py, beside this script)

from medmllm.train import parse_recipe  # noqa: E402
from medmllm.train.dataset import SampleDataset  # noqa: E402
from medmllm.train.trainer import run_stage  # noqa: E402

SECTION = "# Training benchmark"
HEAD_CT = REPO.parent / "shared" / "data" / "scans" / "head_ct.nii.gz"
REPORTS = [
    "No acute intracranial abnormality. The ventricles and sulci are normal in size.",
    "There is a small hypodensity in the right frontal lobe, likely chronic infarct. No hemorrhage.",
    "The lungs are clear. The heart size is normal. No pleural effusion or pneumothorax.",
    "Patchy consolidation in the right lower lobe, consistent with pneumonia. Small right pleural effusion.",
    "Mild cardiomegaly. Pulmonary vascular congestion without overt edema.",
    "Stable 6 mm nodule in the left upper lobe compared with the prior exam. No new findings.",
]


def make_data(root: Path, n: int) -> Path:
    """n samples (3D / 2D / text-only in turn) as JSONL beside their images; returns the file."""
    import nibabel as nib

    (root / "images").mkdir(parents=True, exist_ok=True)
    volume = np.asarray(nib.load(HEAD_CT).dataobj, dtype=np.float32)
    nib.save(nib.load(HEAD_CT), root / "images" / "ct.nii.gz")
    for k in range(4):  # 2D images: windowed axial slices of the CT
        plane = volume[:, :, volume.shape[2] * (k + 1) // 5]
        plane = np.clip((plane + 100) / 200, 0, 1)
        Image.fromarray((plane * 255).astype(np.uint8)).save(root / "images" / f"slice{k}.png")
    rows = []
    for i in range(n):
        kind = i % 3
        content = [{"type": "text", "text": "Please caption this scan with findings."}]
        images = []
        if kind < 2:
            content.insert(0, {"type": "image", "image": 0})
            images = [{"path": "images/ct.nii.gz" if kind == 0 else f"images/slice{i % 4}.png", "modality": "CT"}]
        rows.append({"id": str(i), "task": "report", "images": images, "turns": [
            {"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": REPORTS[i % len(REPORTS)]}]}]})
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stage_recipe(preset: str, train: Path, out: Path, stage: dict):
    return parse_recipe({"model": {"preset": preset}, "data": {"train": str(train), "max_tokens": 512},
                         "run": {"output_dir": str(out), "save_steps": None, "logging_steps": 1000, "report_to": [], "eval_generate": 0},
                         "stages": [stage]})


def ours(preset: str, train: Path, out: Path, name: str, steps: int) -> dict:
    stage = {"name": name, "train": {"perceiver": True}, "max_steps": steps, "batch_size": 2, "grad_accum": 2,
             "learning_rate": 1e-4, "warmup_ratio": 0.0}
    if name == "instruct":
        stage["lora"] = {"r": 8, "alpha": 16, "dropout": 0.05}
    recipe = stage_recipe(preset, train, out, stage)
    started = time.perf_counter()
    result = run_stage(recipe, name, keep_model=True)
    wall = time.perf_counter() - started
    dataset = SampleDataset(train)
    dataset.measure(result.processor, 512)  # the lengths the stage trained on (image tokens included)
    per_second = result.metrics["train_samples_per_second"]
    return {"name": name, "samples_per_s": per_second, "tokens_per_s": per_second * float(np.mean(dataset.lengths)),
            "mean_tokens": float(np.mean(dataset.lengths)), "runtime_s": result.metrics["train_runtime"], "wall_s": wall}


def anchor(preset: str, train: Path, out: Path, steps: int) -> dict:
    """The preset's LLM with LoRA through the plain transformers Trainer, on the text of the same samples."""
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from medmllm.data.io import read_samples
    from medmllm.model.factory import get_preset, load_llm

    llm, tokenizer = load_llm(get_preset(preset).llm)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    texts = []
    for sample in read_samples(train):
        messages = [{"role": t.role, "content": t.text} for t in sample.turns]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    encoded = [tokenizer(t) for t in texts]
    llm = get_peft_model(llm, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                             learning_rate=1e-4, logging_steps=1000, save_strategy="no", report_to=[], use_cpu=True, seed=42)
    trainer = Trainer(model=llm, args=args, train_dataset=encoded, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    metrics = trainer.train().metrics
    per_second = metrics["train_samples_per_second"]
    mean_tokens = float(np.mean([len(e["input_ids"]) for e in encoded]))
    return {"name": "anchor", "samples_per_s": per_second, "tokens_per_s": per_second * mean_tokens, "mean_tokens": mean_tokens,
            "runtime_s": metrics["train_runtime"], "wall_s": metrics["train_runtime"]}


def render(rows: list[dict], args, started: datetime, load: tuple[float, float]) -> str:
    base = next(r for r in rows if r["name"] == "anchor")
    lines = [
        SECTION, "",
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{started:%Y-%m-%d %H:%M} UTC; load average {load[0]:.1f} before, {load[1]:.1f} after.",
        f"Preset `{args.preset}`, {args.samples} samples (3D head CT / 2D slices / text-only in turn), {args.steps} optimiser steps of "
        "batch 2 x accumulation 2, fp32 on the CPU. Command: `PYTHONPATH=src python benchmarks/train.py --write benchmarks/RESULTS.md`.",
        "",
        "| run | samples/s | tokens/s | tokens per sample | train time (s) | tokens/s vs anchor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['mean_tokens']:.0f} | "
                     f"{r['runtime_s']:.1f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f} |")
    lines += ["", "align: perceiver + projector trained; instruct: + LoRA on the LLM; anchor: the LLM alone with the same LoRA through "
              "the transformers Trainer on the same text (images removed). tokens count image tokens (num_latents + 2 per image) for "
              "our runs. A GPU stage-2 step time and MFU at 7B shape were not measured: no GPU was lent to this session.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--write", type=Path, default=None, help=f"replace (or append) the `{SECTION}` section of this Markdown file")
    args = parser.parse_args()
    started, load_before = datetime.now(timezone.utc), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = make_data(root / "data", args.samples)
        rows = [ours(args.preset, train, root / "run", name, args.steps) for name in ("align", "instruct")]
        rows.append(anchor(args.preset, train, root / "anchor", args.steps))
    report = render(rows, args, started, (load_before, os.getloadavg()[0]))
    print(report)
    if args.write:
        replace_section(args.write, SECTION, report)


if __name__ == "__main__":
    main()
