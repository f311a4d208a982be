"""The demo pipeline (`medmllm.demo`) end to end on the tiny preset: MiniRad -> three stage
datasets -> three training stages + the blind model -> evaluation of trained / untrained / blind
with CIs -> summary. The real demo (SmolLM2, minutes) is `make demo`; this proves the wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmllm.data.io import read_samples
from medmllm.data.schema import ImagePart
from medmllm.demo import DemoConfig, overlap, run_demo, stage_datasets, strip_images

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def minirad(tmp_path_factory) -> Path:
    from medmllm.synth.minirad import MiniRadConfig, generate

    out = tmp_path_factory.mktemp("minirad")
    generate(out, MiniRadConfig(n=300, seed=3, xray_size=(32, 32), ct_shape=(8, 32, 32), modalities={"X-ray": 0.6, "CT": 0.4}))
    return out


def test_blind_samples_keep_the_text_and_lose_every_image(minirad):
    sample = next(s for s in read_samples(minirad / "train.jsonl") if s.images)
    blind = strip_images(sample)
    assert blind.images == [] and not any(isinstance(p, ImagePart) for t in blind.turns for p in t.content)
    assert [t.text for t in blind.turns] == [t.text for t in sample.turns]


def test_stage_datasets_follow_p2med(minirad, tmp_path):
    train = list(read_samples(minirad / "train.jsonl"))
    paths = stage_datasets(train, tmp_path / "seeing", seed=0, source=minirad)
    first = next(s for s in read_samples(paths["knowledge"]) if s.images)
    assert (tmp_path / "seeing" / first.images[0].path).resolve() == (minirad / next(
        s for s in train if s.id == first.id).images[0].path).resolve()  # image paths follow the moved file
    blind = stage_datasets(train, tmp_path / "blind", seed=0, blind=True)
    knowledge = list(read_samples(paths["knowledge"]))
    assert knowledge and all(s.task.startswith("p2med/report") for s in knowledge)  # stage 1: image-report pairs
    from collections import Counter

    before = Counter(s.task for s in train)
    after = Counter(s.task for s in read_samples(paths["task-balanced"]))
    median = sorted(before.values())[len(before) // 2]
    assert set(after) == set(before)  # every task is represented
    assert all(after[task] == min(before[task], median) for task in before)  # big tasks cut to the median, small ones kept whole
    for name, path in blind.items():
        assert [s.id for s in read_samples(path)] == [s.id for s in read_samples(paths[name])]
        assert all(not s.images for s in read_samples(path))


def test_overlap_of_intervals():
    assert overlap({"ci95": [0.1, 0.3]}, {"ci95": [0.2, 0.4]}) is True
    assert overlap({"ci95": [0.1, 0.2]}, {"ci95": [0.3, 0.4]}) is False
    assert overlap({"ci95": [None, None]}, {"ci95": [0.3, 0.4]}) is None


def test_demo_pipeline_on_the_tiny_preset(tmp_path):
    recipe = tmp_path / "tiny-demo.yaml"
    stage = {"train": {"vision": True, "perceiver": True}, "max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0}
    recipe.write_text(json.dumps({
        "model": {"preset": "tiny"}, "data": {"max_tokens": 4096}, "run": {"output_dir": "run", "save_steps": None, "report_to": [], "eval_generate": 0},
        "stages": [{"name": "knowledge", "data": {"train": "k.jsonl"}, **stage},
                   {"name": "task-balanced", "data": {"train": "t.jsonl"}, "lora": {"r": 2, "alpha": 4, "dropout": 0.0}, **stage},
                   {"name": "disease-balanced", "data": {"train": "d.jsonl"}, "lora": {"r": 2, "alpha": 4, "dropout": 0.0}, **stage}]}))
    lines: list[str] = []
    summary = run_demo(DemoConfig(out=tmp_path / "out", n=200, seed=1, recipe=recipe, eval_limits={"diagnosis": 12, "reports": 12}, max_new_tokens=8, log=lines.append))
    out = tmp_path / "out"
    assert set(summary["numbers"]) == {"trained", "untrained", "blind"}
    for name in ("trained", "untrained", "blind"):
        for part in ("diagnosis", "reports"):
            assert (out / "eval" / name / part / "report.html").exists() and (out / "eval" / name / part / "metrics.json").exists()
        accuracy = summary["numbers"][name]["diagnosis accuracy"]
        assert accuracy["value"] is None or 0.0 <= accuracy["value"] <= 1.0
    # Three seeing stages, two blind ones (stage 1 trains only the vision path, which the blind model lacks).
    assert [p.name for p in sorted((out / "run").iterdir()) if p.is_dir()] == ["disease-balanced", "knowledge", "task-balanced"]
    assert sorted(p.name for p in (out / "run-blind").iterdir() if p.is_dir()) == ["disease-balanced", "task-balanced"]
    assert all(not s.images for part in ("diagnosis", "reports") for s in read_samples(out / "data" / "benchmark-blind" / f"{part}.jsonl"))
    assert all(s.images for s in read_samples(out / "data" / "benchmark" / "diagnosis.jsonl"))
    assert summary["numbers"]["trained"]["clinical label F1 (micro, 5 observations)"]["n"] > 0
    assert (out / "summary.md").read_text().startswith("# medmllm demo")
    assert set(summary["timings_s"]) >= {"MiniRad", "train (3 stages)", "evaluate on the held-out MiniRad patients"}
