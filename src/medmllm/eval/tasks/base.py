"""What every task family shares: the `TaskFamily` contract, registered text metrics by name,
and classification scores (accuracy, F1) as `Score`s.

A family scores N samples at once: ``family.score(predictions, samples) -> TaskScores`` with one
`Score` per output (``accuracy``, ``bleu_1``, ``impression/rouge_l`` ...). Text metrics are looked
up at run time in the metric registry (`medmllm.eval.metrics.get_metric`), so a family names them
and never imports their modules; a metric that is not registered or cannot run here is reported
in ``skipped`` with one line saying why, never a crash.
"""

from __future__ import annotations

import fnmatch
import math
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError
from medmllm.eval.metrics.base import MetricUnavailable, Score


@dataclass
class TaskScores:
    """The scores of one family over its N samples.

    scores      output name -> `Score` (per_sample has N values, in the order of the samples)
    signatures  output name -> the exact definition (metric signature, or ours for local scores)
    skipped     metric name -> one line: why it did not run (not registered, java missing, no judge)
    """

    scores: dict[str, Score] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    requires: dict[str, tuple[str, ...]] = field(default_factory=dict)  # output -> packages it needs (for versions)

    def update(self, other: TaskScores, prefix: str = "") -> None:
        for name, score in other.scores.items():
            self.scores[prefix + name] = score
            self.signatures[prefix + name] = other.signatures.get(name, "")
            self.requires[prefix + name] = other.requires.get(name, ())
        self.skipped.update({prefix + k: v for k, v in other.skipped.items()})


@dataclass(frozen=True)
class ScoreOptions:
    """How much to score. ``fast``: only the cheap metrics (training-time validation); ``optional``:
    also metrics that are slow or need extra tools (METEOR needs java); ``judge``: a configured
    LLM judge for P2Med's record components (None: text metrics, and the judge is reported skipped)."""

    fast: bool = False
    optional: bool = False
    judge: Any = None


class TaskFamily:
    """A family of benchmark tasks scored the same way. Subclasses set the class attributes and
    `score`; `reference` gives the text a prediction is compared with."""

    name: str = ""
    description: str = ""
    metrics: tuple[str, ...] = ()  # what `score` reports (for docs and the report's column order)
    primary: str = ""  # the headline metric (plots, qualitative examples)

    def reference(self, sample: Sample) -> str:
        return reference_text(sample)

    def score(self, predictions: Sequence[str], samples: Sequence[Sample], options: ScoreOptions = ScoreOptions()) -> TaskScores:
        raise NotImplementedError


# ------------------------------------------------------------------------------------ samples


def last_assistant_index(sample: Sample) -> int | None:
    """Index of the sample's last assistant turn (None when it has none)."""
    for i in range(len(sample.turns) - 1, -1, -1):
        if sample.turns[i].role == "assistant":
            return i
    return None


def reference_text(sample: Sample, *keys: str) -> str:
    """The expected answer: the first of ``targets[keys]`` the sample has, else the last assistant
    turn's text, else ``targets["answer"]``; "" when there is none."""
    for key in keys:
        if sample.targets.get(key):
            return sample.targets[key]
    last = last_assistant_index(sample)
    if last is not None:
        return sample.turns[last].text.strip()
    return sample.targets.get("answer", "")


def question_text(sample: Sample) -> str:
    """The text of the user turns before the answer (image parts left out)."""
    last = last_assistant_index(sample)
    turns = sample.turns[:last] if last is not None else sample.turns
    return "\n".join(t.text for t in turns if t.role == "user")


# -------------------------------------------------------------------------------- text metrics


def _resolve(name: str) -> list[tuple[Any, tuple[str, ...]]]:
    """(metric spec, outputs to keep) for a metric name, an output name or a glob over output names."""
    from medmllm.eval.metrics import METRICS, load_all
    from medmllm.eval.metrics.base import get_metric

    load_all()
    if any(c in name for c in "*?["):
        found = []
        for spec in METRICS.values():
            outputs = tuple(o for o in spec.outputs if fnmatch.fnmatchcase(o, name))
            if outputs:
                found.append((spec, outputs))
        if not found:
            raise MedMLLMError(f"no registered metric output matches {name!r}")
        return found
    spec = get_metric(name)
    return [(spec, spec.outputs if name == spec.name else (name,))]


