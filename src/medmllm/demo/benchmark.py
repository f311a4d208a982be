"""The demo's held-out benchmark: what the trained, untrained and blind models are asked, and the
numbers that decide whether training taught the model to see.

=============  =========================================================  ===========================
part           the samples                                                scored by
=============  =========================================================  ===========================
diagnosis      RadBench diagnosis judgements ("Does the patient have      accuracy (the eval harness):
               X?"), as many "no" as "yes" of each modality, finding and  0.5 for any answer rule
               wording (`yes_no_balanced`), 4 new tokens                  that ignores the image
reports        the first exam of each held-out visit: one image, no       `label_f1` of the report
               earlier report in the conversation (`first_exams`)
follow-up      the last exam of each visit with 2-3 exams: with its       `follow_up_numbers`: label
               earlier exams and reports before it (P2Med's multi-round   F1 and `change_f1` of the
               conversations), or alone with ``mrc=False`` (`follow_ups`)  impression
=============  =========================================================  ===========================

Why first exams for the report F1: on a follow-up the earlier reports are in the conversation, and
MiniRad's findings mostly persist, so copying the prior report scores well without looking at the
image at all (an untrained SmolLM2 reached label F1 0.78 that way, a text-only model 0.79). The
first exam is where only the image tells the findings.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np

from medmllm.data.conversations import split_conversation
from medmllm.data.schema import ImagePart, Sample

DIAGNOSIS_TASKS = ("radbench/diagnosis-judgement",)
REPORT_TASKS = ("p2med/report-xray", "p2med/report-ct")
PARTS = {"diagnosis": (DIAGNOSIS_TASKS, 4), "reports": (REPORT_TASKS, 80), "follow-up": (REPORT_TASKS, 80)}
ACCURACY, LABEL_F1 = "diagnosis accuracy", "clinical label F1 (micro, 5 observations)"
HEADLINE = (ACCURACY, LABEL_F1)
FOLLOW_UP_LABEL_F1, CHANGE_F1 = "impression label F1", "impression change F1"
# How MiniRad's impressions (medmllm.synth.reports) state the course of a finding since the prior exam.
CHANGES = {
    "unchanged": re.compile(r"(?i)\bunchanged\b|\bstable\b|\bno (interval )?change\b"),
    "increased": re.compile(r"(?i)\bincreased\b|\blarger\b"),
    "decreased": re.compile(r"(?i)\bdecreased\b|\bsmaller\b"),
    "resolved": re.compile(r"(?i)\bresol(ved|ution)\b"),
}


def without_images(turn):
    """The turn with its image parts left out (the text parts, in order)."""
    return turn.model_copy(update={"content": [p for p in turn.content if not isinstance(p, ImagePart)]})


def strip_images(sample: Sample) -> Sample:
    """The sample as the blind model sees it: the same turns without their image parts."""
    turns = [t for t in map(without_images, sample.turns) if t.content]
    return sample.model_copy(update={"turns": turns, "images": []})


def first_exams(samples: list[Sample]) -> list[Sample]:
    """The report of the first exam of each report sample (round 1 of a conversation, or the sample)."""
    return [split_conversation(s)[0] for s in samples if s.task in REPORT_TASKS]


def follow_ups(samples: list[Sample], *, mrc: bool = True) -> list[Sample]:
    """The last exam of each report conversation with 2+ exams: the conversation as it is (earlier
    exams and their reports before it), or with ``mrc=False`` that exam alone, as a model trained
    without multi-round conversations sees it (P2Med's "w/o MRC", Table III)."""
    chosen = [s for s in samples if s.task in REPORT_TASKS and len(split_conversation(s)) > 1]
    return chosen if mrc else [split_conversation(s)[-1] for s in chosen]


def report_pairs(eval_dir: Path, bench: Path) -> dict[str, tuple[str, str]]:
    """{sample id: (generated, reference)} of a benchmark part, in the benchmark's order: the
    reference is the last assistant turn, the one the model was asked for."""
    from medmllm.data.io import read_samples
    from medmllm.jsonl import read_jsonl

    predictions = {row["id"]: row.get("prediction") for _, row in read_jsonl(eval_dir / "predictions.jsonl")}
    pairs = {}
    for sample in read_samples(bench):
        answers = [t.text for t in sample.turns if t.role == "assistant"]
        if predictions.get(sample.id) is not None and answers:
            pairs[sample.id] = (predictions[sample.id], answers[-1])
    return pairs


def predictions_and_references(eval_dir: Path, bench: Path) -> list[tuple[str, str]]:
    """(generated, reference) report pairs of a benchmark part (`report_pairs` without the ids)."""
    return list(report_pairs(eval_dir, bench).values())


def label_f1(pairs: list[tuple[str, str]]) -> dict:
    """Micro F1 over CheXbert's 5 observations (atelectasis, cardiomegaly, consolidation, edema,
    pleural effusion) of the generated texts against the references, labelled by
    `medmllm.eval.labeler`, with a bootstrap 95% CI. Not over 14: "No Finding" is positive for any
    text without a finding, so a model writing garbage would score well on normal studies."""
    from medmllm.eval.scoring import score

    if len(pairs) < 2:
        return {"value": None, "ci95": [None, None], "n": len(pairs)}
    result = score([p for p, _ in pairs], [[r] for _, r in pairs], ["chexpert_f1"])["chexpert_micro_f1_5"]
    return {"value": result["value"], "ci95": result["ci95"], "n": len(pairs)}


def shuffled_label_f1(pairs: list[tuple[str, str]], permutations: int = 1000, seed: int = 0) -> dict:
    """What the label F1 would be if the reports did not depend on the images: the F1 of the same
    generated reports given to the exams in a random order (``permutations`` shuffles). Returns
    ``{"value": the mean shuffled F1, "p": the fraction of shuffles scoring at least the real F1, "n"}``.
    A model that writes the same findings whatever the image (or findings at their base rate) scores
    as well shuffled as not (p near 0.5); one that reads the image scores below its real F1 (p near 0)."""
    from medmllm.eval.metrics.clinical import f1_counts, micro_f1

    if len(pairs) < 2:
        return {"value": None, "p": None, "n": len(pairs)}
    predicted, reference = label_vectors(pairs)
    real = micro_f1(f1_counts(predicted, reference))
    rng = np.random.default_rng(seed)
    shuffled = np.array([micro_f1(f1_counts(predicted[rng.permutation(len(pairs))], reference)) for _ in range(permutations)])
    return {"value": float(shuffled.mean()), "p": float((shuffled >= real).mean()), "n": len(pairs)}


def label_vectors(pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 5) bool labels of the generated and of the reference texts over CheXbert's 5
    observations, counted as `label_f1` counts them (uncertain is positive)."""
    from medmllm.eval.labeler.chexpert import OBSERVATIONS
    from medmllm.eval.metrics.clinical import CONVENTIONS, SUBSETS, label_matrix

    columns = [OBSERVATIONS.index(o) for o in SUBSETS["5"]]
    predicted, reference = (np.isin(label_matrix(list(texts)), CONVENTIONS[""])[:, columns] for texts in zip(*pairs))
    return predicted, reference


def paired_differences(trained: Path, blind: Path, benches: dict[str, Path], blind_benches: dict[str, Path],
                       resamples: int = 10_000, seed: int = 0) -> dict[str, dict]:
    """{label: {"difference", "ci95", "p", "n"}} of the `HEADLINE` numbers: the trained model's minus
    the blind model's (evaluation folders as `headline` reads them) on the same questions and exams,
    matched by id, by paired bootstrap (`medmllm.eval.stats.paired_bootstrap`: both resampled with
    the same rows; the label F1 recomputed from each resample's label counts).

    Whether the two models' own 95% intervals overlap (the demo's claim) is a stricter test than
    needed: the two score the same questions, so their difference varies less than either score.
    """
    from medmllm.eval.metrics.clinical import f1_counts, micro_f1_score
    from medmllm.eval.runner import PER_SAMPLE, read_per_sample
    from medmllm.eval.stats import paired_bootstrap

    def accuracies(folder: Path) -> dict[str, float]:
        return {i: m["accuracy"] for i, m in read_per_sample(folder / "diagnosis" / PER_SAMPLE)[0].items() if "accuracy" in m}

    def compared(blind_values, trained_values, n: int) -> dict:
        if n < 2:
            return {"difference": None, "ci95": [None, None], "p": None, "n": n}
        result = paired_bootstrap(blind_values, trained_values, resamples=resamples, seed=seed)
        return {"difference": result.difference, "ci95": list(result.ci), "p": result.p_value, "n": result.n}

    seeing, text_only = accuracies(trained), accuracies(blind)
    ids = [i for i in seeing if i in text_only]
    out = {ACCURACY: compared(np.array([text_only[i] for i in ids]), np.array([seeing[i] for i in ids]), len(ids))}
    seeing, text_only = report_pairs(trained / "reports", benches["reports"]), report_pairs(blind / "reports", blind_benches["reports"])
    ids = [i for i in seeing if i in text_only]
    scores = [micro_f1_score(f1_counts(*label_vectors([pairs[i] for i in ids]))) for pairs in (text_only, seeing)] if len(ids) >= 2 else [None, None]
    out[LABEL_F1] = compared(*scores, len(ids))
    return out


def change_terms(text: str) -> np.ndarray:
    """(len(CHANGES),) bool: which courses (`CHANGES`) the text states."""
    return np.array([bool(pattern.search(text)) for pattern in CHANGES.values()])


def change_f1(pairs: list[tuple[str, str]], resamples: int = 1000) -> dict:
    """Micro F1 of the courses the generated impressions state (unchanged, increased, decreased,
    resolved) against the references', with a bootstrap 95% CI: what only a model that knows the
    prior exam can get right."""
    from medmllm.eval.metrics.clinical import f1_counts, micro_f1_score
    from medmllm.eval.runner import summarize_score

    if len(pairs) < 2:
        return {"value": None, "ci95": [None, None], "n": len(pairs)}
    counts = f1_counts(np.stack([change_terms(p) for p, _ in pairs]), np.stack([change_terms(r) for _, r in pairs]))
    summary = summarize_score(micro_f1_score(counts), resamples)
    return {"value": summary["value"], "ci95": summary["ci95"], "n": len(pairs)}


def impressions(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The [Impression] sections of (generated, reference) reports (a text without one: all of it)."""
    from medmllm.data.templates import parse_report

    def impression(text: str) -> str:
        return parse_report(text)["impression"] or text

    return [(impression(p), impression(r)) for p, r in pairs]


def answers_no(sample: Sample) -> bool:
    """Whether a yes/no question's answer is "no"."""
    return str(sample.targets.get("answer", "")).strip().lower() == "no"


def question_kind(sample: Sample) -> tuple[str, str, str]:
    """What a yes/no question asks, as far as a model that does not see the image can tell: (the
    modality, the finding asked about, the question's wording with the finding as "{disease}"),
    from MiniRad's labels ("" where a sample lacks them).

    Why the wording: MiniRad draws it independently of the answer, but a benchmark of ~500 draws
    some wordings more often with "yes" for some finding, and a model can learn a wording's
    answer from its training questions. Balanced per modality and finding alone, the blind model
    scored 0.77 on the radiographs' atelectasis questions at MiniRad seed 3 (13 "yes" and 4 "no"
    asked "Does the ... atelectasis?") and 0.521 overall."""
    from medmllm.eval.tasks.base import question_text

    asked = str(sample.labels.get("asked", ""))
    return str(sample.labels.get("modality", "")), asked, question_text(sample).strip().replace(asked, "{disease}") if asked else ""


def yes_no_balanced(questions: list[Sample], limit: int | None = None, seed: int = 0, kind_of=question_kind) -> list[Sample]:
    """As many questions whose answer is "no" as "yes" for each `question_kind` (at most ``limit``
    in all, pairs taken from every kind in turn), in their order. MiniRad asks every normal exam a
    "no" question, two answers in three are "no", and on such a set a model that always says "no"
    scores 0.66; balanced overall but not per kind, a text-only model could still score above 0.5
    from how often each finding is present, or each wording answered "yes". Balanced per kind,
    every answer rule that does not look at the image (it reads the question's words) scores 0.5,
    and only a model that tells the findings apart scores above it (POPE balances its yes/no
    questions the same way; the training questions are balanced overall, `stage_datasets`).
    ``kind_of``: the kinds (``lambda s: ()`` balances overall)."""
    from collections import defaultdict

    from medmllm.data.curate.balance import balance_normal

    kinds: dict[tuple[str, ...], list[Sample]] = defaultdict(list)
    for sample in questions:
        kinds[kind_of(sample)].append(sample)
    pairs = []  # per kind, its (yes, no) pairs
    for key in sorted(kinds):
        kept, _ = balance_normal(kinds[key], answers_no, seed=seed)
        yes, no = ([s for s in kept if answers_no(s) == answer] for answer in (False, True))
        pairs.append(list(zip(yes, no, strict=True)))
    taken = [pair for turn in itertools.zip_longest(*pairs) for pair in turn if pair is not None]  # kinds in turn
    chosen = {id(s) for pair in taken[: None if limit is None else limit // 2] for s in pair}
    return [s for s in questions if id(s) in chosen]


def always_no_accuracy(bench: Path) -> float | None:
    """The diagnosis accuracy of a model that answers "no" to every question of ``bench``."""
    from medmllm.data.io import read_samples

    answers = [answers_no(s) for s in read_samples(bench)]
    return sum(answers) / len(answers) if answers else None


def headline(eval_dir: Path, benches: dict[str, Path]) -> dict[str, dict]:
    """{label: {"value", "ci95", "n"}} of the `HEADLINE` numbers of one model's evaluation
    (``eval_dir/diagnosis`` and ``eval_dir/reports``, as `medmllm.demo.run_demo` writes them)."""
    import json

    tasks = json.loads((eval_dir / "diagnosis" / "metrics.json").read_text())["tasks"]
    found = tasks.get("judgement", {}).get("metrics", {}).get("accuracy")
    accuracy = {"value": found["value"], "ci95": found["ci95"], "n": found.get("n")} if found else {"value": None, "ci95": [None, None], "n": 0}
    return {ACCURACY: accuracy, LABEL_F1: label_f1(predictions_and_references(eval_dir / "reports", benches["reports"]))}


def follow_up_numbers(eval_dir: Path, bench: Path) -> dict[str, dict]:
    """{label: {"value", "ci95", "n"}}: label F1 and change F1 of the follow-up exams' impressions."""
    pairs = impressions(predictions_and_references(eval_dir, bench))
    return {FOLLOW_UP_LABEL_F1: label_f1(pairs), CHANGE_F1: change_f1(pairs)}


def overlap(a: dict, b: dict) -> bool | None:
    """Whether two 95% intervals overlap (None when either is missing)."""
    (alo, ahi), (blo, bhi) = a["ci95"], b["ci95"]
    if None in (alo, ahi, blo, bhi):
        return None
    return not (ahi < blo or bhi < alo)


__all__ = ["ACCURACY", "CHANGES", "CHANGE_F1", "DIAGNOSIS_TASKS", "FOLLOW_UP_LABEL_F1", "HEADLINE", "LABEL_F1", "PARTS", "REPORT_TASKS",
           "always_no_accuracy", "answers_no", "change_f1", "change_terms", "first_exams", "follow_up_numbers", "follow_ups", "headline", "impressions", "label_f1", "label_vectors", "overlap",
           "paired_differences", "predictions_and_references", "question_kind", "report_pairs", "shuffled_label_f1", "strip_images", "yes_no_balanced"]
