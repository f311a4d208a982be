"""Training recipes: a typed YAML file, one pydantic class per argument group (as LLaMA-Factory's hparams).

    model:   what to start from (a preset, or a saved model folder) -> `ModelArgs`
    data:    default data settings of every stage                    -> `DataArgs`
    run:     where outputs go, precision, logging, checkpoints       -> `RunArgs`
    stages:  a list; each names its freeze switches, optional LoRA,
             hyper-parameters and (optionally) its own data fields   -> `StageArgs` (`FreezeArgs`, `LoraArgs`)

A stage's ``data`` is merged over the top-level ``data`` field by field, so P2Med's stages share
one eval file and differ in their training file and max tokens. Relative paths are relative to the
recipe file's folder. `load_recipe` turns any problem into one `MedMLLMError` line naming the file
and the field: ``recipes/x.yaml: stages.1.learning_rate: Input should be a valid number``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medmllm.config_files import describe_validation_error, read_yaml
from medmllm.errors import MedMLLMError


class _Args(BaseModel):
    # extra="forbid": a misspelt key (learning_rat) is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid")


class ModelArgs(_Args):
    """The model the first stage starts from: a saved model folder (``init``), else ``preset`` built by the factory."""

    preset: str = "tiny"
    llm: str | None = None  # LLM weights instead of the preset's (folder, .gguf, fetched name)
    vision_weights: str | None = None  # pretrained hf2d tower
    init: Path | None = None  # a folder written by save_pretrained (model + processor): start from it
    overrides: dict[str, Any] = Field(default_factory=dict)  # MedMLLMConfig fields, e.g. num_latents


class DataArgs(_Args):
    """Sample JSONL files (docs/data-format.md); images are read relative to each file's folder."""

    train: Path | None = None
    eval: Path | None = None
    max_tokens: int = Field(2048, ge=8)  # longer samples are dropped (and counted in the log), never cut
    group_by_length: bool = True  # batches of similar length (text + image tokens), less padding
    num_workers: int = Field(0, ge=0)  # DataLoader workers: images are read and prepared in the collator


class FreezeArgs(_Args):
    """Which parts are trained (`medmllm.model.adapters.set_trainable`); LoRA adapters always are."""

    vision: bool = False
    perceiver: bool = True
    llm: bool = False
    # with llm: only the last N decoder layers train (LLaMA-Factory's freeze_trainable_layers); None: all
    llm_layers: int | None = Field(None, ge=1)
    embeddings: bool = False

    @model_validator(mode="after")
    def _layers_of_a_trained_llm(self) -> FreezeArgs:
        if self.llm_layers is not None and not self.llm:
            raise ValueError("llm_layers picks which of the LLM's layers train: it needs llm: true")
        return self


class LoraArgs(_Args):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target: list[str] | None = None  # leaf names of LLM linear layers; default all of them


class StageArgs(_Args):
    """One training stage. Defaults are P2Med's (Table VII, section V-B): Adam, cosine, warm-up 0.03."""

    name: str
    # "language": next-token loss on the answers (every P2Med stage). "report-labels": the vision
    # encoder alone learns the CheXpert observations of each image's report, a stand-in for a
    # pretrained tower when it starts from random weights (medmllm.train.vision_warmup).
    objective: Literal["language", "report-labels"] = "language"
    # report-labels only: first fit the model's pixel centering (the training images' mean image,
    # subtracted before the encoder) on the stage's images; see medmllm.model.vision.PixelCentering.
    center_pixels: bool = True
    # report-labels only: phase 2 also scores each visual token with the LLM's output layer against
    # the impression's token (cross-entropy), so that the tokens decode to the impression's words
    # (docs/training.md; alone it did not help the LLM read them, so it is off by default).
    impression_words: bool = False
    # report-labels with impression_words only: afterwards every visual token is snapped to the
    # embedding of the impression word it reads as (`MedMLLMForCausalLM.snap_to_words`), so the
    # LLM sees the image as words and can copy them into its report (docs/training.md).
    snap_to_words: bool = False
    data: DataArgs = Field(default_factory=DataArgs)
    train: FreezeArgs = Field(default_factory=FreezeArgs)
    lora: LoraArgs | None = None
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = Field(2e-6, gt=0)
    # The perceiver's own learning rate when it trains beside the LLM (ms-swift's aligner_lr): the
    # LLM's loss at LoRA's rate can flatten the visual tokens (docs/demo.md). None: learning_rate.
    perceiver_learning_rate: float | None = Field(None, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    # AdamW with weight_decay 0 is Adam (the papers' optimiser); "sgd" etc. are any transformers OptimizerNames.
    optim: str = "adamw_torch"
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(1, ge=1)  # per device
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, ge=0)  # 0 disables clipping
    eval_steps: int | None = Field(None, ge=1)  # None: evaluate once per epoch (when there is eval data)

    @model_validator(mode="after")
    def _objective_fits(self) -> StageArgs:
        if self.objective == "report-labels" and self.lora is not None:
            raise ValueError("a report-labels stage trains the vision encoder only; remove 'lora'")
        if self.snap_to_words and not (self.objective == "report-labels" and self.impression_words and self.train.perceiver):
            raise ValueError("snap_to_words snaps to the impression words a report-labels stage taught the perceiver: "
                             "it needs objective: report-labels, impression_words: true and train.perceiver")
        return self

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("must be a non-empty folder name (letters, digits, - _ .)")
        return v


