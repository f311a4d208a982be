"""Build a model and its processor from a preset, like OpenFlamingo's ``create_model_and_transforms``.

    model, processor = build("demo")                      # SmolLM2-135M (after `medmllm models fetch`)
    model, processor = build("p2med-8b", llm="/weights/llama-2-7b", vision_weights="/weights/clip-336")
    model, processor = build("tiny")                      # random, for tests: nothing to download

The LLM comes from ``llm`` (a local folder, a ``.gguf`` file, a name fetched with
``medmllm models fetch``, or a hub id already in the Hugging Face cache) or, when a preset has no
LLM or ``random_llm=True``, is built with random weights from the preset's / the LLM's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmllm.errors import MedMLLMError

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _llama(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int | None = None, **extra) -> dict:
    return dict(model_type="llama", hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=4096, **extra)


@dataclass
class Preset:
    """Everything that differs between model sizes; every field becomes part of `MedMLLMConfig`."""

    description: str
    llm: str | None = None  # default LLM (registry name / path); None: random from text_config
    text_config: dict | None = None  # the LLM's shape when it is built with random weights
    vision_encoder: str = "vit3d"
    vision_config: dict = field(default_factory=dict)
    vision_weights: str | None = None  # pretrained vision tower (hf2d), local path or HF cache id
    config: dict = field(default_factory=dict)  # other MedMLLMConfig fields


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "random 2-layer Llama + 1-layer vit3d; for tests, nothing to download",
        text_config=_llama(64, 128, 2, 4, 2, tie_word_embeddings=True),
        vision_config=dict(patch_size=[4, 8, 8], hidden_size=32, num_layers=1, num_heads=2, max_depth=16, max_size=64),
        config=dict(num_latents=4, perceiver_depth=1, perceiver_heads=2, perceiver_head_dim=16,
                    image_recipe_2d={"intensity": "minmax", "size": [32, 32]},
                    image_recipe_3d={"intensity": "minmax", "size": [32, 32], "depth": 8}),
    ),
    "demo": Preset(
        "SmolLM2-135M-Instruct + small vit3d (4 x 192) + perceiver (2 layers, 16 latents); trains on a CPU in minutes",
        llm="smollm2-135m-instruct",
        text_config=_llama(576, 1536, 30, 9, 3, tie_word_embeddings=True, vocab_size=49152),
        vision_config=dict(patch_size=[4, 16, 16], hidden_size=192, num_layers=4, num_heads=3, max_depth=32, max_size=128),
        config=dict(num_latents=16, perceiver_depth=2, perceiver_heads=4, perceiver_head_dim=48,
                    image_recipe_2d={"intensity": "minmax", "size": [64, 64]},
                    image_recipe_3d={"intensity": "minmax", "size": [64, 64], "depth": 16},
                    # an empty system message instead of SmolLM2's 21-token default in every sample: a
                    # third of a ~60-token demo question, a fifth of the tokens stage 2 trained on
                    system_prompt=""),
    ),
    "small": Preset(
        "SmolLM2-135M-Instruct (or --llm) + vit3d (6 x 384) at 128 x 128 + perceiver (4 layers, 32 latents)",
        llm="smollm2-135m-instruct",
        text_config=_llama(576, 1536, 30, 9, 3, tie_word_embeddings=True, vocab_size=49152),
        vision_config=dict(patch_size=[4, 16, 16], hidden_size=384, num_layers=6, num_heads=6, max_depth=64, max_size=256),
        config=dict(num_latents=32, perceiver_depth=4, perceiver_heads=6, perceiver_head_dim=64,
                    image_recipe_2d={"intensity": "minmax", "size": [128, 128]},
                    image_recipe_3d={"intensity": "minmax", "size": [128, 128], "depth": "radfm"}),
    ),
    "p2med-8b": Preset(
        "P2Med-MLLM: CLIP ViT-L/14-336 on every slice + perceiver (6 layers x 32 latents) + a 7B Llama from your weights",
        text_config=_llama(4096, 11008, 32, 32, vocab_size=55296),
        vision_encoder="hf2d",
        vision_config=dict(max_slices=64, hf_config=dict(
            model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")),
        vision_weights="openai/clip-vit-large-patch14-336",
        config=dict(num_latents=32, perceiver_depth=6, perceiver_heads=16, perceiver_head_dim=64, image_channels=3,
                    image_mean=CLIP_MEAN, image_std=CLIP_STD, image_recipe_2d="p2med-xray", image_recipe_3d="p2med-ct"),
    ),
    "radfm-14b": Preset(
        "RadFM: vit3d (12 x 768, 32 x 32 x 4 patches) + perceiver (6 layers x 32 latents) + a 13B Llama from your weights",
        text_config=_llama(5120, 13824, 40, 40, vocab_size=32000),
        vision_config=dict(patch_size=[4, 32, 32], hidden_size=768, num_layers=12, num_heads=12, max_depth=64, max_size=512),
        config=dict(num_latents=32, perceiver_depth=6, perceiver_heads=8, perceiver_head_dim=64,
                    image_recipe_2d="radfm-2d", image_recipe_3d="radfm-3d"),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise MedMLLMError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def load_llm(source: str | Path, *, random_weights: bool = False, torch_dtype=None):
    """(causal LM, tokenizer) from a folder, a ``.gguf`` file, a fetched name or a cached hub id."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from medmllm.model.hub import resolve_model

    path = Path(source)
    gguf = {}
    if path.suffix == ".gguf" and path.is_file():
        folder, gguf = path.parent, {"gguf_file": path.name}
    else:
        folder = resolve_model(str(source))
    tokenizer = AutoTokenizer.from_pretrained(folder, **gguf)
    if random_weights:
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, **gguf)), tokenizer
    kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
    return AutoModelForCausalLM.from_pretrained(folder, **gguf, **kwargs), tokenizer


