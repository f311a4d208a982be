"""Expert review of reformatted data on the paper's four criteria (section 4.3, Figure 20), 1-5 each.

    sheet_id, n = write_sheet(["native.jsonl", "mllm.jsonl"], "sheet.html", "review.sqlite", per_mode=90)
    # experts open sheet.html (no server, works offline), score, press "Export scores" -> scores-NAME.json
    ReviewStore("review.sqlite").import_scores("scores-dr-a.json")
    ReviewStore("review.sqlite").summary()   # [{"mode", "task", "criterion", "n", "mean", "ci_low", "ci_high"}]

The sheet is one self-contained HTML page: per item the images (JPEG thumbnails inlined as base64),
the question and the text to judge, and one 1-5 selector per criterion; Figure 20's guidelines on
top. Items are blinded: they appear in a seeded random order under opaque keys (``i0001``...), and
the page holds neither the mode nor the model. The key -> (sample, mode, task, model) table lives
only in the database, written with the sheet. Scores are kept in the browser's localStorage while
rating, and exported as ``{"sheet", "rater", "exported", "scores": {item: {criterion: 1..5}}}``.

Sampling: like the paper (90 images, each described by the four methods), the same records are
drawn for every mode: ``per_mode`` record ids from those present in every file, seeded.

Tables: ``sheets (id, created, path, seed)``, ``items (sheet_id, item, sample_id, record_id, mode,
task, model, source_file)``, ``scores (sheet_id, item, rater, criterion, score, time)``; importing
a rater's file for a sheet again replaces that rater's scores on that sheet.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
import secrets
import sqlite3
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from medmllm.errors import MedMLLMError
from medmllm.reformat.prompts import CRITERIA, CRITERION_KEYS

DESCRIPTION_TASKS = ("alignment-vqa", "caption")  # the samples whose answer is the image description
THUMBNAIL_SIDE = 384

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sheets (id TEXT PRIMARY KEY, created TEXT NOT NULL, path TEXT, seed INTEGER);
CREATE TABLE IF NOT EXISTS items (sheet_id TEXT NOT NULL REFERENCES sheets(id), item TEXT NOT NULL, sample_id TEXT NOT NULL,
    record_id TEXT, mode TEXT, task TEXT, model TEXT, source_file TEXT, PRIMARY KEY (sheet_id, item));
CREATE TABLE IF NOT EXISTS scores (sheet_id TEXT NOT NULL, item TEXT NOT NULL, rater TEXT NOT NULL, criterion TEXT NOT NULL,
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5), time TEXT NOT NULL, PRIMARY KEY (sheet_id, item, rater, criterion),
    FOREIGN KEY (sheet_id, item) REFERENCES items(sheet_id, item));
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ReviewStore:
    """The review database (SQLite, WAL). ``create=False``: the file must exist (a typo is an error)."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise MedMLLMError(f"{self.path}: no such review database (it is written by `medmllm data review`)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise MedMLLMError(f"{self.path}: not a review database ({e})") from None

    def add_sheet(self, sheet_id: str, path: str | Path, seed: int, items: list[dict]) -> None:
        """Register a sheet and its items (dicts with item, sample_id, record_id, mode, task, model, source_file)."""
        with self.db:
            self.db.execute("INSERT INTO sheets VALUES (?, ?, ?, ?)", (sheet_id, _now(), str(path), seed))
            self.db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                [(sheet_id, i["item"], i["sample_id"], i["record_id"], i["mode"], i["task"], i["model"], i["source_file"])
                                 for i in items])

    def import_scores(self, path: str | Path) -> tuple[str, int]:
        """Store one exported score file; returns (rater, number of scores). Every problem is one
        `MedMLLMError` naming the file, and nothing is stored from a bad file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MedMLLMError(f"{path}: not a readable score file ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("scores"), dict):
            raise MedMLLMError(f"{path}: expected {{\"sheet\", \"rater\", \"scores\": {{item: {{criterion: 1-5}}}}}}")
        sheet, rater = data.get("sheet"), data.get("rater")
        if not isinstance(rater, str) or not rater.strip():
            raise MedMLLMError(f"{path}: the rater's name is missing (type it on the sheet before exporting)")
        if self.db.execute("SELECT 1 FROM sheets WHERE id = ?", (sheet,)).fetchone() is None:
            raise MedMLLMError(f"{path}: sheet {sheet!r} is not in {self.path}; import into the database the sheet was written with")
        known = {row[0] for row in self.db.execute("SELECT item FROM items WHERE sheet_id = ?", (sheet,))}
        rows = []
        for item, criteria in data["scores"].items():
            if item not in known:
                raise MedMLLMError(f"{path}: item {item!r} is not on sheet {sheet}")
            if not isinstance(criteria, dict):
                raise MedMLLMError(f"{path}: scores of {item} must be {{criterion: score}}")
            for criterion, score in criteria.items():
                if criterion not in CRITERION_KEYS:
                    raise MedMLLMError(f"{path}: {item}: unknown criterion {criterion!r} (known: {', '.join(CRITERION_KEYS)})")
                if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
                    raise MedMLLMError(f"{path}: {item}.{criterion}: score must be an integer from 1 to 5, got {json.dumps(score)}")
                rows.append((sheet, item, rater.strip(), criterion, score, _now()))
        with self.db:
            self.db.execute("DELETE FROM scores WHERE sheet_id = ? AND rater = ?", (sheet, rater.strip()))
            self.db.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?)", rows)
        return rater.strip(), len(rows)

    def summary(self, confidence: float = 0.95) -> list[dict]:
        """Per (mode, task, criterion): n scores, mean, and the t interval of the mean
        (`medmllm.eval.stats.t_interval`; None with fewer than 2 scores). Every (item, rater) score counts once."""
        import math

        import numpy as np

        from medmllm.eval.stats import t_interval

        values: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        query = "SELECT i.mode, i.task, s.criterion, s.score FROM scores s JOIN items i ON i.sheet_id = s.sheet_id AND i.item = s.item"
        for mode, task, criterion, score in self.db.execute(query):
            values[(mode, task, criterion)].append(score)
        order = {c: k for k, c in enumerate(CRITERION_KEYS)}
        rows = []
        for (mode, task, criterion), v in sorted(values.items(), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2]])):
            low, high = t_interval(np.asarray(v, dtype=float), confidence)
            rows.append({"mode": mode, "task": task, "criterion": criterion, "n": len(v), "mean": round(float(np.mean(v)), 4),
                         "ci_low": None if math.isnan(low) else round(low, 4), "ci_high": None if math.isnan(high) else round(high, 4)})
        return rows


def _thumbnail(path: Path) -> str | None:
    """A JPEG data URI of the image shrunk to THUMBNAIL_SIDE, or None if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_sheet(sources: list[str | Path], out: str | Path, db: str | Path, *, per_mode: int = 50, seed: int = 0,
                include_instruction: bool = False) -> tuple[str, int]:
    """Write the review sheet of ``sources`` (reformatted JSONL, one per mode) and register its
    items in ``db``; returns (sheet id, number of items)."""
    from medmllm.data.io import read_samples

    if per_mode < 1:
        raise MedMLLMError("--per-mode must be >= 1")
    tasks = DESCRIPTION_TASKS + (("vqa",) if include_instruction else ())
    by_mode: dict[str, dict[str, list[tuple[object, Path]]]] = defaultdict(lambda: defaultdict(list))  # mode -> record -> samples
    for source in map(Path, sources):
        for sample in read_samples(source):
            if sample.task in tasks:
                rid = str(sample.meta.get("record_id", sample.id))
                by_mode[str(sample.meta.get("mode", "unknown"))][rid].append((sample, source))
    if not by_mode:
        raise MedMLLMError(f"no reformatted samples ({', '.join(tasks)}) in {', '.join(map(str, sources))}")
    common = sorted(set.intersection(*(set(records) for records in by_mode.values())))
    if not common:
        raise MedMLLMError("the files share no record: the sheet compares the modes on the same records (reformat the same input)")
    rng = random.Random(seed)
    chosen = rng.sample(common, min(per_mode, len(common)))
    picked = [(mode, sample, source) for mode, records in sorted(by_mode.items()) for rid in chosen for sample, source in records[rid]]
    rng.shuffle(picked)
    sheet_id = secrets.token_hex(6)
    items, shown = [], []
    for k, (mode, sample, source) in enumerate(picked, 1):
        key = f"i{k:04d}"
        root = source.resolve().parent
        images = [_thumbnail(Path(ref.path) if Path(ref.path).is_absolute() else root / ref.path) for ref in sample.images]
        question = next(t.text for t in sample.turns if t.role == "user")
        answer = next(t.text for t in reversed(sample.turns) if t.role == "assistant")
        shown.append({"item": key, "images": images, "question": question, "answer": answer})
        items.append({"item": key, "sample_id": sample.id, "record_id": str(sample.meta.get("record_id", sample.id)), "mode": mode,
                      "task": sample.task, "model": sample.meta.get("model"), "source_file": str(source)})
    ReviewStore(db).add_sheet(sheet_id, out, seed, items)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(render_sheet(sheet_id, shown), encoding="utf-8")
    return sheet_id, len(items)


