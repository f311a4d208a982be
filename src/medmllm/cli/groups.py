"""A Typer group with a default sub-command, shared by ``medmllm train`` and ``medmllm serve``."""

from __future__ import annotations

from typer.core import TyperGroup


class DefaultRunGroup(TyperGroup):
    """A group whose arguments go to its ``run`` command unless the first one names another
    command (or asks for the group's help): so ``medmllm train RECIPE.yaml`` and ``medmllm serve
    --model DIR`` work beside ``medmllm train export ...`` and ``medmllm serve keys ...``."""

    default_command = "run"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)
