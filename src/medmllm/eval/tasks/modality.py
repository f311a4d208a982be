"""Modality recognition (RadFM sec. 3.3): the answer is matched to {CT, MRI, Ultrasound, PET,
X-ray, angiography} with `difflib.SequenceMatcher` (the most similar one is the prediction);
accuracy and macro F1 over the classes. The reference (``labels.modality``, else the answer) is
matched the same way, so ``MR`` counts as ``MRI``."""

from __future__ import annotations

from medmllm.data.schema import Sample
from medmllm.data.templates import canonical_modality
from medmllm.eval.tasks.base import ScoreOptions, TaskFamily, TaskScores, accuracy_score, closest, f1_score, local_signature, reference_text

# RadFM's list, in its spelling.
MODALITY_CLASSES = ("CT", "MRI", "Ultrasound", "PET", "X-ray", "angiography")


class ModalityRecognition(TaskFamily):
    name = "modality"
    description = "Which modality? Answer matched to RadFM's 6 modalities with difflib"
    metrics = ("accuracy", "f1_macro")
    primary = "accuracy"

    def reference(self, sample: Sample) -> str:
        return canonical_modality(sample.labels.get("modality")) or reference_text(sample, "modality", "answer")

    def score(self, predictions, samples, options: ScoreOptions = ScoreOptions()) -> TaskScores:
        predicted = [closest(p, MODALITY_CLASSES) for p in predictions]
        truth = [closest(self.reference(s), MODALITY_CLASSES) for s in samples]
        sig = dict(classes="/".join(MODALITY_CLASSES), match="difflib.SequenceMatcher")
        return TaskScores(
            scores={"accuracy": accuracy_score(predicted, truth), "f1_macro": f1_score(predicted, truth)},
            signatures={"accuracy": local_signature("modality_accuracy", **sig), "f1_macro": local_signature("modality_f1", average="macro", **sig)},
        )
