"""The review sheet (blinded, self-contained), the score import and the per-mode summary."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from medmllm.errors import MedMLLMError
from medmllm.reformat.engine import EngineConfig, reformat_file
from medmllm.reformat.prompts import CRITERION_KEYS
from medmllm.reformat.review import ReviewStore, write_sheet
from tests.eval.fake_openai import FakeOpenAI
from tests.reformat import GOOD_ANSWER, make_records

CHROMIUM = Path(os.environ.get("MEDMLLM_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="module")
def two_modes(tmp_path_factory):
    """The same 5 records reformatted in modes native and mllm."""
    folder = tmp_path_factory.mktemp("review")
    src = make_records(folder, 5)
    reformat_file(src, folder / "native.jsonl", EngineConfig(mode="native"))
    with FakeOpenAI(lambda r: json.dumps(GOOD_ANSWER), model="secret-model") as server:
        reformat_file(src, folder / "mllm.jsonl", EngineConfig(endpoint=server.base_url, model="secret-model"))
    return folder


def data_of(page: str) -> dict:
    start = page.index('<script type="application/json" id="data">') + len('<script type="application/json" id="data">')
    return json.loads(page[start: page.index("</script>", start)])


def test_sheet_is_blinded_and_registered(two_modes, tmp_path):
    sheet, n = write_sheet([two_modes / "native.jsonl", two_modes / "mllm.jsonl"], tmp_path / "sheet.html", tmp_path / "r.sqlite", per_mode=3, seed=1)
    page = (tmp_path / "sheet.html").read_text()
    data = data_of(page)
    assert n == 6 and len(data["items"]) == 6 and data["sheet"] == sheet
    assert all(item["images"][0].startswith("data:image/jpeg;base64,") for item in data["items"])
    for word in ("native", "mllm", "secret-model", "reformat:", "/alignment", "/caption"):  # neither mode, model nor sample id on the page
        assert not re.search(rf"(?<![a-z]){re.escape(word)}", page), word
    rows = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT item, record_id, mode, task FROM items ORDER BY item").fetchall()
    assert sorted(r[2] for r in rows) == ["mllm"] * 3 + ["native"] * 3
    assert len({r[1] for r in rows}) == 3 and {r[1] for r in rows if r[2] == "mllm"} == {r[1] for r in rows if r[2] == "native"}  # same records
    assert {r[3] for r in rows} == {"alignment-vqa", "caption"}
    modes_in_page_order = [dict((r[0], r[2]) for r in rows)[item["item"]] for item in data["items"]]
    assert modes_in_page_order != sorted(modes_in_page_order)  # shuffled, not grouped by mode


def test_import_and_summary_match_scipy(two_modes, tmp_path):
    db = tmp_path / "r.sqlite"
    sheet, _ = write_sheet([two_modes / "native.jsonl", two_modes / "mllm.jsonl"], tmp_path / "s.html", db, per_mode=5)
    modes = dict(sqlite3.connect(db).execute("SELECT item, mode FROM items").fetchall())
    rng = np.random.default_rng(0)
    expected: dict[tuple[str, str], list[int]] = {}
    for rater in ("dr-a", "dr-b"):
        scores = {}
        for item, mode in modes.items():
            scores[item] = {c: int(rng.integers(1, 6)) for c in CRITERION_KEYS}
            for c, v in scores[item].items():
                expected.setdefault((mode, c), []).append(v)
        (tmp_path / f"{rater}.json").write_text(json.dumps({"sheet": sheet, "rater": rater, "scores": scores}))
    store = ReviewStore(db)
    assert store.import_scores(tmp_path / "dr-a.json") == ("dr-a", 40)
    assert store.import_scores(tmp_path / "dr-b.json") == ("dr-b", 40)
    assert store.import_scores(tmp_path / "dr-b.json") == ("dr-b", 40)  # again: replaces, does not add
    rows = store.summary()
    assert len(rows) == 8 and [r["criterion"] for r in rows[:4]] == list(CRITERION_KEYS)
    for row in rows:
        v = np.array(expected[(row["mode"], row["criterion"])], float)
        low, high = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        assert row["n"] == 10 and row["mean"] == pytest.approx(v.mean(), abs=1e-4)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


@pytest.mark.parametrize("change, message", [
    ({"rater": ""}, "rater's name is missing"),
    ({"sheet": "nope"}, "sheet 'nope' is not in"),
    ({"scores": {"i9999": {"accuracy": 3}}}, "item 'i9999' is not on sheet"),
    ({"scores": {"i0001": {"accuracy": 6}}}, "score must be an integer from 1 to 5, got 6"),
    ({"scores": {"i0001": {"accuracy": True}}}, "score must be an integer"),
    ({"scores": {"i0001": {"usefulness": 3}}}, "unknown criterion 'usefulness'"),
])
def test_bad_score_files_store_nothing(two_modes, tmp_path, change, message):
    db = tmp_path / "r.sqlite"
    sheet, _ = write_sheet([two_modes / "mllm.jsonl"], tmp_path / "s.html", db, per_mode=2)
    good = {"sheet": sheet, "rater": "dr-a", "scores": {"i0002": {"accuracy": 4}}}
    (tmp_path / "bad.json").write_text(json.dumps({**good, **change}))
    store = ReviewStore(db)
    with pytest.raises(MedMLLMError, match=message):
        store.import_scores(tmp_path / "bad.json")
    assert store.summary() == []
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(MedMLLMError, match="not a readable score file"):
        store.import_scores(tmp_path / "junk.json")
    with pytest.raises(MedMLLMError, match="no such review database"):
        ReviewStore(tmp_path / "missing.sqlite", create=False)


def test_sheet_needs_shared_records(two_modes, tmp_path):
    other = make_records(tmp_path, 1, name="other.jsonl")
    reformat_file(other, tmp_path / "n.jsonl", EngineConfig(mode="native"))
    lines = [json.loads(x) for x in (tmp_path / "n.jsonl").read_text().splitlines()]
    for line in lines:
        line["meta"]["record_id"] = "elsewhere"
    (tmp_path / "n.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(MedMLLMError, match="share no record"):
        write_sheet([two_modes / "mllm.jsonl", tmp_path / "n.jsonl"], tmp_path / "s.html", tmp_path / "r.sqlite")


@pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} not found: the browser test needs Debian's chromium")
def test_sheet_in_a_browser_exports_importable_scores(two_modes, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")
    db = tmp_path / "r.sqlite"
    sheet, n = write_sheet([two_modes / "native.jsonl", two_modes / "mllm.jsonl"], tmp_path / "sheet.html", db, per_mode=2)
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context(accept_downloads=True).new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((tmp_path / "sheet.html").as_uri())
        assert page.locator("select").count() == n * 4
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        page.select_option("select[name='i0001.accuracy']", "5")
        page.select_option("select[name='i0001.practicality']", "2")
        page.select_option("select[name='i0002.relevance']", "3")
        page.fill("#rater", "dr-a")
        page.reload()  # scores survive a reload (localStorage)
        assert page.input_value("select[name='i0001.accuracy']") == "5" and page.input_value("#rater") == "dr-a"
        with page.expect_download() as download:
            page.click("#export")
        path = tmp_path / "scores.json"
        download.value.save_as(path)
        browser.close()
    assert not errors
    exported = json.loads(path.read_text())
    assert exported["sheet"] == sheet and exported["scores"] == {"i0001": {"accuracy": 5, "practicality": 2}, "i0002": {"relevance": 3}}
    assert ReviewStore(db).import_scores(path) == ("dr-a", 3)
