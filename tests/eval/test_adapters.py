"""Model adapters: a tiny random LLaVA through transformers, and an OpenAI-compatible endpoint
through the real `openai` client (the fake server of tests/eval/fake_openai.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medmllm.data.formats import import_samples
from medmllm.eval.adapters import HFVisionAdapter, OpenAIAdapter, question_messages, scan_image
from medmllm.eval.runner import run_eval
from tests.conftest import shared_scan
from tests.eval.fake_openai import FakeOpenAI, HTTPError

_CHAT = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
         "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}"
         "{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    """A random LlavaForConditionalGeneration (1-layer CLIP tower, 2-layer Llama) with its processor, saved."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from medmllm.model.tokenizer import tiny_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=len(tokenizer), max_position_embeddings=512)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-1, vision_feature_select_strategy="full", image_seq_length=17)
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                               tokenizer=tokenizer, chat_template=_CHAT, patch_size=8, vision_feature_select_strategy="full",
                               num_additional_image_tokens=1)
    folder = tmp_path_factory.mktemp("llava")
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_scan_image_mosaics_volumes_and_keeps_photos(bench):
    volume = scan_image(shared_scan("head_ct.nii.gz"), 256)
    assert volume.mode == "RGB" and max(volume.size) <= 256 and min(volume.size) >= 64  # 4 x 4 tiles of 64
    photo = scan_image(bench.parent / "cxr0.png", 256)
    assert photo.size == (40, 48)  # small photos are not enlarged


def test_hf_vlm_adapter_generates_for_2d_and_3d(bench, tiny_llava, tmp_path):
    adapter = HFVisionAdapter(tiny_llava, max_new_tokens=4, batch_size=4)
    samples = list(import_samples("medmllm", bench))
    two = [s for s in samples if s.id in ("ct/radbench/modality-open", "xr/radbench/modality-open")]
    texts = adapter.generate(two)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # a text-only sample (no image) goes through the same chat template
    assert len(adapter.generate([s for s in samples if not s.images])) == 1
    result = run_eval(adapter, str(bench), tmp_path, limit=5, resamples=20)
    assert result.generated == 5 and result.failures == 0 and result.metrics["run"]["model"]["class"] == "LlavaForConditionalGeneration"


def test_openai_adapter_sends_images_as_data_uris(bench, tmp_path):
    def respond(request):
        text = " ".join(p["text"] for m in request["messages"] for p in m["content"] if isinstance(m["content"], list) and p["type"] == "text")
        if "opacity" in text.lower():
            raise HTTPError(400, "this endpoint dislikes the question")
        return "CT" if "modality" in text.lower() else "yes"

    with FakeOpenAI(respond, model="fake-vlm") as server:
        adapter = OpenAIAdapter(server.base_url, "fake-vlm", max_new_tokens=8, batch_size=2)
        result = run_eval(adapter, str(bench), tmp_path, resamples=20)
        requests = list(server.requests)
    first = next(r for r in requests if any(p.get("type") == "image_url" for m in r["messages"] for p in m["content"]))
    assert first["model"] == "fake-vlm" and first["temperature"] == 0 and first["max_tokens"] == 8
    images = [p for r in requests for m in r["messages"] for p in m["content"] if isinstance(p, dict) and p["type"] == "image_url"]
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in images)
    assert all(sum(p.get("type") == "image_url" for m in r["messages"] for p in m["content"]) <= 1 for r in requests)  # 3D: one mosaic
    rows = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()}
    failed = [i for i, r in rows.items() if "error" in r]
    assert result.failures == len(failed) >= 1 and all("\n" not in rows[i]["error"] for i in failed)
    assert result.metrics["tasks"]["modality"]["metrics"]["accuracy"]["value"] == pytest.approx(1 / 3)  # "CT" for CT, MRI and X-ray


def test_question_messages_stop_before_the_answer(bench):
    sample = next(s for s in import_samples("medmllm", bench) if s.id == "q1/radbench/vqa")
    messages = question_messages(sample)
    assert [m["role"] for m in messages] == ["user"] and "pleural effusion" in json.dumps(messages)


def test_our_adapter_counts_the_prompt_tokens_it_generates_from(bench, tmp_path):
    """`MedMLLMAdapter.prompt_length` (the runner's length order) is the length of the batch the
    adapter builds, for 2D, 3D and text-only prompts, without reading an image."""
    from medmllm.eval.adapters import MedMLLMAdapter
    from tests.conftest import save_tiny_model

    adapter = MedMLLMAdapter(save_tiny_model(tmp_path / "model"))
    samples = list(import_samples("medmllm", bench))
    lengths = set()
    for sample in samples:
        batch = adapter.processor([question_messages(sample)], add_generation_prompt=True)
        assert adapter.prompt_length(sample) == batch["input_ids"].shape[1]
        lengths.add(batch["input_ids"].shape[1])
    assert len(lengths) > 3


def test_our_adapter_decodes_with_a_static_cache_on_a_cpu(bench, tmp_path):
    """On a CPU the adapter decodes with a static KV cache (faster there), to the same tokens as
    the dynamic cache, on a left-padded batch of 2D, 3D and text-only prompts."""
    from medmllm.eval.adapters import MedMLLMAdapter
    from tests.conftest import save_tiny_model

    adapter = MedMLLMAdapter(save_tiny_model(tmp_path / "model"), max_new_tokens=12, device="cpu")
    options = adapter.cache_options()
    assert options == {"cache_implementation": "static", "disable_compile": True}
    samples = list(import_samples("medmllm", bench))
    batch = adapter.processor([question_messages(s) for s in samples], add_generation_prompt=True)
    assert (batch["attention_mask"] == 0).any()  # left-padded
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "loss_weights")}

    def new_tokens(**cache):  # 12 tokens each, EOS or not: the random tiny model would stop at once
        return adapter.model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                                      pad_token_id=adapter.processor.pad_token_id, **cache)

    static = new_tokens(**options)
    assert static.shape == (len(samples), 12)
    assert torch.equal(static, new_tokens())  # transformers' default, the dynamic cache
