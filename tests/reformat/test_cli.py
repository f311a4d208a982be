"""`medmllm data reformat` / `review*` as a user runs them: a flaky server, a killed run resumed,
one-line errors, and `medmllm serve` (the tiny preset) as the endpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

from medmllm.data import read_samples
from tests.eval.fake_openai import FakeOpenAI, HTTPError
from tests.reformat import GOOD_ANSWER, make_records, record_of
from tests.serve.conftest import MODEL_ID, served  # noqa: F401 - the `served` fixture: medmllm serve with the tiny preset

GOOD = json.dumps(GOOD_ANSWER)
COMMAND = [sys.executable, "-m", "medmllm", "data"]


def run(*args, check=True):
    proc = subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def flaky(delay: float):
    """20% of calls 429 or 500, 15% broken JSON (10% repairable, 5% not), each call ``delay`` s."""
    rng, lock = random.Random(3), threading.Lock()

    def respond(request):
        time.sleep(delay)
        with lock:
            roll = rng.random()
        if roll < 0.1:
            raise HTTPError(429, "rate limited")
        if roll < 0.2:
            raise HTTPError(500, "internal error")
        if roll < 0.3:
            return GOOD[:-30]  # cut short: repaired
        if roll < 0.35:
            return "Sorry, here is a description instead of JSON."
        return GOOD

    return respond


def test_killed_run_resumes_with_one_pair_per_input(tmp_path):
    src = make_records(tmp_path, 10)
    out = tmp_path / "out.jsonl"
    args = [*COMMAND, "reformat", str(src), "-o", str(out), "--model", "m", "--no-filter", "--backoff", "0.01", "--concurrency", "2"]
    with FakeOpenAI(flaky(0.08), model="m") as server:
        proc = subprocess.Popen([*args, "--endpoint", server.base_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_file() and len(out.read_text().splitlines()) >= 6:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        written = {json.loads(line)["meta"]["record_id"] for line in out.read_text().splitlines() if line.endswith("}")}
        assert 3 <= len(written) < 10
        time.sleep(0.5)  # requests the killed run had sent are still reaching the server
        first_calls = len(server.requests)
        second = run(*args[4:], "--endpoint", server.base_url)
        again = Counter(record_of(r) for r in server.requests[first_calls:])
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert "10 of 10 records written" in second.stdout
    assert summary["resumed"] >= len(written) - 1 and summary["records_written"] == 10 and summary["failed"] == {}
    assert not set(again) & written  # no paid call repeated for a record already written
    assert summary["requests"] == sum(again.values())
    samples = list(read_samples(out))
    assert [s.id for s in samples] == [f"r{i}/{kind}" for i in range(10) for kind in ("alignment", "instruction")]


def test_cli_summary_filters_and_errors(tmp_path):
    src = make_records(tmp_path, 3)
    rows = [json.loads(x) for x in src.read_text().splitlines()] + [{"id": "chart", "images": ["img/0-0.png"], "context": "Figure 2: a chart."}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeOpenAI(lambda r: GOOD, model="m") as server:
        proc = run("reformat", src, "-o", tmp_path / "o.jsonl", "--endpoint", server.base_url, "--model", "m", "--no-dedup",
                   "--price-per-1k-in", "0.01", "--no-progress")
    assert "3 of 4 records written (6 samples" in proc.stdout and "filtered: too-few-medical-terms 1" in proc.stdout
    assert "cost $0.0000" in proc.stdout  # the fake reports no usage: 0 tokens
    bad = run("reformat", src, "-o", tmp_path / "x.jsonl", "--mode", "gpt", check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: --mode must be one of native, llm, distill, mllm, got 'gpt'"
    bad = run("reformat", tmp_path / "missing.jsonl", "-o", tmp_path / "x.jsonl", "--mode", "native", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_review_commands(tmp_path):
    src = make_records(tmp_path, 3)
    run("reformat", src, "-o", tmp_path / "native.jsonl", "--mode", "native", "--no-filter")
    proc = run("review", tmp_path / "native.jsonl", "-o", tmp_path / "sheet.html", "--per-mode", "2")
    assert "2 items" in proc.stdout and (tmp_path / "sheet.sqlite").is_file()
    sheet = proc.stdout.split("(sheet ")[1].split(")")[0]
    scores = {"i0001": {"accuracy": 4, "relevance": 5}, "i0002": {"accuracy": 2, "relevance": 3}}
    (tmp_path / "scores.json").write_text(json.dumps({"sheet": sheet, "rater": "dr-a", "scores": scores}))
    assert "4 scores of rater 'dr-a' stored" in run("review-import", tmp_path / "scores.json", "--db", tmp_path / "sheet.sqlite").stdout
    rows = json.loads(run("review-summary", tmp_path / "sheet.sqlite", "--json").stdout)
    assert [(r["mode"], r["criterion"], r["n"], r["mean"]) for r in rows] == [("native", "accuracy", 2, 3.0), ("native", "relevance", 2, 4.0)]
    table = run("review-summary", tmp_path / "sheet.sqlite").stdout
    assert "native" in table and "[" in table
    bad = run("review-import", tmp_path / "scores.json", "--db", tmp_path / "nope.sqlite", check=False)
    assert bad.returncode == 1 and "no such review database" in bad.stderr


def test_against_medmllm_serve(served, tmp_path):  # noqa: F811 - the fixture imported above
    """The tiny model writes random tokens: the records fail, counted by reason; the run does not crash."""
    from medmllm.reformat.engine import EngineConfig, reformat_file

    src = make_records(tmp_path, 2)
    config = EngineConfig(endpoint=served.base_url + "/v1", model=MODEL_ID, api_key=served.api_key, max_tokens=8, parse_retries=1,
                          concurrency=2, backoff=0.01)
    summary = reformat_file(src, tmp_path / "out.jsonl", config)
    assert summary["records_written"] + sum(summary["failed"].values()) == 2
    assert summary["failed"].get("parse-error", 0) == 2, summary
    assert summary["completions"] == 4 and summary["tokens"]["completion"] > 0
