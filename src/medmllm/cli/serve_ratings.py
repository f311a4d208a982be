"""``medmllm serve raters`` and ``medmllm serve ratings``: the rating database of the rating page.

    medmllm serve raters add DB --name NAME [--ask]       (prints a random password, or asks for one)
    medmllm serve raters reset DB --name NAME [--ask]     (new password; their sessions end)
    medmllm serve raters list DB
    medmllm serve ratings load DB ITEMS.jsonl
    medmllm serve ratings load DB --run out/model-a --run out/model-b [--per-task 400]
    medmllm serve ratings export DB -o FILE.csv|.json|.jsonl

DB is an SQLite file (created on first use); ``medmllm serve`` reads the same file (docs/serving.md).
"""

from __future__ import annotations

from pathlib import Path

import typer

raters_app = typer.Typer(help="Rater accounts of the rating page.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
ratings_app = typer.Typer(help="Items to rate and the ratings given.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

_DB = typer.Argument(..., metavar="DB", help="The rating database (SQLite file, created on first use).")


@raters_app.command("add")
def add_rater(
    db: Path = _DB,
    name: str = typer.Option(..., "--name", help="The rater's sign-in name (no spaces)."),
    ask: bool = typer.Option(False, "--ask", help="Ask for the password (hidden, twice) instead of printing a random one."),
) -> None:
    """Create a rater; the password is stored as a salted scrypt hash and shown only now."""
    from medmllm.serve.ratings import RatingStore

    password = typer.prompt("password", hide_input=True, confirmation_prompt=True) if ask else None
    password = RatingStore(db).add_rater(name, password)
    typer.echo(f"rater {name} added to {db}")
    if not ask:
        typer.echo(f"password: {password}")


@raters_app.command("reset")
def reset_password(
    db: Path = _DB,
    name: str = typer.Option(..., "--name", help="The rater's sign-in name."),
    ask: bool = typer.Option(False, "--ask", help="Ask for the new password instead of printing a random one."),
) -> None:
    """Give a rater a new password; their open sessions end."""
    from medmllm.serve.ratings import RatingStore

    password = typer.prompt("new password", hide_input=True, confirmation_prompt=True) if ask else None
    password = RatingStore(db, create=False).reset_password(name, password)
    typer.echo(f"password of {name} reset")
    if not ask:
        typer.echo(f"password: {password}")


@raters_app.command("list")
def list_raters(db: Path = _DB) -> None:
    """The raters' ids and names."""
    from medmllm.serve.ratings import RatingStore

    for rater in RatingStore(db, create=False).raters():
        typer.echo(f"{rater.id}\t{rater.name}")


@ratings_app.command("load")
def load(
    db: Path = _DB,
    items: Path = typer.Argument(None, metavar="[ITEMS.jsonl]", help='Rows {"id", "images": [paths], "question", "reference", "outputs": {"model": "text"}, "task"?}.'),
    run: list[Path] = typer.Option(None, "--run", help="A `medmllm eval run` output folder (repeat, one per model; the folder name names the model)."),
    per_task: int = typer.Option(None, "--per-task", min=1, help="With --run: a random sample of this many items per task family (RadFM: 400)."),
    seed: int = typer.Option(0, "--seed", help="With --per-task: the sampling seed."),
) -> None:
    """Load items to rate from a JSONL (image paths relative to its folder), or from the output
    folders of `medmllm eval run` of several models on one benchmark (open-ended tasks only)."""
    from medmllm.errors import MedMLLMError
    from medmllm.serve.ratings import RatingStore

    if (items is None) == (not run):
        raise MedMLLMError("give either ITEMS.jsonl or --run folders (two or more)")
    store = RatingStore(db)
    added, kept = store.load_items(items) if items is not None else store.load_runs(run, per_task=per_task, seed=seed)
    typer.echo(f"loaded {added} item(s) into {db}" + (f"; {kept} already there" if kept else ""))


@ratings_app.command("export")
def export(
    db: Path = _DB,
    out: Path = typer.Option(..., "-o", "--out", help="FILE.csv, FILE.json or FILE.jsonl (by suffix)."),
) -> None:
    """Write every rating (rater_id, rater, item_id, task, model, score, time) to a file."""
    from medmllm.serve.ratings import RatingStore

    n = RatingStore(db, create=False).export(out)
    typer.echo(f"wrote {n} rating(s) to {out}")
