"""`TextDeidentifier` on realistic reports and notes with planted PHI of every Safe Harbor category."""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta

import pytest

from medmllm.data.deid_text import AGE_CAP, CATEGORIES, PLACEHOLDERS, TextDeidentifier
from medmllm.data.schema import ImagePart, ImageRef, Sample, TextPart, Turn, text_turn

SALT = "test-salt-3f9a"

US_REPORT = """RADIOLOGY REPORT
Patient Name: WHITAKER, HAROLD J        MRN: 00482913        DOB: 03/14/1931
Accession #: RAD-22-104455    Exam Date: October 29, 2022 14:35
Exam name: CT CHEST WITHOUT CONTRAST
Referring Physician: Dr. Emily Carrington
Ordering clinic: 742 Evergreen Terrace, Apt 5B, Springfield, IL 62704. Tel: (217) 555-0134, Fax: (217) 555-0199
Send results to ecarrington@smh-health.org or https://portal.smh-health.org/results/104455 (workstation 10.12.33.140).

CLINICAL HISTORY: 93-year-old man with fever and productive cough since 10/25/2022. Prior admission on 2021-04-03.
COMPARISON: Chest radiograph 10/27/2022.
TECHNIQUE: Axial CT images of the chest without intravenous contrast, 5 mm slices.
FINDINGS: Right lower lobe consolidation with air bronchograms. Patchy ground-glass opacities in the left upper lobe.
No pleural effusion. No pneumothorax. Heart size is normal. Mild degenerative changes of the thoracic spine.
IMPRESSION:
1. Right lower lobe pneumonia.
2. No pleural effusion.
Findings discussed with Mr. Whitaker's daughter, Susan Whitaker, at 217-555-0188 on Oct 29, 2022.
Electronically signed by: Raymond T. Okafor, MD on 10/29/2022 16:02
"""

US_PHI = {
    "NAME": ["WHITAKER", "HAROLD", "Whitaker", "Emily", "Carrington", "Susan", "Raymond", "Okafor"],
    "ID": ["00482913", "RAD-22-104455", "104455"],
    "DATE": ["03/14/1931", "1931", "October 29, 2022", "10/25/2022", "2021-04-03", "10/27/2022", "Oct 29, 2022", "10/29/2022"],
    "AGE": ["93-year-old"],
    "PHONE": ["(217) 555-0134", "217-555-0188", "555-0134", "555-0188"],
    "FAX": ["(217) 555-0199", "555-0199"],
    "EMAIL": ["ecarrington@smh-health.org", "ecarrington"],
    "URL": ["https://portal.smh-health.org", "portal.smh-health.org"],
    "IP": ["10.12.33.140"],
    "ADDRESS": ["742 Evergreen Terrace", "Evergreen", "Apt 5B", "Springfield"],
    "ZIP": ["62704"],
}
US_MEDICAL = [
    "RADIOLOGY REPORT", "CT CHEST WITHOUT CONTRAST", "Right lower lobe consolidation with air bronchograms",
    "Patchy ground-glass opacities in the left upper lobe", "No pleural effusion. No pneumothorax.", "Heart size is normal.",
    "Mild degenerative changes of the thoracic spine.", "1. Right lower lobe pneumonia.", "Axial CT images of the chest",
    "5 mm slices", "man with fever and productive cough", ", IL ",
]

