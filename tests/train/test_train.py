"""Training: recipes, data, stages, freezing, LoRA, export, gradient accumulation, the CLI.

Everything runs on the ``tiny`` preset (random 2-layer Llama, built in milliseconds) with a few
samples written as JSONL beside tiny NPY (3D) and PNG (2D) images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medmllm.errors import MedMLLMError
from medmllm.model.precision import cpu_bf16_is_faster
from medmllm.train import load_recipe, parse_recipe
from medmllm.train.dataset import LengthGroupedSampler, SampleCollator, SampleDataset, count_image_tokens, sample_length
from medmllm.train.trainer import learned_weight, load_model, precision_flags, run_recipe

REPO = Path(__file__).resolve().parents[2]
PROMPT = "Please caption this scan with findings."
REPORTS = ["The lungs are clear.", "Patchy consolidation in the right lower lobe.", "The heart size is normal."]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def sample(i: int, report: str, image: str | None = None, weight: float | None = None) -> dict:
    content = [{"type": "text", "text": PROMPT}]
    images = []
    if image:
        content.insert(0, {"type": "image", "image": 0})
        images = [{"path": image, "modality": "CT" if image.endswith(".npy") else "X-ray"}]
    answer = {"role": "assistant", "content": [{"type": "text", "text": report}]}
    if weight is not None:
        answer["weight"] = weight
    return {"id": str(i), "task": "report", "turns": [{"role": "user", "content": content}, answer], "images": images}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train.jsonl: a 3D volume, a 2D X-ray and a text-only sample; images relative to the file."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    np.save(root / "images" / "ct.npy", np.random.RandomState(0).rand(8, 32, 32).astype(np.float32))
    Image.fromarray((np.random.RandomState(1).rand(32, 32) * 255).astype(np.uint8)).save(root / "images" / "xray.png")
    rows = [sample(0, REPORTS[0], "images/ct.npy"), sample(1, REPORTS[1], "images/xray.png"), sample(2, REPORTS[2])]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def make_recipe(out: Path, train: Path, stages: list[dict], eval: Path | None = None, **run):
    return parse_recipe({
        "model": {"preset": "tiny"},
        "data": {"train": str(train), **({"eval": str(eval)} if eval else {})},
        "run": {"output_dir": str(out), "precision": "fp32", "save_steps": None, "logging_steps": 1, "report_to": [], "eval_generate": 0, **run},
        "stages": stages,
    })


ALL = {"vision": True, "perceiver": True, "llm": True, "embeddings": True}
FAST = {"warmup_ratio": 0.0, "lr_scheduler": "constant"}


def generate(model, processor, messages) -> str:
    batch = processor([messages[:-1]], add_generation_prompt=True)
    model.eval()
    ids = model.generate(**batch, max_new_tokens=24, do_sample=False, pad_token_id=processor.pad_token_id,
                         eos_token_id=processor.tokenizer.eos_token_id)
    return processor.batch_decode(ids)[0].strip()


def messages_of(data: Path, index: int) -> list[dict]:
    ds = SampleDataset(data / "train.jsonl")
    item = ds[index]
    return item.sample.to_messages(item.root)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------ training


def test_tiny_overfits_a_mixed_2d_3d_text_batch_and_generates_the_report(data, tmp_path):
    recipe = make_recipe(tmp_path / "run", data / "train.jsonl", eval=data / "train.jsonl",
                         stages=[{"name": "fit", "train": ALL, "epochs": 60, "batch_size": 3, "learning_rate": 3e-3, **FAST}])
    [result] = run_recipe(recipe, keep_model=True)
    assert result.metrics["eval_loss"] < 0.05, result.metrics
    assert generate(result.model, result.processor, messages_of(data, 0)) == REPORTS[0]
    log = [json.loads(line) for line in (result.output_dir / "log.jsonl").read_text().splitlines()]
    assert sum("loss" in row for row in log) == 60 and log[0]["step"] == 1  # one line per logging step
    assert (result.output_dir / "DONE").exists()


@pytest.mark.skipif(not cpu_bf16_is_faster(), reason="no native bf16 here, or it measures slower than fp32: run.precision auto stays fp32")
def test_auto_precision_trains_in_bf16_autocast_on_a_cpu_with_fast_native_bf16(data, tmp_path):
    # What `medmllm demo` gets on such a CPU (2x faster): the Trainer's bf16 autocast, fp32 weights.
    recipe = make_recipe(tmp_path / "run", data / "train.jsonl", eval=data / "train.jsonl", precision="auto",
                         stages=[{"name": "fit", "train": ALL, "epochs": 40, "batch_size": 3, "learning_rate": 3e-3, **FAST}])
    linear_outputs = set()

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.training:
            linear_outputs.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        [result] = run_recipe(recipe, keep_model=True)
    finally:
        handle.remove()
    assert linear_outputs == {torch.bfloat16}  # every training matmul ran in bf16
    assert result.metrics["eval_loss"] < 0.2, result.metrics
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    assert precision_flags("auto") == {"bf16": True, "fp16": False}


def test_stages_freeze_chain_and_lora_export_loads_alone(data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import medmllm.model  # noqa: F401
    from medmllm.cli.train import app

    recipe = make_recipe(tmp_path / "run", data / "train.jsonl", stages=[
        {"name": "align", "train": {"perceiver": True}, "epochs": 2, "batch_size": 3, "learning_rate": 1e-2, **FAST},
        {"name": "lora", "train": {"perceiver": False}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
         "epochs": 2, "batch_size": 3, "learning_rate": 1e-2, **FAST},
    ])
    before, _ = load_model_from_preset_seeded(recipe)
    run_recipe(recipe)
    done = [(tmp_path / "run" / name / "DONE").read_text() for name in ("align", "lora")]
    resumed = run_recipe(recipe, resume=True)  # finished stages are skipped, their metrics kept
    assert [r.metrics["train_loss"] for r in resumed] and done == [(tmp_path / "run" / n / "DONE").read_text() for n in ("align", "lora")]
    align, processor = load_model(tmp_path / "run" / "align" / "model")
    lora, _ = load_model(tmp_path / "run" / "lora" / "model")
    s0, s1, s2 = state(before), state(align), state(lora)

    # Stage 1 changed the perceiver/projector only; vision and LLM stayed frozen.
    changed1 = {k for k in s0 if not torch.equal(s0[k], s1[k])}
    assert changed1 and all(k.startswith(("perceiver.", "projector.")) for k in changed1), changed1
    # Stage 2 started from stage 1 (perceiver as stage 1 left it) and changed only LoRA-merged LLM linears.
    changed2 = {k for k in s1 if not torch.equal(s1[k], s2[k])}
    assert changed2 and all(k.startswith("language_model.model.layers.") and k.endswith("_proj.weight") for k in changed2), changed2

    # The adapters on stage 1's model = the merged stage output = the exported model, which loads alone.
    adapted = PeftModel.from_pretrained(align, tmp_path / "run" / "lora" / "adapter")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "-o", str(tmp_path / "exported")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "exported")
    from medmllm.model.processor import MedMLLMProcessor

    exported_processor = MedMLLMProcessor.from_pretrained(tmp_path / "exported")
    for i in range(3):
        messages = messages_of(data, i)
        assert generate(exported, exported_processor, messages) == generate(adapted, processor, messages)
    batch = processor([messages_of(data, 0)])
    torch.testing.assert_close(exported.eval()(**batch).logits, adapted.eval()(**batch).logits, atol=1e-4, rtol=1e-4)


def load_model_from_preset_seeded(recipe):
    """The model stage 1 starts from: `run_stage` seeds before building it, so do the same."""
    from transformers import set_seed

    from medmllm.train.trainer import load_start

    set_seed(recipe.run.seed)
    return load_start(recipe, 0)


def test_gradient_accumulation_2x1_equals_batch_2(data, tmp_path):
    """One SGD step (sensitive to the loss scale, unlike Adam) from two samples of very different
    learned weight: micro-batches of 1 accumulated twice must equal one batch of 2."""
    rows = [sample(0, REPORTS[1] + " " + REPORTS[2], "images/ct.npy", weight=2.0), sample(1, "Yes.")]
    (data / "pair.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = {"train": ALL, "epochs": 1, "learning_rate": 0.5, "optim": "sgd", "max_grad_norm": 0, **FAST}
    deltas = []
    for name, batch, accum in (("big", 2, 1), ("accum", 1, 2)):
        recipe = make_recipe(tmp_path / name, data / "pair.jsonl", stages=[{"name": "s", "batch_size": batch, "grad_accum": accum, **common}])
        start, _ = load_model_from_preset_seeded(recipe)
        [result] = run_recipe(recipe, keep_model=True)
        s0, s1 = state(start), state(result.model)
        deltas.append({k: s1[k] - s0[k] for k in s0})
    for k in deltas[0]:
        torch.testing.assert_close(deltas[0][k], deltas[1][k], atol=1e-6, rtol=1e-4, msg=k)
    assert any(d.abs().max() > 1e-4 for d in deltas[0].values())

    # And the step is SGD on the weighted loss sum(w * ce) / sum(w) of both samples (not a divisor
    # counting tokens, which would agree between the two runs above but optimise another loss).
    start, processor = load_model_from_preset_seeded(recipe)
    ds = SampleDataset(data / "pair.jsonl")
    start.train()(**SampleCollator(processor)([ds[0], ds[1]])).loss.backward()
    for k, p in start.named_parameters():
        if p.grad is not None and k in deltas[0]:
            torch.testing.assert_close(deltas[0][k], -0.5 * p.grad, atol=1e-6, rtol=1e-4, msg=k)


def test_perceiver_learning_rate_scales_only_the_perceivers_step(data, tmp_path):
    """One SGD step (its size is linear in the rate) with the perceiver at a tenth of the stage's rate:
    the perceiver moves a tenth as far as with one rate for all, the LLM exactly as far."""
    common = {"train": {"perceiver": True, "llm": True}, "epochs": 1, "batch_size": 3, "learning_rate": 0.5, "optim": "sgd", "max_grad_norm": 0, **FAST}
    deltas = []
    for name, extra in (("one-rate", {}), ("own-rate", {"perceiver_learning_rate": 0.05})):
        recipe = make_recipe(tmp_path / name, data / "train.jsonl", stages=[{"name": "s", **common, **extra}])
        start, _ = load_model_from_preset_seeded(recipe)
        [result] = run_recipe(recipe, keep_model=True)
        s0, s1 = state(start), state(result.model)
        deltas.append({k: s1[k] - s0[k] for k in s0})
    one, own = deltas
    perceiver = [k for k in one if k.startswith(("perceiver.", "projector.")) and one[k].abs().max() > 1e-5]
    llm = [k for k in one if k.startswith("language_model.") and one[k].abs().max() > 1e-5]
    assert perceiver and llm
    for k in perceiver:
        torch.testing.assert_close(own[k], 0.1 * one[k], atol=1e-6, rtol=1e-3, msg=k)
    for k in llm:
        torch.testing.assert_close(own[k], one[k], atol=1e-6, rtol=1e-3, msg=k)


def test_num_items_is_the_total_learned_weight():
    labels = torch.tensor([[-100, 5, 6, -100], [-100, -100, 7, 8]])
    weights = torch.tensor([[0.0, 2.0, 2.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    assert learned_weight(labels, weights).item() == 6.0  # labels shift by one: position 0 is never predicted


# --------------------------------------------------------------------------------------- data


def test_dataset_lengths_count_image_tokens_and_sampler_groups(data):
    from medmllm.model.factory import build

    _, processor = build("tiny")
    ds = SampleDataset(data / "train.jsonl")
    assert ds.measure(processor, max_tokens=10_000) == 0
    assert ds.lengths[0] > count_image_tokens(1, processor.config.num_latents)
    batch = SampleCollator(processor)([ds[i] for i in range(3)])
    assert batch["attention_mask"].sum(1).tolist() == ds.lengths.tolist()  # exact, images included
    assert sample_length(processor, ds[2].sample, ds.root) == ds.lengths[2]
    assert batch["pixel_values"].shape[:2] == (3, 1) and batch["image_mask"].tolist() == [[True], [True], [False]]

    # Over-long samples are dropped, not cut.
    short = SampleDataset(data / "train.jsonl")
    assert short.measure(processor, max_tokens=int(ds.lengths[2])) == 2 and len(short) == 1

    assert len(SampleDataset(data / "train.jsonl", splits=["val"])) == 3  # samples without a split are kept
    lengths = [5, 50, 6, 40, 7, 60, 8, 30]
    sampler = LengthGroupedSampler(lengths, group_size=2, seed=0, mega=2)
    order = list(sampler)
    assert sorted(order) == list(range(8)) and lengths[order[0]] == 60
    groups = [[lengths[i] for i in order[k : k + 2]] for k in range(0, 8, 2)]  # each step's samples, longest first
    assert all(g == sorted(g, reverse=True) for g in groups)
    assert list(LengthGroupedSampler(lengths, 2, seed=0, mega=2)) == order  # deterministic from the seed
    sampler.set_epoch(1)
    assert sorted(sampler) == list(range(8))


def test_length_grouped_sampler_shuffles_its_groups():
    """Groups are neighbours in length, longest first, then in random order: not a run from the
    longest samples to the shortest, which is what a mega-batch as large as the dataset gave."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 700, size=61).tolist()
    descending = sorted(lengths, reverse=True)
    for seed in range(5):
        order = list(LengthGroupedSampler(lengths, group_size=4, seed=seed))  # one mega-batch of 50 groups
        assert sorted(order) == list(range(61))
        groups = [[lengths[i] for i in order[k : k + 4]] for k in range(0, 61, 4)]
        assert groups[0][0] == max(lengths)  # the longest group first
        assert len(groups[-1]) == 1  # the short last group stays last: every other step is whole
        # each group is a run of the length-sorted samples ...
        assert sorted(map(tuple, groups[:-1])) == sorted(tuple(descending[k : k + 4]) for k in range(0, 60, 4))
        # ... but the groups do not come longest to shortest
        heads = [g[0] for g in groups[1:-1]]
        assert heads != sorted(heads, reverse=True)
    assert list(LengthGroupedSampler([], 4)) == []
    assert list(LengthGroupedSampler([5, 9], 4)) == [1, 0]  # fewer samples than a group: one short group


