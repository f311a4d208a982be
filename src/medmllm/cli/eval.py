"""``medmllm eval``: evaluate models on benchmark tasks, score predictions, label reports, compare runs.

    medmllm eval run (--model DIR | --hf-model DIR | --endpoint URL --api-model NAME) --bench NAME -o OUT
    medmllm eval score --pred P.jsonl --ref R.jsonl --metrics bleu,rouge_l,cider [--json] [--per-sample OUT.jsonl]
    medmllm eval label REPORTS.jsonl [-o OUT.jsonl]
    medmllm eval compare RUN_A RUN_B

Each command lives in its own module under ``medmllm.cli.eval_commands`` and is registered below.
Scoring and labelling never import torch (tests/eval check it).
"""

from __future__ import annotations

import typer

from medmllm.cli.eval_commands.compare import compare_command
from medmllm.cli.eval_commands.judge import judge_command
from medmllm.cli.eval_commands.label import label_command
from medmllm.cli.eval_commands.ratings import ratings_command
from medmllm.cli.eval_commands.run import run_command
from medmllm.cli.eval_commands.score import score_command

app = typer.Typer(
    help="Evaluate models (benchmarks, metrics with 95% CIs, clinical labels, LLM judge) and compare runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("run")(run_command)
app.command("score")(score_command)
app.command("label")(label_command)
app.command("judge")(judge_command)
app.command("compare")(compare_command)
app.command("ratings")(ratings_command)
