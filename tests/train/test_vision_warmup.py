"""The report-labels stage: the vision encoder alone learns the observations of its reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from medmllm.errors import MedMLLMError
from medmllm.eval.labeler.chexpert import OBSERVATIONS
from medmllm.train import parse_recipe
from medmllm.train.trainer import run_recipe
from medmllm.train.vision_warmup import auroc, labelled_images

pytestmark = pytest.mark.usefixtures("torch_one_thread")

EFFUSION, CLEAR = "[Findings] A large right pleural effusion. [Impression] Right pleural effusion.", "[Findings] The lungs are clear. [Impression] Normal."


def report_sample(i: int, image: str, effusion: bool) -> dict:
    user = {"role": "user", "content": [{"type": "image", "image": 0}, {"type": "text", "text": "Write the report."}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": EFFUSION if effusion else CLEAR}]}
    return {"id": str(i), "task": "p2med/report-xray", "turns": [user, answer], "images": [{"path": image}]}


def write_split(root: Path, name: str, n: int, seed: int) -> Path:
    """n radiographs (32 x 32 PNG) and n/2 volumes (8 x 32 x 32 .npy); every other one has a bright
    "effusion" at the bottom right and a report that says so."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n + n // 2):
        effusion = i % 2 == 0
        volume = i >= n
        pixels = rng.normal(0.3, 0.1, (8, 32, 32) if volume else (32, 32)).astype(np.float32)
        if effusion:
            pixels[..., 20:30, 16:30] += 0.5
        path = f"images/{name}-{i}." + ("npy" if volume else "png")
        if volume:
            np.save(root / path, pixels)
        else:
            Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(root / path)
        rows.append(report_sample(i, path, effusion))
    out = root / f"{name}.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("warmup")
    (root / "images").mkdir()
    return write_split(root, "train", 48, 0), write_split(root, "eval", 24, 1)


def warmup_recipe(out: Path, data: Path, eval: Path, **stage):
    return parse_recipe({
        "model": {"preset": "tiny"},
        "run": {"output_dir": str(out), "save_steps": None, "logging_steps": 5, "report_to": [], "eval_generate": 0},
        "stages": [
            {"name": "see", "objective": "report-labels", "data": {"train": str(data), "eval": str(eval)}, "train": {"vision": True},
             "epochs": 12, "learning_rate": 3e-3, "batch_size": 8, "warmup_ratio": 0.0, **stage},
            {"name": "talk", "data": {"train": str(data)}, "train": {"perceiver": True}, "max_steps": 1, "batch_size": 2},
        ],
    })


def test_labels_come_from_the_report_after_each_image(splits):
    items = labelled_images(splits[0])
    assert len(items) == 72
    from medmllm.eval.labeler.chexpert import OBSERVATIONS

    effusion, no_finding = OBSERVATIONS.index("Pleural Effusion"), OBSERVATIONS.index("No Finding")
    assert [labels[effusion] for _, labels, _ in items[:4]] == [1.0, 0.0, 1.0, 0.0]
    assert [labels[no_finding] for _, labels, _ in items[:2]] == [0.0, 1.0]
    assert items[0][2] == EFFUSION


@pytest.mark.parametrize("perceiver", [False, True])
def test_the_encoder_learns_to_see_the_finding_and_only_the_vision_path_changes(splits, tmp_path, perceiver):
    from transformers import set_seed

    from medmllm.model.factory import build

    train, eval = splits
    set_seed(42)
    start, _ = build("tiny")
    results = run_recipe(warmup_recipe(tmp_path / "run", train, eval, train={"vision": True, "perceiver": perceiver}), keep_model=True)
    metrics = results[0].metrics
    # Held-out images: the bright region is found in both radiographs and volumes.
    assert metrics["eval_auroc/2d/Pleural Effusion"] > 0.9 and metrics["eval_auroc/3d/Pleural Effusion"] > 0.9, metrics
    saved = results[0].model.state_dict()
    changed = {k.split(".")[0] for k, v in start.state_dict().items() if not torch.equal(v, saved[k])}
    assert changed == ({"vision_encoder", "perceiver", "projector"} if perceiver else {"vision_encoder"})
    # the pixels were centred on the training images' mean image, which is saved with the model
    assert results[0].model.config.pixel_center_shape == [8, 32, 32]
    assert metrics["centering_images_2d"] == 48 and metrics["centering_images_3d"] == 24
    log = [json.loads(line) for line in (results[0].output_dir / "log.jsonl").read_text().splitlines()]
    phases = ["labels", "impression"] if perceiver else ["labels"]
    assert sorted({row["phase"] for row in log}) == sorted(phases)
    for phase in phases:  # each phase lowers its loss
        assert metrics[f"{phase}_loss"] < metrics[f"{phase}_loss_first"], metrics
    assert (results[1].output_dir / "DONE").exists()  # the language stage starts from the warmed-up model
    if perceiver:  # what the LLM gets, the perceiver's visual tokens, tells the held-out images apart too
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model, processor = results[0].model, results[0].processor

        def mean_visual_tokens(split: Path) -> tuple[np.ndarray, list[float]]:
            items = labelled_images(split)
            with torch.no_grad():
                tokens = [model.visual_tokens(processor.image_tensor(image, str(split))[None]).mean((0, 1)) for image, _, _ in items]
            return torch.stack(tokens).numpy(), [labels[OBSERVATIONS.index("Pleural Effusion")] for _, labels, _ in items]

        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(*mean_visual_tokens(train))
        features, truth = mean_visual_tokens(eval)
        assert roc_auc_score(truth, probe.decision_function(features)) > 0.9


