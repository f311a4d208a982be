"""Stage 4: training. Typed recipes (`recipe`), data (`dataset`), the stage runner and export (`trainer`).

    from medmllm.train import load_recipe, run_recipe, export
    results = run_recipe(load_recipe("recipes/demo.yaml"))
    export(results[-1].output_dir.parent, "my-model")

See docs/training.md. Importing this package does not import torch's heavy parts or transformers'
Trainer; they load when a stage runs.
"""

from medmllm.train.recipe import DataArgs, FreezeArgs, LoraArgs, ModelArgs, Recipe, RunArgs, StageArgs, load_recipe, parse_recipe


def run_recipe(*args, **kwargs):
    """See `medmllm.train.trainer.run_recipe`."""
    from medmllm.train.trainer import run_recipe as run

    return run(*args, **kwargs)


def export(*args, **kwargs):
    """See `medmllm.train.trainer.export`."""
    from medmllm.train.trainer import export as export_run

    return export_run(*args, **kwargs)


__all__ = ["DataArgs", "FreezeArgs", "LoraArgs", "ModelArgs", "Recipe", "RunArgs", "StageArgs", "export", "load_recipe", "parse_recipe", "run_recipe"]
