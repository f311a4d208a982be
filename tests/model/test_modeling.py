"""MedMLLMForCausalLM with tiny random models of real architectures, loaded the way users load them."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from medmllm.errors import MedMLLMError
from medmllm.model import MedMLLMConfig, MedMLLMForCausalLM, weighted_lm_loss
from medmllm.model.adapters import add_lora, set_trainable

VOCAB, START, END, PATCH = 120, 117, 118, 119
LATENTS = 4

TEXT = {
    "llama": dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2": dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(model_type="mistral", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=None),
}
VISION = {
    "vit3d": ("vit3d", dict(patch_size=[4, 8, 8], hidden_size=24, num_layers=1, num_heads=2, max_depth=16, max_size=32), 1),
    "clip": ("hf2d", dict(max_slices=8, hf_config=dict(model_type="clip_vision_model", hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                                                         num_attention_heads=2, image_size=16, patch_size=8)), 3),
    "siglip": ("hf2d", dict(max_slices=8, hf_config=dict(model_type="siglip_vision_model", hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                                                           num_attention_heads=2, image_size=16, patch_size=8)), 3),
}


def tiny(text="llama", vision="vit3d", seed=0, **overrides) -> MedMLLMForCausalLM:
    torch.manual_seed(seed)
    settings = dict(TEXT[text])
    text_config = AutoConfig.for_model(settings.pop("model_type"), vocab_size=VOCAB, **settings)
    encoder, vision_config, channels = VISION[vision]
    config = MedMLLMConfig(
        text_config=text_config, vision_encoder=encoder, vision_config=vision_config, image_channels=channels,
        num_latents=LATENTS, perceiver_depth=1, perceiver_heads=2, perceiver_head_dim=8,
        image_start_token_id=START, image_end_token_id=END, image_patch_token_id=PATCH, **overrides,
    )
    return MedMLLMForCausalLM(config).eval()


def image_group() -> list[int]:
    return [START] + [PATCH] * LATENTS + [END]


def batch(samples, size=16, pad_side="right", channels=1, depths=None):
    """samples: list of (token list, list of image depths). Pads ids and images; returns model kwargs."""
    generator = torch.Generator().manual_seed(1)
    longest = max(len(ids) for ids, _ in samples)
    n_max = max(1, max(len(d) for _, d in samples))
    d_max = max([d for _, ds in samples for d in ds] or [1])
    ids = torch.zeros(len(samples), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    pixels = torch.zeros(len(samples), n_max, channels, d_max, size, size)
    image_mask = torch.zeros(len(samples), n_max, dtype=torch.bool)
    sizes = torch.zeros(len(samples), n_max, 3, dtype=torch.long)
    for b, (tokens, image_depths) in enumerate(samples):
        span = slice(longest - len(tokens), longest) if pad_side == "left" else slice(0, len(tokens))
        ids[b, span] = torch.tensor(tokens)
        mask[b, span] = 1
        for n, d in enumerate(image_depths):
            pixels[b, n, :, :d] = torch.randn(channels, d, size, size, generator=generator)
            image_mask[b, n] = True
            sizes[b, n] = torch.tensor([d, size, size])
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_mask=image_mask, image_sizes=sizes)


SAMPLE = [5, 6, *image_group(), 7, 8, 9]


@pytest.mark.parametrize("text,vision", [("llama", "vit3d"), ("qwen2", "vit3d"), ("mistral", "vit3d"), ("llama", "clip"), ("qwen2", "siglip")])
def test_save_and_load_give_identical_logits(tmp_path, text, vision):
    model = tiny(text, vision)
    channels = VISION[vision][2]
    inputs = batch([(SAMPLE, [4])], channels=channels)
    with torch.no_grad():
        before = model(**inputs).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # the path a user takes
    assert isinstance(loaded, MedMLLMForCausalLM)
    with torch.no_grad():
        after = loaded(**inputs).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("vision", ["vit3d", "clip"])
def test_image_content_changes_the_output(vision):
    model = tiny(vision=vision)
    channels = VISION[vision][2]
    a = batch([(SAMPLE, [4])], channels=channels)
    b = dict(a, pixel_values=a["pixel_values"] * -1.0)
    with torch.no_grad():
        la, lb = model(**a).logits, model(**b).logits
    first_patch = SAMPLE.index(PATCH)
    torch.testing.assert_close(la[:, :first_patch], lb[:, :first_patch])  # causal: text before the image is unaffected
    assert (la[:, first_patch:] - lb[:, first_patch:]).abs().max() > 1e-3


def test_batched_equals_one_by_one_with_2d_3d_and_text_only():
    model = tiny()
    samples = [
        ([5, *image_group(), 6, *image_group(), 7, 8], [1, 8]),  # a 2D image and a 3D volume
        ([9, 10, 11, 12], []),  # text only
        ([13, *image_group(), 14], [4]),
    ]
    together = batch(samples)
    with torch.no_grad():
        logits = model(**together).logits
    for b, (tokens, depths) in enumerate(samples):
        one = batch([(tokens, depths)])
        # the same image tensors as in the batch: take them from the padded batch
        one["pixel_values"] = together["pixel_values"][b : b + 1, : max(1, len(depths)), :, : max(depths or [1])]
        with torch.no_grad():
            alone = model(**one).logits
        torch.testing.assert_close(logits[b, : len(tokens)], alone[0], atol=1e-5, rtol=1e-4)


def test_greedy_generation_with_and_without_cache_agree_and_batches_left_padded():
    model = tiny()
    samples = [(SAMPLE, [4]), ([3, 4, *image_group(), 5], [8])]
    left = batch(samples, pad_side="left")
    with torch.no_grad():
        cached = model.generate(**left, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        uncached = model.generate(**left, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert cached.shape == (2, 6)
    torch.testing.assert_close(cached, uncached)
    for b, sample in enumerate(samples):
        one = batch([sample])
        one["pixel_values"] = left["pixel_values"][b : b + 1, :1, :, : sample[1][0]]
        with torch.no_grad():
            alone = model.generate(**one, max_new_tokens=6, do_sample=False, pad_token_id=0)
        torch.testing.assert_close(alone[0], cached[b])


def test_visual_features_are_computed_once_per_generate_call(monkeypatch):
    model = tiny()
    calls = []
    original = model.vision_encoder.forward
    monkeypatch.setattr(model.vision_encoder, "forward", lambda x: calls.append(x.shape) or original(x))
    with torch.no_grad():
        model.generate(**batch([(SAMPLE, [4])]), max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert len(calls) == 1


def test_lora_trains_only_the_adapters():
    model = add_lora(tiny().train(), r=4, alpha=8)
    counts = set_trainable(model, vision=False, perceiver=False, llm=False, embeddings=False, lora=True)
    assert counts["lora"] > 0 and sum(v for k, v in counts.items() if k != "lora") == 0
    lora_names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert lora_names and all("lora_" in n and "language_model" in n for n in lora_names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = batch([(SAMPLE, [4])])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        out = model(**inputs, labels=inputs["input_ids"])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    merged = model.merge_and_unload()
    assert isinstance(merged, MedMLLMForCausalLM) and not any("lora_" in n for n, _ in merged.named_parameters())


def test_lora_targets_no_vision_tower_layer_with_the_same_name():
    model = add_lora(tiny(vision="clip").train(), r=2)
    adapted = {n.split(".lora_")[0] for n, _ in model.named_parameters() if "lora_" in n}
    assert adapted and all(".language_model." in n for n in adapted)


def test_frozen_llm_still_passes_gradients_to_the_perceiver():
    model = tiny().train()
    counts = set_trainable(model, vision=False, perceiver=True, llm=False, embeddings=False)
    assert counts["perceiver"] > 0 and counts["llm"] == counts["vision"] == 0
    inputs = batch([(SAMPLE, [4])])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.perceiver.parameters())
    assert model.projector.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.language_model.parameters())


def test_llm_layers_trains_only_the_top_decoder_layers_and_stops_the_backward_there():
    model = tiny().train()  # 2 decoder layers
    all_llm = set_trainable(model, vision=False, perceiver=False, llm=True, embeddings=False)["llm"]
    counts = set_trainable(model, vision=False, perceiver=False, llm=True, embeddings=False, llm_layers=1)
    assert 0 < counts["llm"] < all_llm and counts["perceiver"] == counts["vision"] == 0
    inputs = batch([(SAMPLE, [4])])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    bottom, top = model.language_model.model.layers
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top.parameters())
    assert all(p.grad is None for p in bottom.parameters())
    assert model.language_model.model.norm.weight.grad is not None  # the final norm trains with the top layers
    assert all(p.grad is None for p in model.perceiver.parameters())


def test_2d_3d_and_text_only_samples_train_together_in_one_batch():
    model = tiny().train()
    set_trainable(model, vision=True, perceiver=True, llm=True, embeddings=True)
    inputs = batch([([5, *image_group(), 6, 7], [1]), ([8, *image_group(), 9, 10], [12]), ([11, 12, 13, 14, 15], [])])
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(30):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        if step == 0:  # every part, the vision encoder included, learns from the mixed batch
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.vision_encoder.parameters())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_text_only_batch_touches_every_trainable_vision_parameter():
    """What DDP needs: no trainable parameter left without a gradient by a text-only batch."""
    model = tiny().train()
    set_trainable(model, vision=True, perceiver=True, llm=True, embeddings=True)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(p.grad.abs().sum() == 0 for p in model.vision_encoder.parameters())


def test_weighted_loss_matches_its_definition():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, 3, 4, -100, 5], [-100, -100, 1, 2, 3]])
    weights = torch.tensor([[0, 2.0, 1.0, 0, 3.0], [0, 0, 1.0, 1.0, 0.5]])
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none").view(2, 4)
    w = weights[:, 1:] * (labels[:, 1:] != -100)
    expected = (ce * w).sum() / w.sum()
    torch.testing.assert_close(weighted_lm_loss(logits, labels, weights), expected)
    plain = ce[labels[:, 1:] != -100].mean()
    torch.testing.assert_close(weighted_lm_loss(logits, labels), plain)
    assert not torch.isclose(expected, plain)
    torch.testing.assert_close(weighted_lm_loss(logits, labels, weights, num_items_in_batch=20.0), (ce * w).sum() / 20.0)


def test_exam_order_embedding_changes_visual_tokens():
    model = tiny(max_exams=4)
    torch.nn.init.normal_(model.exam_embedding.weight)
    inputs = batch([(SAMPLE, [4])])
    with torch.no_grad():
        first = model(**inputs, image_exam_index=torch.tensor([[0]])).logits
        later = model(**inputs, image_exam_index=torch.tensor([[2]])).logits
    assert (first - later).abs().max() > 1e-4


def test_mismatched_image_tokens_are_a_clear_error():
    model = tiny()
    inputs = batch([(SAMPLE, [4])])
    inputs["input_ids"][0, SAMPLE.index(PATCH)] = 5  # one patch slot fewer than the image gives
    with pytest.raises(MedMLLMError, match="visual tokens"):
        model(**inputs)
    with pytest.raises(MedMLLMError, match="no pixel_values"):
        model(input_ids=torch.tensor([SAMPLE]))


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = batch([(SAMPLE, [4])])
    grads = []
    for checkpointing in (False, True):
        model = tiny().train()
        set_trainable(model, vision=True, perceiver=True, llm=True, embeddings=True)
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.perceiver.gradient_checkpointing and model.vision_encoder.gradient_checkpointing
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        grads.append(model.vision_encoder.patch_embed.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_a_ready_llm_keeps_masked_attention_and_matches_a_reload(tmp_path):
    """An LLM handed in already built (as the factory does) must attend like one built inside."""
    settings = dict(TEXT["llama"])
    text_config = AutoConfig.for_model(settings.pop("model_type"), vocab_size=VOCAB, **settings)
    llm = AutoModelForCausalLM.from_config(text_config)
    base = tiny()
    model = MedMLLMForCausalLM(base.config.__class__(**{**base.config.to_dict(), "text_config": llm.config}), language_model=llm).eval()
    assert model.language_model.config._attn_implementation is not None
    inputs = batch([(SAMPLE, [4]), ([5, 6, 7], [])])  # right padding in the second row
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("vision", ["vit3d", "clip"])
def test_forward_backward_and_generate_under_bf16_autocast(vision):
    # Mixed precision (run.precision auto/bf16, GPU or CPU) runs the projector in bf16 while the
    # visual-token buffer is fp32: that index-put once failed with a dtype error.
    model = tiny(vision=vision).train()
    channels = VISION[vision][2]
    inputs = batch([(SAMPLE, [1]), ([5, *image_group(), 6], [4])], channels=channels)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**inputs, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.perceiver.latents.grad is not None
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.generate(**batch([(SAMPLE, [1])], channels=channels), max_new_tokens=3, do_sample=False)
    assert out.shape[-1] == 3


@pytest.mark.parametrize("weighted", [False, True])
def test_training_loss_from_labelled_logits_only_equals_the_full_loss(weighted):
    # In training mode forward projects only the labelled positions to the vocabulary: the loss and
    # every gradient must be those of the full (eval-mode) computation.
    inputs = batch([(SAMPLE, [1]), ([5, *image_group(), 6, 7, 8], [4])])
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    labels[:, :3] = -100  # a prompt
    weights = torch.rand(labels.shape, generator=torch.Generator().manual_seed(0)) if weighted else None
    losses, grads = [], []
    for training in (True, False):
        model = tiny()
        set_trainable(model, vision=True, perceiver=True, llm=True, embeddings=True)
        model.train(training)
        out = model(**inputs, labels=labels, loss_weights=weights)
        out.loss.backward()
        assert (out.logits is None) == training
        losses.append(out.loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[0], losses[1])
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def anatomy_images(n: int, depth: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    """(1, depth, size, size) images sharing one bright 'anatomy', each with a little noise."""
    generator = torch.Generator().manual_seed(seed)
    anatomy = torch.zeros(1, depth, size, size)
    anatomy[..., size // 4: 3 * size // 4, size // 8: size // 2] = 0.8
    return [anatomy + 0.05 * torch.randn(1, depth, size, size, generator=generator) for _ in range(n)]


def test_pixel_centering_subtracts_the_mean_image_per_kind_and_resamples_it_to_other_sizes():
    from medmllm.model.vision import PixelCentering

    centering = PixelCentering(1, (4, 16, 16))
    flat, volumes = anatomy_images(20, 1, 16), anatomy_images(10, 4, 16, seed=1)
    image = flat[0][None]
    torch.testing.assert_close(centering(image), image)  # not fitted: no change
    found = centering.fit(flat + [v * 3 for v in volumes])
    assert found["images_2d"] == 20 and found["images_3d"] == 10
    torch.testing.assert_close(centering.mean_2d, torch.stack(flat).mean(0))
    torch.testing.assert_close(centering.mean_3d, torch.stack(volumes).mean(0) * 3)
    centred = torch.cat([centering(x[None]) for x in flat])
    assert centred.mean().abs() < 1e-5 and centred.std().item() == pytest.approx(1.0, rel=0.02)
    assert found["scale_3d"] == pytest.approx(3 * found["scale_2d"], rel=0.2)  # each kind its own spread
    # the anatomy is gone: what is left differs between images as much as it varies at all
    assert centred.var(0).mean() / centred.pow(2).mean() > 0.9 > torch.stack(flat).var(0).mean() / torch.stack(flat).pow(2).mean()
    bigger = anatomy_images(1, 1, 32, seed=2)[0][None]  # the same anatomy at 32 x 32: meets the mean resampled
    residual = centering(bigger) * centering.scale[0]
    assert residual.shape == bigger.shape and residual.abs().mean() < bigger.abs().mean() / 3


def test_a_fitted_pixel_centering_is_saved_with_the_model_and_used_before_the_encoder(tmp_path):
    model = tiny()
    inputs = batch([(SAMPLE, [4])])
    with torch.no_grad():
        plain = model(**inputs).logits
    model.enable_pixel_centering((4, 16, 16)).fit(anatomy_images(8, 4, 16))
    with torch.no_grad():
        centred = model(**inputs).logits
    first_patch = SAMPLE.index(PATCH)
    assert (centred[:, first_patch:] - plain[:, first_patch:]).abs().max() > 1e-3
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.pixel_center_shape == [4, 16, 16]
    torch.testing.assert_close(loaded.pixel_centering.mean_3d, model.pixel_centering.mean_3d, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, centred, rtol=0, atol=0)


def test_snapped_visual_tokens_are_word_embeddings_and_still_pass_gradients(tmp_path):
    """With config.visual_words each visual token is the input embedding of the word the output
    layer reads it as (forward), while the perceiver still gets a gradient (straight-through)."""
    words = [10, 20, 30, 40]
    model = tiny(visual_words=words)
    pixels = torch.randn(2, 1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    raw = model.projector(model.perceiver(model.vision_encoder(pixels)))
    snapped = model.visual_tokens(pixels)  # (2, L, E)
    table = model.get_input_embeddings().weight
    read = (raw @ model.get_output_embeddings().weight[words].T).argmax(-1)
    torch.testing.assert_close(snapped, table[torch.tensor(words)[read]])
    assert len(set(read.flatten().tolist())) > 1  # not one word for every token
    snapped.pow(2).sum().backward()
    assert model.perceiver.latents.grad is not None and model.perceiver.latents.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)  # the words are part of the model
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.visual_words == words
    with torch.no_grad():
        torch.testing.assert_close(loaded.visual_tokens(pixels), snapped.detach())
    model.config.visual_words = None
    with torch.no_grad():
        torch.testing.assert_close(model.visual_tokens(pixels), raw.detach())
