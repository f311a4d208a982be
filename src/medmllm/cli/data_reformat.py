"""``medmllm data reformat`` and the expert review commands (``review``, ``review-import``,
``review-summary``); registered in medmllm.cli.data. See docs/reformat.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def reformat(
    src: Path = typer.Argument(..., help="JSONL of {id, images, context, source?} rows, or of medmllm samples."),
    out: Path = typer.Option(..., "-o", "--out", help="Output JSONL of samples (resumed if it exists)."),
    endpoint: str = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1."),
    model: str = typer.Option(None, "--model", help="Model name at the endpoint."),
    mode: str = typer.Option("mllm", "--mode", help="mllm (images + context), llm (context only), distill (images only), native (no model)."),
    api_key: str = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="API key (default $OPENAI_API_KEY)."),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests at a time."),
    rate_limit: float = typer.Option(None, "--rate-limit", help="At most this many requests per second."),
    max_attempts: int = typer.Option(6, "--max-attempts", help="HTTP attempts per call (429, 5xx and timeouts are retried)."),
    parse_retries: int = typer.Option(2, "--parse-retries", help="Corrections sent after an unusable answer."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per request."),
    backoff: float = typer.Option(1.0, "--backoff", help="First back-off in seconds (doubled per attempt)."),
    max_tokens: int = typer.Option(1024, "--max-tokens", help="Answer length limit."),
    temperature: float = typer.Option(0.7, "--temperature"),
    seed: int = typer.Option(0, "--seed", help="Seeds the scenario and question drawn for each record."),
    price_in: float = typer.Option(None, "--price-per-1k-in", help="USD per 1,000 prompt tokens (for the cost in the summary)."),
    price_out: float = typer.Option(None, "--price-per-1k-out", help="USD per 1,000 completion tokens."),
    cache: Path = typer.Option(None, "--cache", help="Answer cache, SQLite (default OUT.cache.sqlite)."),
    min_terms: int = typer.Option(5, "--min-terms", help="Least medical terms in the context (0: no filter)."),
    min_size: int = typer.Option(336, "--min-size", help="Least image width and height in pixels (0: no filter)."),
    classifier: str = typer.Option("heuristic", "--classifier", help="Medical-image classifier: heuristic, none, or package.module:callable."),
    dedup: float = typer.Option(0.95, "--dedup", help="Drop contexts whose embedding cosine with a kept one is >= this."),
    no_dedup: bool = typer.Option(False, "--no-dedup", help="No semantic de-duplication."),
    no_filter: bool = typer.Option(False, "--no-filter", help="No pre-filter at all."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Turn image-text pairs into PubMedVision-style VQA samples with a (vision) LLM: filter, reformat, resume."""
    from medmllm.reformat.engine import EngineConfig, reformat_file
    from medmllm.reformat.filters import FilterConfig, load_classifier

    config = EngineConfig(endpoint=endpoint, model=model, mode=mode, api_key=api_key, concurrency=concurrency, rate_limit=rate_limit,
                          max_attempts=max_attempts, parse_retries=parse_retries, timeout=timeout, backoff=backoff, max_tokens=max_tokens,
                          temperature=temperature, seed=seed, price_per_1k_in=price_in, price_per_1k_out=price_out, cache=cache)
    config.check()
    filters = None if no_filter else FilterConfig(min_terms=min_terms, min_size=min_size, classifier=load_classifier(classifier),
                                                  semantic_threshold=None if no_dedup else dedup)
    with _ProgressBar(disabled=no_progress or not sys.stderr.isatty()) as progress:
        summary = reformat_file(src, out, config, filters, progress=progress)
    typer.echo(_summary_text(summary))


class _ProgressBar:
    """A rich progress bar on stderr as a ``progress(done, total)`` callback (a no-op when disabled)."""

    def __init__(self, disabled: bool):
        self.disabled = disabled

    def __enter__(self):
        if self.disabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress("reformat", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self.bar.start()
        self.task = self.bar.add_task("reformat", total=None)
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if not self.disabled:
            self.bar.stop()


def _summary_text(s: dict) -> str:
    lines = [f"{s['output']}: {s['records_written']} of {s['inputs']} records written ({s['samples_written']} samples; "
             f"{s['resumed']} from an earlier run), mode {s['mode']}, {s['seconds']} s"]
    if s["filtered"]:
        lines.append("filtered: " + ", ".join(f"{k} {v}" for k, v in s["filtered"].items()))
    if s["failed"]:
        lines.append("failed: " + ", ".join(f"{k} {v}" for k, v in s["failed"].items()))
    lines.append(f"requests {s['requests']}, answers {s['completions']}, cache hits {s['cache_hits']}, retries "
                 + (", ".join(f"{k} {v}" for k, v in s["retries"].items()) or "0"))
    tokens = s["tokens"]
    cost = f", cost ${s['cost_usd']:.4f}" if s["cost_usd"] is not None else ""
    lines.append(f"tokens: {tokens['prompt']} in, {tokens['completion']} out{cost}")
    return "\n".join(lines)


def review(
    sources: list[Path] = typer.Argument(..., help="Reformatted JSONL files (one per mode to compare)."),
    out: Path = typer.Option(..., "-o", "--out", help="The review sheet (self-contained HTML)."),
    db: Path = typer.Option(None, "--db", help="Review database, SQLite (default: beside the sheet, .sqlite)."),
    per_mode: int = typer.Option(50, "--per-mode", help="Descriptions sampled per mode (the paper: 90 images x 4 modes)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the sampling and the (blinded) order."),
    instruction: bool = typer.Option(False, "--instruction", help="Also review the instruction-tuning QA pairs of mode mllm."),
) -> None:
    """Write an expert review sheet: each description with its images and four 1-5 scores (Figure 20), modes blinded."""
    from medmllm.reformat.review import write_sheet

    db = db or out.with_suffix(".sqlite")
    sheet_id, n = write_sheet(sources, out, db, per_mode=per_mode, seed=seed, include_instruction=instruction)
    typer.echo(f"wrote {out}: {n} items (sheet {sheet_id}); items registered in {db}")


def review_import(
    scores: list[Path] = typer.Argument(..., help="Score files exported from review sheets (JSON)."),
    db: Path = typer.Option(..., "--db", help="The review database the sheet was written with."),
) -> None:
    """Store the scores exported from a review sheet (re-importing a rater's file replaces their scores)."""
    from medmllm.reformat.review import ReviewStore

    store = ReviewStore(db, create=False)
    for path in scores:
        rater, n = store.import_scores(path)
        typer.echo(f"{path}: {n} scores of rater {rater!r} stored")


def review_summary(
    db: Path = typer.Argument(..., help="The review database."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Mean score per mode and criterion with a 95% t interval (and the number of scores)."""
    from medmllm.reformat.review import ReviewStore

    rows = ReviewStore(db, create=False).summary()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no scores yet")
        return
    typer.echo(f"{'mode':<10} {'task':<14} {'criterion':<13} {'n':>4} {'mean':>5}  95% CI")
    for r in rows:
        ci = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r["ci_low"] is not None else "-"
        typer.echo(f"{r['mode']:<10} {r['task']:<14} {r['criterion']:<13} {r['n']:>4} {r['mean']:>5.2f}  {ci}")
