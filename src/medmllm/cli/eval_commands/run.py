"""``medmllm eval run``: evaluate a model on a benchmark (docs/evaluation.md).

    medmllm eval run --model runs/demo/model --bench vqa-rad:data/VQA_RAD -o out/vqa-rad
    medmllm eval run --hf-model models/smolvlm --bench data/test.jsonl --limit 100 -o out/smolvlm
    medmllm eval run --endpoint http://localhost:8000/v1 --api-model qwen2-vl --bench slake:data/Slake -o out/qwen
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def run_command(
    bench: str = typer.Option(..., "--bench", help="A benchmark: a JSONL path (or jsonl:PATH), or NAME:DIR with NAME in vqa-rad, slake, "
                                                   "pathvqa, pmc-vqa, iu-xray, mimic-cxr (local copies; nothing is downloaded)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: predictions.jsonl, metrics.json, per_sample.jsonl, report.html. "
                                                      "Running again continues an interrupted run."),
    model: Path = typer.Option(None, "--model", help="A medmllm model folder (MedMLLMForCausalLM + processor)."),
    hf_model: Path = typer.Option(None, "--hf-model", help="A transformers image-text-to-text model folder (AutoProcessor chat template)."),
    endpoint: str = typer.Option(None, "--endpoint", help="An OpenAI-compatible base URL, e.g. http://localhost:8000/v1."),
    api_model: str = typer.Option(None, "--api-model", help="The model name at --endpoint."),
    limit: int = typer.Option(None, "--limit", help="Only the benchmark's first N samples."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples generated at once (concurrent requests for --endpoint)."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest answer, in tokens."),
    device: str = typer.Option(None, "--device", help="torch device for --model / --hf-model (default: cuda if available, else cpu)."),
    precision: str = typer.Option("auto", "--precision", help="--model: auto (bf16 autocast on a GPU or a CPU with native bf16 that measures faster), "
                                                              "fp32, bf16 or fp16."),
    judge_endpoint: str = typer.Option(None, "--judge-endpoint", help="OpenAI-compatible URL of an LLM judge for P2Med record components."),
    judge_model: str = typer.Option(None, "--judge-model", help="The judge's model name at --judge-endpoint, or a local causal LM folder."),
    optional_metrics: bool = typer.Option(False, "--optional-metrics", help="Also slow / tool-dependent metrics (METEOR, needs java)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs of corpus metrics (BLEU, CIDEr, F1)."),
    json_out: bool = typer.Option(False, "--json", help="Print the headline metrics as JSON."),
) -> None:
    """Generate answers for a benchmark, score them per task family with 95% CIs, write a report."""
    from medmllm.errors import MedMLLMError

    given = [name for name, value in (("--model", model), ("--hf-model", hf_model), ("--endpoint", endpoint)) if value is not None]
    if len(given) != 1:
        raise MedMLLMError("give the model as exactly one of --model DIR, --hf-model DIR or --endpoint URL --api-model NAME")
    if limit is not None and limit < 1:
        raise MedMLLMError(f"--limit must be >= 1, got {limit}")
    if batch_size < 1 or max_new_tokens < 1 or bootstrap < 10:
        raise MedMLLMError("--batch-size and --max-new-tokens must be >= 1, --bootstrap >= 10")
    if judge_endpoint is not None and not judge_model:
        raise MedMLLMError("--judge-endpoint needs --judge-model NAME")
    for path, flag in ((model, "--model"), (hf_model, "--hf-model")):
        if path is not None and not path.is_dir():
            raise MedMLLMError(f"{path}: no such model folder ({flag})")

    from medmllm.eval.benchmarks import parse_bench

    parse_bench(bench)  # a bad --bench is one line before any model loads
    judge = None
    if judge_model:
        from medmllm.eval.judge import OpenAIChat, TransformersChat

        judge = OpenAIChat(judge_endpoint, judge_model) if judge_endpoint else TransformersChat(judge_model)

    from medmllm.eval.adapters import build_adapter

    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size)
    if model is not None:
        adapter = build_adapter("medmllm", model, device=device, precision=precision, **options)
    elif hf_model is not None:
        adapter = build_adapter("hf", hf_model, device=device, **options)
    else:
        adapter = build_adapter("openai", endpoint, api_model, **options)

    from rich.progress import Progress

    from medmllm.eval.runner import run_eval

    with Progress(transient=True) as progress:
        bar = progress.add_task("generating", total=None)
        result = run_eval(adapter, bench, out, limit=limit, judge=judge, optional_metrics=optional_metrics, resamples=bootstrap,
                          progress=lambda done, total: progress.update(bar, completed=done, total=total))
    headline = {family: {m: e["value"] for m, e in t["metrics"].items()} for family, t in result.metrics["tasks"].items()}
    if json_out:
        typer.echo(json.dumps({"out": str(out), "samples": result.samples, "generated": result.generated, "failures": result.failures,
                               "metrics": headline}, indent=2))
        return
    typer.echo(f"{out}: {result.samples} samples ({result.generated} generated now, {result.failures} failed); report {out / 'report.html'}")
    for family, t in result.metrics["tasks"].items():
        for metric, e in t["metrics"].items():
            lo, hi = e["ci95"]
            ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
            value = f"{e['value']:.4f}" if e["value"] is not None else "n/a"
            typer.echo(f"  {family:<16} {metric:<32} {value:>8} {ci}")
        for metric, why in t["skipped_metrics"].items():
            typer.echo(f"  {family:<16} {metric:<32} skipped: {why}")