# ------------------------------------------------------------------------------ recipes and CLI


@pytest.mark.parametrize("name", ["p2med", "radfm", "demo", "small"])
def test_shipped_recipes_parse(name):
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    assert recipe.stages


def test_p2med_recipe_has_table_vii_hyper_parameters():
    stages = load_recipe(REPO / "recipes" / "p2med.yaml").stages
    table = [(s.epochs, s.data.max_tokens, s.learning_rate, s.batch_size, s.grad_accum, s.warmup_ratio, s.lr_scheduler) for s in stages]
    assert table == [(1, 2048, 2e-6, 2, 1, 0.03, "cosine"), (4, 4096, 2e-6, 1, 16, 0.03, "cosine"), (4, 4096, 2e-7, 1, 16, 0.03, "cosine")]
    assert [s.lora is not None for s in stages] == [False, True, True]
    assert not any(s.train.vision or s.train.llm for s in stages)


def test_bad_recipe_is_one_line_naming_file_and_field(tmp_path):
    from medmllm.cli.train import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {output_dir: out}\nstages:\n  - name: one\n    learning_rate: fast\n    data: {train: x.jsonl}\n")
    result = CliRunner().invoke(app, [str(bad)])  # the default command: `medmllm train RECIPE.yaml`
    assert isinstance(result.exception, MedMLLMError)
    message = str(result.exception)
    assert "\n" not in message and str(bad) in message and "stages.0.learning_rate" in message

    bad.write_text("stages: [{name: one, data: {train: x.jsonl}, learning_rat: 1}]\n")
    with pytest.raises(MedMLLMError, match=r"bad\.yaml: stages\.0\.learning_rat: Extra inputs"):
        load_recipe(bad)
    bad.write_text("stages: [{name: one, data: {train: x.jsonl}, train: {llm_layers: 4}}]\n")
    with pytest.raises(MedMLLMError, match=r"bad\.yaml: stages\.0\.train: .*llm_layers .* needs llm: true"):
        load_recipe(bad)
    bad.write_text("stages: [{name: one}]\n")
    with pytest.raises(MedMLLMError, match=r"no training data"):
        load_recipe(bad)
    bad.write_text("stages: [\n")
    with pytest.raises(MedMLLMError, match=r"bad\.yaml: not valid YAML"):
        load_recipe(bad)
    with pytest.raises(MedMLLMError, match="no stage 'nope'"):
        CliRunner().invoke(app, [str(REPO / "recipes" / "demo.yaml"), "--stage", "nope"], catch_exceptions=False)
    with pytest.raises(MedMLLMError, match="not a training run"):
        CliRunner().invoke(app, ["export", str(tmp_path), "-o", str(tmp_path / "x")], catch_exceptions=False)