def text_metrics(names: Sequence[str], predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> TaskScores:
    """Registered metrics over texts; each metric runs once, whatever outputs of it are asked for.

    ``names``: metric names (all outputs), output names (``bleu_1``) or globs (``chexpert_*``).
    ``references``: one text or a list of texts per prediction.
    """
    out = TaskScores()
    wanted: dict[str, tuple[Any, list[str]]] = {}
    for name in names:
        try:
            resolved = _resolve(name)
        except MedMLLMError:
            out.skipped[name] = "not registered (its metric module is not installed or not listed in METRIC_MODULES)"
            continue
        for spec, outputs in resolved:
            entry = wanted.setdefault(spec.name, (spec, []))
            entry[1].extend(o for o in outputs if o not in entry[1])
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    preds = list(predictions)
    for spec, outputs in wanted.values():
        if not preds:
            break
        try:
            result = spec.fn(preds, refs)
        except MetricUnavailable as e:
            out.skipped[spec.name] = str(e)
            continue
        for output in outputs:
            if output in result:
                out.scores[output] = result[output]
                out.signatures[output] = spec.signature
                out.requires[output] = spec.requires
    return out


# ----------------------------------------------------------------------- classification scores


def accuracy_score(predicted: Sequence[str | None], truth: Sequence[str]) -> Score:
    """Per-sample 1/0 (a None prediction is wrong); the value is their mean."""
    per = np.array([1.0 if p is not None and p == t else 0.0 for p, t in zip(predicted, truth, strict=True)])
    return Score(float(per.mean()) if per.size else math.nan, per)


def _f1_of(predicted: np.ndarray, truth: np.ndarray, classes: Sequence[str] | None, positive: str | None) -> float:
    if positive is not None:
        tp = float(np.sum((predicted == positive) & (truth == positive)))
        fp = float(np.sum((predicted == positive) & (truth != positive)))
        fn = float(np.sum((predicted != positive) & (truth == positive)))
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    labels = sorted(set(truth.tolist()) | (set(predicted.tolist()) - {""})) if classes is None else classes
    return float(np.mean([_f1_of(predicted, truth, None, c) for c in labels])) if labels else math.nan


def f1_score(predicted: Sequence[str | None], truth: Sequence[str], *, positive: str | None = None) -> Score:
    """F1 as a corpus score: binary F1 of class ``positive``, or macro F1 over the classes present
    in the truth or the predictions (scikit-learn's ``f1_score(average="macro")``; a class with no
    true or predicted sample counts 0). A None prediction is a miss. Per-sample values are NaN
    (F1 is not a mean); resamples recompute it."""
    p = np.array(["" if x is None else x for x in predicted], dtype=object)
    t = np.array(list(truth), dtype=object)
    value = _f1_of(p, t, None, positive) if len(t) else math.nan
    return Score(value, np.full(len(t), math.nan), corpus=lambda idx: _f1_of(p[idx], t[idx], None, positive))


# ------------------------------------------------------------------------------ normalisation

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
YES_WORDS = frozenset({"yes", "yeah", "yep", "true", "correct", "present", "positive", "affirmative"})
NO_WORDS = frozenset({"no", "nope", "false", "incorrect", "absent", "negative"})


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, spaces collapsed; a yes/no synonym as its
    first word becomes ``yes`` / ``no`` alone ("Yes, there is." -> "yes")."""
    words = _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()
    if words and words[0] in YES_WORDS:
        return "yes"
    if words and words[0] in NO_WORDS:
        return "no"
    return " ".join(words)


def closest(text: str, candidates: Sequence[str]) -> str:
    """The candidate most similar to ``text`` by `difflib.SequenceMatcher` ratio (case-insensitive;
    ties: the first), as RadFM matches open answers to a closed list."""
    from difflib import SequenceMatcher

    lowered = text.strip().lower()
    return max(candidates, key=lambda c: SequenceMatcher(None, lowered, c.lower()).ratio())


def local_signature(name: str, **params: Any) -> str:
    """A signature for a score computed here (not a registered metric)."""
    return "|".join([name, *(f"{k}={v}" for k, v in params.items())]) + "|=medmllm.eval.tasks"


ScoreFn = Callable[[Sequence[str], Sequence[Sample], ScoreOptions], TaskScores]

__all__ = [
    "NO_WORDS", "YES_WORDS", "ScoreOptions", "TaskFamily", "TaskScores", "accuracy_score", "closest", "f1_score", "last_assistant_index",
    "local_signature", "normalize_answer", "question_text", "reference_text", "text_metrics",
]