def render_sheet(sheet_id: str, items: list[dict]) -> str:
    """The self-contained HTML page (data inlined as JSON; no network, no external file)."""
    data = json.dumps({"sheet": sheet_id, "criteria": [{"key": k, "name": n, "guide": g} for k, n, g in CRITERIA], "items": items})
    data = data.replace("</", "<\\/")  # the JSON sits in a <script> element
    guides = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(g)}</li>" for _, n, g in CRITERIA)
    return _PAGE.replace("{{GUIDES}}", guides).replace("{{SHEET}}", html.escape(sheet_id)).replace("{{DATA}}", data)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medmllm review sheet {{SHEET}}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
.item{border:1px solid #ccc;border-radius:6px;padding:.8em;margin:1em 0}
.item.done{border-color:#3a3}
.imgs img{max-height:260px;margin-right:.5em;border:1px solid #ddd}
.q{font-weight:600;margin:.4em 0}.a{white-space:pre-wrap;background:#f7f7f7;padding:.5em}
.scores label{margin-right:1.2em}
#bar{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ccc}
</style></head><body>
<h1>Review sheet <code>{{SHEET}}</code></h1>
<p>Please rate each description based on the following criteria (1 to 5), looking at the image(s):</p>
<ol>{{GUIDES}}</ol>
<div id="bar">Rater: <input id="rater" placeholder="your name"> <span id="count"></span>
<button id="export">Export scores</button></div>
<div id="items"></div>
<script type="application/json" id="data">{{DATA}}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const STORE = "medmllm-review-" + DATA.sheet;
const saved = JSON.parse(localStorage.getItem(STORE) || '{"rater": "", "scores": {}}');
const rater = document.getElementById("rater");
rater.value = saved.rater;
function save() { saved.rater = rater.value; localStorage.setItem(STORE, JSON.stringify(saved)); count(); }
function count() {
  let full = 0;
  for (const it of DATA.items) {
    const s = saved.scores[it.item] || {};
    const done = DATA.criteria.every(c => s[c.key]);
    if (done) full++;
    document.getElementById("item-" + it.item).classList.toggle("done", done);
  }
  document.getElementById("count").textContent = full + " / " + DATA.items.length + " items fully scored";
}
const root = document.getElementById("items");
for (const it of DATA.items) {
  const box = document.createElement("div"); box.className = "item"; box.id = "item-" + it.item;
  const head = document.createElement("div"); head.textContent = it.item; box.appendChild(head);
  const imgs = document.createElement("div"); imgs.className = "imgs";
  for (const src of it.images) {
    if (src) { const img = document.createElement("img"); img.src = src; imgs.appendChild(img); }
    else { const span = document.createElement("span"); span.textContent = "[image not readable] "; imgs.appendChild(span); }
  }
  box.appendChild(imgs);
  const q = document.createElement("div"); q.className = "q"; q.textContent = it.question; box.appendChild(q);
  const a = document.createElement("div"); a.className = "a"; a.textContent = it.answer; box.appendChild(a);
  const scores = document.createElement("div"); scores.className = "scores";
  for (const c of DATA.criteria) {
    const label = document.createElement("label"); label.textContent = c.name + " ";
    const select = document.createElement("select"); select.name = it.item + "." + c.key; select.title = c.guide;
    for (const v of ["", "1", "2", "3", "4", "5"]) { const o = document.createElement("option"); o.value = v; o.textContent = v || "-"; select.appendChild(o); }
    select.value = String((saved.scores[it.item] || {})[c.key] || "");
    select.addEventListener("change", () => {
      const s = saved.scores[it.item] = saved.scores[it.item] || {};
      if (select.value) s[c.key] = Number(select.value); else delete s[c.key];
      save();
    });
    label.appendChild(select); scores.appendChild(label);
  }
  box.appendChild(scores); root.appendChild(box);
}
rater.addEventListener("input", save);
document.getElementById("export").addEventListener("click", () => {
  if (!rater.value.trim()) { alert("Type your name first."); rater.focus(); return; }
  const out = {sheet: DATA.sheet, rater: rater.value.trim(), exported: new Date().toISOString(), scores: saved.scores};
  const blob = new Blob([JSON.stringify(out, null, 1)], {type: "application/json"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "scores-" + DATA.sheet + "-" + rater.value.trim().replace(/[^A-Za-z0-9_-]+/g, "_") + ".json";
  document.body.appendChild(link); link.click(); link.remove();
});
count();
</script></body></html>
"""
