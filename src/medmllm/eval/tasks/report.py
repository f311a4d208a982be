"""Report generation (RadFM's RadBench report task, IU X-ray and MIMIC-CXR as R2Gen evaluates
them): the generated findings against the reference findings.

Metrics: BLEU-1..4, ROUGE-L, CIDEr-D (docs/metrics.md), medical-term precision / recall and the
CheXpert-style clinical label F1s (docs/clinical-metrics.md; meaningful for chest X-ray reports);
METEOR only with ``optional`` (it needs java, and starts a JVM). ``fast``: BLEU and ROUGE-L.

The reference is ``targets.findings`` (R2Gen's "report" is the findings), else the last assistant
turn. A prediction written in sections ("[Findings] ... [Impression] ...", "Findings: ...") is
scored on its findings section when it has one, else whole.
"""

from __future__ import annotations

import re

from medmllm.data.schema import Sample
from medmllm.data.templates import parse_report
from medmllm.eval.tasks.base import ScoreOptions, TaskFamily, TaskScores, reference_text, text_metrics

REPORT_METRICS = ("bleu", "rouge_l", "cider", "term_precision", "term_recall", "chexpert_*")
FAST_METRICS = ("bleu", "rouge_l")
OPTIONAL_METRICS = ("meteor",)
_HAS_SECTIONS = re.compile(r"(?i)\[\s*findings\s*\]|^\s*findings\s*:", re.MULTILINE)


def findings_of(text: str) -> str:
    """The findings section of a report written in sections, else the whole text."""
    if _HAS_SECTIONS.search(text):
        findings = parse_report(text)["findings"]
        if findings:
            return findings
    return text.strip()


class ReportGeneration(TaskFamily):
    name = "report"
    description = "Radiology report (findings): n-gram overlap, CIDEr-D, medical terms, clinical labels"
    metrics = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "term_precision", "term_recall", "chexpert_*", "meteor (optional)")
    primary = "bleu_4"

    def reference(self, sample: Sample) -> str:
        return findings_of(reference_text(sample, "findings", "report"))

    def score(self, predictions, samples, options: ScoreOptions = ScoreOptions()) -> TaskScores:
        names = FAST_METRICS if options.fast else REPORT_METRICS + (OPTIONAL_METRICS if options.optional else ())
        return text_metrics(names, [findings_of(p) for p in predictions], [self.reference(s) for s in samples])
