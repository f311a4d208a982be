"""Multiple choice (PMC-VQA "choice" mode, OmniMedVQA): the chosen option is extracted from the
answer, then compared with the right letter (accuracy).

Extraction, first rule that finds one option wins (OmniMedVQA's question-answering score accepts
the letter or the option's text):
1. "Answer: B", "answer is (B)", "option B";
2. the answer starts with the letter: "B", "(B)", "B:", "B.", "B)";
3. a lone letter of an option in the answer ("I think B.");
4. the text of exactly one option appears in the answer (the longest such option, when one
   option's text contains another's).
No option found: wrong (counted in ``no_option``, the share of answers with no option).

Options come from ``labels.options`` / ``meta.options`` (``{"A": text}`` or a list) or from lines
"A: text" in the question (as the PMC-VQA importer writes them); the right letter from
``targets.choice``, else the option whose text is ``targets.answer``.
"""

from __future__ import annotations

import re

import numpy as np

from medmllm.data.schema import Sample
from medmllm.eval.metrics.base import Score
from medmllm.eval.tasks.base import ScoreOptions, TaskFamily, TaskScores, accuracy_score, local_signature, question_text, reference_text

_OPTION_LINE = re.compile(r"^\s*\(?([A-H])[:.)]\s*(.+?)\s*$", re.MULTILINE)
# Letters are upper case: "the answer is a nodule" chooses nothing.
_ANSWER_IS = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is)?\s*[:(]?\s*\(?([A-H])\b")
_LEADING = re.compile(r"^\s*\(?([A-H])(?:[):.,]|$)")
_LONE = re.compile(r"(?<![\w'])([A-H])(?![\w'])(?!\s+[a-z])")  # not "A nodule"


def options_of(sample: Sample) -> dict[str, str]:
    """``{"A": text, ...}`` of a multiple-choice sample (empty when it has none)."""
    given = sample.labels.get("options") or sample.meta.get("options") or sample.labels.get("choices") or sample.meta.get("choices")
    if isinstance(given, dict):
        return {str(k).upper(): str(v) for k, v in given.items()}
    if isinstance(given, list):
        return {chr(ord("A") + i): str(v) for i, v in enumerate(given)}
    return {letter: text for letter, text in _OPTION_LINE.findall(question_text(sample))}


def extract_option(answer: str, options: dict[str, str]) -> str | None:
    """The letter of the option ``answer`` chooses (rules in the module docstring), or None."""
    letters = set(options)
    for match in _ANSWER_IS.finditer(answer):
        if match.group(1) in letters:
            return match.group(1)
    match = _LEADING.match(answer)
    if match and match.group(1) in letters:
        return match.group(1)
    lone = [m for m in _LONE.findall(answer) if m in letters]
    if len(set(lone)) == 1:
        return lone[0]
    lowered = answer.lower()
    found = [letter for letter, text in options.items() if text.strip() and text.strip().lower() in lowered]
    if len(found) > 1:  # keep only options whose text is not inside another found option's text
        found = [a for a in found if not any(a != b and options[a].lower() in options[b].lower() for b in found)]
    return found[0] if len(found) == 1 else None


class MultipleChoice(TaskFamily):
    name = "multiple-choice"
    description = "Multiple-choice questions: the chosen option is extracted (letter or text), then accuracy"
    metrics = ("accuracy", "no_option")
    primary = "accuracy"

    def reference(self, sample: Sample) -> str:
        return self.right_letter(sample) or reference_text(sample, "answer")

    def right_letter(self, sample: Sample) -> str | None:
        choice = sample.targets.get("choice")
        if choice:
            return choice.strip().upper()
        options = options_of(sample)
        return extract_option(reference_text(sample, "answer"), options)

    def score(self, predictions, samples, options: ScoreOptions = ScoreOptions()) -> TaskScores:
        chosen = [extract_option(p, options_of(s)) for p, s in zip(predictions, samples, strict=True)]
        truth = [self.right_letter(s) or "?" for s in samples]
        missing = np.array([1.0 if c is None else 0.0 for c in chosen])
        sig = local_signature("choice_accuracy", extract="answer-is,leading-letter,lone-letter,option-text")
        return TaskScores(
            scores={"accuracy": accuracy_score(chosen, truth), "no_option": Score(float(missing.mean()) if missing.size else float("nan"), missing)},
            signatures={"accuracy": sig, "no_option": sig.replace("choice_accuracy", "no_option")},
        )
