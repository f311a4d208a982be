"""Yes/no judgements: disease diagnosis ("Does the patient have {disease}?") and modality
judgement (RadFM sec. 3.3). An answer whose first word is a yes/no synonym is that; any other is
matched to {yes, no} with `difflib.SequenceMatcher`, as RadFM. Accuracy and the F1 of "yes"
(the benchmarks are balanced: half of the questions ask about a disease the patient has)."""

from __future__ import annotations

from medmllm.data.schema import Sample
from medmllm.eval.tasks.base import (
    ScoreOptions,
    TaskFamily,
    TaskScores,
    accuracy_score,
    closest,
    f1_score,
    local_signature,
    normalize_answer,
    reference_text,
)

YES_NO = ("yes", "no")


def yes_no(text: str) -> str:
    """``"Yes, it does."`` -> ``yes``; otherwise the closer of yes / no by difflib."""
    normal = normalize_answer(text)
    return normal if normal in YES_NO else closest(text, YES_NO)


class YesNoJudgement(TaskFamily):
    name = "judgement"
    description = "Yes/no questions (diagnosis or modality judgement), matched to {yes, no}"
    metrics = ("accuracy", "f1")
    primary = "accuracy"

    def reference(self, sample: Sample) -> str:
        return reference_text(sample, "answer")

    def score(self, predictions, samples, options: ScoreOptions = ScoreOptions()) -> TaskScores:
        predicted = [yes_no(p) for p in predictions]
        truth = [yes_no(self.reference(s)) for s in samples]
        sig = dict(match="yes/no synonyms, else difflib.SequenceMatcher")
        return TaskScores(
            scores={"accuracy": accuracy_score(predicted, truth), "f1": f1_score(predicted, truth, positive="yes")},
            signatures={"accuracy": local_signature("yesno_accuracy", **sig), "f1": local_signature("yesno_f1", positive="yes", **sig)},
        )
