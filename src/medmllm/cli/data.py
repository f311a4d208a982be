"""``medmllm data``: clinical data and public datasets -> training samples (JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medmllm.cli.data_reformat import reformat, review, review_import, review_summary

app = typer.Typer(help="Data: import/export formats, de-identify, deduplicate, statistics, build stage datasets.", no_args_is_help=True)


def _options(pairs: list[str] | None) -> dict:
    """KEY=VALUE pairs -> dict (values parsed as JSON when they are, else kept as text)."""
    from medmllm.errors import MedMLLMError

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MedMLLMError(f"--option {pair!r} is not KEY=VALUE")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


@app.command("import")
def import_(
    fmt: str = typer.Argument(..., help="llava, sharegpt, vqa-rad, slake, pathvqa, pmc-vqa, r2gen, radfm-csv, hf, medmllm."),
    src: Path = typer.Argument(..., help="The dataset file or folder in its published layout."),
    out: Path = typer.Option(..., "-o", "--out", help="Output JSONL of samples."),
    image_root: Path = typer.Option(None, "--image-root", help="Where the dataset's image paths start (default: beside SRC)."),
    option: list[str] = typer.Option(None, "--option", help="Format option KEY=VALUE (repeatable), e.g. --option lang=zh."),
    drop_missing: bool = typer.Option(False, "--drop-missing", help="Leave out samples whose image files are missing (counted)."),
) -> None:
    """Import a dataset into medmllm's sample format; missing image files are listed."""
    from medmllm.data.formats import import_samples
    from medmllm.data.io import write_samples

    options = _options(option)
    if image_root is not None:
        options["image_root"] = str(image_root)
    stream = import_samples(fmt, src, check_images=True, drop_missing=drop_missing, relative_to=out.resolve().parent, **options)
    n = write_samples(out, stream)
    typer.echo(f"wrote {n} samples to {out}")
    if stream.missing is not None and stream.missing.files:
        typer.echo(stream.missing.summary(), err=True)


@app.command("export")
def export(
    fmt: str = typer.Argument(..., help="llava, sharegpt or medmllm."),
    src: Path = typer.Argument(..., help="Input JSONL of samples."),
    out: Path = typer.Option(..., "-o", "--out", help="Output file."),
    option: list[str] = typer.Option(None, "--option", help="Format option KEY=VALUE (repeatable)."),
) -> None:
    """Export samples to another format."""
    from medmllm.data.formats import export_samples
    from medmllm.data.io import read_samples

    n = export_samples(fmt, read_samples(src), out, **_options(option))
    typer.echo(f"wrote {n} samples to {out} ({fmt})")


@app.command()
def validate(src: Path = typer.Argument(..., help="JSONL of samples.")) -> None:
    """Check every line; list every problem with its line number (exit 1 if any)."""
    from medmllm.data.io import read_samples

    errors: list[str] = []
    n = sum(1 for _ in read_samples(src, skip_invalid=True, errors=errors))
    for e in errors[:50]:
        typer.echo(e, err=True)
    typer.echo(f"{n} valid samples, {len(errors)} invalid line(s)")
    if errors:
        raise typer.Exit(1)


@app.command()
def deid(
    src: Path = typer.Argument(..., help="JSONL of samples (reports, records)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output JSONL."),
    salt: str = typer.Option(None, "--salt", envvar="MEDMLLM_DEID_SALT", help="Secret keying date shifts and pseudonyms (same as `scan deid`)."),
    dates: str = typer.Option("shift", "--dates", help="shift: per-patient consistent shift; remove: [DATE]."),
) -> None:
    """De-identify the text of samples (HIPAA Safe Harbor rules; see docs/vocabulary.md and the module docs).

    Prints what was replaced, by category, never the values.
    """
    from medmllm.data.deid_text import TextDeidentifier
    from medmllm.data.io import read_samples, write_samples
    from medmllm.errors import MedMLLMError

    if dates not in ("shift", "remove"):
        raise MedMLLMError(f"--dates must be 'shift' or 'remove', got {dates!r}")
    deidentifier = TextDeidentifier(salt, shift_dates=dates == "shift")
    write_samples(out, deidentifier.deidentify_samples(read_samples(src)))
    typer.echo(f"{out}: {deidentifier.summary}")


