"""P2Med-MBench records (P2Med-MLLM sec. V-A.5, Table VI): radiology reports ([Findings],
[Impression]) and clinical records ([Preliminary diagnosis], [Diagnostic basis], ...), scored per
component (section).

- With a judge (``options.judge``: a `medmllm.eval.judge` chat backend; one `Judge` per task):
  each component's accuracy on the paper's 5-point scale, and for the key component (impression,
  preliminary / admission / current diagnosis) its comprehensiveness too, as docs/judge.md says:
  outputs ``impression/accuracy``, ``impression/comprehensiveness``, ``findings/accuracy`` ...
- Always: ROUGE-L and medical-term recall of each component (``impression/rouge_l`` ...), so a run
  without a judge still says something; the judge is then reported as skipped. ``fast``: ROUGE-L.

The model's answer is split into sections with the task template's parser (any spacing, missing
sections are ""); the references are the sample's ``targets``. A component a sample does not have
is NaN for that sample.
"""

from __future__ import annotations

import math

import numpy as np

from medmllm.data.schema import Sample
from medmllm.data.templates import TEMPLATES, parse_sections, section_key
from medmllm.eval.metrics.base import Score
from medmllm.eval.tasks.base import ScoreOptions, TaskFamily, TaskScores, text_metrics

TEXT_METRICS = ("rouge_l", "term_recall")
FAST_METRICS = ("rouge_l",)
ACCURACY, COMPREHENSIVENESS = "accuracy", "comprehensiveness"
NO_JUDGE = "no judge configured (--judge-endpoint / --judge-model): record components scored with text metrics only"


def components_of(sample: Sample) -> dict[str, str]:
    """The reference sections: ``{"findings": ..., "impression": ...}``."""
    return {section_key(k): v for k, v in sample.targets.items() if v}


def parse_prediction(text: str, sample: Sample) -> dict[str, str]:
    """The model's sections, by the task template's parser (or the sample's target names)."""
    template = TEMPLATES.get(sample.task)
    if template is not None:
        return {section_key(k): v for k, v in template.parse(text).items()}
    names = [k.replace("_", " ") for k in components_of(sample)]
    return parse_sections(text, names)


def spread(score: Score, positions: np.ndarray, n: int) -> Score:
    """A score of the samples at ``positions`` as a score over all ``n`` (NaN elsewhere)."""
    per = np.full(n, math.nan)
    per[positions] = score.per_sample
    if score.corpus is None:
        return Score(score.value, per)
    inverse = np.full(n, -1)
    inverse[positions] = np.arange(len(positions))

    def corpus(indices: np.ndarray) -> float:
        inner = inverse[indices]
        inner = inner[inner >= 0]
        return float(score.corpus(inner)) if inner.size else math.nan

    return Score(score.value, per, corpus)


class ClinicalRecord(TaskFamily):
    name = "record"
    description = "P2Med reports and records: per component, judge accuracy / comprehensiveness (with a judge) and text metrics"
    metrics = ("<component>/accuracy (judge)", "<key component>/comprehensiveness (judge)", "<component>/rouge_l", "<component>/term_recall")
    primary = "rouge_l"  # per component; the report picks the key component's

    def reference(self, sample: Sample) -> str:
        return "\n".join(f"[{k}] {v}" for k, v in components_of(sample).items())

    def score(self, predictions, samples, options: ScoreOptions = ScoreOptions()) -> TaskScores:
        n = len(samples)
        parsed = [parse_prediction(p, s) for p, s in zip(predictions, samples, strict=True)]
        references = [components_of(s) for s in samples]
        keys = list(dict.fromkeys(k for r in references for k in r))
        out = TaskScores()
        for key in keys:
            positions = np.array([i for i, r in enumerate(references) if key in r], dtype=int)
            preds = [parsed[i].get(key, "") for i in positions]
            refs = [references[i][key] for i in positions]
            part = text_metrics(FAST_METRICS if options.fast else TEXT_METRICS, preds, refs)
            for name, score in part.scores.items():
                out.scores[f"{key}/{name}"] = spread(score, positions, n)
                out.signatures[f"{key}/{name}"] = part.signatures.get(name, "")
                out.requires[f"{key}/{name}"] = part.requires.get(name, ())
            out.skipped.update({f"{key}/{k}": v for k, v in part.skipped.items()})
        if options.judge is None and not options.fast:
            out.skipped["judge"] = NO_JUDGE
        elif not options.fast:
            out.update(judge_records(options.judge, predictions, samples))
        return out


def judge_records(backend, predictions, samples, concurrency: int = 4) -> TaskScores:
    """P2Med's judge (`medmllm.eval.judge.Judge`, one per task) on every sample of a judged task:
    ``component/criterion`` scores (1-5; NaN where not judged or the judge failed)."""
    from concurrent.futures import ThreadPoolExecutor

    from medmllm.eval.judge import Judge, criterion_keys
    from medmllm.eval.judge_prompts import PROMPT_VERSION, TASKS

    n = len(samples)
    out = TaskScores()
    judges = {task: Judge(backend, task) for task in dict.fromkeys(s.task for s in samples) if task in TASKS}
    todo = [i for i, s in enumerate(samples) if s.task in judges]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        rows = dict(zip(todo, pool.map(lambda i: judges[samples[i].task].judge_sample(samples[i].id, predictions[i], components_of(samples[i])), todo)))
    keys = list(dict.fromkeys(k for task in judges for k in criterion_keys(task)))
    for key in keys:
        values = np.array([float(rows[i][key]) if i in rows and isinstance(rows[i].get(key), (int, float)) else math.nan for i in range(n)])
        name = key.replace(".", "/")
        out.scores[name] = Score(float(np.nanmean(values)) if np.isfinite(values).any() else math.nan, values)
        out.signatures[name] = f"p2med_judge|{key}|scale=1-5|judge={backend.name}|prompt={PROMPT_VERSION}|=medmllm.eval.judge"
        failed = sum(key in (rows[i].get("failures") or {}) for i in rows)
        if failed:
            out.skipped[f"{name} (judge failures)"] = f"{failed} judgement(s) failed after retries: excluded from the mean"
    untouched = sorted({s.task for s in samples} - set(judges))
    if untouched:
        out.skipped["judge (tasks)"] = f"the judge has no components for {', '.join(untouched)}"
    return out
