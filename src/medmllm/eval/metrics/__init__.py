"""Metric registry: ``get_metric(name)``; one module per metric family registers itself on import.

Modules are imported lazily by `load_all` so that importing this package stays cheap.
"""

from __future__ import annotations

import importlib

from medmllm.eval.metrics.base import METRICS, MetricSpec, MetricUnavailable, Score, get_metric, register

# One entry per metric module; adding a metric is one new file plus its line here.
METRIC_MODULES: tuple[str, ...] = ("bleu", "rouge", "cider", "clinical", "terms", "model_based")

_loaded = False


def load_all() -> dict[str, MetricSpec]:
    global _loaded
    if not _loaded:
        for module in METRIC_MODULES:
            importlib.import_module(f"medmllm.eval.metrics.{module}")
        _loaded = True
    return METRICS


__all__ = ["METRICS", "METRIC_MODULES", "MetricSpec", "MetricUnavailable", "Score", "get_metric", "load_all", "register"]
