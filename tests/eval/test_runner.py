"""`medmllm eval run` on a tiny benchmark with the tiny preset model: outputs, resuming, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medmllm.cli import app
from medmllm.errors import MedMLLMError
from medmllm.eval.adapters import Adapter, MedMLLMAdapter
from medmllm.eval.benchmarks import load_bench
from medmllm.eval.runner import read_predictions, run_eval
from tests.conftest import save_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_resumes_and_writes_consistent_outputs(bench, tiny_model, tmp_path, monkeypatch):
    calls: list[str] = []
    original = MedMLLMAdapter.generate

    def counting(self, samples):
        calls.extend(s.id for s in samples)
        return original(self, samples)

    monkeypatch.setattr(MedMLLMAdapter, "generate", counting)
    out = tmp_path / "out"
    args = ["eval", "run", "--model", str(tiny_model), "--bench", str(bench), "-o", str(out), "--max-new-tokens", "6", "--bootstrap", "50"]
    first = CliRunner().invoke(app, [*args, "--limit", "3"])
    assert first.exit_code == 0, first.output
    assert len(calls) == 3
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    ids = [json.loads(line)["id"] for line in bench.read_text().splitlines()]
    assert len(calls) == len(ids) and sorted(calls) == sorted(ids)  # the first 3 were not generated again
    assert sorted(calls[:3]) == sorted(ids[:3])
    # longest prompt first (less left padding per batch); the rows are keyed by id
    samples = {s.id: s for s in load_bench(str(bench))[1]}
    adapter = MedMLLMAdapter(tiny_model)
    for run in (calls[:3], calls[3:]):
        lengths = [adapter.prompt_length(samples[i]) for i in run]
        assert lengths == sorted(lengths, reverse=True)
    assert len(set(lengths)) > 3 and lengths != [adapter.prompt_length(samples[i]) for i in ids if i in calls[3:]]  # not the file's order

    predictions = _lines(out / "predictions.jsonl")
    assert sorted(r["id"] for r in predictions) == sorted(ids) and all("prediction" in r for r in predictions)
    per_sample = _lines(out / "per_sample.jsonl")
    assert [r["id"] for r in per_sample] == ids
    assert {r["dim"] for r in per_sample} == {"2d", "3d", "text"}
    assert {r["id"]: r["modality"] for r in per_sample}["mr/radbench/modality-open"] == "MRI"
    assert all(r["cluster"] for r in per_sample)
    metrics = json.loads((out / "metrics.json").read_text())
    tasks = metrics["tasks"]
    assert set(tasks) == {"modality", "judgement", "vqa-closed", "vqa-open", "multiple-choice", "report", "rationale", "record"}
    assert sum(t["n"] for t in tasks.values()) == len(ids) == metrics["run"]["scored"]
    accuracy = tasks["modality"]["metrics"]["accuracy"]
    rows = [r for r in per_sample if r["family"] == "modality"]
    assert accuracy["value"] == pytest.approx(sum(r["accuracy"] for r in rows) / len(rows))
    assert accuracy["signature"] and accuracy["ci_method"] == "t" and len(accuracy["ci95"]) == 2
    assert tasks["report"]["metrics"]["bleu_4"]["ci_method"] == "bootstrap" and tasks["report"]["metrics"]["bleu_4"]["signature"]
    assert set(tasks["modality"]["breakdowns"]["dim"]) == {"2d", "3d"}
    assert "judge" in tasks["record"]["skipped_metrics"]
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 8 and "by modality" in report and "multiple-choice" in report
    assert "skipped" in metrics["run"]["judge"]


class _Flaky(Adapter):
    """Answers "yes", except for one sample id, where it raises."""

    name, batch_size = "flaky", 4

    def __init__(self, bad: str):
        self.bad, self.calls = bad, 0

    def generate(self, samples):
        self.calls += len(samples)
        if any(s.id == self.bad for s in samples):
            raise RuntimeError("CUDA out of memory\nTraceback (most recent call last): ...")
        return ["yes"] * len(samples)

    def describe(self):
        return {"adapter": self.name}


def test_a_failing_sample_is_counted_not_fatal(bench, tmp_path):
    bad = "d1/radbench/diagnosis-judgement"
    result = run_eval(_Flaky(bad), str(bench), tmp_path, resamples=20)
    rows = {r["id"]: r for r in _lines(tmp_path / "predictions.jsonl")}
    assert rows[bad]["error"] == "RuntimeError: CUDA out of memory"  # one line, no traceback
    assert result.failures == 1 and result.metrics["run"]["failures"] == 1
    judgement = result.metrics["tasks"]["judgement"]
    assert judgement["failures"] == 1 and judgement["n"] == 1  # the failure is not scored as a zero
    d2 = next(json.loads(line) for line in bench.read_text().splitlines() if json.loads(line)["id"] == "d2/radbench/diagnosis-judgement")
    assert judgement["metrics"]["accuracy"]["value"] == float(d2["targets"]["answer"] == "yes")  # the one scored sample, answered "yes"
    per_sample = {r["id"]: r for r in _lines(tmp_path / "per_sample.jsonl")}
    assert per_sample[bad]["error"].startswith("RuntimeError") and "accuracy" not in per_sample[bad]
    assert "Failures (1)" in (tmp_path / "report.html").read_text()


def test_torn_last_line_is_dropped_and_other_runs_refused(bench, tmp_path):
    adapter = _Flaky("none")
    run_eval(adapter, str(bench), tmp_path, limit=4, resamples=20)
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(path.read_bytes() + b'{"id": "r1/radbench/rep')  # killed while writing
    assert len(read_predictions(path)) == 4
    adapter.calls = 0
    run_eval(adapter, str(bench), tmp_path, resamples=20)
    ids = [r["id"] for r in _lines(path)]  # every line parses: the torn one is gone
    assert len(ids) == len(set(ids)) == 14 and adapter.calls == 10
    other = _Flaky("none")
    other.describe = lambda: {"adapter": "another"}
    with pytest.raises(MedMLLMError, match="another model"):
        run_eval(other, str(bench), tmp_path)


def test_bad_input_is_one_line(tmp_path, tiny_model):
    for args, message in (
        (["--bench", "vqa-rad", "--model", str(tiny_model)], "needs its local copy"),
        (["--bench", "nosuch:dir", "--model", str(tiny_model)], "unknown benchmark"),
        (["--bench", str(tmp_path / "missing.jsonl"), "--model", str(tiny_model)], "not found"),
        (["--bench", "x.jsonl"], "exactly one of"),
    ):
        result = CliRunner().invoke(app, ["eval", "run", *args, "-o", str(tmp_path / "o")])
        assert result.exit_code != 0 and isinstance(result.exception, MedMLLMError), result.output
        assert message in str(result.exception) and "\n" not in str(result.exception)
