"""`medmllm eval score` as a user runs it: files in, values + 95% CIs out, one-line errors, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medmllm.errors import MedMLLMError
from medmllm.eval.scoring import read_references, score, score_files

DATA = Path(__file__).parent / "data" / "reports.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def write_pair(tmp_path: Path, rows=ROWS) -> tuple[Path, Path]:
    pred, ref = tmp_path / "pred.jsonl", tmp_path / "ref.jsonl"
    pred.write_text("".join(json.dumps({"id": r["id"], "prediction": r["prediction"]}) + "\n" for r in rows))
    ref.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "prediction"}) + "\n" for r in rows))
    return pred, ref


def run(*args, check=True):
    code = "import sys; from medmllm.cli import main; sys.argv = ['medmllm', 'eval', 'score', *sys.argv[1:]]; main()"
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_json_output_per_sample_file_and_no_torch(tmp_path):
    pred, ref = write_pair(tmp_path)
    out = tmp_path / "per_sample.jsonl"
    code = (
        "import sys, json; from medmllm.cli import main\n"
        f"sys.argv = ['medmllm', 'eval', 'score', '--pred', {str(pred)!r}, '--ref', {str(ref)!r}, '--metrics', 'bleu,rouge_l,rouge_l_f,rouge_1,cider',"
        f" '--json', '--per-sample', {str(out)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    body, heavy = proc.stdout.rsplit("\n", 2)[:2]
    assert json.loads(heavy) == []  # scoring never imports the model stack
    result = json.loads(body)
    names = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "rouge_l_f", "rouge_1", "cider"]
    assert [k for k in result if k != "meta"] == names
    for name in names:
        lo, hi = result[name]["ci95"]
        assert lo < result[name]["value"] < hi
        assert result["meta"]["metrics"][name]["signature"]
    assert result["meta"]["metrics"]["bleu_4"]["ci"] == "bootstrap" and result["meta"]["metrics"]["cider"]["ci"] == "t"
    assert result["meta"]["n"] == len(ROWS) and result["meta"]["empty_predictions"] == sum(not r["prediction"] for r in ROWS)
    assert set(result["meta"]["versions"]) == {"medmllm", "numpy"}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in ROWS] and all(set(r) == {"id", *names} for r in rows)
    # the JSON equals the Python API, and the per-sample file its per-sample arrays
    direct, _ = score_files(pred, ref, ["bleu", "rouge_l", "rouge_l_f", "rouge_1", "cider"])
    assert direct["cider"] == result["cider"] and direct["bleu_4"] == result["bleu_4"]
    np.testing.assert_allclose([r["rouge_l"] for r in rows], direct["per_sample"]["rouge_l"])


def test_readable_table(tmp_path):
    pred, ref = write_pair(tmp_path)
    proc = run("--pred", pred, "--ref", ref, "--metrics", "bleu_4,cider")
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["metric", "value", "95%", "CI", "CI", "method"]
    assert lines[2].startswith("bleu_4") and lines[3].startswith("cider") and "bootstrap" in lines[2]
    assert "62 samples" in proc.stdout and "empty predictions (scored)" in proc.stdout


def test_mismatched_ids_are_one_line_errors_unless_intersect(tmp_path):
    pred, _ = write_pair(tmp_path, ROWS)
    (tmp_path / "fewer").mkdir()
    _, ref = write_pair(tmp_path / "fewer", ROWS[2:])
    proc = run("--pred", pred, "--ref", ref, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "62 predictions, 60 references, 60 in both" in proc.stderr and "'cxr-001'" in proc.stderr and "Traceback" not in proc.stderr
    ok = json.loads(run("--pred", pred, "--ref", ref, "--intersect", "--json").stdout)
    assert ok["meta"]["n"] == 60 and ok["meta"]["only_in_predictions"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", "reference": "x"}\n{"id": "b", "reference": "y"\n', "ref.jsonl:2: not valid JSON"),
        (b'{"id": "a", "reference": "x"}\n\n{"id": "b", "reference": "\xff\xfe"}\n', "ref.jsonl:3: invalid UTF-8"),
        (b'{"id": "a", "reference": "x"}\n{"id": "a", "reference": "y"}\n', "ref.jsonl:2: duplicate id 'a' (first at line 1)"),
        (b'{"id": "a", "references": []}\n', "ref.jsonl:1: \"references\" must be a non-empty list"),
        (b'{"id": "a", "text": "x"}\n', "ref.jsonl:1: needs exactly one of"),
        (b'[1, 2]\n', "ref.jsonl:1: expected a JSON object"),
        (b'{"reference": "x"}\n', "ref.jsonl:1: missing or invalid \"id\""),
    ],
)
def test_bad_reference_lines_name_file_and_line(tmp_path, content, message):
    (tmp_path / "ref.jsonl").write_bytes(content)
    with pytest.raises(MedMLLMError, match="^" + str(tmp_path / message).replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_references(tmp_path / "ref.jsonl")


def test_bad_prediction_file_through_the_cli(tmp_path):
    pred, ref = write_pair(tmp_path)
    pred.write_text(pred.read_text() + '{"id": "extra", "prediction": 3}\n')
    proc = run("--pred", pred, "--ref", ref, check=False)
    assert proc.returncode == 1 and f"{pred}:63: \"prediction\" must be a string" in proc.stderr
    proc = run("--pred", tmp_path / "missing.jsonl", "--ref", ref, check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = run("--pred", ref, "--ref", ref, check=False)  # the files swapped
    assert proc.returncode == 1 and "no \"prediction\" key" in proc.stderr


def test_empty_predictions_are_scored_and_counted():
    result = score(["", "", "no acute disease"], [["normal chest"], [""], ["no acute disease"]], ["bleu", "rouge_l", "cider"])
    assert result["meta"]["empty_predictions"] == 2 and result["meta"]["empty_references"] == 1
    assert result["per_sample"]["bleu_1"][0] == 0.0 and result["per_sample"]["rouge_l"][1] == 1.0  # pycocoevalcap: [""] vs [""]
    assert all(np.isfinite(v).all() for v in result["per_sample"].values())


def test_intervals_share_resamples_and_are_reproducible():
    rows = ROWS[:40]
    predictions, references = [r["prediction"] for r in rows], [r.get("references", [r.get("reference")]) for r in rows]
    a = score(predictions, references, ["bleu", "rouge_l"], ci="bootstrap", seed=1)
    b = score(predictions, references, ["bleu", "rouge_l"], ci="bootstrap", seed=1)
    c = score(predictions, references, ["bleu", "rouge_l"], ci="bootstrap", seed=2)
    assert a["bleu_2"] == b["bleu_2"] and a["rouge_l"] == b["rouge_l"] and a["bleu_2"]["ci95"] != c["bleu_2"]["ci95"]
    t = score(predictions, references, ["rouge_l"])
    assert t["meta"]["metrics"]["rouge_l"]["ci"] == "t" and t["rouge_l"]["ci95"] != a["rouge_l"]["ci95"]
    with pytest.raises(MedMLLMError, match="t interval"):
        score(predictions, references, ["bleu_4"], ci="t")
