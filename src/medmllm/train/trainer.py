"""Run a recipe's stages with the transformers Trainer, and export a trained run.

Run folder layout (``run.output_dir``)::

    RUN/recipe.yaml                      the recipe as run (resolved)
    RUN/STAGE/model/                     the stage's full model + processor (`from_pretrained` loads it alone)
    RUN/STAGE/adapter/                   LoRA stages only: the adapters (peft format) trained on top of
                                         the previous stage's model
    RUN/STAGE/checkpoints/checkpoint-N   Trainer checkpoints, the last ``run.save_total_limit`` kept; each is
                                         written in checkpoints/.staging/ and renamed into place, so a
                                         kill mid-save never leaves a half checkpoint that --resume would take
    RUN/STAGE/log.jsonl                  one JSON line per logging step (loss, lr, grad_norm, eval_loss ...)
    RUN/STAGE/tensorboard/               TensorBoard event files (when tensorboard is installed)
    RUN/STAGE/DONE                       written last: the stage finished

Chaining: each stage starts from the previous stage's ``model/`` folder. A LoRA stage saves its
adapters AND a merged copy, and the next stage starts from the merged copy (with fresh adapters
if it uses LoRA too). Merging is exact up to float rounding, so the next stage sees the same
function the previous one ended with, every stage's output is a plain model that any tool loads,
and no stage depends on peft to rebuild an adapter stack. (Continuing the *same* adapters would
only carry over their optimiser state, which a new stage resets anyway: it has its own schedule.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medmllm.allocator import hold_freed_memory
from medmllm.errors import MedMLLMError
from medmllm.train.dataset import LengthGroupedSampler, SampleCollator, SampleDataset
from medmllm.train.recipe import Recipe, StageArgs

logger = logging.getLogger(__name__)

DONE = "DONE"
TRAINED_OUTSIDE_ADAPTERS = "trained_outside_adapters.safetensors"  # in LoRA checkpoints
STAGING = ".staging"  # inside checkpoints/: where a checkpoint is written before it is renamed into place


@dataclass
class StageResult:
    name: str
    output_dir: Path  # RUN/STAGE
    model_dir: Path  # RUN/STAGE/model
    metrics: dict = field(default_factory=dict)
    model: object = None  # the trained model in memory (merged when the stage used LoRA)
    processor: object = None


# ------------------------------------------------------------------------------------ Trainer


def _trainer_class():
    """`MedMLLMTrainer`, defined on first use so that importing this module does not import transformers."""
    from transformers import Trainer, TrainerCallback

    class MedMLLMTrainer(Trainer):
        """The Trainer, with the weighted token count as ``num_items_in_batch`` and our sampler.

        transformers counts labelled tokens; our loss divides ``sum(w * ce)`` by ``sum(w)``, so the
        divisor over the accumulated micro-batches must be the total *weight*: then accumulating
        k micro-batches gives exactly the gradient of one k-times-larger batch.
        """

        def __init__(self, *args, lengths=None, generation_eval=None, perceiver_learning_rate=None, **kwargs):
            self._lengths = lengths
            self._perceiver_lr = perceiver_learning_rate
            self._generation_eval = generation_eval  # model -> {"eval_gen/task/metric": value}
            self._staging = None  # set while a checkpoint is being written
            super().__init__(*args, **kwargs)

        def evaluate(self, *args, **kwargs):
            """Eval loss (the Trainer's), then the harness's fast metrics on generated answers."""
            metrics = super().evaluate(*args, **kwargs)
            if self._generation_eval is not None and self.is_world_process_zero():
                generated = self._generation_eval(self.model)
                self.log(generated)
                metrics.update(generated)
            return metrics

        def create_optimizer(self, model=None):
            """The Trainer's optimiser; with ``perceiver_learning_rate`` the perceiver's parameters move
            to groups of their own at that rate (the scheduler then scales each group's rate)."""
            optimizer = super().create_optimizer(model)
            if self._perceiver_lr is None:
                return optimizer
            from medmllm.model.adapters import perceiver_parameters

            moving = {id(p) for p in perceiver_parameters(self.model) if p.requires_grad}
            for group in list(optimizer.param_groups):
                mine = [p for p in group["params"] if id(p) in moving]
                if mine:
                    group["params"] = [p for p in group["params"] if id(p) not in moving]
                    optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": mine, "lr": self._perceiver_lr})
            return optimizer

        # -- LoRA checkpoints keep the other trained parts too ---------------------------------------
        # peft saves adapters only; a LoRA stage that also trains the perceiver (P2Med stage 2) would
        # resume with the perceiver reset. So checkpoints of a peft model carry those weights as well.

        def _save(self, output_dir=None, state_dict=None):
            super()._save(output_dir, state_dict)
            extra = trained_outside_adapters(self.model) if self.args.should_save else {}
            if extra:
                from safetensors.torch import save_file

                save_file(extra, os.path.join(output_dir or self.args.output_dir, TRAINED_OUTSIDE_ADAPTERS))

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            path = Path(resume_from_checkpoint) / TRAINED_OUTSIDE_ADAPTERS
            if path.is_file():
                from safetensors.torch import load_file

                unexpected = (model or self.model).load_state_dict(load_file(path), strict=False).unexpected_keys
                if unexpected:
                    raise MedMLLMError(f"{path}: weights the model does not have, e.g. {unexpected[0]}")

        # -- atomic checkpoints: write into checkpoints/.staging/checkpoint-N, then rename ---------

        def _get_output_dir(self, trial):
            return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            from transformers.trainer_utils import rotate_checkpoints

            run_dir = Path(super()._get_output_dir(trial))
            name = f"checkpoint-{self.state.global_step}"
            self._staging = run_dir / STAGING
            try:
                super()._save_checkpoint(model, trial)  # every rank writes its part (RNG state) here
            finally:
                self._staging = None
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                staged, final = run_dir / STAGING / name, run_dir / name
                if final.exists():  # saved again at the same step (a resumed run that re-saves)
                    shutil.rmtree(final)
                os.replace(staged, final)  # atomic on one file system: the checkpoint is whole or absent
                rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit, use_mtime=False)
            self.accelerator.wait_for_everyone()

        def _get_num_items_in_batch(self, batch_samples, device):
            if not batch_samples or "loss_weights" not in batch_samples[0] or "labels" not in batch_samples[0]:
                return super()._get_num_items_in_batch(batch_samples, device)
            total = sum(learned_weight(b["labels"], b["loss_weights"]) for b in batch_samples)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                # compute_loss multiplies by the number of processes, DDP averages: a global weighted mean.
                total = self.accelerator.gather(total.to(device)).sum()
            return total.to(device)

        def _get_train_sampler(self, train_dataset=None):
            if self._lengths is None:
                return super()._get_train_sampler(train_dataset)
            # Groups of one optimiser step over ALL processes: the order is the same for any number of
            # processes with the same global batch, so a run on 2 GPUs sees what a run on 1 would.
            step = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            return LengthGroupedSampler(self._lengths, step, seed=self.args.seed)

    class JsonlLogger(TrainerCallback):
        """One JSON line per Trainer log event (training steps, evaluations, the final summary)."""

        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                row = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")

    return MedMLLMTrainer, JsonlLogger


def trained_outside_adapters(model) -> dict[str, torch.Tensor]:
    """Trainable parameters of a peft model that are not LoRA adapters (perceiver, projector ...); {} otherwise."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return {}
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad and "lora_" not in name}


def learned_weight(labels: torch.Tensor, loss_weights: torch.Tensor) -> torch.Tensor:
    """Total loss weight of the predicted tokens of a batch: the denominator of `weighted_lm_loss`
    (labels shifted by one, as the loss shifts them)."""
    valid = labels[..., 1:] != -100
    return (loss_weights[..., 1:].float() * valid).sum()


# ------------------------------------------------------------------------------- model set-up


def load_start(recipe: Recipe, index: int):
    """(model, processor) a stage starts from: the previous stage's output, or the recipe's model."""
    if index > 0:
        previous = stage_dir(recipe, recipe.stages[index - 1].name)
        if not (previous / DONE).exists():
            raise MedMLLMError(f"stage {recipe.stages[index].name!r} starts from stage {recipe.stages[index - 1].name!r}, "
                               f"which has not finished ({previous}); run it first")
        return load_model(previous / "model")
    if recipe.model.init is not None:
        return load_model(recipe.model.init)
    from medmllm.model.factory import build

    m = recipe.model
    return build(m.preset, llm=m.llm, vision_weights=m.vision_weights, **m.overrides)


def load_model(folder: Path):
    """A saved model + processor."""
    from transformers import AutoModelForCausalLM

    import medmllm.model  # noqa: F401  (registers "medmllm" with the Auto classes)
    from medmllm.model.processor import MedMLLMProcessor

    if not (Path(folder) / "config.json").is_file():
        raise MedMLLMError(f"{folder}: no saved model here (config.json missing)")
    return AutoModelForCausalLM.from_pretrained(folder), MedMLLMProcessor.from_pretrained(folder)


def prepare_model(model, stage: StageArgs, gradient_checkpointing: bool):
    """Add LoRA (if the stage has it), set the freeze switches; returns (model, trainable counts)."""
    from medmllm.model.adapters import add_lora, set_trainable

    if stage.lora is not None:
        model = add_lora(model, r=stage.lora.r, alpha=stage.lora.alpha, dropout=stage.lora.dropout, target=stage.lora.target)
    t = stage.train
    counts = set_trainable(model, vision=t.vision, perceiver=t.perceiver, llm=t.llm, embeddings=t.embeddings, lora=True, llm_layers=t.llm_layers)
    if not any(counts.values()):
        raise MedMLLMError(f"stage {stage.name!r} trains nothing: switch on a part under 'train' or add 'lora'")
    if gradient_checkpointing:
        model.activation_checkpointing_enable()
        # With a frozen embedding table the checkpointed layers' inputs would not require grad.
        model.enable_input_require_grads()
    return model, counts


def precision_flags(precision: str) -> dict:
    """TrainingArguments' bf16/fp16 for ``run.precision`` (`medmllm.model.precision`: autocast on a
    GPU, and on a CPU with native bf16 that measures faster; fp32 on other CPUs)."""
    from medmllm.model.precision import training_precision

    resolved = training_precision(precision)
    return {"bf16": resolved == "bf16", "fp16": resolved == "fp16"}


def report_to(recipe: Recipe) -> list[str]:
    if recipe.run.report_to is not None:
        return recipe.run.report_to
    try:
        import tensorboard  # noqa: F401

        return ["tensorboard"]
    except ImportError:
        return []


def stage_dir(recipe: Recipe, name: str) -> Path:
    return Path(recipe.run.output_dir) / name


# -------------------------------------------------------------------------------------- stages


def run_stage(recipe: Recipe, name: str, *, resume: bool = False, keep_model: bool = False) -> StageResult:
    """Train one stage from its starting model and save its output (see the module docstring).

    Under ``torchrun`` / ``accelerate launch`` every process runs this; the process group starts
    with `TrainingArguments`, and only the main process deletes, writes logs and saves outputs.
    """
    from accelerate import PartialState
    from transformers import set_seed

    index = [s.name for s in recipe.stages].index(recipe.stage(name).name)
    stage = recipe.stages[index]
    out = stage_dir(recipe, name)
    if stage.objective == "report-labels":
        return run_vision_warmup(recipe, index, keep_model=keep_model)
    checkpoints = out / "checkpoints"
    resume_from = resume and checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))

    args = training_arguments(recipe, stage, checkpoints, has_eval=stage.data.eval is not None)
    _ = args.device  # sets up the process group (gloo on CPU, nccl on GPU) when launched distributed
    processes = PartialState()
    if processes.is_main_process:
        if out.exists() and not resume_from:
            shutil.rmtree(out)  # a fresh run of this stage: no stale model, log or DONE marker
        shutil.rmtree(checkpoints / STAGING, ignore_errors=True)  # a checkpoint a kill interrupted
        out.mkdir(parents=True, exist_ok=True)
    processes.wait_for_everyone()

    set_seed(recipe.run.seed)
    model, processor = load_start(recipe, index)
    model, counts = prepare_model(model, stage, recipe.run.gradient_checkpointing)
    logger.info("stage %s: trainable parameters %s", name, counts)

    train = SampleDataset(stage.data.train, splits=None)
    train.measure(processor, stage.data.max_tokens)
    evaluation = None
    if stage.data.eval is not None:
        evaluation = SampleDataset(stage.data.eval)
        evaluation.measure(processor, stage.data.max_tokens)

    trainer_class, jsonl_logger = _trainer_class()
    generation_eval = None
    if evaluation is not None and recipe.run.eval_generate:
        generation_eval = GenerationEval(evaluation, processor, recipe.run.eval_generate, recipe.run.eval_max_new_tokens)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=SampleCollator(processor, max_length=stage.data.max_tokens),
        lengths=train.lengths if stage.data.group_by_length else None,
        generation_eval=generation_eval,
        perceiver_learning_rate=stage.perceiver_learning_rate,
        callbacks=[jsonl_logger(out / "log.jsonl"), *tensorboard_callbacks(recipe, out)],
    )
    result = trainer.train(resume_from_checkpoint=True if resume_from else None)
    metrics = dict(result.metrics)
    if evaluation is not None:
        metrics.update(trainer.evaluate())
    trainer.save_state()

    # FSDP / ZeRO-3 hold shards: gather the full weights (a collective: every process calls it).
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if sharded else None
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    model = save_stage_output(unwrapped, processor, out, lora=stage.lora is not None, write=processes.is_main_process, state_dict=state_dict)
    if processes.is_main_process:
        mark_done(out, metrics)
    processes.wait_for_everyone()  # the next stage (on every process) starts from this one's output
    return StageResult(name, out, out / "model", metrics, model if keep_model else None, processor if keep_model else None)


def run_vision_warmup(recipe: Recipe, index: int, *, keep_model: bool = False) -> StageResult:
    """A ``report-labels`` stage (`medmllm.train.vision_warmup`): short, so never checkpointed; rerun whole."""
    from transformers import set_seed

    from medmllm.train.vision_warmup import run_report_label_stage

    stage = recipe.stages[index]
    out = stage_dir(recipe, stage.name)
    main, started = int(os.environ.get("RANK", "0")) == 0, time.time()
    if main:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    set_seed(recipe.run.seed)
    model, processor = load_start(recipe, index)
    if torch.cuda.is_available():  # the stage's own loop (no Trainer) puts nothing on the GPU by itself
        model.to(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
    log_path = out / "log.jsonl" if main else Path(os.devnull)
    metrics = run_report_label_stage(model, processor, stage, recipe.run.seed, log_path, recipe.run.logging_steps)
    logger.info("stage %s: %s", stage.name, metrics)
    model = save_stage_output(model, processor, out, lora=False, write=main)
    if main:
        mark_done(out, metrics)
    while not main and not ((out / DONE).exists() and (out / DONE).stat().st_mtime >= started):
        time.sleep(0.5)  # launched distributed: the next stage starts from what the first process saves
    return StageResult(stage.name, out, out / "model", metrics, model if keep_model else None, processor if keep_model else None)


def training_arguments(recipe: Recipe, stage: StageArgs, checkpoints: Path, *, has_eval: bool):
    """The Trainer's arguments for one stage (creating them starts the process group when launched distributed)."""
    from transformers import TrainingArguments

    eval_strategy = "no" if not has_eval else ("steps" if stage.eval_steps else "epoch")
    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=stage.epochs,
        max_steps=stage.max_steps,
        learning_rate=stage.learning_rate,
        lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup_ratio,  # a float below 1 is a ratio of the total steps (transformers 5)
        optim=stage.optim,
        weight_decay=stage.weight_decay,
        per_device_train_batch_size=stage.batch_size,
        per_device_eval_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum,
        max_grad_norm=stage.max_grad_norm,  # 0: no clipping
        eval_strategy=eval_strategy,
        eval_steps=stage.eval_steps,
        logging_steps=recipe.run.logging_steps,
        save_strategy="steps" if recipe.run.save_steps else "no",
        save_steps=recipe.run.save_steps or 500,
        save_total_limit=recipe.run.save_total_limit,
        seed=recipe.run.seed,
        data_seed=recipe.run.seed,
        report_to=[r for r in report_to(recipe) if r != "tensorboard"],  # ours: see tensorboard_callbacks
        remove_unused_columns=False,  # items are Samples, not feature dicts
        dataloader_num_workers=stage.data.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False,  # every vision/perceiver parameter is touched (modeling.py)
        use_cpu=not torch.cuda.is_available(),  # accelerate starts a gloo group only for cpu=True (torchrun on CPUs)
        **precision_flags(recipe.run.precision),
    )


