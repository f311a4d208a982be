"""``medmllm eval score``: score prediction JSONL against reference JSONL (no model, no torch)."""

from __future__ import annotations

from pathlib import Path

import typer


def score_command(
    pred: Path = typer.Option(..., "--pred", help="JSONL: {\"id\", \"prediction\"} per line."),
    ref: Path = typer.Option(..., "--ref", help="JSONL: {\"id\", \"reference\"} or {\"id\", \"references\": [...]} per line."),
    metrics: str = typer.Option("bleu,rouge_l,cider", "--metrics", help="Comma-separated metric or output names (bleu, bleu_4, rouge_l, rouge_l_f, rouge_1, cider, ...)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON: each metric -> {value, ci95}, plus meta."),
    per_sample: Path = typer.Option(None, "--per-sample", help="Also write one JSONL row per id with every metric."),
    intersect: bool = typer.Option(False, "--intersect", help="Score only ids present in both files (default: mismatched ids are an error)."),
    ci: str = typer.Option("auto", "--ci", help="auto (t for mean metrics, bootstrap for corpus BLEU), t or bootstrap."),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="medmllm-v1 (default) or whitespace (text already tokenized)."),
) -> None:
    """Score predictions against references: BLEU-1..4, ROUGE-L, CIDEr-D, ... with 95% CIs (docs/metrics.md)."""
    import json

    from medmllm.eval.scoring import score_files, summary, table, write_per_sample

    names = [m.strip() for m in metrics.split(",") if m.strip()]
    result, ids = score_files(pred, ref, names, intersect=intersect, ci=ci, resamples=resamples, seed=seed, tokenizer=tokenizer)
    if per_sample is not None:
        write_per_sample(per_sample, result, ids)
    if json_out:
        typer.echo(json.dumps(summary(result), indent=2))
    else:
        typer.echo(table(result))
        if per_sample is not None:
            typer.echo(f"per-sample scores: {per_sample}")
