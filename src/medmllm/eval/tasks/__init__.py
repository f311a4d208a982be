"""Benchmark task families: how the answers of each kind of sample are scored.

One module per family, registered by name in `FAMILIES`; `family_of(sample)` says which family
scores a sample, from ``Sample.task`` (the names of `medmllm.data.templates.TEMPLATES` and of the
dataset importers) and, for VQA, the dataset's ``labels.answer_type``:

=====================  ==========================================================  ==================
family                 tasks                                                       metrics
=====================  ==========================================================  ==================
``modality``           radbench/modality-open, modality (RadFM CSV)                accuracy, f1_macro
``judgement``          radbench/diagnosis-judgement, radbench/modality-judgement,  accuracy, f1
                       diagnosis with a yes/no answer (RadFM binary CSV)
``vqa-closed``         vqa with answer_type closed (or a yes/no answer)            exact_match
``multiple-choice``    vqa with answer_type choice (PMC-VQA), or options given     accuracy, no_option
``vqa-open``           vqa (open), radbench/diagnosis-open, diagnosis, anything    bleu_1, rouge_1, term_precision,
                       else with an answer                                         term_recall, open_recall
``report``             report, radbench/report                                     bleu_1..4, rouge_l, cider, terms,
                                                                                   chexpert_* (+ meteor)
``rationale``          radbench/rationale                                          open VQA metrics on the diagnosis
``record``             p2med/* (reports and clinical records)                      per component: judge accuracy /
                                                                                   comprehensiveness, rouge_l, term_recall
=====================  ==========================================================  ==================

Adding a family: one module with a `TaskFamily` subclass, and its line in `FAMILIES`.
"""

from __future__ import annotations

from medmllm.data.schema import Sample
from medmllm.errors import MedMLLMError
from medmllm.eval.tasks.base import ScoreOptions, TaskFamily, TaskScores, normalize_answer, reference_text
from medmllm.eval.tasks.judgement import YesNoJudgement
from medmllm.eval.tasks.modality import ModalityRecognition
from medmllm.eval.tasks.multiple_choice import MultipleChoice, options_of
from medmllm.eval.tasks.rationale import RationaleDiagnosis
from medmllm.eval.tasks.record import ClinicalRecord
from medmllm.eval.tasks.report import ReportGeneration
from medmllm.eval.tasks.vqa_closed import ClosedVQA
from medmllm.eval.tasks.vqa_open import OpenVQA

FAMILIES: dict[str, TaskFamily] = {
    family.name: family
    for family in (ModalityRecognition(), YesNoJudgement(), ClosedVQA(), MultipleChoice(), OpenVQA(), ReportGeneration(), RationaleDiagnosis(), ClinicalRecord())
}

_BY_TASK = {  # the task name without its "radbench/" prefix -> family
    "modality-open": "modality", "modality": "modality",
    "modality-judgement": "judgement", "diagnosis-judgement": "judgement",
    "diagnosis-open": "vqa-open",
    "report": "report",
    "rationale": "rationale",
}
_CLOSED_TYPES = {"closed", "yes/no", "yesno", "binary"}
_CHOICE_TYPES = {"choice", "multiple-choice", "multiple_choice", "mc"}


def family_of(sample: Sample) -> str:
    """The name of the family that scores ``sample`` (see the table in the module docstring)."""
    task = sample.task
    if task.startswith("p2med/"):
        return "record"
    family = _BY_TASK.get(task.removeprefix("radbench/"))
    if family is not None:
        return family
    answer_type = str(sample.labels.get("answer_type", "")).lower()
    if answer_type in _CHOICE_TYPES or "choice" in sample.targets or (answer_type == "" and options_of(sample) and task.endswith("vqa")):
        return "multiple-choice"
    if answer_type in _CLOSED_TYPES:
        return "vqa-closed"
    if answer_type == "" and normalize_answer(reference_text(sample, "answer")) in ("yes", "no"):
        return "judgement" if task == "diagnosis" else "vqa-closed"
    return "vqa-open"


def get_family(name: str) -> TaskFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise MedMLLMError(f"unknown task family {name!r}; known: {', '.join(FAMILIES)}") from None


__all__ = ["FAMILIES", "ScoreOptions", "TaskFamily", "TaskScores", "family_of", "get_family"]
