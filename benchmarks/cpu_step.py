"""Benchmark: what mixed precision and labelled-only logits buy a CPU training step and generation.

Run by hand, not by the test suite (see benchmarks/README.md):

    PYTHONPATH=src python benchmarks/cpu_step.py [--steps 4] [--write benchmarks/RESULTS.md]

Model: the `demo` preset (SmolLM2-135M-Instruct, needs `medmllm models fetch smollm2-135m-instruct`,
+ the small vit3d and perceiver, random vision weights) with LoRA r 16 on every LLM linear layer,
as the demo's instruction stages train it. Data: 8 single-exam report samples of a small MiniRad
(generated in a temporary folder; chest X-ray 64 x 64 or CT 16 x 64 x 64, P2Med's report prompt,
the report as the labelled answer).

Training step (forward + backward, batch 8), the median of ``--steps`` after one warm-up:

    full logits       the anchor: logits at every position, as a transformers causal LM computes
                      them (`MedMLLMForCausalLM.forward` in eval mode, or with ``plain_lm_head``
                      switched off), then the loss on the labelled ones
    labelled logits   ours in training mode: the output layer only where a label is

each in fp32 and in bf16 autocast (``run.precision: auto`` on a CPU with AVX512-BF16 or AMX).
Generation: greedy, 80 new tokens for 16 first-exam prompts (`MedMLLMAdapter`), fp32 vs bf16.
Optimiser step: Adam over the LLM's own weights (embeddings excluded), as a stage with
``train: {llm: true}`` takes it (the demo's stages 2-3): torch's default on a CPU (a loop over the
tensors; the anchor), ``foreach`` and ``fused`` (``optim: adamw_torch_fused``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from results import machine, publish  # noqa: E402  (benchmarks/results.py, beside this script)

SECTION = "# CPU step benchmark"


def report_samples(root: Path, n: int):
    from medmllm.data.io import read_samples
    from medmllm.demo import first_exams
    from medmllm.synth.minirad import MiniRadConfig, generate

    generate(root, MiniRadConfig(n=400, seed=0, xray_size=(64, 64), ct_shape=(16, 64, 64), modalities={"X-ray": 0.6, "CT": 0.4}))
    return first_exams(list(read_samples(root / "samples.jsonl")))[:n]


def timed(fn, steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    from medmllm.model.adapters import add_lora
    from medmllm.model.factory import build
    from medmllm.model.precision import autocast, cpu_has_native_bf16, resolve_precision

    if not cpu_has_native_bf16():
        sys.exit("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 autocast would be emulated; nothing to compare")
    started = datetime.now(timezone.utc)
    torch.manual_seed(0)
    model, processor = build("demo")
    model = add_lora(model, r=16, alpha=32, dropout=0.0)
    inner = model.get_base_model()  # MedMLLMForCausalLM under peft
    with tempfile.TemporaryDirectory() as tmp:
        samples = report_samples(Path(tmp), 16)
        messages = [s.to_messages(tmp) for s in samples]
        batch = dict(processor(messages[:8]))
        labelled = int((batch["labels"][:, 1:] != -100).sum())
        rows = []
        for precision in ("fp32", "bf16"):
            ctx = functools.partial(autocast, precision, "cpu")  # the rule training and `eval run` use
            for name, plain in (("full logits (anchor)", lambda: False), ("labelled logits (ours)", None)):
                model.train()
                if plain is not None:
                    inner.plain_lm_head = plain  # the instance attribute forces the full-logits path
                elif "plain_lm_head" in inner.__dict__:
                    del inner.plain_lm_head

                def step(ctx=ctx):
                    with ctx():
                        loss = model(**batch).loss
                    loss.backward()
                    model.zero_grad(set_to_none=True)

                rows.append((f"train step, {precision}, {name}", timed(step, args.steps)))
            if "plain_lm_head" in inner.__dict__:
                del inner.plain_lm_head
        model.eval()
        from medmllm.eval.adapters import question_messages

        prompts = dict(processor([question_messages(s, tmp) for s in samples], add_generation_prompt=True))
        inputs = {k: v for k, v in prompts.items() if k not in ("labels", "loss_weights")}
        for precision in ("fp32", "bf16"):
            ctx = functools.partial(autocast, precision, "cpu")  # the rule training and `eval run` use

            def generate(ctx=ctx):
                with torch.no_grad(), ctx():
                    model.generate(**inputs, max_new_tokens=80, min_new_tokens=80, do_sample=False, pad_token_id=processor.pad_token_id)

            rows.append((f"generate 16 x 80 tokens, {precision}", timed(generate, max(1, args.steps // 2))))
        tokens = int(batch["attention_mask"].sum())
    embeddings = {id(p) for p in inner.language_model.get_input_embeddings().parameters()}
    weights = [p for n, p in inner.language_model.named_parameters() if id(p) not in embeddings and "lora_" not in n]
    grads = [torch.randn_like(p) for p in weights]
    adam = []
    for name, flags in (("default (anchor)", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        params = [torch.nn.Parameter(p.detach().clone()) for p in weights]
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, **flags)
        adam.append((f"Adam step, {name}", timed(optimizer.step, args.steps)))
        del params, optimizer
    anchor = rows[0][1]
    lines = [SECTION, "",
             f"`benchmarks/cpu_step.py --steps {args.steps}`, {started:%Y-%m-%d %H:%M} UTC. Machine: {machine()}; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Demo preset + LoRA r 16, batch 8 single-exam reports: {tokens} tokens, {labelled} of them labelled.",
             "", "| what | median s | vs fp32 full logits |", "|---|---:|---:|"]
    for name, seconds in rows:
        ratio = f"{anchor / seconds:.2f}x faster" if name.startswith("train") else ""
        lines.append(f"| {name} | {seconds:.2f} | {ratio} |")
    gen = {name: s for name, s in rows if name.startswith("generate")}
    fp32, bf16 = gen["generate 16 x 80 tokens, fp32"], gen["generate 16 x 80 tokens, bf16"]
    lines += ["", f"Generation: bf16 autocast {fp32 / bf16:.2f}x faster than fp32. `run.precision: auto` resolves to "
              f"{resolve_precision('auto', 'cpu')} on this machine (`medmllm.model.precision.cpu_bf16_is_faster`).", "",
              f"Adam over the LLM's own weights ({sum(p.numel() for p in weights) / 1e6:.0f}M, embeddings excluded; fp32):", "",
              "| what | median s | vs default |", "|---|---:|---:|"]
    lines += [f"| {name} | {seconds:.3f} | {adam[0][1] / seconds:.2f}x faster |" for name, seconds in adam] + [""]
    publish(lines, SECTION, args.write)


if __name__ == "__main__":
    main()