OUTPATIENT_NOTE = """OUTPATIENT NOTE
Name: Maria Gonzalez-Pena    Age: 96    Sex: F
SSN: 078-05-1120    Medicare ID: 1EG4-TE5-MK73    Account No: 55012877
Driver's license: D1234-56789    License plate: 7ABC123    Serial No.: 88231XA (home oxygen concentrator)
Address: 1600 Pennsylvania Avenue NW, Washington, DC 20500
Cell: +1 202 555 0147    Email: maria.gp@example.com    Web: www.gonzalez-family.net
Visit date: 11/02/2022. Seen by Dr. Chen. Cough since October 30, 2022.
Her husband, Luis Gonzalez, reports she has been more short of breath. Lives with her son Pablo in Washington.
Exam: T 38.4 C, HR 104, RR 24, SpO2 91% on room air, BP 132/78. Crackles at the right base.
Assessment: community-acquired pneumonia; right lower lobe consolidation on CT. Dr. Chen reviewed the CT with the patient.
Plan: amoxicillin-clavulanate 875 mg PO BID x 7 days, chest X-ray in 6 weeks. Follow up on 11/09/2022.
"""
NOTE_PHI = {
    "NAME": ["Maria", "Gonzalez-Pena", "Chen", "Luis", "Gonzalez"],
    "ID": ["078-05-1120", "1EG4-TE5-MK73", "55012877", "D1234-56789", "7ABC123", "88231XA"],
    "ADDRESS": ["1600 Pennsylvania Avenue", "Pennsylvania Avenue NW"],
    "ZIP": ["20500"],
    "PHONE": ["+1 202 555 0147", "555 0147"],
    "EMAIL": ["maria.gp@example.com"],
    "URL": ["www.gonzalez-family.net"],
    "DATE": ["11/02/2022", "October 30, 2022", "11/09/2022"],
    "AGE": ["Age: 96"],
}
NOTE_MEDICAL = [
    "community-acquired pneumonia; right lower lobe consolidation on CT", "reviewed the CT with the patient",
    "T 38.4 C, HR 104, RR 24, SpO2 91% on room air, BP 132/78", "amoxicillin-clavulanate 875 mg PO BID x 7 days",
    "chest X-ray in 6 weeks", "Crackles at the right base", "(home oxygen concentrator)", "Sex: F",
]

CHINESE_RECORD = """姓名：王建国  性别：男  年龄：91岁  门诊号：MZ20221029001  身份证号：310104193103140032
联系电话：13912345678  家庭住址：上海市徐汇区漕溪北路88号5栋302室  邮编：200030
就诊日期：2022年10月29日
主诉：咳嗽、发热3天。
现病史：患者王建国，男，91岁，于2022年10月26日起出现发热，体温最高39.2℃，伴咳嗽。
辅助检查：胸部CT示右下肺实变，考虑肺炎。未见胸腔积液。
诊断：社区获得性肺炎
医师：李晓明  请张医生会诊。
"""
CHINESE_PHI = {
    "NAME": ["王建国", "李晓明", "张医生"],
    "ID": ["MZ20221029001", "310104193103140032"],
    "PHONE": ["13912345678"],
    "ADDRESS": ["漕溪北路88号", "徐汇区"],
    "ZIP": ["200030"],
    "DATE": ["2022年10月29日", "2022年10月26日"],
    "AGE": ["91岁"],
}
CHINESE_MEDICAL = ["主诉：咳嗽、发热3天。", "胸部CT示右下肺实变，考虑肺炎。未见胸腔积液。", "体温最高39.2℃", "诊断：社区获得性肺炎", "性别：男"]

NO_PHI = """EXAMINATION: CT CHEST WITH CONTRAST
TECHNIQUE: Axial images from the thoracic inlet to the adrenal glands after 75 mL Omnipaque 350. Slice thickness 5.0 mm.
FINDINGS: 2.3 x 1.8 cm spiculated mass in the right upper lobe (series 3, image 45). Patchy consolidation in the Right Lower Lobe.
Kerley B lines. Small left pleural effusion measuring 12 mm. Status post CABG. Calcified granuloma. Grade 2 fatty liver.
Follow-up in 3 months per Fleischner Society guidelines. BP 120/80, HR 92, SpO2 94%, pH 7.35, WBC 12.5 x 10^9/L.
Patient is a 45-year-old woman, G2P1, BMI 31.2. Discussed with Radiology. Crohn's disease, Graves disease, Hodgkin lymphoma,
Bell's palsy, Down syndrome. Mass effect on the lateral ventricle. May represent atelectasis. Seen in the Emergency Department.
门诊病历 主诉：咳嗽3天。现病史：患儿3天前出现咳嗽，1天前发热，体温最高39.2℃。查体：双肺呼吸音粗。初步诊断：支气管肺炎。
"""


@pytest.fixture
def deid() -> TextDeidentifier:
    return TextDeidentifier(SALT)


def assert_removed(out: str, phi: dict[str, list[str]]) -> None:
    for category, values in phi.items():
        for value in values:
            assert value not in out, f"{category} value left in the output"  # never the value itself in a message


