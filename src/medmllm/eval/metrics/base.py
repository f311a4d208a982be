"""The metric contract and registry (as RadEval's): one module per metric, registered by name.

A metric is a function ``(predictions, references, **options) -> {output_name: Score}``:

    predictions  list[str], N texts
    references   list[list[str]], N lists of one or more reference texts

One metric may produce several outputs (``bleu`` -> ``bleu_1`` ... ``bleu_4``). Each `Score`
holds the corpus value and one value per sample; corpus metrics that are not the mean of their
per-sample values (BLEU) also give ``corpus(indices)``, the corpus value of a resample, which is
what the bootstrap in `medmllm.eval.stats` needs. Confidence intervals are computed in one place
(`medmllm.eval.stats.interval`), never inside a metric.

Register with the decorator::

    @register("rouge_l", outputs=("rouge_l",), signature="rouge_l|beta=1.2|tok=medmllm-v1|=pycocoevalcap Rouge")
    def rouge_l(predictions, references): ...

``signature`` names the exact definition (variant, tokenizer, parameters, the reference it matches),
so a number in a results file says what it is. Metrics that need optional packages or local weights
raise `MetricUnavailable` with one line saying what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from medmllm.errors import MedMLLMError


class MetricUnavailable(MedMLLMError):
    """The metric cannot run here (a package or local weights missing); the message says which, in one line."""


@dataclass
class Score:
    """One metric output over N samples.

    value       the corpus-level value (as the reference implementation reports it)
    per_sample  (N,) float array, one value per sample; NaN where undefined for that sample
    corpus      optional: indices (M,) int array -> the corpus value of that resample (with
                repeats); None means the corpus value is the mean of ``per_sample``
    """

    value: float
    per_sample: np.ndarray
    corpus: Callable[[np.ndarray], float] | None = None

    def resample(self, indices: np.ndarray) -> float:
        if self.corpus is not None:
            return float(self.corpus(indices))
        return float(np.nanmean(self.per_sample[indices]))


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[..., dict[str, Score]]
    outputs: tuple[str, ...]
    signature: str
    requires: tuple[str, ...] = field(default_factory=tuple)  # optional packages, for the docs and `list`
    description: str = ""


METRICS: dict[str, MetricSpec] = {}


def register(name: str, *, outputs: Sequence[str] | None = None, signature: str, requires: Sequence[str] = (), description: str = ""):
    """Decorator: add a metric function to `METRICS` under ``name``."""

    def wrap(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        METRICS[name] = MetricSpec(name, fn, tuple(outputs or (name,)), signature, tuple(requires), description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return wrap


def get_metric(name: str) -> MetricSpec:
    """A registered metric by its name or by one of its output names (``bleu_4`` -> ``bleu``)."""
    from medmllm.eval.metrics import load_all

    load_all()
    if name in METRICS:
        return METRICS[name]
    for spec in METRICS.values():
        if name in spec.outputs:
            return spec
    known = sorted({*METRICS, *(o for s in METRICS.values() for o in s.outputs)})
    raise MedMLLMError(f"unknown metric {name!r}; known: {', '.join(known)}")


def per_sample_array(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


__all__ = ["METRICS", "MetricSpec", "MetricUnavailable", "Score", "get_metric", "per_sample_array", "register"]
