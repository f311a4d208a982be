"""Task templates: valid samples, the papers' prompts verbatim, seeded paraphrases, balanced
judgements, P2Med's output format and its parser."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from medmllm.data.schema import ImagePart, Sample
from medmllm.data.templates import (
    MODALITIES,
    TEMPLATES,
    ImageStudy,
    InpatientRecord,
    OutpatientRecord,
    VQARecord,
    canonical_modality,
    format_diagnosis_list,
    get_template,
    list_templates,
    make_samples,
    parse_diagnosis_list,
    parse_report,
    parse_sections,
)
from medmllm.errors import MedMLLMError
from medmllm.model.processor import describe_exam

XRAY = ImageStudy(
    id="cxr-1",
    images=[{"path": "cxr-1-ap.png", "view": "AP"}, {"path": "cxr-1-lat.png", "view": "LAT"}],
    modality="X-ray",
    time="2022-12-31",
    findings="Both lungs show increased markings.",
    impression="Bronchopneumonia.",
    diagnoses=["pneumonia"],
    rationale="Patchy consolidation with air bronchograms",
    patient_id="p-1",
    visit_id="v-1",
    split="train",
)
CT = ImageStudy(
    id="ct-1",
    images=[{"path": "ct-1.nii.gz", "modality": "CT", "time": "2023-01-02T10:30"}],
    findings="Consolidation in the right lower lobe.",
    impression="Pneumonia.",
    diagnoses=["pneumonia", "pleural effusion"],
    rationale="Consolidation.",
)
VQA = VQARecord(id="vqa-1", images=["colon.png"], question="What is the location of the contrast blush in the image?",
                answer="Midpoint of the left colon", modality="CT", answer_type="open")
OUTPATIENT = OutpatientRecord(
    id="op-1",
    chief_complaint="The pediatric patient presented with cough and fever for 4 days",
    history_of_present_illness="Maximum temperature of 40°C",
    physical_examination="The pediatric patient is conscious and responsive",
    preliminary_diagnosis="Bronchopneumonia",
    treatment_recommendation="Oral azithromycin.",
    treatment_plan="Blood test, chest X-ray.",
    diagnoses=["bronchopneumonia"],
)
INPATIENT = InpatientRecord(
    id="ip-1",
    history_of_present_illness="The pediatric patient had a fever without obvious inducement five days ago (October 9, 2023)",
    physical_examination="The pediatric patient is conscious and responsive",
    auxiliary_examination="October 9, 2023: outpatient blood test",
    clinical_history_features="Male, 13 years old",
    first_disease_course={"diagnostic_basis": "Fever and cough.", "admission_diagnosis": "Mycoplasma pneumonia",
                          "diagnostic_and_treatment_plan": "Azithromycin."},
    attending_ward_round={"additional_clinical_history_and_signs": "The pediatric patient continues to experience recurrent fever, peaking at 39.7°C",
                          "diagnostic_basis": "Persistent fever.", "current_diagnosis": "Severe mycoplasma pneumonia",
                          "diagnostic_and_treatment_plan": "Add methylprednisolone."},
    chief_ward_round={"additional_clinical_history_and_signs": "Afebrile for two days",
                      "diagnostic_basis": "Improving.", "current_diagnosis": "Mycoplasma pneumonia, recovering",
                      "diagnostic_and_treatment_plan": "Discharge in two days."},
)
RECORDS = {
    "radbench/modality-judgement": XRAY, "radbench/modality-open": XRAY, "radbench/diagnosis-judgement": XRAY,
    "radbench/diagnosis-open": CT, "radbench/vqa": VQA, "radbench/report": XRAY, "radbench/rationale": XRAY,
    "p2med/report-xray": XRAY, "p2med/report-ct": CT, "p2med/outpatient-record": OUTPATIENT,
    "p2med/first-disease-course": INPATIENT, "p2med/attending-ward-round": INPATIENT, "p2med/chief-ward-round": INPATIENT,
}
NL = " \n "  # the paper's "\n": a line break with a space either side


def radfm_text(sample: Sample, turn: int = 0) -> str:
    """A turn as RadFM writes it: image k as ``<image-k>`` (from 1)."""
    return "".join(f"<image-{p.image + 1}>" if isinstance(p, ImagePart) else p.text for p in sample.turns[turn].content)


def p2med_text(sample: Sample, turn: int = 0) -> str:
    """A turn as the processor renders it: exam headers, each image as ``<image>``."""
    out = []
    for part in sample.turns[turn].content:
        if isinstance(part, ImagePart):
            ref = sample.images[part.image]
            out.append(describe_exam(ref.time, ref.modality) + "<image>")
        else:
            out.append(part.text)
    return "".join(out)


def test_registry_names_and_errors():
    assert set(list_templates()) == set(RECORDS)
    assert list_templates("p2med") == [n for n in RECORDS if n.startswith("p2med/")]
    with pytest.raises(MedMLLMError, match="unknown task template 'radbench/nope'.*radbench/vqa.*p2med/chief-ward-round"):
        get_template("radbench/nope")


@pytest.mark.parametrize("name", list(RECORDS))
def test_every_template_makes_a_valid_sample_that_round_trips(name):
    template = get_template(name)
    assert template.prompts[0].from_paper and len(template.prompts) >= 5  # the paper's + at least 4 paraphrases
    assert len({p.text for p in template.prompts}) == len(template.prompts)
    for seed in range(5):
        sample = template.make(RECORDS[name], seed)
        assert sample.task == name and sample.id == f"{RECORDS[name].id}/{name}"
        assert [t.role for t in sample.turns] == ["user", "assistant"]
        assert Sample.from_json(sample.to_json()) == sample
        assert sample.targets and all(isinstance(v, str) and v for v in sample.targets.values())
        # The parser gives the targets back from the assistant text (for evaluation).
        parsed = template.parse(sample.turns[-1].text)
        shared = parsed.keys() & sample.targets.keys()
        assert shared and all(parsed[k] == sample.targets[k] for k in shared)


def test_same_seed_same_sample_and_paraphrases_vary_with_the_seed():
    for name, record in RECORDS.items():
        template = get_template(name)
        assert template.make(record, 7).to_json() == template.make(record, 7).to_json()
        assert template.make(record).to_json() == template.make(record).to_json()  # seeded from the ids
        used = {template.make(record, seed).meta["prompt_index"] for seed in range(60)}
        assert len(used) >= 4, name
        texts = {radfm_text(template.make(record, seed)) for seed in range(60)}
        assert len(texts) >= 4, name
    # A dataset: one Random for all records, reproducible.
    first = [s.to_json() for s in make_samples("radbench/report", [XRAY, CT] * 10, seed=3)]
    assert first == [s.to_json() for s in make_samples("radbench/report", [XRAY, CT] * 10, seed=3)]
    assert first != [s.to_json() for s in make_samples("radbench/report", [XRAY, CT] * 10, seed=4)]


# ------------------------------------------------------------------------- the papers' prompts


def test_radbench_paper_prompts_verbatim():
    """The prompts of RadFM sections 3.3 and 4.1 and Fig. 7, images written as <image-k>."""

    def paper(name, record, **kw):
        return get_template(name).make(record, random.Random(0), paper_prompt=True, **kw)

    sample = paper("radbench/modality-judgement", XRAY.model_copy(update={"images": XRAY.images[:1]}))
    assert radfm_text(sample) == f"<image-1> Is this image shot by {sample.labels['asked']}?"
    assert radfm_text(paper("radbench/modality-open", CT)) == "What's the modality of the input scan <image-1>?"
    assert paper("radbench/modality-open", CT).turns[1].text == "CT"
    sample = paper("radbench/diagnosis-judgement", CT)
    assert radfm_text(sample) == f"<image-1> Does the patient have {sample.labels['asked']}?"
    two = CT.model_copy(update={"images": CT.images * 2, "diagnoses": ["Edema", "pneumothorax"]})
    sample = paper("radbench/diagnosis-open", two)
    assert radfm_text(sample) == "Please make diagnosis based on the images <image-1><image-2>."
    assert sample.turns[1].text == "Edema, pneumothorax."  # the paper's example answer
    assert radfm_text(paper("radbench/vqa", VQA)) == "What is the location of the contrast blush in the image? <image-1>"
    fig7 = CT.model_copy(update={"context": "Patient: Age 35 years Gender: Male. Headache for two weeks. Nausea. Bradypsychia."})
    assert radfm_text(paper("radbench/report", fig7)) == (
        "Patient: Age 35 years Gender: Male. Headache for two weeks. Nausea. Bradypsychia. Please caption this scan with findings. <image-1>")
    sample = paper("radbench/rationale", CT)
    assert radfm_text(sample) == ("Determine the disease that corresponds to the given radiographic images, starting with the established "
                                  "radiological features and concluding with the ultimate diagnosis. <image-1>")
    assert sample.turns[1].text == ("The Radiographic features can be summarized as follows. Consolidation. "
                                    "The diagnosis is pneumonia, pleural effusion.")


def test_p2med_report_prompt_verbatim_with_one_exam_header_for_two_views():
    sample = get_template("p2med/report-xray").make(XRAY, paper_prompt=True)
    assert p2med_text(sample) == (
        "Current radiological data is as follows: \n [Examination time] 2022-12-31 \n [Examination modality] X-ray \n [Image] <image><image>"
        " \n Based on the above information, combined with professional radiological knowledge, generate a report in the format:"
        " \n [Findings] {Your findings based on the images} \n [Impression] {Your impression based on the images} \n"
    )
    # The header text is the processor's: the template writes none of it.
    assert "[Examination" not in sample.turns[0].text
    first, second = sample.images
    assert (first.time, first.modality, second.time, second.modality) == ("2022-12-31", "X-ray", None, None)
    assert first.exam == second.exam == "cxr-1" and second.view == "LAT"
    assert sample.turns[1].text == "[Findings] Both lungs show increased markings. \n [Impression] Bronchopneumonia."
    assert sample.targets == {"findings": "Both lungs show increased markings.", "impression": "Bronchopneumonia."}
    assert sample.labels == {"modality": "X-ray", "diseases": ["pneumonia"], "key_target": "impression"}
    assert (sample.patient_id, sample.visit_id, sample.split) == ("p-1", "v-1", "train")

    ct = get_template("p2med/report-ct").make(CT, paper_prompt=True)
    assert p2med_text(ct).startswith("Current radiological data is as follows: \n [Examination time] 2023-01-02T10:30 \n [Examination modality] CT \n [Image] <image> \n ")
    assert ct.turns[1].text == "[Findings] Consolidation in the right lower lobe. \n [Impression] Pneumonia."


P2MED_RECORD_PROMPTS = {
    "p2med/outpatient-record": (
        "Current outpatient pediatric information is as follows: \n [Chief complaint] The pediatric patient presented with cough and fever for 4 days"
        " \n [History of present illness] Maximum temperature of 40°C \n [Physical examination] The pediatric patient is conscious and responsive"
        " \n Based on the above information, combined with professional medical knowledge, make a diagnosis in the format:"
        " \n [Preliminary diagnosis] {Your preliminary diagnosis} \n [Treatment recommendation] {Your treatment recommendation}"
        " \n [Treatment plan] {Your treatment plan} \n",
        "[Preliminary diagnosis] Bronchopneumonia \n [Treatment recommendation] Oral azithromycin. \n [Treatment plan] Blood test, chest X-ray.",
    ),
    "p2med/first-disease-course": (
        "Current inpatient pediatric information is as follows: \n [History of present illness] The pediatric patient had a fever without obvious"
        " inducement five days ago (October 9, 2023) \n [Physical examination] The pediatric patient is conscious and responsive"
        " \n [Auxiliary examination] October 9, 2023: outpatient blood test \n [Clinical history features] Male, 13 years old"
        " \n Based on the above information, combined with professional medical knowledge, make a diagnosis in the format:"
        " \n [Diagnostic basis] {Your diagnostic basis} \n [Admission diagnosis] {Your admission diagnosis}"
        " \n [Diagnostic and treatment plan] {Your diagnostic and treatment plan} \n",
        "[Diagnostic basis] Fever and cough. \n [Admission diagnosis] Mycoplasma pneumonia \n [Diagnostic and treatment plan] Azithromycin.",
    ),
    "p2med/attending-ward-round": (
        "Current inpatient pediatric information is as follows: \n [Clinical history features] Male, 13 years old"
        " \n [Additional clinical history and signs] The pediatric patient continues to experience recurrent fever, peaking at 39.7°C"
        " \n Based on the above information, combined with professional medical knowledge, make a diagnosis in the format:"
        " \n [Diagnostic basis] {Your diagnostic basis} \n [Current diagnosis] {Your current diagnosis}"
        " \n [Diagnostic and treatment plan] {Your diagnostic and treatment plan} \n",
        "[Diagnostic basis] Persistent fever. \n [Current diagnosis] Severe mycoplasma pneumonia \n [Diagnostic and treatment plan] Add methylprednisolone.",
    ),
}


@pytest.mark.parametrize("name", list(P2MED_RECORD_PROMPTS))
def test_p2med_record_prompts_and_outputs_verbatim(name):
    sample = get_template(name).make(RECORDS[name], paper_prompt=True)
    prompt, output = P2MED_RECORD_PROMPTS[name]
    assert sample.images == [] and sample.turns[0].text == prompt
    assert sample.turns[1].text == output
    assert parse_sections(output, [s.split("]")[0] for s in output.split("[")[1:]]) == sample.targets


def test_chief_ward_round_reads_its_own_round():
    sample = get_template("p2med/chief-ward-round").make(INPATIENT, paper_prompt=True)
    assert "[Additional clinical history and signs] Afebrile for two days \n " in sample.turns[0].text
    assert sample.targets["current_diagnosis"] == "Mycoplasma pneumonia, recovering"
    assert sample.labels["key_target"] == "current_diagnosis"
    with pytest.raises(MedMLLMError, match="has no chief_ward_round"):
        get_template("p2med/chief-ward-round").make(INPATIENT.model_copy(update={"chief_ward_round": None}))


def test_missing_input_section_is_left_out_and_a_missing_output_is_an_error():
    record = OUTPATIENT.model_copy(update={"physical_examination": None})
    text = get_template("p2med/outpatient-record").make(record, paper_prompt=True).turns[0].text
    assert "[Physical examination]" not in text and "[History of present illness] Maximum temperature of 40°C \n Based on" in text
    with pytest.raises(MedMLLMError, match="'op-1' has no treatment plan"):
        get_template("p2med/outpatient-record").make(OUTPATIENT.model_copy(update={"treatment_plan": None}))
    # Without the outputs it is still a prompt, for serving: a test sample without targets.
    prompt = get_template("p2med/outpatient-record").make(OUTPATIENT.model_copy(update={"treatment_plan": None, "preliminary_diagnosis": None,
                                                                                         "treatment_recommendation": None}), answer=False)
    assert [t.role for t in prompt.turns] == ["user"] and prompt.split == "test" and prompt.targets == {}


def test_answer_false_keeps_the_targets_for_evaluation():
    sample = get_template("p2med/report-xray").make(XRAY, paper_prompt=True, answer=False)
    assert [t.role for t in sample.turns] == ["user"] and sample.split == "train"
    assert sample.targets == {"findings": "Both lungs show increased markings.", "impression": "Bronchopneumonia."}
    assert Sample.from_json(sample.to_json()) == sample


def test_record_errors_are_one_line_medmllm_errors():
    with pytest.raises(MedMLLMError, match="'cxr-1' is a X-ray study, not CT"):
        get_template("p2med/report-ct").make(XRAY)
    with pytest.raises(MedMLLMError, match="has no findings"):
        get_template("radbench/report").make(XRAY.model_copy(update={"findings": None}))
    with pytest.raises(MedMLLMError, match="takes a VQARecord, got a ImageStudy"):
        get_template("radbench/vqa").make(XRAY)
    with pytest.raises(MedMLLMError, match="radbench/report: images: List should have at least 1 item"):
        get_template("radbench/report").make({"id": "x", "images": [], "findings": "f"})
    with pytest.raises(MedMLLMError, match="has no modality"):
        get_template("radbench/modality-open").make({"id": "x", "images": ["a.png"]})
    # A dict works like the record.
    assert get_template("radbench/report").make(XRAY.model_dump()) == get_template("radbench/report").make(XRAY)


def test_radbench_images_carry_no_exam_header():
    """RadFM has no exam header, and "[Examination modality] CT" would answer the modality question."""
    for name in list_templates("radbench"):
        sample = get_template(name).make(RECORDS[name], 0)
        assert all(ref.modality is None and ref.time is None for ref in sample.images), name
    sample = get_template("radbench/modality-open").make(CT, 0)
    assert sample.images[0].path == "ct-1.nii.gz" and sample.labels["modality"] == "CT"


# ----------------------------------------------------------------------------- judgements


def binomial_bound(n: int, z: float = 4.0) -> float:
    """|yes - n/2| stays below z standard deviations of Binomial(n, 0.5) (p ~ 6e-5 to fail by chance)."""
    return z * math.sqrt(n * 0.25)


def test_modality_judgement_is_balanced_and_asks_only_known_modalities():
    samples = list(make_samples("radbench/modality-judgement", [XRAY, CT] * 500, seed=0))
    yes = sum(s.targets["answer"] == "yes" for s in samples)
    assert abs(yes - 500) <= binomial_bound(1000)
    for s in samples:
        truth, asked = s.labels["modality"], s.labels["asked"]
        assert asked in MODALITIES and s.turns[1].text == ("yes" if asked == truth else "no")
    assert {s.labels["asked"] for s in samples if s.targets["answer"] == "no"} == set(MODALITIES) - {"X-ray"} | (set(MODALITIES) - {"CT"})


def test_diagnosis_judgement_is_balanced_and_negatives_are_absent_diseases():
    samples = list(make_samples("radbench/diagnosis-judgement", [CT] * 1000, seed=1))
    yes = sum(s.targets["answer"] == "yes" for s in samples)
    assert abs(yes - 500) <= binomial_bound(1000)
    for s in samples:
        asked = s.labels["asked"]
        assert (asked in CT.diagnoses) == (s.turns[1].text == "yes")
        assert asked in s.turns[0].text
    # Known negatives of the record win over the default pool; a custom pool replaces the default.
    record = CT.model_copy(update={"absent": ["fracture"]})
    assert {s.labels["asked"] for s in make_samples("radbench/diagnosis-judgement", [record] * 50) if s.targets["answer"] == "no"} == {"fracture"}
    custom = dataclasses.replace(get_template("radbench/diagnosis-judgement"), disease_pool=("bronchiolitis",))
    assert {s.labels["asked"] for s in make_samples(custom, [CT] * 50) if s.targets["answer"] == "no"} == {"bronchiolitis"}
    # A normal study can only be asked "no" questions.
    normal = CT.model_copy(update={"diagnoses": []})
    assert {s.targets["answer"] for s in make_samples("radbench/diagnosis-judgement", [normal] * 20)} == {"no"}


# ------------------------------------------------------------------------------------ parsers


def test_parse_report_inverts_the_output_and_tolerates_spacing_and_missing_sections():
    for record in (XRAY, CT):
        sample = get_template(f"p2med/report-{'xray' if record is XRAY else 'ct'}").make(record, 0)
        assert parse_report(sample.turns[1].text) == sample.targets
    assert parse_report("[Findings]a\n[Impression]b") == {"findings": "a", "impression": "b"}
    assert parse_report("  [ findings ]:  a  b \n\n [IMPRESSION]  c. ") == {"findings": "a  b", "impression": "c."}
    assert parse_report("[Impression] only this") == {"findings": "", "impression": "only this"}
    assert parse_report("no sections at all") == {"findings": "", "impression": ""}
    assert parse_report("Findings: clear lungs.\nImpression: normal") == {"findings": "clear lungs.", "impression": "normal"}
    assert parse_report("[Findings] a [Impression] b [Impression] again") == {"findings": "a", "impression": "b"}
    assert parse_sections("[Diagnostic  and treatment plan] x \n [Diagnostic basis] y", ["Diagnostic basis", "diagnostic_and_treatment_plan"]) == {
        "diagnostic_basis": "y", "diagnostic_and_treatment_plan": "x"}


def test_diagnosis_list_and_rationale_parsers():
    assert format_diagnosis_list(["edema", "pneumothorax"]) == "Edema, pneumothorax."
    assert parse_diagnosis_list("Edema, pneumothorax.") == ["edema", "pneumothorax"]
    assert parse_diagnosis_list("edema; Pneumothorax\n") == ["edema", "pneumothorax"]
    rationale = get_template("radbench/rationale")
    sample = rationale.make(XRAY, 0)
    assert rationale.parse(sample.turns[1].text) == sample.targets
    assert rationale.parse("Just some features.") == {"rationale": "Just some features.", "diagnosis": ""}


def test_canonical_modality():
    assert [canonical_modality(m) for m in ("MR", "dx", "Xray", "US", "ct", "Mammography", None)] == [
        "MRI", "X-ray", "X-ray", "Ultrasound", "CT", "Mammography", None]


def test_templates_are_registered_once_by_name():
    assert all(TEMPLATES[name].name == name for name in TEMPLATES)