def assert_counted(counts, phi: dict[str, list[str]], minimum: dict[str, int]) -> None:
    for category in phi:
        assert counts[category] >= minimum.get(category, 1), category


# -------------------------------------------------------------------------------- categories


def test_us_radiology_report(deid):
    out, counts = deid.deidentify_text(US_REPORT, patient_key="00482913")
    assert_removed(out, US_PHI)
    assert_counted(counts, US_PHI, {"NAME": 5, "DATE": 7, "PHONE": 2})
    for phrase in US_MEDICAL:
        assert phrase in out, phrase
    assert "Patient Name: [NAME] " in out and "Dr. [NAME]" in out and "Mr. [NAME]'s daughter, [NAME]," in out
    assert "MRN: [ID]" in out and "DOB: [DATE]" in out and "Tel: [PHONE], Fax: [FAX]" in out
    assert "[EMAIL]" in out and "[URL]" in out and "[IP]" in out and "[ADDRESS]" in out and "IL [ZIP]" in out
    assert f"{AGE_CAP}-year-old man" in out
    assert "14:35" in out and "16:02" in out  # times of day are kept
    assert set(counts) <= set(CATEGORIES)


def test_outpatient_note(deid):
    out, counts = deid.deidentify_text(OUTPATIENT_NOTE, patient_key="pt-7781")
    assert_removed(out, NOTE_PHI)
    assert_counted(counts, NOTE_PHI, {"ID": 6, "NAME": 4, "DATE": 3})
    for phrase in NOTE_MEDICAL:
        assert phrase in out, phrase
    assert "Age: 90+" in out
    assert "Dr. [NAME] reviewed the CT" in out  # "CT" is not taken for a name
    assert "Her husband, [NAME], reports" in out


def test_chinese_record(deid):
    out, counts = deid.deidentify_text(CHINESE_RECORD, patient_key="MZ20221029001")
    assert_removed(out, CHINESE_PHI)
    assert_counted(counts, CHINESE_PHI, {"AGE": 2, "NAME": 3})
    for phrase in CHINESE_MEDICAL:
        assert phrase in out, phrase
    assert "患者[NAME]，男，90+岁" in out and "请[NAME]医生会诊" in out


def test_medical_text_without_phi_is_untouched(deid):
    out, counts = deid.deidentify_text(NO_PHI, patient_key="p1")
    assert out == NO_PHI and not counts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("An 89-year-old woman.", "An 89-year-old woman."),
        ("A 90-year-old woman.", "A 90+-year-old woman."),
        ("102 years old", "90+ years old"),
        ("aged 95, lives alone", "aged 90+, lives alone"),
        ("91 y/o male", "90+ y/o male"),
        ("患者，女，93岁。", "患者，女，90+岁。"),
        ("3 years old", "3 years old"),
    ],
)
def test_ages_over_89(deid, text, expected):
    assert deid.deidentify_text(text, "k")[0] == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Dr. Chen reviewed the CT.", "Dr. [NAME] reviewed the CT."),
        ("Dictated by John O'Neil at noon.", "Dictated by [NAME] at noon."),
        ("Referring: Dr. van der Berg", "Referring: Dr. [NAME]"),
        ("SMITH^JOHN^A", "[NAME]"),
        ("Patient Mary Jones presented.", "Patient [NAME] presented."),
        ("Exam name: CT Chest", "Exam name: CT Chest"),
        ("Patient: Male, 5 years", "Patient: Male, 5 years"),
        ("His mother Anna reports fever.", "His mother [NAME] reports fever."),
        ("Jane Doe, M.D.", "[NAME], M.D."),
        ("患儿张小红因发热就诊。", "患儿[NAME]因发热就诊。"),
        ("患儿咳嗽3天。", "患儿咳嗽3天。"),
    ],
)
def test_names(deid, text, expected):
    assert deid.deidentify_text(text, "k")[0] == expected


def test_names_found_once_are_removed_everywhere(deid):
    text = "Patient: Harold Whitaker\nWhitaker reports chest pain. HAROLD was seen in clinic."
    out, counts = deid.deidentify_text(text, "k")
    assert "Whitaker" not in out and "HAROLD" not in out and counts["NAME"] == 3


