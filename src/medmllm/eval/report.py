"""``report.html`` of an evaluation run: one self-contained page (plots as base64 PNG).

Sections: the run (model, benchmark, counts, judge); every family's metrics with 95% CIs (table
and plot); breakdowns by modality, 2D/3D, dataset and task (tables, and a plot of the family's
headline metric); skipped metrics and failures; qualitative examples (best, median and worst
sample by the headline metric) with a thumbnail of each image (`medmllm.eval.adapters.scan_image`:
2D as is, 3D as a slice mosaic). Tables and count charts use the helpers of the data build
report (`medmllm.data.report`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from medmllm.data.report import _bar_chart, _table
from medmllm.scans.write import atomic_path

STYLE = ("body{font-family:sans-serif;max-width:72em;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top}"
         ".ex td{max-width:28em;white-space:pre-wrap}.ex img{max-width:160px}.err{color:#a00}")
EXAMPLES = 3
THUMBNAIL = 160


def _fmt(entry: dict) -> str:
    value, (lo, hi) = entry.get("value"), entry.get("ci95", [None, None])
    if value is None:
        return "n/a"
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{value:.3f}{ci}"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _ci_chart(title: str, entries: dict[str, dict]) -> str:
    """Horizontal bars of values with their 95% CIs as error bars, as an <img>."""
    entries = {k: e for k, e in entries.items() if e.get("value") is not None}
    if not entries:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(entries)
    values = np.array([entries[n]["value"] for n in names])
    lo = np.array([e["ci95"][0] if e["ci95"][0] is not None else e["value"] for e in entries.values()])
    hi = np.array([e["ci95"][1] if e["ci95"][1] is not None else e["value"] for e in entries.values()])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2), dpi=100)
    ax.barh(np.arange(len(names)), values, xerr=np.vstack([np.clip(values - lo, 0, None), np.clip(hi - values, 0, None)]), capsize=3)
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title + " (95% CI)", fontsize=10)
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{_png(fig)}">'


def _thumbnail(path: str) -> str:
    from medmllm.eval.adapters import image_data_uri, scan_image

    try:
        return f'<img alt="scan" src="{image_data_uri(scan_image(path, THUMBNAIL))}">'
    except Exception:  # a report is still written when an image cannot be read
        return "<i>(image not readable)</i>"


def _headline(family: dict) -> str | None:
    metrics = family["metrics"]
    primary = family.get("primary", "")
    for name in metrics:
        if name == primary or name.endswith("/" + primary):
            return name
    return next(iter(metrics), None)


def _examples(result, metric: str | None) -> str:
    """Best, median and worst samples by ``metric`` (or the first ones), with thumbnails."""
    from medmllm.eval.tasks import FAMILIES
    from medmllm.eval.tasks.base import question_text

    n = len(result.samples)
    if n == 0:
        return ""
    order = list(range(n))
    values = result.scores.scores[metric].per_sample if metric in result.scores.scores else np.full(n, math.nan)
    if metric is not None and np.isfinite(values).any():
        finite = [i for i in order if math.isfinite(values[i])]
        finite.sort(key=lambda i: -values[i])
        picks = list(dict.fromkeys([finite[0], finite[len(finite) // 2], finite[-1]]))
    else:
        picks = order[:EXAMPLES]
    family = FAMILIES[result.family]
    rows = []
    for i in picks[:EXAMPLES]:
        sample = result.samples[i]
        images = "".join(_thumbnail(ref.path) for ref in sample.images[:4]) or "<i>text only</i>"
        value = values[i] if metric is not None else math.nan
        cells = [images, html.escape(sample.id), html.escape(question_text(sample)[:600]), html.escape(family.reference(sample)[:600]),
                 html.escape(result.predictions[i][:600]) or "<i>(empty)</i>", f"{metric}: {value:.3f}" if math.isfinite(value) else ""]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("images", "id", "question", "reference", "prediction", "score"))
    return f"<table class='ex'><tr>{head}</tr>{''.join(rows)}</table>"


def render_report(document: dict[str, Any], results: dict) -> str:
    """The HTML page of a metrics.json document (``results``: the runner's FamilyResults, for examples)."""
    run = document["run"]
    parts = [f"<h1>Evaluation: {html.escape(str(run['bench_name']))}</h1>"]
    model = ", ".join(f"{k}: {v}" for k, v in run["model"].items())
    parts.append(_table([("model", model), ("benchmark", run["bench"]), ("samples", run["samples"]), ("scored", run["scored"]),
                         ("failures (not scored)", run["failures"]), ("judge", run["judge"]),
                         ("versions", ", ".join(f"{k} {v}" for k, v in run["versions"].items()))], ("", "")))
    tasks = document["tasks"]
    parts.append(_bar_chart("samples by task family", {"scored": {k: t["n"] for k, t in tasks.items()},
                                                       "failed": {k: t["failures"] for k, t in tasks.items()}}))
    parts.append("<h2>Metrics (value [95% CI])</h2>")
    rows = [(family, metric, _fmt(e), e["n"], e["ci_method"], e["signature"]) for family, t in tasks.items() for metric, e in t["metrics"].items()]
    parts.append(_table(rows, ("task family", "metric", "value [95% CI]", "n", "CI", "definition")) if rows else "<p>nothing scored</p>")
    for family, t in tasks.items():
        parts.append(f"<h2>{html.escape(family)}: {t['n']} scored, {t['failures']} failed, {t['empty_predictions']} empty</h2>")
        parts.append(f"<p>{html.escape(t['description'])}</p>")
        parts.append(_ci_chart(family, t["metrics"]))
        if t["skipped_metrics"]:
            parts.append(_table(sorted(t["skipped_metrics"].items()), ("not computed", "why")))
        headline = _headline(t)
        for facet, groups in t["breakdowns"].items():
            names = list(t["metrics"])
            parts.append(f"<h3>by {facet}</h3>")
            parts.append(_table([(key, g["n"], *(_fmt(g["metrics"][m]) for m in names)) for key, g in groups.items()], (facet, "n", *names)))
            if headline and len(groups) > 1:
                parts.append(_ci_chart(f"{family}: {headline} by {facet}", {k: g["metrics"][headline] for k, g in groups.items()}))
        if family in results:
            parts.append("<h3>Examples</h3>" + _examples(results[family], headline))
    if document.get("failures"):
        parts.append(f"<h2 class='err'>Failures ({run['failures']})</h2>")
        parts.append(_table([(f["id"], f["error"]) for f in document["failures"]], ("id", "error")))
    title = html.escape(f"Evaluation: {run['bench_name']}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"


def write_report(path: Path, document: dict[str, Any], results: dict) -> None:
    page = render_report(document, results)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")


__all__ = ["render_report", "write_report"]