class RunArgs(_Args):
    output_dir: Path = Path("runs/run")
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 (or fp16) autocast on a GPU, bf16 on a CPU with native bf16 that measures faster, else fp32 (model/precision.py)
    gradient_checkpointing: bool = False
    logging_steps: int = Field(10, ge=1)
    save_steps: int | None = Field(500, ge=1)  # Trainer checkpoints (for --resume); None: none
    save_total_limit: int = Field(2, ge=1)
    report_to: list[str] | None = None  # None: TensorBoard when installed
    # At each evaluation, greedy answers to the first N eval samples are scored with the evaluation
    # harness's fast metrics (BLEU, ROUGE, accuracy ... by task); 0 switches it off.
    eval_generate: int = Field(16, ge=0)
    eval_max_new_tokens: int = Field(128, ge=1)


class Recipe(_Args):
    model: ModelArgs = Field(default_factory=ModelArgs)
    data: DataArgs = Field(default_factory=DataArgs)
    run: RunArgs = Field(default_factory=RunArgs)
    stages: list[StageArgs] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _merge_stage_data(cls, raw: Any) -> Any:
        """Each stage's ``data`` = the top-level ``data`` updated with the stage's own fields."""
        if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list):
            return raw
        shared = raw.get("data") or {}
        if not isinstance(shared, dict):
            return raw
        stages = [{**s, "data": {**shared, **(s.get("data") or {})}} if isinstance(s, dict) else s for s in raw["stages"]]
        return {**raw, "stages": stages}

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for i, stage in enumerate(self.stages):
            if stage.data.train is None:
                raise ValueError(f"stages.{i} ({stage.name}): no training data (data.train)")
        return self

    def stage(self, name: str) -> StageArgs:
        for s in self.stages:
            if s.name == name:
                return s
        raise MedMLLMError(f"no stage {name!r} in the recipe; stages: {', '.join(s.name for s in self.stages)}")

    def resolve_paths(self, base: Path) -> Recipe:
        """Relative paths made relative to ``base`` (the recipe file's folder)."""

        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        self.run.output_dir = fix(self.run.output_dir)
        self.model.init = fix(self.model.init)
        for data in (self.data, *(s.data for s in self.stages)):
            data.train, data.eval = fix(data.train), fix(data.eval)
        return self


def parse_recipe(raw: Any, where: str = "recipe", base: Path | None = None) -> Recipe:
    """A `Recipe` from a parsed YAML/JSON object; errors are one line starting with ``where``."""
    if not isinstance(raw, dict):
        raise MedMLLMError(f"{where}: expected a mapping with model / data / run / stages, got {type(raw).__name__}")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise MedMLLMError(f"{where}: {describe_validation_error(e, 'recipe')}") from None
    return recipe.resolve_paths(base) if base is not None else recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe YAML; paths in it are resolved against its folder."""
    path = Path(path)
    return parse_recipe(read_yaml(path), str(path), path.parent)


__all__ = ["DataArgs", "FreezeArgs", "LoraArgs", "ModelArgs", "Recipe", "RunArgs", "StageArgs", "load_recipe", "parse_recipe"]