def test_known_identifiers_are_removed(deid):
    out, counts = deid.deidentify_text("Study for A1B2C3; ref A1B2C3; Kowalski.", "A1B2C3", identifiers=["Kowalski"])
    assert out == "Study for [ID]; ref [ID]; [ID]." and counts["ID"] == 3


# ------------------------------------------------------------------------------------- dates


def shifted_iso(deid: TextDeidentifier, iso: str, key: str) -> date:
    out, _ = deid.deidentify_text(f"on {iso}.", key)
    return date.fromisoformat(re.search(r"\d{4}-\d{2}-\d{2}", out).group())


def test_dates_shift_per_patient(deid):
    a1 = shifted_iso(deid, "2022-10-29", "patient-A")
    a2 = shifted_iso(deid, "2022-11-02", "patient-A")  # another text of the same patient
    b1 = shifted_iso(deid, "2022-10-29", "patient-B")
    assert a2 - a1 == timedelta(days=4)  # intervals kept across texts
    shift_a, shift_b = date(2022, 10, 29) - a1, date(2022, 10, 29) - b1
    assert shift_a != shift_b  # other patients move by other amounts
    for shift in (shift_a, shift_b):
        assert timedelta(days=365) <= shift <= timedelta(days=3650)
    assert deid.date_shift("patient-A") == -shift_a
    assert TextDeidentifier(SALT).date_shift("patient-A") == -shift_a  # same salt, same shift in every run
    assert TextDeidentifier("another salt").date_shift("patient-A") != -shift_a


def test_date_shift_and_pseudonym_match_dicom_deid(deid):
    pytest.importorskip("pydicom")
    from medmllm.scans.deid import Deidentifier

    dicom = Deidentifier(salt=SALT)
    assert deid.date_shift("00482913") == dicom._shift("00482913")
    assert deid.pseudonym("00482913") == dicom._pseudonym("00482913", ["00482913"])


def test_date_formats_are_kept(deid):
    text = (
        "A 2022-10-29; B 2022/10/29; C 10/29/2022; D 10/29/22; E October 29, 2022; F Oct. 29th 2022; G 29 Oct 2022; "
        "H 29-Oct-22; I Saturday, October 29, 2022; J 2022年10月29日; K 10月29日; L October 2022; M 2022-10-29T14:30; "
        "N OCTOBER 29, 2022; O in 2019"
    )
    out, counts = deid.deidentify_text(text, "patient-A")
    shift = deid.date_shift("patient-A")
    new = date(2022, 10, 29) + shift
    month, mon = new.strftime("%B"), new.strftime("%b")
    expected = {
        "A": new.isoformat(),
        "B": new.strftime("%Y/%m/%d"),
        "C": new.strftime("%m/%d/%Y"),
        "D": new.strftime("%m/%d/%y"),
        "E": f"{month} {new.day}, {new.year}",
        "F": f"{mon}. {new.day}{'th' if 11 <= new.day <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(new.day % 10, 'th')} {new.year}",
        "G": f"{new.day} {mon} {new.year}",
        "H": f"{new.day}-{mon}-{new.strftime('%y')}",
        "I": f"{new.strftime('%A')}, {month} {new.day}, {new.year}",
        "J": f"{new.year}年{new.month}月{new.day}日",
        "L": f"{(date(2022, 10, 15) + shift).strftime('%B %Y')}",
        "M": f"{new.isoformat()}T14:30",
        "N": f"{month.upper()} {new.day}, {new.year}",
        "O": f"in {2019 + round(shift.days / 365.2425)}",
    }
    parts = dict(part.split(" ", 1) for part in out.split("; "))
    for label, value in expected.items():
        assert parts[label] == value, label
    assert re.fullmatch(r"\d{1,2}月\d{1,2}日", parts["K"]) and parts["K"] != "10月29日"
    assert counts["DATE"] == 15


def test_date_order_is_preserved(deid):
    text = "Admitted 10/25/2022, CT 10/27/2022, discharged 11/02/2022, follow-up 01/15/2023."
    out, _ = deid.deidentify_text(text, "patient-C")
    dates = [date(int(y), int(m), int(d)) for m, d, y in re.findall(r"(\d{2})/(\d{2})/(\d{4})", out)]
    assert len(dates) == 4 and dates == sorted(dates)
    assert [(b - a).days for a, b in zip(dates, dates[1:])] == [2, 6, 74]