def test_with_impression_words_the_visual_tokens_say_the_impression(splits, tmp_path):
    """Each held-out image's first visual token, read by the LLM's output layer over the impressions'
    words, is the first word of its own impression ("Right" / "Normal") with impression_words only."""
    from medmllm.train.vision_warmup import impression_embeddings

    train, eval = splits
    items = labelled_images(eval)

    def first_words_right(impression_words: bool) -> float:
        seen = run_recipe(warmup_recipe(tmp_path / str(impression_words), train, eval, impression_words=impression_words), keep_model=True)[0]
        model, processor = seen.model, seen.processor
        _, mask, ids = impression_embeddings(model, processor, [EFFUSION, CLEAR])
        words = torch.unique(ids[mask > 0])
        output = model.language_model.get_output_embeddings().weight[words]
        with torch.no_grad():
            first = torch.stack([model.visual_tokens(processor.image_tensor(image, str(eval))[None])[0, 0] for image, _, _ in items])
        said = words[(first @ output.T).argmax(-1)]
        expected = torch.tensor([ids[0 if text == EFFUSION else 1, 0].item() for _, _, text in items])
        return (said == expected).float().mean().item()

    assert first_words_right(True) > 0.9
    assert first_words_right(False) < 0.6  # the regression alone: near the average target, one word for all


def test_centering_can_be_switched_off(splits, tmp_path):
    train, eval = splits
    results = run_recipe(warmup_recipe(tmp_path / "run", train, eval, epochs=1, center_pixels=False), keep_model=True)
    assert results[0].model.pixel_centering is None and results[0].model.config.pixel_center_shape is None
    assert not any(k.startswith("centering_") for k in results[0].metrics)


def test_report_labels_with_lora_or_without_vision_is_refused(splits, tmp_path):
    train, eval = splits
    with pytest.raises(MedMLLMError, match="trains the vision encoder only"):
        parse_recipe({"stages": [{"name": "s", "objective": "report-labels", "data": {"train": str(train)}, "lora": {}}]}, "r.yaml")
    with pytest.raises(MedMLLMError, match="set train.vision: true"):
        run_recipe(warmup_recipe(tmp_path / "run", train, eval, train={"vision": False, "perceiver": True}))


def test_impression_targets_are_the_llms_embeddings_of_the_impression():
    from medmllm.model.factory import build
    from medmllm.train.vision_warmup import impression_embeddings

    model, processor = build("tiny")
    targets, mask, token_ids = impression_embeddings(model, processor, [EFFUSION, "no impression section"])
    ids = processor.tokenizer("Right pleural effusion.", add_special_tokens=False)["input_ids"][: model.config.num_latents]
    table = model.language_model.get_input_embeddings().weight
    torch.testing.assert_close(targets[0, : len(ids)], table[ids].detach())
    assert token_ids[0, : len(ids)].tolist() == ids and not token_ids[0, len(ids):].any()
    assert mask[0].sum() == len(ids) and mask[1].sum() > 0


def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200).astype(float)
    scores = np.round(rng.random(200) + 0.3 * labels, 1)  # rounded: many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auroc(np.ones(5), np.arange(5.0)) is None


def test_snap_to_words_leaves_visual_tokens_that_are_the_impressions_word_embeddings(splits, tmp_path):
    """After a warm-up with snap_to_words, the first visual token of a held-out image *is* the input
    embedding of its impression's first word ("Right" / "Normal"), and the next stage trains on it."""
    from medmllm.train.vision_warmup import impression_embeddings

    train, eval = splits
    results = run_recipe(warmup_recipe(tmp_path / "run", train, eval, impression_words=True, snap_to_words=True), keep_model=True)
    model, processor = results[0].model, results[0].processor
    _, mask, ids = impression_embeddings(model, processor, [EFFUSION, CLEAR])
    assert model.config.visual_words == torch.unique(ids[mask > 0]).tolist() and results[0].metrics["visual_words"] == len(model.config.visual_words)
    table = model.get_input_embeddings().weight
    items = labelled_images(eval)
    right = 0
    with torch.no_grad():
        for image, _, text in items:
            first = model.visual_tokens(processor.image_tensor(image, str(eval))[None])[0, 0]
            right += torch.equal(first, table[ids[0 if text == EFFUSION else 1, 0]])
    assert right / len(items) > 0.9
    assert (results[1].output_dir / "DONE").exists()


def test_snap_to_words_needs_the_impression_words():
    with pytest.raises(MedMLLMError, match="snap_to_words"):
        parse_recipe({"stages": [{"name": "s", "objective": "report-labels", "snap_to_words": True}]}, "r.yaml")
