"""Closed VQA (VQA-RAD / SLAKE "closed", PathVQA yes/no): normalised exact match. Both texts are
lower-cased, punctuation and the articles a/an/the removed, spaces collapsed, and an answer that
starts with a yes/no synonym ("Yes, there is", "correct", "absent") reduced to yes / no."""

from __future__ import annotations

from medmllm.data.schema import Sample
from medmllm.eval.tasks.base import ScoreOptions, TaskFamily, TaskScores, accuracy_score, local_signature, normalize_answer, reference_text


class ClosedVQA(TaskFamily):
    name = "vqa-closed"
    description = "Closed-ended questions: normalised exact match"
    metrics = ("exact_match",)
    primary = "exact_match"

    def reference(self, sample: Sample) -> str:
        return reference_text(sample, "answer")

    def score(self, predictions, samples, options: ScoreOptions = ScoreOptions()) -> TaskScores:
        predicted = [normalize_answer(p) for p in predictions]
        truth = [normalize_answer(self.reference(s)) for s in samples]
        return TaskScores(
            scores={"exact_match": accuracy_score(predicted, truth)},
            signatures={"exact_match": local_signature("exact_match", normalise="lower,punct,articles,yes/no-synonyms")},
        )
