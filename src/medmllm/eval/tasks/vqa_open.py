"""Open VQA (RadFM sec. 3.3 and 5.1.1): BLEU-1 and ROUGE-1 ("for BLEU and ROUGE we all use 1-gram
by default"), medical-term precision / recall (RadFM's UMLS_Precision / UMLS_Recall, see
docs/clinical-metrics.md) and open recall (the share of reference words the answer contains)."""

from __future__ import annotations

from medmllm.data.schema import Sample
from medmllm.eval.tasks.base import ScoreOptions, TaskFamily, TaskScores, reference_text, text_metrics

OPEN_METRICS = ("bleu_1", "rouge_1", "term_precision", "term_recall", "open_recall")


class OpenVQA(TaskFamily):
    name = "vqa-open"
    description = "Open-ended answers (also open diagnosis and any other conversation): 1-gram overlap and medical terms"
    metrics = OPEN_METRICS
    primary = "rouge_1"

    def reference(self, sample: Sample) -> str:
        return reference_text(sample, "answer")

    def score(self, predictions, samples, options: ScoreOptions = ScoreOptions()) -> TaskScores:
        return text_metrics(OPEN_METRICS, predictions, [self.reference(s) for s in samples])
