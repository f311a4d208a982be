"""Rationale diagnosis (RadFM sec. 3.3, Fig. 11): "The Radiographic features can be summarized as
follows. {features} The diagnosis is {disease}." Only the diagnosis part is scored, with the open
VQA metrics: everything after the last "The diagnosis is" (the whole answer when the model never
says it). The reference is ``targets.diagnosis``."""

from __future__ import annotations

from medmllm.data.schema import Sample
from medmllm.data.templates import get_template
from medmllm.eval.tasks.base import ScoreOptions, TaskFamily, TaskScores, reference_text, text_metrics
from medmllm.eval.tasks.vqa_open import OPEN_METRICS


def diagnosis_part(text: str) -> str:
    parsed = get_template("radbench/rationale").parse(text)
    return parsed["diagnosis"] or parsed["rationale"]


class RationaleDiagnosis(TaskFamily):
    name = "rationale"
    description = "Features then diagnosis; the diagnosis part scored as open VQA"
    metrics = OPEN_METRICS
    primary = "rouge_1"

    def reference(self, sample: Sample) -> str:
        return sample.targets.get("diagnosis") or diagnosis_part(reference_text(sample))

    def score(self, predictions, samples, options: ScoreOptions = ScoreOptions()) -> TaskScores:
        return text_metrics(OPEN_METRICS, [diagnosis_part(p) for p in predictions], [self.reference(s) for s in samples])
