"""Stage 3: the model. `MedMLLMConfig` + `MedMLLMForCausalLM`, registered with the Auto classes.

After ``import medmllm.model``, ``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained(dir)``
load a saved MedMLLM like any transformers model.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from medmllm.model.configuration import IMAGE_END, IMAGE_PATCH, IMAGE_START, SPECIAL_TOKENS, MedMLLMConfig
from medmllm.model.modeling import MedMLLMForCausalLM, weighted_lm_loss

AutoConfig.register("medmllm", MedMLLMConfig, exist_ok=True)
AutoModelForCausalLM.register(MedMLLMConfig, MedMLLMForCausalLM, exist_ok=True)

__all__ = ["IMAGE_END", "IMAGE_PATCH", "IMAGE_START", "SPECIAL_TOKENS", "MedMLLMConfig", "MedMLLMForCausalLM", "weighted_lm_loss"]
