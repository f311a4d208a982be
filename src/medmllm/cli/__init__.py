"""The ``medmllm`` command: one Typer sub-app per stage of the data flow.

Heavy imports (torch, transformers, nibabel ...) happen inside the commands that need them,
so ``medmllm --help`` answers at once.
"""

from __future__ import annotations

import sys

import typer

from medmllm.cli.data import app as data_app
from medmllm.cli.demo import demo
from medmllm.cli.eval import app as eval_app
from medmllm.cli.models import app as models_app
from medmllm.cli.scan import app as scan_app
from medmllm.cli.serve import app as serve_app
from medmllm.cli.synth import app as synth_app
from medmllm.cli.train import app as train_app
from medmllm.errors import MedMLLMError

app = typer.Typer(
    name="medmllm",
    help="Build, train, evaluate and serve medical multimodal LLMs on X-rays, CT/MRI and clinical text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(scan_app, name="scan")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(serve_app, name="serve")
app.add_typer(synth_app, name="synth")
app.command("demo")(demo)


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 1, never a traceback."""
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code instead of raising it here
        if isinstance(code, int) and code:
            sys.exit(code)
    except MedMLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        # newer typer (0.29 here) raises its own copy of click's exceptions (typer.TyperException), not click's
        if isinstance(e, click.ClickException) or (isinstance(e, typer.TyperException) and hasattr(e, "show")):
            e.show()
            sys.exit(e.exit_code)
        raise