def test_cli_trains_a_recipe_file_with_paths_relative_to_it(data, tmp_path):
    from medmllm.cli.train import app

    recipe = data / "cli.yaml"
    recipe.write_text(f"""
model: {{preset: tiny}}
data: {{train: train.jsonl, max_tokens: 256}}
run: {{output_dir: {tmp_path / 'run'}, save_steps: null, report_to: []}}
stages:
  - {{name: only, epochs: 1, batch_size: 3, learning_rate: 1.0e-3}}
""")
    result = CliRunner().invoke(app, [str(recipe)], catch_exceptions=False)
    assert result.exit_code == 0 and "stage only:" in result.output and "train_loss=" in result.output, result.output
    assert (tmp_path / "run" / "only" / "model" / "model.safetensors").exists()


def test_evaluation_during_training_logs_fast_metrics_and_tensorboard(data, tmp_path):
    """At each evaluation: eval_loss, then greedy answers to the eval samples scored with the
    harness's fast metrics (report -> BLEU / ROUGE-L), in log.jsonl and TensorBoard."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = make_recipe(tmp_path / "run", data / "train.jsonl", eval=data / "train.jsonl", report_to=["tensorboard"],
                         eval_generate=2, eval_max_new_tokens=8,
                         stages=[{"name": "s", "train": ALL, "max_steps": 4, "eval_steps": 2, "batch_size": 3, "learning_rate": 1e-3, **FAST}])
    [result] = run_recipe(recipe)
    rows = [json.loads(line) for line in (result.output_dir / "log.jsonl").read_text().splitlines()]
    generated = [row for row in rows if any(k.startswith("eval_gen/") for k in row)]
    assert [row["step"] for row in generated][:2] == [2, 4]  # every eval_steps (and once more at the end)
    keys = {k for row in generated for k in row if k.startswith("eval_gen/")}
    assert {"eval_gen/report/bleu_4", "eval_gen/report/rouge_l"} <= keys, keys
    assert all(0.0 <= row["eval_gen/report/bleu_4"] <= 1.0 for row in generated)
    assert "eval_gen/report/bleu_4" in result.metrics

    events = list((result.output_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, list(result.output_dir.iterdir())
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert "train/loss" in tags and "eval/loss" in tags, tags
    assert len(accumulator.Scalars("train/loss")) == 4