def tensorboard_callbacks(recipe: Recipe, out: Path) -> list:
    """TensorBoard events in RUN/STAGE/tensorboard (not transformers' runs/DATE_HOST default)."""
    if "tensorboard" not in report_to(recipe):
        return []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(out / "tensorboard")  # the writer is made on the main process at train begin
    return [callback]


class GenerationEval:
    """Greedy answers to the first ``n`` held-out samples, scored with the harness's fast metrics
    (`medmllm.eval.runner.fast_metrics`: task-appropriate text and label metrics, no judge).

    Each sample is asked what precedes its last assistant turn; that turn is the reference.
    Returns ``{"eval_gen/TASK/METRIC": value}`` so the numbers sit beside eval_loss in the logs.
    """

    def __init__(self, dataset: SampleDataset, processor, n: int, max_new_tokens: int, batch_size: int = 4):
        self.items = [dataset[i] for i in range(min(n, len(dataset)))]
        self.items = [item for item in self.items if last_assistant(item.sample) is not None]
        self.processor, self.max_new_tokens, self.batch_size = processor, max_new_tokens, batch_size

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        from medmllm.eval.runner import fast_metrics

        if not self.items:
            return {}
        was_training = model.training
        model.eval()
        predictions = []
        for start in range(0, len(self.items), self.batch_size):
            chunk = self.items[start : start + self.batch_size]
            messages = [item.sample.to_messages(item.root, upto=last_assistant(item.sample)) for item in chunk]
            batch = self.processor(messages, add_generation_prompt=True).to(model.device)
            ids = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                 pad_token_id=self.processor.pad_token_id, eos_token_id=self.processor.tokenizer.eos_token_id)
            predictions += [text.strip() for text in self.processor.batch_decode(ids)]
        model.train(was_training)
        scores = fast_metrics(predictions, [item.sample for item in self.items])
        return {f"eval_gen/{key}": value for key, value in scores.items()}