def test_day_first_dates_are_read_day_first(deid):
    out, _ = deid.deidentify_text("29/10/2022 and 03/04/2022", "patient-A")
    new = date(2022, 4, 3) + deid.date_shift("patient-A")  # 03/04 read as 3 April, like 29/10
    assert out.endswith(new.strftime("%d/%m/%Y"))


def test_birth_dates_and_no_shift_mode():
    deid = TextDeidentifier(SALT)
    out, counts = deid.deidentify_text("DOB: 1931-03-14. Date of birth 03/14/1931. 出生日期：1931年3月14日", "k")
    assert out == "DOB: [DATE]. Date of birth [DATE]. 出生日期：[DATE]" and counts["DATE"] == 3
    plain = TextDeidentifier(SALT, shift_dates=False)
    out, counts = plain.deidentify_text("Seen on October 29, 2022 and 2022-11-02.", "k")
    assert out == "Seen on [DATE] and [DATE]." and counts["DATE"] == 2


# ----------------------------------------------------------------------------------- samples


def make_sample(patient_id: str = "00482913") -> Sample:
    return Sample(
        id="rrg-0001",
        task="report_generation",
        patient_id=patient_id,
        visit_id="ENC-55012877",
        images=[ImageRef(path="ct/0001.nii.gz", modality="CT", time="2022-10-29T14:35")],
        turns=[
            Turn(role="user", content=[ImagePart(image=0), TextPart(text=f"Write the report for patient {patient_id} (Dr. Emily Carrington).")]),
            text_turn("assistant", US_REPORT),
        ],
        targets={"impression": "Right lower lobe pneumonia. Discussed with Dr. Carrington on 10/29/2022."},
        labels={"diseases": ["pneumonia"]},
        meta={"referrer": {"phone": "(217) 555-0134"}, "slices": 120},
    )


def test_deidentify_samples(deid):
    sample = make_sample()
    (out,) = list(deid.deidentify_samples([sample]))
    line = out.to_json()
    assert Sample.from_json(line) == out  # still a valid sample
    for values in US_PHI.values():
        for value in values:
            assert value not in line
    assert "ENC-55012877" not in line and "Carrington" not in line and "555-0134" not in line
    assert out.patient_id == deid.pseudonym("00482913") and len(out.patient_id) == 12
    assert out.visit_id == deid.pseudonym("ENC-55012877", "visit") and out.visit_id != out.patient_id
    new_day = date(2022, 10, 29) + deid.date_shift("00482913")
    assert out.images[0].time == f"{new_day.isoformat()}T14:35"
    assert out.targets["impression"].startswith("Right lower lobe pneumonia. Discussed with Dr. [NAME] on ")
    assert out.labels == sample.labels and out.id == sample.id and out.meta["slices"] == 120
    assert out.meta["referrer"]["phone"] == PLACEHOLDERS["PHONE"]
    assert sample.patient_id == "00482913"  # the input is left alone
    # The same salt gives the same output in another run.
    assert next(TextDeidentifier(SALT).deidentify_samples([sample])).to_json() == line


def test_summary_counts_without_values(deid, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    list(deid.deidentify_samples([make_sample(), make_sample("00999111")]))
    deid.deidentify_text(OUTPATIENT_NOTE, "pt-7781")
    summary = deid.summary
    assert summary.samples == 2 and summary.texts == 9  # per sample: 2 turn texts, 1 target, 1 meta string
    assert summary.replacements["NAME"] > 0 and summary.replacements["DATE"] > 0 and summary.total > 40
    assert set(summary.to_dict()) == {"samples", "texts", "replacements"}
    text = str(summary)
    assert text.startswith("2 samples, 9 texts, ") and "NAME" in text
    assert not re.search(r"Whitaker|Carrington|00482913|555|2022|Maria", text + repr(summary.to_dict()))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "" and caplog.records == []  # nothing printed or logged


def test_patient_key_falls_back_to_visit_then_sample_id(deid):
    sample = make_sample().model_copy(update={"patient_id": None})
    out = deid.deidentify_sample(sample)
    assert out.patient_id is None
    assert out.images[0].time == f"{(date(2022, 10, 29) + deid.date_shift('ENC-55012877')).isoformat()}T14:35"
