"""``medmllm eval label REPORTS.jsonl [-o OUT.jsonl]``: CheXpert-style labels of report text.

Rows ``{"id": ..., "text": "..."}`` in; rows ``{"id": ..., "labels": {observation: 1 | 0 | -1 | null}}``
out, the 14 observations in CheXpert's order (1 positive, 0 negative, -1 uncertain, null not
mentioned). To stdout, or to OUT written atomically (nothing is written when a row is bad).
"""

from __future__ import annotations

from pathlib import Path

import typer


def label_command(
    reports: Path = typer.Argument(..., help='JSONL of {"id": ..., "text": "..."} rows.'),
    out: Path = typer.Option(None, "-o", "--out", help="Output JSONL (default: stdout)."),
) -> None:
    """Label reports with the rule-based CheXpert-style labeler (14 observations; no model, no download)."""
    import json

    from medmllm.data.io import read_jsonl, write_jsonl
    from medmllm.errors import MedMLLMError
    from medmllm.eval.labeler import label_report

    rows = []
    for number, row in read_jsonl(reports):
        if "id" not in row:
            raise MedMLLMError(f"{reports}:{number}: a row needs an \"id\"")
        if not isinstance(row.get("text"), str):
            raise MedMLLMError(f"{reports}:{number}: a row needs a \"text\" string")
        rows.append({"id": row["id"], "labels": label_report(row["text"])})
    if out is None:
        for row in rows:
            typer.echo(json.dumps(row, ensure_ascii=False))
    else:
        write_jsonl(out, rows)
        typer.echo(f"labelled {len(rows)} reports -> {out}", err=True)
