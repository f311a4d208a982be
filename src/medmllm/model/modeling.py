"""`MedMLLMForCausalLM`: vision encoder -> perceiver -> projection, spliced into any causal LM.

Shapes (B batch, N images per sample, L = num_latents, E = LLM hidden size):

    pixel_values (B, N, C, D, H, W) --crop each to image_sizes, group equal shapes-->
    [pixel centering, when fitted: minus the training images' mean image] ->
    vision encoder (n, C, D, H, W) -> (n, T, d) -> perceiver (n, L, d) -> projector (n, L, E)
    -> written by index into the <image_patch> positions of input embeddings (B, S, E) -> LLM

Image k of the batch (row-major over (b, n) where image_mask is set) fills the k-th group of L
``<image_patch>`` tokens in the batch (row-major over (b, position)); the processor keeps the two
orders equal. Text-only samples, 2D images and 3D volumes mix freely in one batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from medmllm.errors import MedMLLMError
from medmllm.model.configuration import MedMLLMConfig
from medmllm.model.perceiver import PerceiverResampler
from medmllm.model.vision import PixelCentering, build_vision_encoder

IGNORE_INDEX = -100


class MedMLLMPreTrainedModel(PreTrainedModel):
    config_class = MedMLLMConfig
    base_model_prefix = "medmllm"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["PerceiverAttention", "TransformerEncoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        # Only our own modules: the LLM and an HF vision tower initialise themselves.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Conv3d):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)


class MedMLLMForCausalLM(MedMLLMPreTrainedModel, GenerationMixin):
    """A transformers model: `save_pretrained` / `from_pretrained`, `generate`, LoRA through peft.

    Args:
        config: `MedMLLMConfig`.
        language_model: an already loaded causal LM to use instead of building a random one from
            ``config.text_config`` (the factory passes pretrained weights this way).
    """

    def __init__(self, config: MedMLLMConfig, language_model: PreTrainedModel | None = None):
        super().__init__(config)
        self.vision_encoder = build_vision_encoder(config)
        self.pixel_centering = PixelCentering(config.image_channels, config.pixel_center_shape) if config.pixel_center_shape else None
        dim = self.vision_encoder.hidden_size
        self.perceiver = PerceiverResampler(
            dim, config.num_latents, config.perceiver_depth, config.perceiver_heads, config.perceiver_head_dim,
            config.perceiver_ff_mult, config.perceiver_attend_latents,
        )
        hidden = config.text_config.hidden_size
        self.projector = nn.Linear(dim, hidden)
        self.exam_embedding = nn.Embedding(config.max_exams, hidden) if config.max_exams else None
        # Before post_init, which collects the LLM's tied weights (lm_head = embed_tokens). The LLM
        # has initialised itself (its modules carry transformers' "initialised" flag), so
        # post_init's weight initialisation touches only the modules above.
        self.language_model = language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()
        # FSDP (accelerate's transformer-based auto wrap) and device maps read _no_split_modules:
        # add the LLM's decoder layers and an HF vision tower's blocks to our own ViT/perceiver blocks.
        self._no_split_modules = list(dict.fromkeys([
            *type(self)._no_split_modules,
            *(getattr(self.language_model, "_no_split_modules", None) or []),
            *(getattr(getattr(self.vision_encoder, "model", None), "_no_split_modules", None) or []),
        ]))
        if self.language_model.config._attn_implementation is None:
            # A ready LLM shares its config object with ours, and building the composite config
            # resets the sub-config's attention choice; without one the LLM would ignore masks.
            self.language_model.set_attn_implementation(self.config._attn_implementation or "sdpa")

    # -- plumbing transformers expects from a causal LM -------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None) -> None:
        self.vision_encoder.gradient_checkpointing = enable
        self.perceiver.gradient_checkpointing = enable

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs) -> None:
        """Checkpoint the vision blocks, perceiver layers and the LLM's decoder layers."""
        self._set_gradient_checkpointing(True)
        self.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)
        self.language_model.activation_checkpointing_disable()

    # -- vision ----------------------------------------------------------------------------------

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        image_mask: torch.Tensor,
        image_sizes: torch.Tensor | None = None,
        image_exam_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Visual tokens of every real image, in (b, n) row-major order: (n_images, L, E).

        pixel_values (B, N, C, D, H, W) padded; image_mask (B, N) bool; image_sizes (B, N, 3) the
        true (D, H, W) of each image (None: all full size); image_exam_index (B, N) long.
        Images of equal size are encoded together; different sizes never see each other's padding.
        """
        index = image_mask.nonzero(as_tuple=False)  # (n_images, 2) in row-major order
        if image_sizes is None:
            sizes = [tuple(pixel_values.shape[3:])] * len(index)
        else:
            sizes = [tuple(int(s) for s in image_sizes[b, n]) for b, n in index.tolist()]
        hidden = self.config.text_config.hidden_size
        dtype = self.projector.weight.dtype
        out = torch.empty(len(index), self.config.num_latents, hidden, dtype=dtype, device=pixel_values.device)
        for size in dict.fromkeys(sizes):  # each distinct shape once, in first-seen order
            rows = [k for k, s in enumerate(sizes) if s == size]
            d, h, w = size
            batch = torch.stack([pixel_values[index[k, 0], index[k, 1], :, :d, :h, :w] for k in rows]).to(dtype)
            out[rows] = self.visual_tokens(batch).to(dtype)  # under autocast the projector gives bf16/fp16
        return self.add_exam_embedding(out, image_mask, image_exam_index)

    def visual_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (n, C, D, H, W) of one size -> visual tokens (n, L, E), before the exam embedding."""
        if self.pixel_centering is not None:
            pixels = self.pixel_centering(pixels)
        return self.snap_to_words(self.projector(self.perceiver(self.vision_encoder(pixels))))

    def snap_to_words(self, visual: torch.Tensor) -> torch.Tensor:
        """visual (n, L, E) -> each token replaced by the input embedding of the word of
        ``config.visual_words`` that the LLM's output layer reads it as (unchanged when None).

        Why: the warm-up's visual tokens decode to the impression's words through the output layer
        (label F1 0.57 on the demo's first exams), yet the LLM did not copy them into its report:
        they are 3.5x longer than any word's embedding and point elsewhere (cosine 0.2). Snapped,
        the image reads as text, which a pretrained LLM copies. Straight-through (VQ-VAE): the
        forward pass is the word's embedding, the gradient that of the soft mixture over the words,
        so a perceiver that trains on still learns."""
        if not self.config.visual_words:
            return visual
        words = torch.as_tensor(self.config.visual_words, device=visual.device)
        table = self.get_input_embeddings().weight[words].to(visual.dtype)  # (W, E)
        read = visual @ self.get_output_embeddings().weight[words].to(visual.dtype).T  # (n, L, W)
        hard = table[read.argmax(-1)]
        if not (torch.is_grad_enabled() and read.requires_grad):
            return hard  # exactly the words' embeddings, where no gradient is wanted
        soft = read.softmax(-1) @ table
        return hard + soft - soft.detach()

    def enable_pixel_centering(self, shape) -> PixelCentering:
        """Add (or reset) the `PixelCentering` before the vision encoder, its means of ``shape``
        (D, H, W); saved with the model through ``config.pixel_center_shape``. Fit it next."""
        self.config.pixel_center_shape = [int(s) for s in shape]
        device = next(self.vision_encoder.parameters()).device
        self.pixel_centering = PixelCentering(self.config.image_channels, shape).to(device)
        return self.pixel_centering

    def add_exam_embedding(self, visual: torch.Tensor, image_mask: torch.Tensor | None, image_exam_index: torch.Tensor | None) -> torch.Tensor:
        """``visual`` (n_images, L, E) plus each image's exam-order embedding (unchanged when the
        model has none or ``image_exam_index`` (B, N) is None)."""
        if self.exam_embedding is None or image_exam_index is None or image_mask is None:
            return visual
        exams = image_exam_index[image_mask].clamp(0, self.config.max_exams - 1)
        return visual + self.exam_embedding(exams)[:, None, :]

    def embed(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        image_exam_index: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (B, S, E) with every image's visual tokens written into its place.

        ``image_features`` (n_images, L, E): visual tokens computed earlier with
        ``encode_images(..., image_exam_index=None)`` (e.g. cached by a server), in the order
        ``encode_images`` gives; used instead of ``pixel_values``. The exam-order embedding is
        still added from ``image_mask`` and ``image_exam_index`` when given.
        """
        embeds = self.get_input_embeddings()(input_ids)
        patch_id = self.config.image_patch_token_id
        slots = input_ids == patch_id if patch_id is not None else torch.zeros_like(input_ids, dtype=torch.bool)
        n_slots = int(slots.sum())
        has_images = image_features is not None or (pixel_values is not None and image_mask is not None and bool(image_mask.any()))
        if has_images:
            if image_features is not None:
                visual = self.add_exam_embedding(image_features, image_mask, image_exam_index)
            else:
                visual = self.encode_images(pixel_values, image_mask, image_sizes, image_exam_index)
            if visual.shape[0] * visual.shape[1] != n_slots:
                raise MedMLLMError(f"{visual.shape[0]} image(s) give {visual.shape[0] * visual.shape[1]} visual tokens "
                                   f"but the text has {n_slots} <image_patch> positions; build inputs with MedMLLMProcessor")
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), visual.to(embeds.dtype))
        elif n_slots:
            raise MedMLLMError(f"the text has {n_slots} <image_patch> positions but no pixel_values were given")
        elif self.training:
            # A batch without images still touches the vision parameters (with zero weight), so
            # DDP/FSDP see every trainable parameter used: P2Med had to keep image and text-only
            # batches apart to avoid exactly this "unused parameters" error.
            unused = [p for m in (self.vision_encoder, self.perceiver, self.projector) for p in m.parameters() if p.requires_grad]
            if unused:
                embeds = embeds + sum(p.sum() for p in unused) * 0.0
        return embeds

    # -- language --------------------------------------------------------------------------------

    def plain_lm_head(self) -> bool:
        """Whether the LLM's logits are just its output layer on the last hidden state (no logit
        soft-capping or scaling in its forward), so `forward` may apply that layer itself."""
        text = self.config.text_config
        return all(getattr(text, name, None) in (None, 1.0) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        image_exam_index: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        loss_weights: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """input_ids (B, S) with image groups; labels (B, S) with -100 where nothing is learned;
        loss_weights (B, S) per-token weights (default 1 where labelled). The loss is the weighted
        mean token cross-entropy ``sum(w * ce) / sum(w)`` — the weighted loss is what is returned
        and optimised (RadFM's code computed it and returned the unweighted one)."""
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, image_mask, image_sizes, image_exam_index)
        if labels is not None and self.training and past_key_values is None and self.plain_lm_head():
            # Training: logits only where a label is (the answers). On the prompt they are never
            # used, and the (S, vocab) projection and its softmax are a large part of a small
            # LLM's step: 1.38x faster fp32 LoRA steps for the demo preset (benchmarks/cpu_step.py).
            decoder = self.language_model.get_decoder()
            hidden = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, **kwargs).last_hidden_state
            keep = labels[:, 1:] != IGNORE_INDEX
            logits = self.language_model.get_output_embeddings()(hidden[:, :-1][keep])  # (K, V)
            weights = None if loss_weights is None else loss_weights[:, 1:][keep]
            loss = weighted_token_loss(logits, labels[:, 1:][keep], weights, num_items_in_batch)
            return CausalLMOutputWithPast(loss=loss, logits=None)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, past_key_values=past_key_values, use_cache=use_cache, **kwargs
        )
        loss = None
        if labels is not None:
            loss = weighted_lm_loss(outputs.logits, labels, loss_weights, num_items_in_batch)
        return CausalLMOutputWithPast(
            loss=loss, logits=outputs.logits, past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        image_exam_index: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels=None,
        loss_weights=None,
        image_features: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Visual features are computed once (or passed precomputed as ``image_features``, see
        `embed`); the LLM then decodes with its KV cache.

        Returns only the new tokens (B, new), like a decoder-only model given ``inputs_embeds``.
        Batches must be left-padded (the processor does so with ``add_generation_prompt=True``).
        """
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, pixel_values, image_mask, image_sizes, image_exam_index, image_features)
        return self.language_model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs)


def weighted_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None, num_items_in_batch=None
) -> torch.Tensor:
    """Next-token cross-entropy weighted per token: ``sum(w * ce) / sum(w)``.

    logits (B, S, V), labels (B, S) with -100 ignored, weights (B, S) or None (= 1 where labelled).
    ``num_items_in_batch`` (the Trainer's total weight over accumulated micro-batches) replaces
    ``sum(w)`` so that gradient accumulation gives the same loss as one large batch.
    """
    keep = labels[:, 1:] != IGNORE_INDEX
    return weighted_token_loss(logits[:, :-1][keep], labels[:, 1:][keep], None if weights is None else weights[:, 1:][keep], num_items_in_batch)


def weighted_token_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None, num_items_in_batch=None) -> torch.Tensor:
    """``sum(w * ce) / sum(w)`` over K labelled tokens: logits (K, V), labels (K,), weights (K,) or None (= 1)."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    w = torch.ones_like(ce) if weights is None else weights.to(ce.dtype)
    total = w.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=ce.dtype, device=ce.device)
    return (ce * w).sum() / total.clamp_min(1e-8)
