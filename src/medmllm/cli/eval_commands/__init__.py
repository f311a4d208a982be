"""One module per `medmllm eval` command (registered in medmllm.cli.eval)."""
