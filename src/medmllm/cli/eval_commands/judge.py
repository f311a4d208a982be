"""``medmllm eval judge``: P2Med's LLM judge over a predictions file (docs/judge.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def judge_command(
    pred: Path = typer.Option(..., "--pred", help="Predictions JSONL: rows {\"id\", \"prediction\"}."),
    ref: Path = typer.Option(..., "--ref", help="References JSONL: rows {\"id\", \"reference\"}, or samples (their targets)."),
    task: str = typer.Option(..., "--task", help="p2med/report-xray, p2med/report-ct, p2med/outpatient-record, p2med/first-disease-course, "
                                                "p2med/attending-ward-round or p2med/chief-ward-round."),
    out: Path = typer.Option(..., "-o", "--out", help="Output JSONL of judged rows; rows already there are kept and skipped (resume)."),
    endpoint: str = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL of the judge, e.g. http://localhost:8000/v1."),
    api_model: str = typer.Option(None, "--api-model", help="The judge model's name at --endpoint."),
    api_key: str = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="API key for --endpoint (default $OPENAI_API_KEY)."),
    judge_model: Path = typer.Option(None, "--judge-model", help="A local transformers causal LM folder as the judge (instead of --endpoint)."),
    retries: int = typer.Option(2, "--retries", help="Re-ask an unreadable answer this many times, then count a failure."),
    concurrency: int = typer.Option(4, "--concurrency", help="Samples judged at once (endpoint only; a local model runs one at a time)."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Longest judge answer, in tokens."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Score predictions with an LLM judge (5-point accuracy / comprehensiveness per component) and print means with t CIs."""
    from medmllm.errors import MedMLLMError
    from medmllm.eval.judge import Judge, OpenAIChat, TransformersChat, judge_file, summarize
    from medmllm.eval.judge_prompts import PROMPT_VERSION

    if (endpoint is None) == (judge_model is None):
        raise MedMLLMError("give the judge as either --endpoint URL --api-model NAME or --judge-model DIR")
    if endpoint is not None and not api_model:
        raise MedMLLMError("--endpoint needs --api-model NAME")
    if concurrency < 1:
        raise MedMLLMError(f"--concurrency must be >= 1, got {concurrency}")
    if endpoint is not None:
        backend = OpenAIChat(endpoint, api_model, api_key=api_key, max_tokens=max_tokens)
    else:
        backend = TransformersChat(judge_model, max_new_tokens=max_tokens)
    judge = Judge(backend, task, retries=retries)

    from rich.progress import Progress

    with Progress(transient=True) as progress:
        bar = progress.add_task("judging", total=None)
        run = judge_file(judge, pred, ref, out, concurrency=concurrency, progress=lambda i, n: progress.update(bar, completed=i, total=n))
    summary = summarize(run.rows, task)
    if json_out:
        typer.echo(json.dumps({"task": task, "judge_model": backend.name, "prompt_version": PROMPT_VERSION, "judged": run.judged,
                               "resumed": run.resumed, "criteria": summary}, indent=2))
        return
    typer.echo(f"{out}: judged {run.judged} sample(s), {run.resumed} kept from before; judge {backend.name}, prompt {PROMPT_VERSION}")
    if run.predictions_without_reference or run.references_without_prediction:
        typer.echo(f"unmatched ids: {run.predictions_without_reference} prediction(s) without a reference, "
                   f"{run.references_without_prediction} reference(s) without a prediction", err=True)
    typer.echo(f"{'criterion':<44} {'n':>5} {'mean':>6}  {'95% CI (t)':<16} {'failed':>6} {'missing':>7}")
    for s in summary:
        ci = f"({s['ci'][0]:.2f}, {s['ci'][1]:.2f})"
        typer.echo(f"{s['criterion']:<44} {s['n']:>5} {s['mean']:>6.2f}  {ci:<16} {s['failed']:>6} {s['missing']:>7}")
