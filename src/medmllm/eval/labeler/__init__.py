"""Clinical labels of report text: a rule-based CheXpert-style labeler (`chexpert`)."""

from medmllm.eval.labeler.chexpert import (
    CHEXBERT_5,
    OBSERVATIONS,
    CheXpertLabeler,
    Mention,
    default_labeler,
    label_report,
    label_reports,
)

__all__ = ["CHEXBERT_5", "OBSERVATIONS", "CheXpertLabeler", "Mention", "default_labeler", "label_report", "label_reports"]
