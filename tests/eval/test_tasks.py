"""Task families: which family scores a sample, answer matching, and the scores they give."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from medmllm.data.schema import ImagePart, ImageRef, Sample, TextPart, Turn, text_turn
from medmllm.data.templates import get_template
from medmllm.eval.tasks import FAMILIES, ScoreOptions, family_of
from medmllm.eval.tasks.base import closest, f1_score, normalize_answer, text_metrics
from medmllm.eval.tasks.judgement import yes_no
from medmllm.eval.tasks.modality import MODALITY_CLASSES
from medmllm.eval.tasks.multiple_choice import extract_option, options_of
from medmllm.eval.tasks.rationale import diagnosis_part
from medmllm.eval.tasks.report import findings_of


def _qa(answer: str, task: str = "vqa", **labels) -> Sample:
    return Sample(id="s", task=task, images=[ImageRef(path="a.png")],
                  turns=[Turn(role="user", content=[ImagePart(image=0), TextPart(text="Q?")]), text_turn("assistant", answer)], labels=labels)


def test_family_of_template_and_importer_tasks():
    img = {"id": "r", "images": ["x.png"]}
    assert family_of(get_template("radbench/modality-open").make(img | {"modality": "CT"})) == "modality"
    assert family_of(get_template("radbench/modality-judgement").make(img | {"modality": "CT"})) == "judgement"
    assert family_of(get_template("radbench/diagnosis-judgement").make(img | {"diagnoses": ["edema"]})) == "judgement"
    assert family_of(get_template("radbench/diagnosis-open").make(img | {"diagnoses": ["edema"]})) == "vqa-open"
    assert family_of(get_template("radbench/report").make(img | {"findings": "Clear."})) == "report"
    assert family_of(get_template("radbench/rationale").make(img | {"rationale": "x", "diagnoses": ["y"]})) == "rationale"
    assert family_of(get_template("p2med/report-ct").make(img | {"findings": "a", "impression": "b"})) == "record"
    assert family_of(_qa("Yes", answer_type="closed")) == "vqa-closed"  # VQA-RAD / SLAKE closed
    assert family_of(_qa("left lung", answer_type="open")) == "vqa-open"
    assert family_of(_qa("no")) == "vqa-closed"  # no answer_type: a yes/no answer is closed
    assert family_of(_qa("no", task="diagnosis")) == "judgement"  # RadFM binary CSV
    assert family_of(_qa("B: CT", answer_type="choice")) == "multiple-choice"  # PMC-VQA


def test_modality_matching_follows_radfm_difflib():
    assert [closest(a, MODALITY_CLASSES) for a in ("MR", "x ray", "Ultrasound.", "ct", "Angiogram", "PET-CT")] == [
        "MRI", "X-ray", "Ultrasound", "CT", "angiography", "PET"]
    assert closest("ultrasonography", MODALITY_CLASSES) == "angiography"  # RadFM's character matching, kept as is (docs)


def test_modality_scores_accuracy_and_macro_f1_as_sklearn():
    from sklearn.metrics import f1_score as sk_f1

    refs = ["CT", "MRI", "X-ray", "CT", "Ultrasound", "MRI"]
    answers = ["CT", "MR", "CT", "computed tomography", "ultrasound", "x-ray"]
    samples = [get_template("radbench/modality-open").make({"id": f"m{i}", "images": ["x.png"], "modality": r}) for i, r in enumerate(refs)]
    scores = FAMILIES["modality"].score(answers, samples).scores
    predicted = [closest(a, MODALITY_CLASSES) for a in answers]
    truth = [closest(r, MODALITY_CLASSES) for r in refs]
    assert scores["accuracy"].value == pytest.approx(np.mean([p == t for p, t in zip(predicted, truth)]))
    assert scores["f1_macro"].value == pytest.approx(sk_f1(truth, predicted, average="macro"))
    idx = np.array([0, 0, 1, 2, 5, 5])
    assert scores["f1_macro"].resample(idx) == pytest.approx(sk_f1([truth[i] for i in idx], [predicted[i] for i in idx], average="macro"))


def test_yes_no_and_binary_f1():
    from sklearn.metrics import f1_score as sk_f1

    assert [yes_no(a) for a in ("Yes, it does.", "NO.", "nope", "yeah", "Correct", "nah")] == ["yes", "no", "no", "yes", "yes", "no"]
    truth, pred = ["yes", "no", "yes", "no"], ["yes", "yes", "no", "no"]
    assert f1_score(pred, truth, positive="yes").value == pytest.approx(sk_f1(truth, pred, pos_label="yes"))


def test_closed_vqa_normalisation():
    assert normalize_answer("The Left.") == normalize_answer("left")
    assert normalize_answer("Yes, there is an effusion") == "yes"
    assert normalize_answer("an axial  plane") == "axial plane"
    samples = [_qa(a, answer_type="closed") for a in ("Yes", "left", "Axial")]
    scores = FAMILIES["vqa-closed"].score(["yes, it is", "The left.", "coronal"], samples).scores
    assert list(scores["exact_match"].per_sample) == [1.0, 1.0, 0.0]


def test_multiple_choice_extraction():
    options = {"A": "MRI", "B": "Computed tomography", "C": "PET", "D": "Ultrasound"}
    cases = {"B": "B", "(B)": "B", "Answer: C": "C", "The answer is (D).": "D", "I think A.": "A", "It is computed tomography.": "B",
             "A nodule is seen": None, "MRI or PET": None, "B: Computed tomography": "B"}
    assert {a: extract_option(a, options) for a in cases} == cases
    sample = Sample(id="q", task="vqa", images=[ImageRef(path="a.png")], targets={"answer": "PET", "choice": "C"}, turns=[
        Turn(role="user", content=[ImagePart(image=0), TextPart(text="Which?\nA: MRI\nB: CT\nC: PET")]), text_turn("assistant", "C: PET")])
    assert options_of(sample) == {"A": "MRI", "B": "CT", "C": "PET"}
    scores = FAMILIES["multiple-choice"].score(["C", "pet", "maybe"], [sample] * 3).scores
    assert list(scores["accuracy"].per_sample) == [1.0, 1.0, 0.0] and scores["no_option"].value == pytest.approx(1 / 3)


def test_report_and_rationale_parts():
    assert findings_of("[Findings] Clear lungs. \n [Impression] Normal.") == "Clear lungs."
    assert findings_of("Clear lungs.") == "Clear lungs."
    text = "The Radiographic features can be summarized as follows. Patchy opacity. The diagnosis is pneumonia."
    assert diagnosis_part(text) == "pneumonia"
    assert diagnosis_part("just pneumonia") == "just pneumonia"


def test_text_metrics_use_the_registry_and_skip_missing_ones():
    from medmllm.eval.metrics import get_metric

    preds, refs = ["the lungs are clear", "small left effusion"], ["the lungs are clear .", "no effusion"]
    out = text_metrics(["bleu_1", "rouge_l", "no_such_metric"], preds, refs)
    direct = get_metric("bleu").fn(preds, [[r] for r in refs])
    assert out.scores["bleu_1"].value == pytest.approx(direct["bleu_1"].value)
    assert "bleu_2" not in out.scores and "rouge_l" in out.scores
    assert "no_such_metric" in out.skipped and out.signatures["bleu_1"] == get_metric("bleu").signature


class _FakeBackend:
    """A judge chat backend that always gives 4 (as `medmllm.eval.judge.ChatBackend`)."""

    name = "fake-judge"

    def __init__(self):
        self.calls = 0

    def complete(self, messages):
        self.calls += 1
        return '{"reason": "close to the ground truth", "score": 4}'


def test_record_components_with_and_without_judge():
    make = get_template("p2med/report-xray").make
    samples = [make({"id": f"x{i}", "images": ["a.png"], "findings": "Both lungs show increased markings.", "impression": "Bronchopneumonia."})
               for i in range(2)]
    predictions = ["[Findings] Both lungs show increased markings. \n [Impression] Bronchopneumonia.", "[Findings] Clear lungs."]
    plain = FAMILIES["record"].score(predictions, samples)
    assert plain.scores["findings/rouge_l"].per_sample[0] == pytest.approx(1.0)
    assert plain.scores["impression/rouge_l"].per_sample[1] == pytest.approx(0.0)  # missing section
    assert "judge" in plain.skipped
    backend = _FakeBackend()
    judged = FAMILIES["record"].score(predictions, samples, ScoreOptions(judge=backend))
    assert judged.scores["findings/accuracy"].value == 4.0
    assert judged.scores["impression/comprehensiveness"].per_sample[0] == 4.0
    assert judged.scores["impression/accuracy"].per_sample[1] == 1.0  # no [Impression]: 1 without asking the judge
    assert backend.calls == 4  # findings + impression x 2 criteria for sample 0, findings for sample 1
    assert "judge" not in judged.skipped


def test_fast_metrics_is_flat_and_needs_no_torch():
    code = ("import sys; from medmllm.eval.runner import fast_metrics; from medmllm.data.templates import get_template as g; "
            "s=[g('radbench/modality-open').make({'id':'a','images':['x.png'],'modality':'CT'}), "
            "g('radbench/report').make({'id':'b','images':['x.png'],'findings':'The lungs are clear.'})]; "
            "m=fast_metrics(['CT', 'The lungs are clear.'], s); print(sorted(m)); print(m['modality/accuracy']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    keys, accuracy = out.stdout.splitlines()
    assert "'modality/accuracy'" in keys and "'report/bleu_4'" in keys and "'report/rouge_l'" in keys and "cider" not in keys
    assert float(accuracy) == 1.0


def test_empty_predictions_are_scored_not_dropped():
    samples = [_qa("yes", answer_type="closed"), _qa("no", answer_type="closed")]
    scores = FAMILIES["vqa-closed"].score(["", "no"], samples).scores
    assert list(scores["exact_match"].per_sample) == [0.0, 1.0] and not math.isnan(scores["exact_match"].value)