def last_assistant(sample) -> int | None:
    """Index of the sample's last assistant turn (the reference a generation is scored against)."""
    indices = [i for i, turn in enumerate(sample.turns) if turn.role == "assistant"]
    return indices[-1] if indices else None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def mark_done(out: Path, metrics: dict) -> None:
    """A stage's metrics.json, then its DONE marker (written last: --resume skips a stage that has it)."""
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_atomic(out / DONE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")


def save_stage_output(model, processor, out: Path, *, lora: bool, write: bool = True, state_dict: dict | None = None):
    """Adapters (LoRA stages) + the full model and processor in ``out/model``; returns the saved
    (merged) model. ``write=False`` (processes other than the main one) only merges.
    ``state_dict``: the full weights when the model is sharded (FSDP, ZeRO-3), gathered by
    ``accelerator.get_state_dict`` on every process.

    The model folder is written beside its final place and renamed, so a stage folder never holds
    half a model."""
    if lora:
        if write:
            model.save_pretrained(out / "adapter", state_dict=state_dict)  # peft keeps the adapter weights only
        model = model.merge_and_unload()
        state_dict = None  # merged: the module's own weights
    if write:
        staging = out / ".model.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, state_dict=state_dict)
        processor.save_pretrained(staging)
        shutil.rmtree(out / "model", ignore_errors=True)
        os.replace(staging, out / "model")
    return model


def run_recipe(recipe: Recipe, *, stage: str | None = None, resume: bool = False, keep_model: bool = False) -> list[StageResult]:
    """Run every stage in order (or only ``stage``). With ``resume``, finished stages are skipped
    and an unfinished one continues from its last checkpoint; without, stages run afresh."""
    hold_freed_memory()  # the same large activations every step: reuse their pages (medmllm.allocator)
    names = [recipe.stage(stage).name] if stage else [s.name for s in recipe.stages]
    out = Path(recipe.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:  # launched distributed: only the first process writes
        write_atomic(out / "recipe.json", recipe.model_dump_json(indent=2) + "\n")
    results = []
    for name in names:
        folder = stage_dir(recipe, name)
        if resume and (folder / DONE).exists():
            logger.info("stage %s already finished: skipped", name)
            metrics_file = folder / "metrics.json"
            metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
            results.append(StageResult(name, folder, folder / "model", metrics))
            continue
        results.append(run_stage(recipe, name, resume=resume, keep_model=keep_model))
    return results


# -------------------------------------------------------------------------------------- export


def export(run: str | Path, output: str | Path, stage: str | None = None) -> Path:
    """Write a run's final model (or ``stage``'s) as a self-contained model folder.

    Stage outputs are already merged, so this loads the model and saves it again: the result holds
    weights, config and processor, and ``AutoModelForCausalLM.from_pretrained`` (after ``import
    medmllm.model``) plus ``MedMLLMProcessor.from_pretrained`` load it with nothing else around.
    """
    run = Path(run)
    recipe_file = run / "recipe.json"
    if not recipe_file.is_file():
        raise MedMLLMError(f"{run}: not a training run (recipe.json missing)")
    names = [s["name"] for s in json.loads(recipe_file.read_text())["stages"]]
    if stage is not None and stage not in names:
        raise MedMLLMError(f"{run}: no stage {stage!r}; stages: {', '.join(names)}")
    target = stage or names[-1]
    if not (run / target / DONE).exists():
        raise MedMLLMError(f"{run}: stage {target!r} has not finished; nothing to export (train it, or pass --stage)")
    source = run / target / "model"
    model, processor = load_model(source)
    output = Path(output)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    return output


__all__ = ["StageResult", "export", "learned_weight", "load_model", "prepare_model", "run_recipe", "run_stage", "save_stage_output"]
