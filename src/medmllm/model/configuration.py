"""`MedMLLMConfig`: one config for vision encoder + perceiver + any transformers causal LM.

Image tokens
------------
The tokenizer gets three added special tokens. Each image in the text is
``<image>`` + ``num_latents`` x ``<image_patch>`` + ``</image>``; the model writes the perceiver's
``num_latents`` output vectors of that image into the ``<image_patch>`` positions, in order.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

IMAGE_START = "<image>"
IMAGE_END = "</image>"
IMAGE_PATCH = "<image_patch>"
SPECIAL_TOKENS = (IMAGE_START, IMAGE_END, IMAGE_PATCH)


@strict
class MedMLLMConfig(PreTrainedConfig):
    """Configuration of `MedMLLMForCausalLM`.

    Args:
        text_config: the LLM's config (any causal LM transformers can build; default a tiny Llama).
        vision_encoder: name in `medmllm.model.vision.VISION_ENCODERS`: ``"vit3d"`` (RadFM) or
            ``"hf2d"`` (P2Med: a transformers vision model applied to every slice).
        vision_config: the encoder's own settings (see its class), e.g. for ``vit3d``
            ``{"patch_size": [4, 32, 32], "hidden_size": 768, "num_layers": 12, ...}``; for ``hf2d``
            ``{"hf_config": {"model_type": "clip_vision_model", ...}, "max_slices": 64}``.
        num_latents: visual tokens per image after the perceiver (P2Med and RadFM: 32).
        perceiver_depth / perceiver_heads / perceiver_head_dim / perceiver_ff_mult: perceiver shape.
        perceiver_attend_latents: keys and values from [visual tokens; latents] (Flamingo, RadFM)
            when True; from the visual tokens only (P2Med eq. 3) when False.
        max_exams: size of the learned exam-order embedding added to each image's tokens
            (0 = off); exam k of a conversation, in time order, gets row min(k, max_exams - 1).
        image_channels: channels the vision encoder takes (1 for grey CT/MR, 3 for CLIP-like towers).
        image_recipe_2d / image_recipe_3d: `medmllm.scans.prepare` recipe (a name or a dict of
            `Recipe` fields) that the processor applies to 2D images and to volumes.
        image_mean / image_std: per-channel normalisation after the recipe (CLIP's for ``hf2d``).
        pixel_center_shape: (D, H, W) of the mean images that `medmllm.model.vision.PixelCentering`
            subtracts before the vision encoder (None = off). Set by a ``report-labels`` stage,
            which fits them on its training images.
        visual_words: token ids the visual tokens are snapped to (None = off): each visual token is
            replaced by the LLM's input embedding of the word it reads as (straight-through), so the
            LLM sees words it already knows. Set by a ``report-labels`` stage with ``snap_to_words``.
        image_start_token_id / image_end_token_id / image_patch_token_id: ids of the added tokens,
            set when the tokenizer is extended (`medmllm.model.factory`).
        system_prompt: the system message the processor puts first in a conversation that has
            none (None = none added: a chat template may write its own default). With SmolLM2's
            template that default is 21 tokens ("You are a helpful AI assistant named SmolLM,
            trained by Hugging Face") in every sample; the demo preset's "" writes an empty one (5).
    """

    model_type = "medmllm"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    vision_encoder: str = "vit3d"
    vision_config: dict | None = None
    num_latents: int = 32
    perceiver_depth: int = 6
    perceiver_heads: int = 8
    perceiver_head_dim: int = 64
    perceiver_ff_mult: int = 4
    perceiver_attend_latents: bool = True
    max_exams: int = 0
    image_channels: int = 1
    image_recipe_2d: str | dict | None = "radfm-2d"
    image_recipe_3d: str | dict | None = "radfm-3d"
    image_mean: list | None = None
    image_std: list | None = None
    pixel_center_shape: list | None = None
    visual_words: list | None = None
    image_start_token_id: int | None = None
    image_end_token_id: int | None = None
    image_patch_token_id: int | None = None
    system_prompt: str | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = {}
        super().__post_init__(**kwargs)
