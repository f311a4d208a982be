"""Text from ground truth: radiology reports, questions, and clinical records.

Every function takes the exam's findings (`medmllm.synth.findings.Finding`) and a
``random.Random``; wording is drawn from several templates per finding, per normal statement and
per change, so one seed gives one text. The words are chosen so that a CheXpert-style labeler
(`medmllm.eval.labeler`) reads back the truth: present findings are stated positively, absent ones
are negated by a cue right before them ("No pleural effusion or pneumothorax."), a resolved one is
negated ("Interval resolution of the right pleural effusion."), and no sentence mixes a negation
with a present finding. docs/minirad.md lists the templates' shapes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from medmllm.synth.findings import FINDING_TYPES, Finding

LUNG_TYPES = ("nodule", "mass", "consolidation", "atelectasis")


def _mm(value: float) -> str:
    return f"{round(value):d}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def named(f: Finding) -> str:
    """The finding with its place: "right upper lobe nodule", "left pleural effusion", "cardiomegaly"."""
    if f.type == "cardiomegaly":
        return "cardiomegaly"
    if f.type in ("pleural effusion", "pneumothorax"):
        return f"{f.side} {f.type}"
    if f.type == "brain mass":
        return f"{f.region} mass"
    return f"{f.region} {f.type}"


def severity(f: Finding) -> str:
    """small / moderate / large, from the size (effusion height, pneumothorax apical distance)."""
    cut = {"pleural effusion": (40, 65), "pneumothorax": (25, 35)}.get(f.type, (0, 0))
    return "small" if f.size_mm < cut[0] else "moderate" if f.size_mm < cut[1] else "large"


# ---------------------------------------------------------------------------------- sentences

_FINDING_TEMPLATES: dict[str, tuple[str, ...]] = {
    "nodule": ("{A} {s} mm nodule is seen in the {r}.", "There is {a} {s} mm nodule in the {r}.", "{R} nodule measuring {s} mm.",
               "A solid nodule measuring {s} mm is present in the {r}."),
    "mass": ("{A} {s} mm mass is seen in the {r}.", "There is {a} {s} mm mass in the {r}.", "{R} mass measuring {s} mm.",
             "A large soft-tissue mass measuring {s} mm occupies part of the {r}."),
    "consolidation": ("There is consolidation in the {r}.", "Consolidation is seen in the {r}, measuring about {s} mm.",
                      "{R} consolidation, approximately {s} mm.", "Patchy consolidation involves the {r}."),
    "atelectasis": ("Plate-like atelectasis in the {r}.", "There is subsegmental atelectasis in the {r}, about {s} mm long.",
                    "Linear atelectasis is seen in the {r}.", "{R} atelectasis."),
    "pleural effusion": ("A {sev} {side} pleural effusion is present.", "There is a {sev} {side}-sided pleural effusion, with fluid {s} mm high.",
                         "{Side} pleural effusion, {sev}.", "{Sev} {side} pleural effusion with blunting of the costophrenic angle."),
    "pneumothorax": ("A {side} apical pneumothorax measuring {s} mm is seen.", "There is a {side} pneumothorax with an apical distance of {s} mm.",
                     "{Side} pneumothorax, {s} mm at the apex.", "{Sev} {side} pneumothorax."),
    "cardiomegaly": ("The cardiac silhouette is enlarged.", "Cardiomegaly is present, with a transverse cardiac diameter of {s} mm.",
                     "Enlarged cardiac silhouette, cardiothoracic ratio {ctr}.", "Cardiomegaly."),
    "brain mass": ("{A} {s} mm mass is seen in the {r}, hypointense on T1.", "There is a T1-hypointense mass in the {r} measuring {s} mm.",
                   "{R} mass, {s} mm."),
    "infarct": ("{A} {s} mm area of T1 hypointensity in the {r}, consistent with an infarct.", "There is an infarct in the {r}, about {s} mm.",
                "{R} infarct measuring {s} mm."),
}
_CHANGE = {
    "increased": ("It has increased in size compared with the prior exam (previously {p} mm).", "It has increased in size compared with the prior exam.",
                  "This is larger than on the prior exam."),
    "decreased": ("It has decreased in size compared with the prior exam (previously {p} mm).", "It has decreased in size compared with the prior exam.",
                  "This is smaller than on the prior exam."),
    "unchanged": ("Unchanged compared with the prior exam.", "It is stable compared with the prior exam.", "No change since the prior exam."),
}
_NO_CHANGE = ("Compared with the prior exam, there is no interval change.", "No change since the prior exam.",
              "Stable appearance compared with the prior exam.")
_RESOLVED = ("The previously seen {n} has resolved.", "Interval resolution of the {n}.")
_NORMAL_CHEST = {
    "lungs": ("The lungs are clear.", "No focal consolidation, nodule or mass.", "The lungs are well expanded and clear.",
              "No pulmonary nodules or masses. No consolidation."),
    "pleura": ("No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.", "No pneumothorax or pleural effusion is seen."),
    "effusion": ("No pleural effusion.", "There is no pleural effusion."),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
    "heart": ("The heart size is normal.", "Heart size is within normal limits.", "Normal heart size.", "The heart is normal in size."),
}
_NORMAL_CT = ("The central airways are patent.", "No mediastinal or hilar lymphadenopathy.", "The visualized upper abdomen is unremarkable.")
_NORMAL_XRAY = ("No acute osseous abnormality.", "The bony thorax is intact.", "")
_NORMAL_BRAIN = ("The ventricles are normal in size.", "No mass or midline shift.", "Grey-white matter differentiation is preserved.",
                 "No focal signal abnormality.")
_NORMAL_IMPRESSION = {"chest": ("No acute cardiopulmonary abnormality.", "No active disease in the chest.", "Normal chest examination."),
                      "brain": ("Normal brain MRI.", "No intracranial abnormality.")}


def finding_sentence(f: Finding, rng: random.Random, change: str | None = None, prior: Finding | None = None, ratio: float | None = None) -> str:
    """One finding as a sentence, with its change since the prior exam on follow-ups."""
    text = rng.choice(_FINDING_TEMPLATES[f.type])
    ctr = f"{ratio:.2f}" if ratio is not None else "above 0.5"
    article = "an" if _mm(f.size_mm).startswith(("8", "11", "18")) else "a"
    text = text.format(s=_mm(f.size_mm), a=article, A=_cap(article), r=f.region, R=_cap(f.region), side=f.side, Side=_cap(f.side or ""), sev=severity(f),
                       Sev=_cap(severity(f)), ctr=ctr)
    if change in _CHANGE:
        text += " " + rng.choice(_CHANGE[change]).format(p=_mm(prior.size_mm) if prior else "")
    return text


def report(family: str, modality: str, findings: Sequence[tuple[Finding, str | None, Finding | None]], resolved: Sequence[Finding],
           rng: random.Random, follow_up: bool = False, ratio: float | None = None) -> tuple[str, str]:
    """(findings section, impression) of one exam.

    ``findings``: (finding, change since the prior exam or None, the prior exam's finding or None);
    ``resolved``: findings of the prior exam that are gone; ``ratio``: cardiothoracic ratio.
    """
    sentences = [finding_sentence(f, rng, change, prior, ratio) for f, change, prior in findings]
    sentences += [rng.choice(_RESOLVED).format(n=named(f)) for f in resolved]
    if follow_up and not sentences:  # a normal follow-up still says it was compared
        sentences.append(rng.choice(_NO_CHANGE))
    present = {f.type for f, _, _ in findings}
    if family == "chest":
        if not present & set(LUNG_TYPES):
            sentences.append(rng.choice(_NORMAL_CHEST["lungs"]))
        effusion, pneumothorax = "pleural effusion" in present, "pneumothorax" in present
        if not effusion and not pneumothorax:
            sentences.append(rng.choice(_NORMAL_CHEST["pleura"]))
        elif not effusion or not pneumothorax:
            sentences.append(rng.choice(_NORMAL_CHEST["pneumothorax" if effusion else "effusion"]))
        if "cardiomegaly" not in present:
            sentences.append(rng.choice(_NORMAL_CHEST["heart"]))
        extra = rng.choice(_NORMAL_CT if modality == "CT" else _NORMAL_XRAY)
        if extra:
            sentences.append(extra)
    else:
        normal = [s for s in _NORMAL_BRAIN if not (present and "mass" in s)]
        sentences += rng.sample(normal, 2)
    return " ".join(sentences), impression(family, findings, resolved, rng, follow_up)


def impression(family: str, findings, resolved, rng: random.Random, follow_up: bool) -> str:
    parts = []
    for f, change, _ in findings:
        name = named(f)
        if change == "unchanged":
            parts.append(rng.choice((f"Stable {name}.", f"{_cap(name)}, unchanged.")))
        elif change in ("increased", "decreased"):
            parts.append(f"{_cap(name)}, {change} in size compared with the prior exam.")
        elif f.type == "consolidation" and rng.random() < 0.5:
            parts.append(f"{_cap(name)}, consistent with pneumonia.")
        else:
            parts.append(f"{_cap(name)}.")
    parts += [f"Interval resolution of the {named(f)}." for f in resolved]
    if not parts:
        text = rng.choice(_NORMAL_IMPRESSION[family])
        return text[:-1] + ", unchanged compared with the prior exam." if follow_up and rng.random() < 0.5 else text
    return " ".join(parts)


# What this module writes about a course since the prior exam: whole sentences in the findings
# (_CHANGE, _NO_CHANGE, _RESOLVED) and in the impression ("Interval resolution of ..."), clauses of
# the impression's finding sentences.
_COURSE_SENTENCE = re.compile(r"(?i)\bprior exam\b|\bresol(?:ved|ution)\b")
_COURSE_CLAUSE = re.compile(r"(?i),\s*(?:unchanged|(?:increased|decreased) in size)(?: compared with the prior exam)?(?=\.)|^stable\s+")


def single_image_sections(findings: str, impression: str, family: str = "chest") -> tuple[str, str]:
    """(findings, impression) of this module as their exam's image alone shows them: without what
    they say about the prior exam. Findings: the course sentences left out ("It has decreased in
    size compared with the prior exam (previously 38 mm).", "The previously seen ... has resolved.").
    Impression: "Left upper lobe consolidation, decreased in size compared with the prior exam." ->
    "Left upper lobe consolidation."; "Stable cardiomegaly." -> "Cardiomegaly."; "Interval
    resolution of ..." left out (a normal impression of ``family`` when nothing is left). A first
    exam's sections come back unchanged.

    Why: a follow-up exam's report asked of its image alone (the demo's single-exam stage and report
    rounds) taught the model to write "compared with the prior exam" where there was none
    (docs/demo.md, "Course words on first exams")."""

    def kept(text: str, clause: bool) -> str:
        out = []
        for sentence in re.split(r"(?<=\.)\s+", text.strip()):
            if clause:
                sentence = _COURSE_CLAUSE.sub("", sentence)
                sentence = sentence[:1].upper() + sentence[1:]
            if sentence and not _COURSE_SENTENCE.search(sentence):
                out.append(sentence)
        return " ".join(out)

    return kept(findings, clause=False), kept(impression, clause=True) or _NORMAL_IMPRESSION[family][0]


def single_image_report(report: str, family: str = "chest") -> str:
    """`single_image_sections` of a report's text ("[Findings] ... \n [Impression] ...", as
    `medmllm.data.templates.format_sections` writes MiniRad's); a text without both sections as it is."""
    from medmllm.data.templates import FINDINGS, IMPRESSION, format_sections, parse_report

    sections = parse_report(report)
    if not (sections["findings"] and sections["impression"]):
        return report
    return format_sections(zip((FINDINGS, IMPRESSION), single_image_sections(sections["findings"], sections["impression"], family)))


# ---------------------------------------------------------------------------------- questions


def questions(family: str, findings: Sequence[Finding], rng: random.Random, k: int = 1) -> list[tuple[str, str, str]]:
    """``k`` (question, answer, answer_type) about one exam: open ("What abnormality is seen in the
    left lung?" -> "nodule in the left lower lobe"; "none") or closed (yes / no)."""
    pool = _brain_questions(findings, rng) if family == "brain" else _chest_questions(findings, rng)
    rng.shuffle(pool)
    return pool[:k]


def _listing(found: Sequence[Finding]) -> str:
    return " and ".join(f.type if f.type == "cardiomegaly" else f"{f.type} in the {f.region}" for f in found) or "none"


def _chest_questions(findings: Sequence[Finding], rng: random.Random) -> list[tuple[str, str, str]]:
    side = rng.choice(("left", "right"))
    on_side = [f for f in findings if f.side == side]
    asked = rng.choice([f.type for f in findings] + [t for t in FINDING_TYPES if FINDING_TYPES[t].family == "chest"])
    has = any(f.type == asked for f in findings)
    out = [
        (f"What abnormality is seen in the {side} lung?", _listing(on_side), "open"),
        ("What abnormality is seen in this image?", _listing(findings), "open"),
        (f"Is there {'a ' if asked not in ('cardiomegaly', 'atelectasis', 'consolidation') else ''}{asked}?", "yes" if has else "no", "closed"),
        ("Is the heart enlarged?", "yes" if any(f.type == "cardiomegaly" for f in findings) else "no", "closed"),
        ("Is this chest normal?", "no" if findings else "yes", "closed"),
    ]
    for f in findings:
        if f.side:
            out.append((f"Which side is the {f.type} on?", f.side, "open"))
        if f.type in ("nodule", "mass", "consolidation", "atelectasis"):
            out.append((f"Where is the {f.type} located?", f.region, "open"))
        if f.type in ("nodule", "mass"):
            out.append((f"How large is the {f.type}?", f"{_mm(f.size_mm)} mm", "open"))
    return out


def _brain_questions(findings: Sequence[Finding], rng: random.Random) -> list[tuple[str, str, str]]:
    asked = rng.choice(("mass", "infarct"))
    has = any(f.type.endswith(asked) for f in findings)
    out = [
        ("What abnormality is seen in the brain?", _listing(findings), "open"),
        (f"Is there {'a' if asked == 'mass' else 'an'} {asked}?", "yes" if has else "no", "closed"),
        ("Is this brain MRI normal?", "no" if findings else "yes", "closed"),
    ]
    for f in findings:
        out.append((f"Which hemisphere is the {f.type} in?", f.side, "open"))
        out.append((f"Which lobe is the {f.type} in?", f.region.split(" ", 1)[1], "open"))
    return out


# ------------------------------------------------------------------------------------ records

_COMPLAINTS = {
    None: ("Cough for {d} days.", "Mild cough and runny nose for {d} days.", "Routine follow-up, no complaints."),
    "brain": ("Headache for {d} days.", "A brief episode of dizziness {d} days ago.", "Routine follow-up, no complaints."),
    "pneumonia": ("Fever and cough for {d} days.", "Fever, productive cough and fast breathing for {d} days."),
    "pulmonary nodule": ("Dry cough for {w} weeks.", "Follow-up of an incidental lung finding."),
    "lung mass": ("Persistent cough and weight loss for {w} weeks.", "Chest pain and cough for {w} weeks."),
    "atelectasis": ("Cough and shallow breathing for {d} days.", "Wheezing and cough for {d} days."),
    "pleural effusion": ("Shortness of breath for {d} days.", "Fever, chest pain and breathlessness for {d} days."),
    "pneumothorax": ("Sudden chest pain and shortness of breath for {d} day(s).", "Acute dyspnea and pleuritic chest pain since {d} day(s)."),
    "cardiomegaly": ("Tiredness on exertion and poor feeding for {w} weeks.", "Breathlessness on exertion for {w} weeks."),
    "brain tumor": ("Morning headaches and vomiting for {w} weeks.", "Headache and unsteady gait for {w} weeks."),
    "cerebral infarction": ("Sudden weakness of the {o} arm and leg {d} day(s) ago.", "Acute {o}-sided weakness and slurred speech for {d} day(s)."),
}
_SIGNS = {
    None: "Lungs clear to auscultation, heart sounds regular without murmur.",
    "brain": "Alert, cranial nerves intact, normal power and reflexes, no meningism.",
    "pneumonia": "Crackles over the {side} lung field, respiratory rate increased.",
    "pulmonary nodule": "Breath sounds equal on both sides, no crackles.",
    "lung mass": "Reduced breath sounds over the {side} lung field.",
    "atelectasis": "Slightly reduced breath sounds at the {side} base.",
    "pleural effusion": "Dullness to percussion and decreased breath sounds at the {side} base.",
    "pneumothorax": "Hyperresonance and absent breath sounds over the {side} hemithorax.",
    "cardiomegaly": "Displaced apex beat, gallop rhythm, hepatomegaly 2 cm below the costal margin.",
    "brain tumor": "Papilledema on fundoscopy, ataxic gait.",
    "cerebral infarction": "Reduced power of the {o} limbs (3/5), brisk reflexes on the {o} side.",
}
_TREATMENT = {
    None: ("Symptomatic care.", "Fluids and rest; return if symptoms worsen."),
    "brain": ("Symptomatic care.", "Analgesics as needed, headache diary, review in 4 weeks."),
    "pneumonia": ("Antibiotics.", "Oral amoxicillin for 7 days, antipyretics, follow-up imaging after treatment."),
    "pulmonary nodule": ("Imaging follow-up.", "Follow-up chest CT in 3 months to assess stability."),
    "lung mass": ("Specialist referral.", "Contrast-enhanced CT, biopsy and referral to pediatric oncology."),
    "atelectasis": ("Chest physiotherapy.", "Chest physiotherapy and incentive spirometry; reassess in 1 week."),
    "pleural effusion": ("Drainage and treatment of the cause.", "Ultrasound-guided thoracentesis with fluid analysis; antibiotics if infected."),
    "pneumothorax": ("Oxygen and observation, drainage if enlarging.", "High-flow oxygen, repeat imaging in 6 hours, chest drain if it enlarges."),
    "cardiomegaly": ("Cardiology assessment.", "Echocardiography, ECG and referral to pediatric cardiology."),
    "brain tumor": ("Neurosurgical referral.", "Contrast-enhanced MRI, dexamethasone and referral to pediatric neurosurgery."),
    "cerebral infarction": ("Stroke care.", "Aspirin, stroke work-up (echocardiography, thrombophilia screen) and rehabilitation."),
}


def _disease_text(diseases: Sequence[str]) -> str:
    return "; ".join(_cap(d) for d in diseases) if diseases else "No acute disease"


def _first(diseases: Sequence[str], family: str) -> str | None:
    """The key of the texts a record is written from: its first disease; without one, None for a
    normal chest and "brain" for a normal brain (a headache, not a cough)."""
    return diseases[0] if diseases else ("brain" if family == "brain" else None)


def _fill(text: str, findings: Sequence[Finding], rng: random.Random) -> str:
    side = next((f.side for f in findings if f.side), "right")
    other = {"left": "right", "right": "left"}[side]  # a brain lesion weakens the other side of the body
    return text.format(d=rng.randint(1, 10), w=rng.randint(2, 8), side=side, o=other)


def patient_line(age: int, sex: str) -> str:
    return f"{age}-year-old {'boy' if sex == 'M' else 'girl'}"


def _plan(diseases: Sequence[str], family: str, part: int) -> str:
    return " ".join(_TREATMENT[d][part] for d in (diseases or [_first(diseases, family)]))


def outpatient_sections(family: str, age: int, sex: str, diseases: Sequence[str], findings: Sequence[Finding], exam_summary: str,
                        rng: random.Random) -> dict[str, str]:
    """The sections of `medmllm.data.templates.OutpatientRecord` for a visit whose first exam shows ``findings``."""
    main = _first(diseases, family)
    complaint = _fill(rng.choice(_COMPLAINTS[main]), findings, rng)
    return {
        "chief_complaint": complaint,
        "history_of_present_illness": f"A {patient_line(age, sex)} presents with: {complaint[:1].lower() + complaint[1:]} {exam_summary}",
        "physical_examination": f"T {rng.choice(('36.8', '37.2', '38.4', '39.0'))} C, HR {rng.randint(80, 130)}/min. "
                                + _fill(_SIGNS[main], findings, rng),
        "preliminary_diagnosis": _disease_text(diseases),
        "treatment_recommendation": _plan(diseases, family, 0),
        "treatment_plan": _plan(diseases, family, 1),
    }


def inpatient_sections(family: str, age: int, sex: str, course: Sequence[tuple[Sequence[str], Sequence[Finding], str]], rng: random.Random) -> dict:
    """The fields of `medmllm.data.templates.InpatientRecord` for a stay whose exams (in order) give
    (diseases, findings, one-line exam summary): the admission uses the first exam, the attending
    ward round the second, the chief ward round the last."""
    diseases0, findings0, summary0 = course[0]
    main = _first(diseases0, family)
    complaint = _fill(rng.choice(_COMPLAINTS[main]), findings0, rng)
    basis = f"{complaint} {_fill(_SIGNS[main], findings0, rng)} {summary0}"

    def round_(k: int, day: int) -> dict:
        diseases, findings, summary = course[min(k, len(course) - 1)]
        return {
            "additional_clinical_history_and_signs": f"Day {day} of admission. {summary}",
            "diagnostic_basis": f"{basis} Follow-up imaging: {summary}",
            "current_diagnosis": _disease_text(diseases),
            "diagnostic_and_treatment_plan": _plan(diseases, family, 1),
        }

    return {
        "history_of_present_illness": f"A {patient_line(age, sex)} admitted with: {complaint[:1].lower() + complaint[1:]}",
        "physical_examination": f"T {rng.choice(('37.0', '38.2', '38.9'))} C, HR {rng.randint(85, 140)}/min. " + _fill(_SIGNS[main], findings0, rng),
        "auxiliary_examination": summary0,
        "clinical_history_features": f"{_cap(patient_line(age, sex))}; {complaint[:1].lower() + complaint[1:]}",
        "first_disease_course": {"diagnostic_basis": basis, "admission_diagnosis": _disease_text(diseases0),
                                 "diagnostic_and_treatment_plan": _plan(diseases0, family, 1)},
        "attending_ward_round": round_(1, 3),
        "chief_ward_round": round_(len(course) - 1, 7),
    }