@app.command()
def dedup(
    src: Path = typer.Argument(..., help="JSONL of samples."),
    out: Path = typer.Option(..., "-o", "--out", help="Output JSONL of the kept samples."),
    threshold: float = typer.Option(0.85, help="Jaccard threshold (P2Med: 0.85)."),
    ngram: int = typer.Option(5, help="Word n-gram size (P2Med: 5)."),
    bands: int = typer.Option(256, help="LSH bands (P2Med: 256)."),
    rows: int = typer.Option(16, help="LSH rows per band (P2Med: 16)."),
    text: str = typer.Option("output", help="What is compared: output (the ground truth) or conversation (every turn)."),
    semantic: float = typer.Option(None, "--semantic", help="Also drop semantic duplicates at this cosine (all-MiniLM-L6-v2)."),
    dropped_out: Path = typer.Option(None, "--dropped", help="Write (id, kept_id) of dropped samples here (JSONL)."),
) -> None:
    """Near-duplicate removal (MinHash + LSH), and optionally semantic duplicates; keeps the first of each cluster."""
    from medmllm.data.curate.dedup import conversation_text, near_duplicate_clusters, output_text
    from medmllm.data.io import read_samples, write_jsonl, write_samples
    from medmllm.errors import MedMLLMError

    if text not in ("output", "conversation"):
        raise MedMLLMError(f"--text must be 'output' or 'conversation', got {text!r}")
    text_of = output_text if text == "output" else conversation_text
    samples = list(read_samples(src))
    texts = [text_of(s) for s in samples]
    clusters = near_duplicate_clusters(texts, ngram=ngram, threshold=threshold, bands=bands, rows=rows)
    reason = {i: "near-duplicate" for i, c in enumerate(clusters) if int(c) != i}
    target = {i: int(c) for i, c in enumerate(clusters) if int(c) != i}
    if semantic is not None:
        from medmllm.data.curate.semantic import semantic_duplicate_clusters

        kept = [i for i in range(len(samples)) if i not in reason]
        sem = semantic_duplicate_clusters([texts[i] for i in kept], threshold=semantic)
        for j, c in enumerate(sem):
            if int(c) != j:
                reason[kept[j]], target[kept[j]] = "semantic-duplicate", kept[int(c)]
    n = write_samples(out, (s for i, s in enumerate(samples) if i not in reason))
    if dropped_out is not None:
        write_jsonl(dropped_out, ({"id": samples[i].id, "kept_id": samples[target[i]].id, "reason": reason[i]} for i in sorted(reason)))
    counts = {r: list(reason.values()).count(r) for r in set(reason.values())}
    typer.echo(f"kept {n} of {len(samples)}; dropped {counts or 0}")


@app.command()
def stats(
    src: Path = typer.Argument(..., help="JSONL of samples."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Counts per task, source, split and modality; images; turns; output lengths; disease categories."""
    from medmllm.data.stats import dataset_stats

    result = dataset_stats(src)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{result['samples']} samples, {result['images']} images, {result['turns']} turns")
    for key in ("task", "source", "split", "modality", "disease"):
        top = ", ".join(f"{k}: {v}" for k, v in list(result[key].items())[:12])
        typer.echo(f"{key:<9} {top}")
    lengths = result["output_words"]
    typer.echo(f"output words: median {lengths['p50']}, p90 {lengths['p90']}, max {lengths['max']}")


@app.command("build")
def build_(
    recipe: Path = typer.Argument(..., help="A data build recipe (YAML); see docs/data.md."),
    force: bool = typer.Option(False, "--force", help="Redo every step, even those whose inputs did not change."),
) -> None:
    """Raw sources -> stage datasets (import, de-identify, filter, dedup, conversations, balance), resumable, with a report."""
    from medmllm.data.build import build

    report = build(recipe, force=force, log=lambda line: typer.echo(line))
    typer.echo(f"done in {report['seconds']} s; dropped {report['dropped'] or 'nothing'}; report.html and report.json written")


app.command("reformat")(reformat)
app.command("review")(review)
app.command("review-import")(review_import)
app.command("review-summary")(review_summary)
