"""``medmllm eval ratings DB``: human rating scores per model with 95% CIs, and agreement between raters."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def ratings_command(
    db: Path = typer.Argument(..., metavar="DB", help="The rating database of `medmllm serve` (SQLite)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Mean score (0-5, RadFM's rubric) per task and model with item-clustered 95% CIs;
    Krippendorff's alpha (interval, ordinal) and ICC(2,1) between raters."""
    from medmllm.errors import MedMLLMError
    from medmllm.serve.ratings import RatingStore, summarize

    rows = RatingStore(db, create=False).ratings()
    if not rows:
        raise MedMLLMError(f"{db}: no ratings yet")
    result = summarize(rows)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return

    def num(x: float | None, digits: int = 2) -> str:
        return "n/a" if x is None else f"{x:.{digits}f}"

    typer.echo(f"{result['ratings']} ratings by {result['raters']} rater(s)")
    for task in result["tasks"]:
        typer.echo(f"\ntask: {task['task'] or '(none)'}")
        typer.echo(f"  {'model':<24} {'n':>5} {'items':>5} {'mean':>5}  95% CI          counts 0..5")
        for m in task["models"]:
            ci = f"[{num(m['ci'][0])}, {num(m['ci'][1])}]"
            typer.echo(f"  {m['model']:<24} {m['n']:>5} {m['items']:>5} {num(m['mean']):>5}  {ci:<15} {' '.join(map(str, m['counts']))}")
        a = task["agreement"]
        typer.echo(
            f"  agreement ({a['raters']} raters, {a['pairable_units']} of {a['units']} outputs rated twice or more): "
            f"Krippendorff's alpha interval {num(a['krippendorff_alpha_interval'], 3)}, ordinal {num(a['krippendorff_alpha_ordinal'], 3)}; "
            f"ICC(2,1) {num(a['icc_2_1'], 3)} over {a['complete_units']} outputs every rater scored"
        )
