"""build(preset) -> (model, processor): the path users take, end to end with the processor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from medmllm.errors import MedMLLMError
from medmllm.model import MedMLLMForCausalLM
from medmllm.model.factory import PRESETS, build, get_preset
from medmllm.model.processor import MedMLLMProcessor

HEAD_CT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "scans" / "head_ct.nii.gz"


def conversation(volume, xray):
    return [
        {"role": "user", "content": [{"type": "image", "image": xray, "modality": "X-ray", "time": "2022-10-29"}, {"type": "text", "text": "Please caption this scan with findings."}]},
        {"role": "assistant", "content": "The lungs are clear."},
        {"role": "user", "content": [{"type": "image", "image": volume, "modality": "CT", "time": "2022-11-11"}, {"type": "text", "text": "Compare with the prior."}]},
        {"role": "assistant", "content": "Patchy consolidation in the right lower lobe."},
    ]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build("tiny")


def test_tiny_preset_trains_saves_loads_and_generates(tmp_path, tiny):
    model, processor = tiny
    rng = np.random.default_rng(0)
    samples = [conversation(rng.normal(size=(20, 40, 40)).astype(np.float32), rng.normal(size=(1, 50, 50)).astype(np.float32)),
               [{"role": "user", "content": "What is the modality of the input scan?"}, {"role": "assistant", "content": "CT"}]]
    inputs = processor(samples)
    assert inputs["pixel_values"].shape[:2] == (2, 2) and inputs["image_mask"].tolist() == [[True, True], [False, False]]
    model.train()
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.perceiver.latents.grad is not None
    model.eval()

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    loaded_processor = MedMLLMProcessor.from_pretrained(tmp_path)
    again = loaded_processor(samples)
    for key in ("input_ids", "labels", "pixel_values"):
        torch.testing.assert_close(again[key], inputs[key])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**again).logits, model(**inputs).logits)

    prompt = processor([samples[0][:3]], add_generation_prompt=True)
    with torch.no_grad():
        new = loaded.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=processor.pad_token_id)
    assert new.shape == (1, 5) and isinstance(processor.batch_decode(new)[0], str)


def test_real_head_ct_through_the_preset_recipe(tiny):
    if not HEAD_CT.exists():
        pytest.skip(f"{HEAD_CT} not found")
    model, processor = tiny
    inputs = processor([[{"role": "user", "content": [{"type": "image", "image": str(HEAD_CT)}, {"type": "text", "text": "Findings?"}]},
                         {"role": "assistant", "content": "Normal."}]])
    assert tuple(inputs["image_sizes"][0, 0].tolist()) == (8, 32, 32)  # the tiny preset's 3D recipe
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).loss)


def test_llm_from_a_local_folder_keeps_its_weights(tmp_path, tiny):
    model, processor = tiny
    llm_dir = tmp_path / "llm"
    model.language_model.save_pretrained(llm_dir)
    processor.tokenizer.save_pretrained(llm_dir)
    rebuilt, _ = build("tiny", llm=llm_dir)
    assert isinstance(rebuilt, MedMLLMForCausalLM)
    torch.testing.assert_close(rebuilt.language_model.model.layers[0].mlp.up_proj.weight, model.language_model.model.layers[0].mlp.up_proj.weight)
    assert rebuilt.config.image_patch_token_id == model.config.image_patch_token_id


def test_presets_are_complete_and_unknown_names_are_refused():
    assert {"tiny", "demo", "small", "p2med-8b", "radfm-14b"} <= set(PRESETS)
    p2med = get_preset("p2med-8b")
    assert p2med.vision_encoder == "hf2d" and p2med.config["num_latents"] == 32 and p2med.config["perceiver_depth"] == 6
    radfm = get_preset("radfm-14b")
    assert radfm.vision_config["patch_size"] == [4, 32, 32] and radfm.vision_config["num_layers"] == 12 and radfm.vision_config["hidden_size"] == 768
    with pytest.raises(MedMLLMError, match="unknown preset 'huge'"):
        get_preset("huge")
    with pytest.raises(MedMLLMError, match="not found locally"):
        build("tiny", llm="no-such-model-anywhere")


CLIP_TINY = dict(model_type="clip_vision_model", hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)


def test_p2med_shaped_model_with_pretrained_clip_tower(tmp_path):
    """The p2med-8b code path at a tiny size: hf2d + CLIP weights from a local folder + CLIP normalisation."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(3)
    settings = dict(CLIP_TINY)
    settings.pop("model_type")
    clip = CLIPVisionModel(CLIPVisionConfig(**settings))
    clip.save_pretrained(tmp_path / "clip")
    model, processor = build(
        "tiny", vision_encoder="hf2d", vision_weights=tmp_path / "clip", vision_config={"max_slices": 8, "hf_config": CLIP_TINY},
        image_channels=3, image_mean=[0.48, 0.46, 0.41], image_std=[0.27, 0.26, 0.28],
        image_recipe_2d={"intensity": "minmax", "size": [28, 28]}, image_recipe_3d={"intensity": "minmax", "size": [28, 28], "depth": 6},
    )
    torch.testing.assert_close(model.vision_encoder.model.embeddings.patch_embedding.weight, clip.embeddings.patch_embedding.weight)
    rng = np.random.default_rng(1)
    inputs = processor([conversation(rng.normal(size=(12, 30, 30)).astype(np.float32), rng.normal(size=(1, 40, 40)).astype(np.float32))])
    assert inputs["pixel_values"].shape[2] == 3  # grey repeated to CLIP's 3 channels
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).loss)
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(reloaded.vision_encoder.model.embeddings.patch_embedding.weight, clip.embeddings.patch_embedding.weight)
    with pytest.raises(MedMLLMError, match="not found locally"):
        build("tiny", vision_encoder="hf2d", vision_weights=tmp_path / "missing", vision_config={"hf_config": CLIP_TINY})


def test_vision_half_of_a_full_clip_checkpoint(tmp_path):
    """openai/clip-vit-large-patch14-336 (P2Med's tower) is a full CLIP: only its vision half is taken."""
    from transformers import CLIPConfig, CLIPModel

    settings = dict(CLIP_TINY)
    settings.pop("model_type")
    clip = CLIPModel(CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50),
                                vision_config=settings, projection_dim=8))
    clip.save_pretrained(tmp_path / "clip")
    model, _ = build("tiny", vision_encoder="hf2d", vision_weights=tmp_path / "clip", vision_config={"max_slices": 4, "hf_config": CLIP_TINY}, image_channels=3)
    torch.testing.assert_close(model.vision_encoder.model.embeddings.patch_embedding.weight, clip.vision_model.embeddings.patch_embedding.weight)


def test_llm_from_a_gguf_file(tmp_path):
    """`build(llm="x.gguf")`: transformers' GGUF loading, dequantised, then our image tokens added."""
    from tests.model.test_hub import write_tiny_gguf

    gguf = write_tiny_gguf(tmp_path / "tiny.Q4_1.gguf")
    model, processor = build("tiny", llm=gguf)
    assert model.language_model.config.model_type == "llama" and processor.image_patch_token_id is not None
    rng = np.random.default_rng(2)
    batch = processor([conversation(rng.normal(size=(9, 33, 33)).astype(np.float32), rng.normal(size=(1, 33, 33)).astype(np.float32))])
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
