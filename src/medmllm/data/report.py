"""The build report: ``report.json`` for programs, ``report.html`` (with plots) for people."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from medmllm.scans.write import atomic_path


def _bar_chart(title: str, series: dict[str, dict[str, int]], top: int = 25) -> str:
    """A horizontal bar chart of one or more named distributions, as a base64 PNG <img>."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(dict.fromkeys(k for counts in series.values() for k in sorted(counts, key=counts.get, reverse=True)))[:top]
    if not names:
        return ""
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1.2), dpi=100)
    height = 0.8 / len(series)
    y = np.arange(len(names))
    for i, (label, counts) in enumerate(series.items()):
        ax.barh(y + i * height, [counts.get(n, 0) for n in names], height=height, label=label)
    ax.set_yticks(y + height * (len(series) - 1) / 2, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("samples")
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _table(rows: list[tuple], header: tuple) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_build_report(report: dict, out: Path) -> None:
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    parts = [f"<h1>Data build: {html.escape(report['name'])}</h1>", f"<p>{report.get('seconds', '?')} s</p>", "<h2>Steps</h2>"]
    parts.append(_table([(name, step.get("samples", ""), "yes" if step.get("cached") else "", ", ".join(f"{k}: {v}" for k, v in step.get("dropped", {}).items()))
                         for name, step in report["steps"].items()], ("step", "samples out", "cached", "dropped")))
    parts.append("<h2>Dropped records, by reason</h2>")
    parts.append(_table(sorted(report["dropped"].items(), key=lambda kv: -kv[1]), ("reason", "records")) if report["dropped"] else "<p>none</p>")
    for name, stage in report["stages"].items():
        parts.append(f"<h2>Stage {html.escape(name)}: {stage['samples']} samples</h2>")
        for key, title in (("task", "tasks"), ("source", "sources"), ("disease", "disease categories")):
            before, after = stage["before"][key], stage["after"][key]
            series = {"before balancing": before, "after balancing": after} if stage.get("balance") else {"samples": after}
            parts.append(_bar_chart(f"{name}: {title}", series))
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report['name'])}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
