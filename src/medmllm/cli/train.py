"""``medmllm train``: run a training recipe, or export a trained run as a model folder.

    medmllm train recipes/demo.yaml [--stage NAME] [--resume]     (= medmllm train run ...)
    medmllm train export RUN -o MODEL_DIR [--stage NAME]
"""

from __future__ import annotations

from pathlib import Path

import typer

from medmllm.cli.groups import DefaultRunGroup

app = typer.Typer(
    cls=DefaultRunGroup,
    help="Train a model from a recipe (RECIPE.yaml), or export a trained run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command("run")
def run(
    recipe: Path = typer.Argument(..., help="The recipe YAML (see docs/training.md and recipes/)."),
    stage: str = typer.Option(None, "--stage", help="Run only this stage (the stages before it must have finished)."),
    resume: bool = typer.Option(False, "--resume", help="Skip finished stages; continue an unfinished one from its last checkpoint."),
    output_dir: Path = typer.Option(None, "--output-dir", "-o", help="Override run.output_dir of the recipe."),
) -> None:
    """Train every stage of RECIPE in order (each starts from the previous stage's output)."""
    from medmllm.train.recipe import load_recipe

    loaded = load_recipe(recipe)
    if stage is not None:
        loaded.stage(stage)  # an unknown stage is a one-line error before anything loads
    if output_dir is not None:
        loaded.run.output_dir = output_dir

    import os

    from medmllm.train.trainer import run_recipe

    try:
        results = run_recipe(loaded, stage=stage, resume=resume)
    finally:
        # Under torchrun, a process group left to the interpreter's exit can abort one rank
        # ("terminate called without an active exception", SIGABRT) after training finished.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return  # launched distributed: the first process reports
    for result in results:
        loss = result.metrics.get("train_loss")
        evaluation = result.metrics.get("eval_loss")
        summary = f"stage {result.name}: {result.model_dir}"
        if loss is not None:
            summary += f"  train_loss={loss:.4f}"
        if evaluation is not None:
            summary += f"  eval_loss={evaluation:.4f}"
        typer.echo(summary)


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="A run folder (run.output_dir of a recipe)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model folder to write (weights, config, processor)."),
    stage: str = typer.Option(None, "--stage", help="Export this stage's model instead of the last stage's."),
) -> None:
    """Write a run's final model (LoRA merged) as a folder that from_pretrained loads on its own."""
    from medmllm.train.trainer import export as export_run

    typer.echo(f"exported {export_run(run_dir, output, stage)}")
