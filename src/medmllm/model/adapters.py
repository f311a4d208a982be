"""LoRA on the LLM (through peft) and the freeze switches of the training stages.

P2Med: stage 1 trains only the perceiver; stages 2-3 add LoRA on the LLM; the vision encoder
and the LLM's own weights stay frozen throughout. RadFM trains everything after a first epoch
with the LLM frozen. `set_trainable` expresses all of these.
"""

from __future__ import annotations

import re

from torch import nn

from medmllm.errors import MedMLLMError

PERCEIVER_PARTS = ("perceiver.", "projector.", "exam_embedding.")  # what `set_trainable` calls the perceiver


def perceiver_parameters(model) -> list:
    """The perceiver's parameters (perceiver + projector + exam embedding), peft-wrapped or not."""
    base = getattr(model, "get_base_model", lambda: model)()
    return [p for name, p in base.named_parameters() if name.startswith(PERCEIVER_PARTS)]


def decoder_layers(language_model) -> nn.ModuleList:
    """The LLM's stack of decoder layers: the first `nn.ModuleList` of ``num_hidden_layers`` modules
    (``model.layers`` in Llama; the outer list comes before a mixture-of-experts' lists of experts)."""
    n = language_model.config.num_hidden_layers
    for module in language_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise MedMLLMError(f"{type(language_model).__name__}: no list of its {n} decoder layers found, so llm_layers cannot pick the top ones")


def set_trainable(model, *, vision: bool = False, perceiver: bool = True, llm: bool = False, embeddings: bool = False, lora: bool = True,
                  llm_layers: int | None = None) -> dict[str, int]:
    """Switch ``requires_grad`` per part; returns trainable parameter counts per part.

    Parts: ``vision`` (encoder), ``perceiver`` (perceiver + projector + exam embedding), ``llm``
    (the LLM's own weights, without its embeddings), ``embeddings`` (LLM input and output
    embeddings, which hold the image tokens' rows), ``lora`` (adapters added by `add_lora`).
    ``llm_layers``: with ``llm``, only the last N decoder layers (and the final norm) train, as
    LLaMA-Factory's ``freeze_trainable_layers``; the backward pass then stops at the lowest of them.
    """
    base = getattr(model, "get_base_model", lambda: model)()
    embedding_params = {id(p) for m in (base.get_input_embeddings(), base.get_output_embeddings()) if m is not None for p in m.parameters()}
    frozen_layers = set()
    if llm and llm_layers is not None:
        layers = decoder_layers(base.language_model)
        frozen_layers = {id(p) for layer in layers[: max(0, len(layers) - llm_layers)] for p in layer.parameters()}
    counts = dict.fromkeys(("vision", "perceiver", "llm", "embeddings", "lora"), 0)
    for name, param in base.named_parameters():
        if "lora_" in name:
            part = "lora"
        elif name.startswith("vision_encoder."):
            part = "vision"
        elif name.startswith(PERCEIVER_PARTS):
            part = "perceiver"
        elif id(param) in embedding_params:
            part = "embeddings"
        else:
            part = "llm"
        param.requires_grad = {"vision": vision, "perceiver": perceiver, "llm": llm, "embeddings": embeddings, "lora": lora}[part]
        if part == "llm" and id(param) in frozen_layers:
            param.requires_grad = False
        if param.requires_grad:
            counts[part] += param.numel()
    return counts


def llm_linear_layers(model) -> list[str]:
    """Leaf names of the LLM's linear layers (q_proj, k_proj, ... down_proj), lm_head excluded."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.language_model.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in name}
    return sorted(names)


def add_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05, target: list[str] | None = None):
    """Wrap ``model`` with peft LoRA adapters on the LLM's linear layers only.

    The target is a regular expression anchored at ``language_model.``, so equally named layers
    of a CLIP/SigLIP vision tower (q_proj, v_proj ...) get no adapter. Returns the `PeftModel`;
    ``merge_and_unload()`` gives back a plain `MedMLLMForCausalLM` with the adapters merged.
    """
    from peft import LoraConfig, get_peft_model

    leaves = target or llm_linear_layers(model)
    pattern = rf"language_model\..*\.({'|'.join(re.escape(n) for n in leaves)})"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    return get_peft_model(model, config)
