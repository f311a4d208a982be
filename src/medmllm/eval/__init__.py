"""Evaluation: metrics (a registry), statistics, tasks, model adapters, the runner and its report.

Scoring and labelling (``medmllm.eval.metrics``, ``medmllm.eval.stats``, the labeler) import
neither torch nor the model stack, so ``medmllm eval score`` answers in about a second.
"""
