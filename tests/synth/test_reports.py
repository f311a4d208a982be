"""Report, question and record text from ground truth: every template, read back by the labeler."""

from __future__ import annotations

import random

import numpy as np
import pytest

from medmllm.synth import reports as rp
from medmllm.synth.findings import CHEST_TYPES, FINDING_TYPES, place

CHANGES = (None, "increased", "decreased", "unchanged")


def _finding(name: str, seed: int = 0):
    return place(name, np.random.default_rng(seed), scale=1.0)


@pytest.mark.parametrize("modality", ["X-ray", "CT"])
def test_every_chest_template_reads_back_through_the_labeler(modality):
    labeler = pytest.importorskip("medmllm.eval.labeler")
    covered = {FINDING_TYPES[t].observation for t in CHEST_TYPES}
    wrong, total = [], 0
    for name in CHEST_TYPES:
        for change in CHANGES:
            for seed in range(12):  # enough draws to use every template of the type
                rng = random.Random(seed)
                f = _finding(name, seed)
                findings, impression = rp.report("chest", modality, [(f, change, f if change else None)], [], rng, follow_up=change is not None)
                labels = labeler.label_report(findings + " " + impression)
                for observation in covered | {"No Finding"}:
                    expected = observation == FINDING_TYPES[name].observation
                    total += 1
                    if (labels[observation] == 1) != expected:
                        wrong.append((observation, labels[observation], findings, impression))
    assert not wrong, wrong[:3]
    assert total > 1000


def test_resolved_findings_and_normal_exams_are_negated():
    labeler = pytest.importorskip("medmllm.eval.labeler")
    for name in CHEST_TYPES:
        for seed in range(6):
            gone = _finding(name, seed)
            findings, impression = rp.report("chest", "X-ray", [], [gone], random.Random(seed), follow_up=True)
            labels = labeler.label_report(findings + " " + impression)
            assert labels[FINDING_TYPES[name].observation] in (0, None), (findings, impression)
            assert "resol" in findings and "resol" in impression
    for seed in range(10):
        findings, impression = rp.report("chest", "CT", [], [], random.Random(seed))
        assert labeler.label_report(findings + " " + impression)["No Finding"] == 1


def test_wording_varies_and_states_size_side_and_region():
    f = _finding("nodule", 3)
    texts = {rp.finding_sentence(f, random.Random(seed)) for seed in range(30)}
    assert len(texts) == len(rp._FINDING_TEMPLATES["nodule"])
    for text in texts:
        assert f"{round(f.size_mm)} mm" in text and f.region in text.lower()
    effusion = _finding("pleural effusion", 1)
    assert all(effusion.side in rp.finding_sentence(effusion, random.Random(s)).lower() for s in range(10))
    grown = rp.finding_sentence(f, random.Random(0), "increased", f)
    assert "compared with the prior exam" in grown or "larger" in grown


def test_questions_answer_from_the_truth():
    f = _finding("nodule", 5)
    qa = rp.questions("chest", [f], random.Random(0), k=50)
    answers = dict((q, a) for q, a, _ in qa)
    assert answers[f"What abnormality is seen in the {f.side} lung?"] == f"nodule in the {f.region}"
    other = "left" if f.side == "right" else "right"
    assert answers.get(f"What abnormality is seen in the {other} lung?", "none") == "none"
    assert answers["Is the heart enlarged?"] == "no" and answers["Is this chest normal?"] == "no"
    assert answers["Which side is the nodule on?"] == f.side
    assert all(kind in ("open", "closed") for _, _, kind in qa)
    normal = dict((q, a) for q, a, _ in rp.questions("brain", [], random.Random(0), k=50))
    assert normal["What abnormality is seen in the brain?"] == "none" and normal["Is this brain MRI normal?"] == "yes"


def test_records_name_the_diseases_and_fit_the_finding():
    f = _finding("pneumothorax", 2)
    sections = rp.outpatient_sections("chest", 9, "F", ["pneumothorax"], [f], "Chest X-ray on 2020-01-01: Right pneumothorax.", random.Random(0))
    assert sections["preliminary_diagnosis"] == "Pneumothorax"
    assert "chest pain" in sections["chief_complaint"].lower() or "dyspnea" in sections["chief_complaint"].lower()
    assert f.side in sections["physical_examination"]
    normal = rp.outpatient_sections("brain", 9, "M", [], [], "Brain MRI on 2020-01-01: Normal brain MRI.", random.Random(0))
    assert normal["preliminary_diagnosis"] == "No acute disease" and "cough" not in normal["chief_complaint"].lower()
    stay = rp.inpatient_sections("chest", 5, "M", [(["pneumonia"], [], "a"), (["pneumonia"], [], "b"), ([], [], "c")], random.Random(0))
    assert stay["first_disease_course"]["admission_diagnosis"] == "Pneumonia"
    assert stay["attending_ward_round"]["current_diagnosis"] == "Pneumonia"
    assert stay["chief_ward_round"]["current_diagnosis"] == "No acute disease"


COURSE_WORDS = ("prior", "previous", "interval", "resol", "unchanged", "stable", "increased", "decreased", "larger", "smaller", "since")


@pytest.mark.parametrize("modality", ["X-ray", "CT"])
def test_single_image_report_leaves_out_the_course_and_keeps_the_findings(modality):
    """Every chest template on follow-ups (each course, a resolved finding beside it): no word of a
    course is left, the finding's own sentence and its impression are, and the labeler reads the
    same finding; a first exam's report comes back as it was."""
    labeler = pytest.importorskip("medmllm.eval.labeler")
    for name in CHEST_TYPES:
        for change in CHANGES:
            for seed in range(12):
                rng = random.Random(seed)
                f, gone = _finding(name, seed), _finding("nodule" if name != "nodule" else "mass", seed + 1)
                resolved = [gone] if seed % 3 == 0 and change else []
                findings, impression = rp.report("chest", modality, [(f, change, f if change else None)], resolved, rng, follow_up=change is not None)
                text = f"[Findings] {findings} \n [Impression] {impression}"
                alone = rp.single_image_report(text)
                if change is None and not resolved:
                    assert alone == text
                    continue
                assert not [w for w in COURSE_WORDS if w in alone.lower()], (text, alone)
                assert findings.split(". ")[0] in alone  # the finding's own sentence comes first
                assert rp.named(f) in alone.lower().split("[impression]")[1]
                observation = FINDING_TYPES[name].observation
                assert labeler.label_report(alone)[observation] == 1, alone


def test_single_image_report_of_a_normal_follow_up_says_normal():
    text = "[Findings] Compared with the prior exam, there is no interval change. The lungs are clear. \n [Impression] Normal chest examination, unchanged compared with the prior exam."
    assert rp.single_image_report(text) == "[Findings] The lungs are clear. \n [Impression] Normal chest examination."
    gone = "[Findings] The previously seen right pleural effusion has resolved. The lungs are clear. \n [Impression] Interval resolution of the right pleural effusion."
    assert rp.single_image_report(gone) == "[Findings] The lungs are clear. \n [Impression] No acute cardiopulmonary abnormality."
