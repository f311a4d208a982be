"""Per-token loss weights that emphasise medical terms (RadFM, Wu et al. 2023, eq. 3-4).

RadFM trains with ``L = -sum_l w_l log p(x_l | x_<l)``, where ``w_l`` is a per-token weight: high
for medical terms (RadFM finds them with UMLS), ordinary for the rest of the response, and zero
for the instruction and the image tokens. `TermWeighter` supplies the first part from the offline
`MedicalVocabulary` (ICD-10-CM + the project's radiology lexicon instead of UMLS, whose licence
requires an account and restricts redistribution); `MedMLLMProcessor` applies it::

    weighter = TermWeighter(MedicalVocabulary.load(), term_weight=3.0, other_weight=1.0)
    processor = MedMLLMProcessor(tokenizer, config, term_weighter=weighter)
    batch = processor(messages)   # loss_weights: 3 x message weight on term tokens, 1 x elsewhere
                                  # in the response, 0 in prompts and on image tokens

A learned token gets ``term_weight`` when its characters overlap a term (" pneumonia" with its
leading space, or a piece of a term split into several tokens), else ``other_weight``; both are
multiplied by the message's ``weight``.
"""

from __future__ import annotations

import math

from medmllm.data.vocab import MedicalVocabulary


class TermWeighter:
    """Character spans of the medical terms in a text, with their loss weight.

    Any object with the same ``__call__`` and an ``other_weight`` attribute can take its place in
    `MedMLLMProcessor` (e.g. weights per term category).

    Args:
        vocabulary: the terms to emphasise; None = ``MedicalVocabulary.load()`` (ICD-10-CM +
            radiology lexicon).
        term_weight: weight of tokens of a medical term (RadFM: 3).
        other_weight: weight of the other learned tokens (RadFM: 1).
    """

    def __init__(self, vocabulary: MedicalVocabulary | None = None, term_weight: float = 3.0, other_weight: float = 1.0):
        for name, value in (("term_weight", term_weight), ("other_weight", other_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.vocabulary = vocabulary if vocabulary is not None else MedicalVocabulary.load()
        self.term_weight = float(term_weight)
        self.other_weight = float(other_weight)

    def __call__(self, text: str) -> list[tuple[int, int, float]]:
        """``(start, end, term_weight)`` for each medical term of ``text``: sorted, disjoint.

        Characters outside every span weigh `other_weight`.
        """
        return [(start, end, self.term_weight) for start, end, _ in self.vocabulary.find_terms(text)]

    def __repr__(self) -> str:
        return f"TermWeighter({self.vocabulary!r}, term_weight={self.term_weight:g}, other_weight={self.other_weight:g})"


__all__ = ["TermWeighter"]