def build(
    preset: str = "tiny",
    *,
    llm: str | Path | None = None,
    tokenizer=None,
    vision_weights: str | Path | None = None,
    vision_encoder: str | None = None,
    random_llm: bool = False,
    torch_dtype=None,
    **overrides: Any,
):
    """A `MedMLLMForCausalLM` and its `MedMLLMProcessor`, ready to train or generate.

    Args:
        preset: a name in `PRESETS`.
        llm: the LLM to use instead of the preset's (see module docstring).
        tokenizer: a tokenizer to use (default: the LLM's; for a random LLM without one, the
            built-in tiny tokenizer).
        vision_weights: pretrained weights of an ``hf2d`` tower (default the preset's, when found).
        vision_encoder: another encoder than the preset's (then ``vision_config`` replaces, rather
            than updates, the preset's encoder settings).
        random_llm: build the LLM with random weights in the LLM's (or the preset's) shape, e.g.
            for benchmarks; nothing is downloaded.
        overrides: any `MedMLLMConfig` field (e.g. ``num_latents=64``, ``max_exams=8``).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from medmllm.model.configuration import MedMLLMConfig
    from medmllm.model.modeling import MedMLLMForCausalLM
    from medmllm.model.processor import MedMLLMProcessor, add_image_tokens
    from medmllm.model.tokenizer import tiny_tokenizer

    spec = get_preset(preset)
    source = llm if llm is not None else spec.llm
    if source is None or (random_llm and llm is None):  # random, in the preset's shape
        text = dict(spec.text_config)
        tokenizer = tokenizer or tiny_tokenizer()
        text.setdefault("vocab_size", len(tokenizer))
        text_config = AutoConfig.for_model(text.pop("model_type"), **text)
        language_model = AutoModelForCausalLM.from_config(text_config, **({"dtype": torch_dtype} if torch_dtype else {}))
    else:
        language_model, llm_tokenizer = load_llm(source, random_weights=random_llm, torch_dtype=torch_dtype)
        tokenizer = tokenizer or llm_tokenizer

    ids = add_image_tokens(tokenizer)
    if language_model.get_input_embeddings().num_embeddings < len(tokenizer):
        language_model.resize_token_embeddings(len(tokenizer))  # new rows start at the mean embedding
    settings = dict(spec.config)
    settings.update(overrides)
    encoder = vision_encoder or spec.vision_encoder
    vision_config = {**(spec.vision_config if encoder == spec.vision_encoder else {}), **settings.pop("vision_config", {})}
    config = MedMLLMConfig(
        text_config=language_model.config,
        vision_encoder=encoder,
        vision_config=vision_config,
        image_start_token_id=ids["<image>"],
        image_end_token_id=ids["</image>"],
        image_patch_token_id=ids["<image_patch>"],
        **settings,
    )
    model = MedMLLMForCausalLM(config, language_model=language_model)
    weights = vision_weights if vision_weights is not None else (spec.vision_weights if encoder == spec.vision_encoder else None)
    if config.vision_encoder == "hf2d" and weights is not None:
        _load_vision_tower(model, weights, required=vision_weights is not None)
    return model, MedMLLMProcessor(tokenizer, config)


def _load_vision_tower(model, weights: str | Path, required: bool) -> None:
    """Pretrained weights into an ``hf2d`` tower (e.g. CLIP's vision half of a full CLIP checkpoint)."""
    from medmllm.model.hub import resolve_model

    try:
        folder = resolve_model(str(weights))
    except MedMLLMError:
        if required:
            raise
        import warnings

        warnings.warn(f"vision weights {weights} not found locally: the vision tower is random", stacklevel=3)
        return
    encoder = model.vision_encoder
    pretrained = type(encoder.model).from_pretrained(folder)
    encoder.model.load_state_dict(pretrained.state_dict())
    model.config.vision_config = {**model.config.vision_config, "hf_config": pretrained.config.to_diff_dict() | {"model_type": pretrained.config.model_type}}
