"""`medmllm data ...` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from medmllm.data import read_samples, text_turn, write_samples
from medmllm.data.schema import Sample


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "medmllm", "data", *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def note(i: int, text: str, patient: str = "p1") -> Sample:
    return Sample(id=f"n{i}", task="p2med/outpatient-record", patient_id=patient, split="train",
                  turns=[text_turn("user", "Current outpatient pediatric information is as follows:"), text_turn("assistant", text)])


def test_import_export_validate_stats(tmp_path):
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.new("L", (40, 40), 128).save(tmp_path / "imgs" / "a.png")
    llava = [{"id": "q1", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is the modality?"}, {"from": "gpt", "value": "X-ray"}]},
             {"id": "q2", "image": "missing.png", "conversations": [{"from": "human", "value": "<image>\nAny effusion?"}, {"from": "gpt", "value": "No."}]}]
    (tmp_path / "llava.json").write_text(json.dumps(llava))
    proc = run("import", "llava", tmp_path / "llava.json", "-o", tmp_path / "s.jsonl", "--image-root", tmp_path / "imgs")
    assert "wrote 2 samples" in proc.stdout and "1 image file(s) missing" in proc.stderr
    run("export", "llava", tmp_path / "s.jsonl", "-o", tmp_path / "back.json")
    back = json.loads((tmp_path / "back.json").read_text())
    assert [c["value"] for c in back[0]["conversations"]][1] == "X-ray"
    stats = json.loads(run("stats", tmp_path / "s.jsonl", "--json").stdout)
    assert stats["samples"] == 2 and stats["images"] == 2

    (tmp_path / "bad.jsonl").write_text((tmp_path / "s.jsonl").read_text() + '{"id": "x"}\n')
    bad = run("validate", tmp_path / "bad.jsonl", check=False)
    assert bad.returncode == 1 and f"{tmp_path / 'bad.jsonl'}:3:" in bad.stderr and "2 valid samples, 1 invalid" in bad.stdout


def test_deid_reports_categories_never_values(tmp_path):
    write_samples(tmp_path / "in.jsonl", [note(1, "Seen by Dr. Johnson on 2022-10-29, MRN 12345678, phone 555-123-4567. Bronchopneumonia.")])
    proc = run("deid", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--salt", "k")
    text = (tmp_path / "out.jsonl").read_text()
    for secret in ("Johnson", "12345678", "555-123-4567", "2022-10-29"):
        assert secret not in text and secret not in proc.stdout + proc.stderr
    assert "NAME" in proc.stdout and "Bronchopneumonia" in text


def test_dedup_drops_near_duplicates_and_says_which(tmp_path):
    base = "Cough and fever for three days with coarse breath sounds in both lungs and no wheeze heard on examination today"
    samples = [note(0, base), note(1, base + "."), note(2, "Rash on both legs for one week without fever or itching and normal appetite reported")]
    write_samples(tmp_path / "in.jsonl", samples)
    proc = run("dedup", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--dropped", tmp_path / "dropped.jsonl")
    assert "kept 2 of 3" in proc.stdout
    assert [s.id for s in read_samples(tmp_path / "out.jsonl")] == ["n0", "n2"]
    assert json.loads((tmp_path / "dropped.jsonl").read_text()) == {"id": "n1", "kept_id": "n0", "reason": "near-duplicate"}
