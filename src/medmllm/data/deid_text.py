"""De-identify free text (reports, outpatient and inpatient records) and `Sample` JSONL, offline.

    deid = TextDeidentifier(salt=secret)                       # reuse one object for a whole run
    text, counts = deid.deidentify_text(report, patient_key="12345678")
    # "Seen by Dr. [NAME] on 2019-03-02 ..."   counts: Counter({"DATE": 1, "NAME": 1})
    for sample in deid.deidentify_samples(read_samples("raw.jsonl")): ...
    print(deid.summary)     # "2 samples, 7 texts, 15 replacements: 6 DATE, 4 NAME, 3 ID, 2 PHONE"

Rules, not a statistical model: a Presidio analyzer with a spaCy NER model would also find names
in any context, but spaCy's models are not on PyPI (they download from GitHub), and this must
run on a hospital machine without internet. The rules below find what has a shape (numbers,
dates, addresses) or a context (names after a title, a label or a role). Names written without
any such context ("Smith reports cough") are the main gap; review a sample of the output, and
pass the names you know (``identifiers=``) to remove them everywhere.

HIPAA Safe Harbor (45 CFR 164.514(b)(2)): the 18 identifiers and what is done here
---------------------------------------------------------------------------------------
===  ===========================================  ======================================================
 1   Names (patient, relatives, household, staff)  ``[NAME]``: after titles (Dr., Mr., Mrs., Ms., Prof.),
                                                  labels (``Patient:``, ``Name:``, ``Radiologist:``,
                                                  ``Signed by:``, ``Mother:``, ``姓名：``, ``患者：``,
                                                  ``报告医师：`` ...), verbs ("dictated by", "discussed
                                                  with"), relatives ("his mother Mary Smith"), before
                                                  credentials ("John Smith, MD"), DICOM ``SMITH^JOHN``,
                                                  Chinese surname + given name after 患者/患儿/病人 or
                                                  before 医生/医师/护士/主任; then every other occurrence
                                                  of a found name or of its parts, anywhere in the text.
 2   Geographic subdivisions smaller than a state  ``[ADDRESS]``: street addresses (number + street +
                                                  suffix, units, P.O. boxes), the city in "City, ST
                                                  12345", anything after an ``Address:`` / ``地址：``
                                                  label, Chinese addresses (…市…区…路12号); ``[ZIP]``:
                                                  ZIP codes after a state or a ZIP label, 邮编. Cities,
                                                  counties and places named alone are NOT found.
 3   Dates (except year) related to the person     Shifted by a per-patient number of days (see below),
                                                  or ``[DATE]`` with ``shift_dates=False``; birth
                                                  dates always ``[DATE]``. Ages over 89: "90+".
 4   Telephone numbers                             ``[PHONE]`` (labelled, North American, international
                                                  "+...", Chinese mobile and landline formats)
 5   Fax numbers                                   ``[FAX]`` (a phone number labelled or preceded by fax)
 6   Email addresses                               ``[EMAIL]``
 7   Social Security numbers                       ``[ID]`` (ddd-dd-dddd, or labelled SSN)
 8   Medical record numbers                        ``[ID]`` (labelled: MRN, medical record no., patient
                                                  ID, 住院号, 门诊号, 病历号 ...; the sample's own
                                                  patient and visit ids wherever they occur)
 9   Health plan beneficiary numbers               ``[ID]`` (labelled: member/subscriber/policy/insurance/
                                                  Medicare/Medicaid/health plan, 医保卡号)
10   Account numbers                               ``[ID]`` (labelled: account, acct, encounter, visit,
                                                  accession, order, FIN, CSN)
11   Certificate/license numbers                   ``[ID]`` (labelled: license, certificate, DEA, NPI)
12   Vehicle identifiers, license plates           ``[ID]`` (labelled: VIN, license plate)
13   Device identifiers and serial numbers         ``[ID]`` (labelled: serial no., S/N, device ID, UDI)
14   Web URLs                                      ``[URL]`` (scheme://..., www...., bare domains with a
                                                  common top-level domain)
15   IP addresses                                  ``[IP]`` (IPv4, IPv6)
16   Biometric identifiers                         Not text: out of scope here.
17   Full-face photographs, comparable images      Not text: images are handled by `medmllm.scans.deid`
                                                  (which does not clean burned-in text either).
18   Any other unique number, characteristic, code ``[ID]``: Chinese ID card numbers (18/15 digits),
                                                  any labelled ID/No./# value holding a digit, digit
                                                  runs of 7 or more, letter+digit codes (A1234567).
===  ===========================================  ======================================================

Dates
-----
Every patient's dates move back by the same whole number of days, between 1 and 10 years, a keyed
hash (HMAC-SHA-256) of the salt and the patient key: the derivation of
`medmllm.scans.deid.Deidentifier`, so a patient's report dates and DICOM dates move together given
the same salt and key (the DICOM PatientID). Intervals and order within a patient are kept; other
patients move by other amounts. Formats are kept: ``2022-10-29``, ``2022/10/29``, ``29/10/2022``,
``10/29/22``, ``29.10.2022``, ``October 29, 2022``, ``Oct. 29th 2022``, ``29 Oct 2022``,
``29-Oct-22``, ``Saturday, October 29, 2022`` (the weekday recomputed), ``2022年10月29日``,
``10月29日``; month-year (``October 2022``, ``10/2022``, ``2022-10``, ``2022年10月``) moves by the
same days from the 15th; day-month without a year (``October 29``) moves within the year of the
text's first full date; a year alone after "in/since/from/until/during/by/year" or before 年 moves
by the shift in whole years (lone years are allowed by Safe Harbor, but left as they are they would
contradict the shifted dates). Numeric dates are read month-first (``03/04/2022`` = March 4) unless
the text has a day-first date that cannot be month-first (``29/10/2022``), or the separator is
``.``; ``dayfirst=`` forces it. Times of day are kept. Birth dates (after DOB, "date of birth",
"born", 出生日期) are replaced by ``[DATE]``: with shifted visit dates they would give the true age.

Samples
-------
`deidentify_samples`: every text part of every turn, every target, the string values in ``meta``
(recursively), each image's ``time`` (shifted), ``patient_id`` (a keyed pseudonym: the same 12
characters `medmllm.scans.deid` writes as PatientID for that id and salt) and ``visit_id`` (a keyed
pseudonym). The patient key is ``patient_id``, else ``visit_id``, else the sample ``id``. Left as
they are: ``id``, ``task``, ``labels``, ``source``, ``split`` and image paths (rename files whose
names identify someone).

Nothing here logs or prints a value it replaces; the summary and the counters hold categories and
counts only.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from medmllm.data.schema import Sample, TextPart

# Replacement of each category (AGE and shifted DATEs are rewritten in place instead).
PLACEHOLDERS = {
    "NAME": "[NAME]",
    "ID": "[ID]",
    "DATE": "[DATE]",
    "PHONE": "[PHONE]",
    "FAX": "[FAX]",
    "EMAIL": "[EMAIL]",
    "URL": "[URL]",
    "IP": "[IP]",
    "ADDRESS": "[ADDRESS]",
    "ZIP": "[ZIP]",
}
CATEGORIES = ("NAME", "ID", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "URL", "IP", "ADDRESS", "ZIP")
AGE_CAP = "90+"

# Same as medmllm.scans.deid: the backward date shift lies in this range of days.
_SHIFT_DAYS = (365, 3650)

# ------------------------------------------------------------------------------------- patterns


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_HAN = "\u3400-\u4dbf\u4e00-\u9fff"

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_URL = re.compile(
    r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"'()\[\]{}]+"
    r"|\b(?:[A-Za-z0-9-]+\.)+(?:com|org|net|edu|gov|mil|int|info|biz|io|health|cn|uk|us|de|fr|jp|ca|au|in)\b(?:/[^\s<>\"'()\[\]{}]*)?",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]*\d)")
_IPV6 = re.compile(
    r"(?<![:\w])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?"
    r"|::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})(?![:\w])"
)

# Labelled identifiers: the label, then the value (must hold a digit). Case-insensitive labels...
_ID_SUFFIX = r"\s*(?:id|identifier|number|num\.?|no\.?|#)"
_ID_LABEL = re.compile(
    # Labels that name an identifier by themselves ("MRN 123", "accession: A123") ...
    r"\b(?:(?:mrn|mr\s?#|mr\s?no\.?|med(?:ical)?\.?\s+rec(?:ord)?s?\.?|accession|acc\.|account|acct\.?|medicare|medicaid|"
    r"health\s+plan|beneficiary|insurance|passport|driver'?s\s+licen[cs]e|licen[cs]e\s+plate|licen[cs]e|certificate|"
    r"vehicle\s+identification|social\s+security|dea|npi|s/n)"
    r"(?:" + _ID_SUFFIX + r")?"
    # ... and words that do only with a number word ("patient ID", "exam no.", "serial #").
    r"|(?:patient|pt\.?|hospital|unit|case|study|exam|order|specimen|encounter|visit|member|subscriber|policy|device|serial|"
    r"plate|vehicle|record)" + _ID_SUFFIX + r")"
    r"(?:\s*[:#=]\s*|\s+(?:is\s+)?)",
    re.IGNORECASE,
)
# ... and labels that are ordinary words in lower case, so upper case only.
_ID_LABEL_UPPER = re.compile(r"\b(?:ID|I\.D\.|FIN|CSN|NPI|VIN|UDI|SSN|MRN)(?:\s*(?:number|No\.?|#))?(?:\s*[:#=]\s*|\s+)")
_ID_VALUE = re.compile(r"(?=[A-Za-z0-9./-]*\d)[A-Za-z0-9][A-Za-z0-9./-]{2,}(?<![./-])")
_ID_LABEL_ZH = re.compile(
    r"(?:住院号|门诊号|病历号|病案号|患者ID|ID号|登记号|检查号|影像号|放射号|申请单号|医保号|医保卡号|社保卡号|就诊卡号|卡号|"
    r"身份证号码|身份证号|身份证|证件号码|证件号|护照号|车牌号)\s*[:：]?\s*"
)
_ID_VALUE_ZH = re.compile(r"(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{2,}")
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_CN_ID_CARD = re.compile(
    r"(?<![0-9A-Za-z])(?:[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
    r"|[1-9]\d{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3})(?![0-9A-Za-z])"
)
_LONG_NUMBER = re.compile(r"(?<![\w.,])\d{7,}(?![\w]|[.,]\d)")
_CODE = re.compile(r"\b[A-Z]{1,3}-?\d{6,}\b")

# Phones: labelled (any digits after the label), then shapes.
_PHONE_LABEL = re.compile(
    r"(?:\b(?:(?P<fax>fax|facsimile)|tel(?:ephone)?|phone|ph|cell(?:phone)?|mobile|mob|pager|beeper|contact\s+(?:number|no\.?))"
    r"\.?(?:\s*(?:number|no\.?|#))?\s*[:#]?\s*|(?:(?P<fax_zh>传真)|电话|联系电话|手机号码|手机号|手机|联系方式)\s*[:：]?\s*)"
    r"(?P<value>\+?\(?\d[\d \t().-]{5,}\d)(?P<ext>[ \t]*(?:x|ext\.?)[ \t]*\d{1,5})?",
    re.IGNORECASE,
)
_PHONE = re.compile(
    r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?:\s*(?:x|ext\.?)\s*\d{1,5})?(?![\w-])"  # North America
    r"|(?<![\w+])\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}(?!\w)"  # international
    r"|(?<!\d)1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)"  # Chinese mobile
    r"|(?<![\d-])0\d{2,3}-\d{7,8}(?![\d-])"  # Chinese landline
)

# Ages (only >= 90 are replaced).
_AGE = re.compile(
    r"\b(?P<age>\d{2,3})(?:\s*|-)(?:years?|yrs?|y)(?:\s*|-)(?:old|of\s+age)\b"
    r"|\b(?P<age2>\d{2,3})\s*(?:y/o|y\.o\.|yo|yrs?\.?\s+old)(?!\w)"
    r"|\b(?:aged?|age\s*[:=])\s*(?:is\s+)?(?P<age3>\d{2,3})\b"
    r"|(?P<age4>\d{2,3})\s*(?:周岁|岁)"
    r"|年龄\s*[:：]?\s*(?P<age5>\d{2,3})",
    re.IGNORECASE,
)

# Addresses.
_STATES_ABBR = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|"
    "TN|TX|UT|VT|VA|WA|WV|WI|WY|DC|PR"
)
_STATES_NAME = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho|Illinois|Indiana|Iowa|"
    "Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|"
    "New Hampshire|New Jersey|New Mexico|New York|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|"
    "South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming"
)
_STATE = rf"(?:{_STATES_ABBR}|{_STATES_NAME})"
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Ter|Circle|Cir|"
    r"Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Alley|Crescent|Close|Row|Plaza|Loop|Pike)"
)
_STREET = re.compile(
    r"\b\d{1,6}[A-Za-z]?(?:-\d{1,5})?\s+(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?\s+)?"
    r"(?:(?:\d{1,3}(?:st|nd|rd|th)|[A-Z][A-Za-z'-]+)\s+){1,4}" + _STREET_SUFFIX + r"\b\.?"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
    r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Rm|Room|Fl|Floor|#)\.?\s*#?\s*[A-Za-z0-9-]+)?"
    rf"(?:,\s*(?P<city>[A-Z][a-z]+(?:\s[A-Z][a-z]+){{0,2}})(?=,\s*{_STATE}\b))?"  # the city before ", ST"
    r"|\bP\.?\s?O\.?\s*Box\s+\d+",
)
_CITY_STATE_ZIP = re.compile(rf"\b(?P<city>[A-Z][a-z]+(?:[ \t][A-Z][a-z]+){{0,2}}),[ \t]*{_STATE}\.?,?[ \t]+(?P<zip>\d{{5}}(?:-\d{{4}})?)(?!\d)")
_STATE_ZIP = re.compile(rf",[ \t]*{_STATE}\.?,?[ \t]+(?P<zip>\d{{5}}(?:-\d{{4}})?)(?![\d-])")
_ZIP_LABEL = re.compile(r"(?:\b(?:zip|zip\s*code|postal\s*code|postcode)\s*[:#]?\s*|(?:邮编|邮政编码)\s*[:：]?\s*)(?P<zip>\d{5}(?:-\d{4})?|\d{6})(?!\d)", re.IGNORECASE)
_ADDRESS_LABEL = re.compile(
    r"(?:\b(?:home\s+|mailing\s+|street\s+|residential\s+|permanent\s+|current\s+)?address\s*:\s*"
    r"|(?:家庭住址|现住址|户籍地址|家庭地址|联系地址|通讯地址|住址|地址)\s*[:：]\s*)"
    r"(?P<value>(?:(?![ \t]{2}|\t)[^\n;；。])+)",  # to the end of the line or of the field (two spaces, a tab)
    re.IGNORECASE,
)
_ADDRESS_TAIL = re.compile(rf"(?:,[ \t]*{_STATE}\.?)?,?[ \t]+\d{{5}}(?:-\d{{4}})?[ \t.]*\Z")
_ADDRESS_ZH = re.compile(
    rf"(?:[{_HAN}]{{2,6}}(?:省|自治区))?(?:[{_HAN}]{{2,4}}市)?(?:[{_HAN}]{{1,5}}(?:区|县))?(?:[{_HAN}]{{1,6}}(?:镇|乡|街道))?"
    rf"[{_HAN}\d]{{1,10}}(?:路|街|巷|弄|大道|胡同)\d+(?:号|弄)(?:\d+(?:号|栋|幢|楼|单元|室))*"
)

# Names.
_NAME_TOKEN = re.compile(r"(?:Mc|Mac|O['’]|D['’])?[A-Z][a-z]+(?:[-'’][A-Z][a-z]+)*|[A-Z]\.|[A-Z]{2,}(?:[-'’][A-Z]{2,})*")
_LEADING_PARTICLE = re.compile(r"((?:van|von|de|da|del|della|der|den|di|du|la|le)(?:[ \t]+(?:der|den|de|la|le))?)[ \t]+(?=[A-Z][a-z])")
_BARE_INITIAL = re.compile(r"[A-Z](?![\w.'’-])")
_NAME_GAP = re.compile(r"[ \t]*,[ \t]*|[ \t]+(?:(?:van|von|de|da|del|della|der|den|di|du|la|le|bin|ibn)[ \t]+)?")
_TITLE = re.compile(r"\b(?:Dr|Drs|Doctor|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Sister|Nurse)\b\.?[ \t]+")
_NAME_LABEL = re.compile(
    r"\b(?P<label>(?:patient|pt|patient's|full|first|last|given|family|maiden|middle|sur)?\s*name"
    r"|patient|pt|(?:referring|attending|ordering|reading|reporting|consulting|primary\s+care|treating|requesting|interpreting)"
    r"(?:\s+(?:physician|doctor|provider|radiologist|clinician|md))?"
    r"|physician|doctor|provider|radiologist|attending|resident|fellow|technologist|tech|nurse|surgeon|clinician|pcp|author|"
    r"(?:electronically\s+)?signed(?:\s+by)?|dictated\s+by|transcribed\s+by|reported\s+by|read\s+by|reviewed\s+by|verified\s+by|"
    r"approved\s+by|interpreted\s+by|authenticated\s+by|cc|contact|emergency\s+contact|next\s+of\s+kin|nok|"
    r"mother|father|parent|guardian|spouse|wife|husband|son|daughter|sibling|sister|brother|informant|caregiver)"
    r"\s*[:：]\s*",
    re.IGNORECASE,
)
# "Exam name:", "Drug name:" ... are not people.
_NOT_PERSON_LABEL = re.compile(
    r"(?:exam|study|procedure|protocol|series|test|drug|medication|device|file|product|brand|generic|institution|hospital|"
    r"facility|department|company|sequence|report|document|form)[ \t]*\Z",
    re.IGNORECASE,
)
_NAME_VERB = re.compile(
    r"\b(?:signed|dictated|transcribed|reported|read|reviewed|verified|approved|interpreted|authenticated|seen|examined|evaluated|"
    r"referred|discussed|communicated|called|paged|notified|informed|contacted|spoke|spoken|accompanied|consulted)"
    r"\s+(?:by|with|to)\s+(?:Dr\.?\s+)?",
    re.IGNORECASE,
)
_RELATIVE = re.compile(
    r"\b(?:[Hh]is|[Hh]er|[Tt]heir|(?:[Tt]he\s+)?[Pp]atient['’]s|[A-Z][a-z]+['’]s)\s+(?:mother|father|wife|husband|son|daughter|sister|brother|spouse|partner|"
    r"guardian|parent|grandmother|grandfather|aunt|uncle|friend|caregiver|neighbou?r)\s*,?\s+"
)
_PATIENT_WORD = re.compile(r"\b[Pp]atient\s*,?[ \t]+")
_CREDENTIAL = re.compile(
    r"((?:(?:Mc|Mac|O['’])?[A-Z][a-z]+(?:-[A-Z][a-z]+)*|[A-Z]\.|[A-Z]{2,})(?:[ \t]+(?:(?:Mc|Mac|O['’])?[A-Z][a-z]+(?:-[A-Z][a-z]+)*|[A-Z]\.|[A-Z]{2,})){1,3})"
    r"(?:,[ \t]*(?:D\.O\.|DO)|,?[ \t]*(?:M\.D\.|MD|MBBS|MBChB|Ph\.?D\.?|R\.N\.|RN|NP|PA-C|FRCR|FRCPC|FACR|DNP|CRNA|ARRT))(?![\w])"
)
_DICOM_NAME = re.compile(r"\b[A-Z][A-Za-z'-]+\^[A-Z][A-Za-z'-]*(?:\^[A-Za-z'.-]*){0,3}")
# Words never part of a name here (compared in lower case): headings, titles, months, days,
# medical abbreviations and words that follow a label in reports ("Patient: Male").
_NOT_NAMES = _wordset(
    """
    this that these those he she it they his her their patient pt patients mr mrs ms miss dr drs doctor prof professor
    md m.d do d.o phd rn np pa pa-c mbbs frcr facr dnp crna arrt jr sr ii iii iv
    january february march april may june july august september october november december jan feb mar apr jun jul aug sep sept
    oct nov dec monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat sun
    ct cta mri mr mra pet spect xr cxr us usg ap lat pa kub ekg ecg eeg emg icu nicu picu ed er or iv po im sc bid tid qid prn npo
    hiv copd chf cad dvt pe uti uri urti tb rsv covid sars ards ild gi gu ent ob gyn ob/gyn
    findings finding impression impressions history technique comparison comparisons indication indications clinical exam
    examination study report reports result results procedure conclusion conclusions diagnosis diagnoses assessment plan
    recommendation recommendations addendum summary note notes comment comments information info details data unknown none
    chest abdomen pelvis head neck brain spine lung lungs heart liver kidney kidneys right left bilateral both no yes normal
    abnormal negative positive male female man woman boy girl child infant adult unknown not applicable na n/a
    hospital clinic center centre department radiology medical medicine health university institute service unit ward room
    signed dictated electronically reviewed verified approved attending resident fellow physician radiologist nurse
    technologist tech surgeon date time phone fax email mrn id dob age sex gender name address practitioner
    pediatric pediatrics paediatric paediatrics surgery cardiology neurology oncology pulmonology emergency team service
    family staff parents primary care
    """
)
# Chinese names: common surnames (compound ones first); the ambiguous ones ("左" left, "明" clear,
# "常" often ...) count only after an explicit label.
_CN_COMPOUND_SURNAMES = "欧阳|司马|上官|诸葛|东方|皇甫|尉迟|公孙|令狐|长孙|宇文|司徒|夏侯|轩辕|端木|慕容|独孤|南宫|西门|呼延"
_CN_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗郑梁谢宋唐许韩冯邓曹彭肖田董袁潘蒋蔡杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石"
    "廖贾夏韦付傅邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵钱严覃武戴莫孔汤温康施牛樊葛邢乔伍庞颜倪庄聂章鲁岳翟殷詹"
    "欧耿兰焦俞柳甘祝宁舒阮柯纪梅童凌毕季裴霍涂苗谷盛曲翁冉骆蓝游辛靳柴蒙鲍喻祁蒲滕屈饶牟艾尤穆卓缪褚娄窦戚岑党"
    "费卜冷晏席卫米柏宗瞿桂佟臧闵苟邬卞姬仇栾隋刁巫寇桑郎甄丛仲虞敖巩佘邝"
)
_CN_NAME_AFTER = rf"(?:{_CN_COMPOUND_SURNAMES}|[{_CN_SURNAMES}])[{_HAN}]{{1,2}}"
_CN_LABEL = re.compile(
    r"(?:患者姓名|病人姓名|患儿姓名|姓名|患者|患儿|病人|家属|联系人|监护人|父亲|母亲|报告医师|报告医生|审核医师|审核医生|诊断医师|"
    r"主治医师|主任医师|住院医师|经治医师|检查医师|申请医生|申请医师|送检医生|医师|医生|技师|记录者|记录人|签名)\s*[:：]\s*"
)
_CN_LABEL_VALUE = re.compile(rf"[{_HAN}·]{{2,4}}(?![{_HAN}])")
_CN_NOT_NAMES = _wordset("男性 女性 男孩 女孩 男童 女童 患儿 本人 不详 未知 无 暂无 父亲 母亲 家属 自诉 主诉")
_CN_CONTEXT = re.compile(r"(?:患者|患儿|病人|家属)")
_CN_AFTER_NAME = re.compile(rf"[^{_HAN}]|[男女因于主自今昨近诉，、]|$")
_CN_TITLE_AFTER = re.compile(rf"((?:{_CN_COMPOUND_SURNAMES}|[{_CN_SURNAMES}])[{_HAN}]{{0,2}}?)(?:医生|医师|大夫|护士|主任|教授|老师)")

# Dates.
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH = r"(?P<mon>(?=[A-Z])(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?))(?![A-Za-z])(?P<mdot>\.)?"
_WEEKDAY = r"(?:(?P<wd>(?=[A-Z])(?i:mon(?:day)?|tue(?:s(?:day)?)?|wed(?:nesday)?|thu(?:r(?:s(?:day)?)?)?|fri(?:day)?|sat(?:urday)?|sun(?:day)?))(?![A-Za-z])\.?,?\s+)?"
_ORD = r"(?P<ord>st|nd|rd|th)?"
_DATE_PATTERNS = [
    ("mdy", re.compile(rf"\b{_WEEKDAY}{_MONTH}\s+(?P<day>\d{{1,2}}){_ORD}(?:,\s*|\s+)(?P<year>\d{{4}}|['’]\d{{2}})(?!\d)")),
    ("dmy", re.compile(rf"\b{_WEEKDAY}(?P<day>\d{{1,2}}){_ORD}(?:\s+(?:of\s+)?|-){_MONTH}(?:,?\s+(?P<year>\d{{4}})|-(?P<year2>\d{{4}}|\d{{2}}))(?!\d)")),
    ("ymd", re.compile(r"(?<![\d.\-/])(?P<year>(?:19|20)\d{2})(?P<sep>[-/.])(?P<month>0?[1-9]|1[0-2])(?P=sep)(?P<day>0?[1-9]|[12]\d|3[01])(?!\d|[-/.]\d)")),
    ("num", re.compile(r"(?<![\d.\-/])(?P<a>\d{1,2})(?P<sep>[-/.])(?P<b>\d{1,2})(?P=sep)(?P<year>\d{4}|\d{2})(?!\d|[-/.]\d)")),
    ("zh", re.compile(r"(?P<year>(?:19|20)\d{2})\s*年\s*(?P<month>\d{1,2})\s*月(?:\s*(?P<day>\d{1,2})\s*[日号])?")),
    ("zh_md", re.compile(r"(?<![\d年])(?P<month>\d{1,2})\s*月\s*(?P<day>\d{1,2})\s*[日号]")),
    ("my", re.compile(rf"\b{_MONTH},?\s+(?P<year>(?:19|20)\d{{2}})(?!\d)")),
    ("md", re.compile(rf"\b{_WEEKDAY}{_MONTH}\s+(?P<day>\d{{1,2}}){_ORD}(?![\d:]|\s*(?:mm|cm|mg|ml|kg|%))")),
    ("dm", re.compile(rf"\b(?P<day>\d{{1,2}}){_ORD}\s+(?:of\s+)?{_MONTH}")),
    ("ym", re.compile(r"(?<![\d.\-/])(?P<year>(?:19|20)\d{2})-(?P<month>0[1-9]|1[0-2])(?![\d-])")),
    ("num_my", re.compile(r"(?<![\d/.-])(?P<month>0?[1-9]|1[0-2])/(?P<year>(?:19|20)\d{2})(?![\d/])")),
    ("zh_y", re.compile(r"(?P<year>(?:19|20)\d{2})\s*年(?!\s*\d{1,2}\s*月)")),
    ("y", re.compile(r"\b(?:in|since|from|until|till|during|circa|by|year)\s+(?P<year>(?:19|20)\d{2})\b(?![-/.]\d)", re.IGNORECASE)),
]
_BIRTH = re.compile(r"(?:\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|born(?:\s+(?:on|in))?|birthday)|出生日期|出生|生日)\s*[:：]?\s*\Z", re.IGNORECASE)
_FAX_BEFORE = re.compile(r"(?:fax|传真)[^\n]{0,12}\Z", re.IGNORECASE)


class _Hit(NamedTuple):
    start: int
    end: int
    category: str  # a key of CATEGORIES
    replacement: str
    priority: int  # lower wins an overlap


@dataclass
class DeidTextSummary:
    """What a `TextDeidentifier` did: counts only, never a value."""

    samples: int = 0
    texts: int = 0
    replacements: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.replacements.values())

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "texts": self.texts, "replacements": dict(sorted(self.replacements.items()))}

    def __str__(self) -> str:
        by = ", ".join(f"{n} {c}" for c, n in self.replacements.most_common())
        return f"{self.samples} samples, {self.texts} texts, {self.total} replacements" + (f": {by}" if by else "")


class TextDeidentifier:
    """Rules-based de-identification of free text; see the module docstring for what is found.

    Args:
        salt: secret that keys the date shifts and pseudonyms. The same salt gives the same output
            in every run, and the same shifts and patient pseudonyms as `medmllm.scans.deid` with
            that salt. Keep it secret (with it, a guessed original can be confirmed). None: a
            random one, consistent within this object only.
        shift_dates: shift dates per patient (default) or replace them with ``[DATE]``.
        dayfirst: read ambiguous numeric dates (03/04/2022) day-first; None: infer per text.
    """

    def __init__(self, salt: str | None, shift_dates: bool = True, *, dayfirst: bool | None = None):
        self._key = salt.encode("utf-8") if salt is not None else secrets.token_bytes(32)
        self.shift_dates = shift_dates
        self.dayfirst = dayfirst
        self.summary = DeidTextSummary()

    # ----------------------------------------------------------------------- keyed replacements

    def _hash(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{value}".encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def date_shift(self, patient_key: str) -> timedelta:
        """The (negative) whole-day shift of ``patient_key``'s dates: 1 to 10 years back."""
        low, high = _SHIFT_DAYS
        n = int.from_bytes(self._hash("date", patient_key)[:8], "big")
        return timedelta(days=-(low + n % (high - low + 1)))

    def pseudonym(self, patient_key: str, purpose: str = "patient") -> str:
        """12 characters (A-Z, 2-7) keyed on the salt; never containing the key itself."""
        avoid = patient_key.upper()
        for attempt in range(1000):
            candidate = base64.b32encode(self._hash(purpose, f"{patient_key}\0{attempt}")).decode("ascii")[:12]
            if not avoid or avoid not in candidate:
                return candidate
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------------------------- text

    def deidentify_text(self, text: str, patient_key: str, *, identifiers: Iterable[str] = ()) -> tuple[str, Counter]:
        """``text`` de-identified, and the number of replacements per category.

        Args:
            text: any free text.
            patient_key: whose text it is (keys the date shift); also removed where it occurs.
            identifiers: other known identifying strings (names, ids) to remove wherever they occur.
        """
        hits = self._find(text, patient_key, list(identifiers))
        counts: Counter = Counter()
        pieces, last = [], 0
        for hit in hits:
            pieces.append(text[last : hit.start])
            pieces.append(hit.replacement)
            last = hit.end
            counts[hit.category] += 1
        pieces.append(text[last:])
        self.summary.texts += 1
        self.summary.replacements.update(counts)
        return "".join(pieces), counts

    def _find(self, text: str, patient_key: str, identifiers: list[str]) -> list[_Hit]:
        """Every replacement in ``text``, sorted and disjoint."""
        shift = self.date_shift(patient_key) if self.shift_dates else None
        hits: list[_Hit] = []
        hits += self._known(text, [patient_key, *identifiers])
        hits += _simple_hits(text)
        hits += _phone_hits(text)
        hits += self._date_hits(text, shift)
        hits += _age_hits(text)
        hits += _address_hits(text)
        hits += _name_hits(text)
        accepted = _resolve(hits)
        # A name found once is removed everywhere, with its parts ("Mr. Smith" ... "Smith").
        names = {text[h.start : h.end] for h in accepted if h.category == "NAME"}
        if names:
            accepted = _resolve(accepted + _propagated_names(text, names))
        # So is a city found in an address ("Springfield Clinic" after "..., Springfield, IL").
        cities = {m.group("city") for pattern in (_STREET, _CITY_STATE_ZIP) for m in pattern.finditer(text) if m.group("city")}
        cities = {c for c in cities if c.lower() not in _NOT_NAMES}
        if cities:
            pattern = re.compile("|".join(rf"(?<!\w){re.escape(c)}(?!\w)" for c in sorted(cities, key=len, reverse=True)))
            extra = [_Hit(*m.span(), "ADDRESS", PLACEHOLDERS["ADDRESS"], 96) for m in pattern.finditer(text)]
            accepted = _resolve(accepted + extra)
        return accepted

    def _known(self, text: str, values: list[str]) -> list[_Hit]:
        hits = []
        for value in values:
            value = (value or "").strip()
            if len(value) < 3:
                continue
            for m in re.finditer(rf"(?<![\w]){re.escape(value)}(?![\w])", text, re.IGNORECASE):
                hits.append(_Hit(m.start(), m.end(), "ID", PLACEHOLDERS["ID"], 0))
        return hits

    # ------------------------------------------------------------------------------------ dates

    def _date_hits(self, text: str, shift: timedelta | None) -> list[_Hit]:
        dayfirst = self.dayfirst if self.dayfirst is not None else _infer_dayfirst(text)
        found = []
        for kind, pattern in _DATE_PATTERNS:
            for m in pattern.finditer(text):
                parsed = _parse_date(kind, m, dayfirst)
                if parsed is not None:
                    found.append((m, kind, parsed))
        reference = next((d.year for _, kind, d in sorted(found, key=lambda f: f[0].start()) if kind in ("mdy", "dmy", "ymd", "num", "zh") and isinstance(d, date)), 2001)
        hits = []
        for m, kind, parsed in found:
            start, end = m.span()
            if shift is None or _BIRTH.search(text, max(0, start - 25), start):
                replacement = PLACEHOLDERS["DATE"]
            else:
                replacement = _shifted(kind, m, parsed, shift, reference, dayfirst)
            # The most complete formats come first in _DATE_PATTERNS: they win overlaps.
            hits.append(_Hit(start, end, "DATE", replacement, 30 + _DATE_KIND_RANK[kind]))
        return hits

    # ---------------------------------------------------------------------------------- samples

    def deidentify_sample(self, sample: Sample) -> Sample:
        """A de-identified copy of ``sample`` (see the module docstring for the fields)."""
        key = sample.patient_id or sample.visit_id or sample.id
        known = [v for v in (sample.patient_id, sample.visit_id) if v]
        out = sample.model_copy(deep=True)

        def clean(text: str) -> str:
            return self.deidentify_text(text, key, identifiers=known)[0]

        for turn in out.turns:
            for part in turn.content:
                if isinstance(part, TextPart):
                    part.text = clean(part.text)
        out.targets = {name: clean(value) for name, value in out.targets.items()}
        out.meta = _clean_values(out.meta, clean)
        shift = self.date_shift(key)
        for image in out.images:
            if image.time:
                image.time = _shift_iso(image.time, shift) if self.shift_dates else None
                self.summary.replacements["DATE"] += 1
        if out.patient_id:
            out.patient_id = self.pseudonym(out.patient_id)
            self.summary.replacements["ID"] += 1
        if out.visit_id:
            out.visit_id = self.pseudonym(out.visit_id, "visit")
            self.summary.replacements["ID"] += 1
        self.summary.samples += 1
        return out

    def deidentify_samples(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        """`deidentify_sample` of each sample, lazily; `summary` counts as they go."""
        for sample in samples:
            yield self.deidentify_sample(sample)


# ------------------------------------------------------------------------------------ resolution


def _resolve(hits: list[_Hit]) -> list[_Hit]:
    """Disjoint hits: by priority, then longer first; returned in text order."""
    starts: list[int] = []
    ends: list[int] = []
    accepted: list[_Hit] = []
    for hit in sorted(hits, key=lambda h: (h.priority, h.start - h.end, h.start)):
        if hit.end <= hit.start:
            continue
        k = bisect.bisect_right(starts, hit.start)
        if (k > 0 and ends[k - 1] > hit.start) or (k < len(starts) and starts[k] < hit.end):
            continue
        starts.insert(k, hit.start)
        ends.insert(k, hit.end)
        accepted.insert(k, hit)
    return accepted


def _clean_values(value: Any, clean) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {k: _clean_values(v, clean) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_values(v, clean) for v in value]
    return value


# ----------------------------------------------------------------------------------- the rules


def _simple_hits(text: str) -> list[_Hit]:
    """Emails, URLs, IPs and identifiers: their shapes or labels are unambiguous."""
    hits = []
    for m in _EMAIL.finditer(text):
        hits.append(_Hit(*m.span(), "EMAIL", PLACEHOLDERS["EMAIL"], 1))
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in ".,;:!?":  # sentence punctuation is not part of it
            end -= 1
        hits.append(_Hit(m.start(), end, "URL", PLACEHOLDERS["URL"], 2))
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            hits.append(_Hit(*m.span(), "IP", PLACEHOLDERS["IP"], 3))
    for label in (_ID_LABEL, _ID_LABEL_UPPER):
        for m in label.finditer(text):
            value = _ID_VALUE.match(text, m.end())
            if value:
                hits.append(_Hit(*value.span(), "ID", PLACEHOLDERS["ID"], 10))
    for m in _ID_LABEL_ZH.finditer(text):
        value = _ID_VALUE_ZH.match(text, m.end())
        if value:
            hits.append(_Hit(*value.span(), "ID", PLACEHOLDERS["ID"], 10))
    for pattern in (_SSN, _CN_ID_CARD):
        for m in pattern.finditer(text):
            hits.append(_Hit(*m.span(), "ID", PLACEHOLDERS["ID"], 11))
    for pattern in (_LONG_NUMBER, _CODE):
        for m in pattern.finditer(text):
            hits.append(_Hit(*m.span(), "ID", PLACEHOLDERS["ID"], 90))  # after phones and dates
    return hits


def _phone_hits(text: str) -> list[_Hit]:
    hits = []
    for m in _PHONE_LABEL.finditer(text):
        category = "FAX" if (m.group("fax") or m.group("fax_zh")) else "PHONE"
        end = m.end("ext") if m.group("ext") else m.end("value")
        hits.append(_Hit(m.start("value"), end, category, PLACEHOLDERS[category], 12))
    for m in _PHONE.finditer(text):
        category = "FAX" if _FAX_BEFORE.search(text, max(0, m.start() - 20), m.start()) else "PHONE"
        hits.append(_Hit(*m.span(), category, PLACEHOLDERS[category], 13))
    return hits


def _age_hits(text: str) -> list[_Hit]:
    hits = []
    for m in _AGE.finditer(text):
        group = next(g for g in ("age", "age2", "age3", "age4", "age5") if m.group(g) is not None)
        if 90 <= int(m.group(group)) < 200:
            hits.append(_Hit(m.start(group), m.end(group), "AGE", AGE_CAP, 20))
    return hits


def _address_hits(text: str) -> list[_Hit]:
    hits = []
    for m in _ADDRESS_LABEL.finditer(text):
        start, end = m.span("value")
        tail = _ADDRESS_TAIL.search(text, start, end)  # the state and ZIP stay for the ZIP rules
        end = tail.start() if tail else end
        while end > start and text[end - 1] in " \t.,":
            end -= 1
        hits.append(_Hit(start, end, "ADDRESS", PLACEHOLDERS["ADDRESS"], 14))
    for m in _STREET.finditer(text):
        hits.append(_Hit(*m.span(), "ADDRESS", PLACEHOLDERS["ADDRESS"], 15))
    for m in _ADDRESS_ZH.finditer(text):
        hits.append(_Hit(*m.span(), "ADDRESS", PLACEHOLDERS["ADDRESS"], 15))
    for m in _CITY_STATE_ZIP.finditer(text):
        if m.group("city").lower() not in _NOT_NAMES:
            hits.append(_Hit(*m.span("city"), "ADDRESS", PLACEHOLDERS["ADDRESS"], 16))
        hits.append(_Hit(*m.span("zip"), "ZIP", PLACEHOLDERS["ZIP"], 16))
    for pattern in (_STATE_ZIP, _ZIP_LABEL):
        for m in pattern.finditer(text):
            hits.append(_Hit(*m.span("zip"), "ZIP", PLACEHOLDERS["ZIP"], 16))
    return hits


def _name_span(text: str, pos: int, *, caps: bool, inverted: bool, min_words: int = 1) -> tuple[int, int] | None:
    """The name starting at ``pos``: capitalised words and initials ("John A. Smith", "O'Brien",
    "van Gogh"); all-caps words with ``caps``; "Smith, John" with ``inverted`` (not "Emily Carter,
    Springfield Clinic": only one word may come before the comma). None if none."""
    words: list[tuple[int, int]] = []
    i, comma = pos, False
    particle = _LEADING_PARTICLE.match(text, pos)  # "van der Berg"
    if particle:
        words.append(particle.span(1))
        i = particle.end()
    while len(words) < 4:
        m = _NAME_TOKEN.match(text, i)
        if m is None and caps and words:  # "SMITH, JOHN A": a middle initial without its dot
            m = _BARE_INITIAL.match(text, i)
        if m is None:
            break
        token = m.group()
        if (len(token) > 2 and token.isupper() and not caps) or token.rstrip(".").lower() in _NOT_NAMES:
            break
        if len(token) == 2 and token.isalpha() and token.isupper():  # "CT", "MD", "ID": abbreviations, not names
            break
        words.append(m.span())
        gap = _NAME_GAP.match(text, m.end())
        if gap is None or gap.end() == m.end():
            break
        if "," in gap.group():  # "Smith, John": one word (the last name) before the comma, once
            if not inverted or comma or len(words) != 1:
                break
            comma = True
        i = gap.end()
    # Initials alone are no name.
    if len(words) < min_words or all(text[end - 1] == "." for _, end in words):
        return None
    return words[0][0], words[-1][1]


def _name_hits(text: str) -> list[_Hit]:
    hits = []

    def add(span: tuple[int, int] | None, priority: int) -> None:
        if span is not None:
            hits.append(_Hit(*span, "NAME", PLACEHOLDERS["NAME"], priority))

    for m in _TITLE.finditer(text):
        add(_name_span(text, m.end(), caps=True, inverted=False), 40)
    for m in _NAME_LABEL.finditer(text):
        if _NOT_PERSON_LABEL.search(text, max(0, m.start() - 20), m.start()):
            continue
        title = _TITLE.match(text, m.end())
        add(_name_span(text, title.end() if title else m.end(), caps=True, inverted=title is None), 41)
    for pattern in (_NAME_VERB, _RELATIVE):
        for m in pattern.finditer(text):
            add(_name_span(text, m.end(), caps=False, inverted=False), 42)
    for m in _PATIENT_WORD.finditer(text):
        add(_name_span(text, m.end(), caps=False, inverted=False, min_words=2), 43)
    for m in _CREDENTIAL.finditer(text):
        # Leading words of the match may be a label ("Electronically Signed John Smith MD").
        tokens = list(_NAME_TOKEN.finditer(text, m.start(1), m.end(1)))
        while tokens and tokens[0].group().rstrip(".").lower() in _NOT_NAMES:
            tokens.pop(0)
        if [t for t in tokens if not t.group().endswith(".")] and not any(t.group().lower() in _NOT_NAMES for t in tokens):
            add((tokens[0].start(), tokens[-1].end()), 44)
    for m in _DICOM_NAME.finditer(text):
        add(m.span(), 39)
    # Chinese: after a label, any 2-4 characters; after 患者/患儿 ..., a common surname + 1-2
    # characters followed by a separator; before 医生/医师 ..., a surname (+ given name).
    for m in _CN_LABEL.finditer(text):
        value = _CN_LABEL_VALUE.match(text, m.end())
        if value and value.group() not in _CN_NOT_NAMES and value.group()[0] not in "男女无":
            add(value.span(), 41)
    for m in _CN_CONTEXT.finditer(text):
        for length in (3, 2, 4):  # 3 first: most Chinese names have three characters
            candidate = text[m.end() : m.end() + length]
            if len(candidate) == length and re.fullmatch(_CN_NAME_AFTER, candidate) and _CN_AFTER_NAME.match(text, m.end() + length):
                add((m.end(), m.end() + length), 45)
                break
    for m in _CN_TITLE_AFTER.finditer(text):
        add(m.span(1), 45)
    return hits


def _propagated_names(text: str, names: set[str]) -> list[_Hit]:
    """Other occurrences of found names, and of their parts of 3+ letters, as whole words."""
    variants = set()
    for name in names:
        if re.search(f"[{_HAN}]", name):
            if len(name) >= 2:  # a surname alone ("王" of 王医生) is a common character
                variants.add(name)
            continue
        variants.add(name)
        for part in re.split(r"[\s,^]+", name):
            part = part.strip(".")
            if len(part) >= 3 and part.lower() not in _NOT_NAMES:
                variants.add(part)
    hits = []
    for variant in sorted(variants, key=len, reverse=True):
        if re.search(f"[{_HAN}]", variant):
            pattern = re.escape(variant)  # Chinese: no word boundaries
        else:
            pattern = rf"(?<![\w]){re.escape(variant)}(?![\w])"
        for m in re.finditer(pattern, text, re.IGNORECASE):
            if m.group()[0].isupper() or re.match(f"[{_HAN}]", m.group()):  # capitalised, as names are written
                hits.append(_Hit(*m.span(), "NAME", PLACEHOLDERS["NAME"], 95))
    return hits


# ------------------------------------------------------------------------------------ date logic

_DATE_KIND_RANK = {kind: rank for rank, (kind, _) in enumerate(_DATE_PATTERNS)}


def _infer_dayfirst(text: str) -> bool:
    """Day-first when the text's numeric dates say so (a first field over 12), or use dots."""
    votes = 0
    dots = 0
    for m in _DATE_PATTERNS[_DATE_KIND_RANK["num"]][1].finditer(text):
        a, b = int(m.group("a")), int(m.group("b"))
        if a > 12 >= b:
            votes += 1
        elif b > 12 >= a:
            votes -= 1
        dots += m.group("sep") == "."
    return votes > 0 or (votes == 0 and dots > 0)


def _full_year(text: str) -> int:
    digits = text.lstrip("'’")
    year = int(digits)
    if len(digits) == 2:
        year += 2000 if year < 50 else 1900
    return year


def _month_number(token: str) -> int:
    token = token.lower()
    return next(i for i, name in enumerate(_MONTHS, start=1) if name.startswith(token[:3]))


def _parse_date(kind: str, m: re.Match, dayfirst: bool) -> date | int | tuple[int, int] | None:
    """The date a match denotes: a `date`, ``(month, day)`` without a year, or a year (int)."""
    try:
        if kind in ("mdy", "dmy"):
            year = m.group("year") or m.groupdict().get("year2")
            return date(_full_year(year), _month_number(m.group("mon")), int(m.group("day")))
        if kind == "ymd" or (kind == "zh" and m.group("day")):
            return date(int(m.group("year")), int(m.group("month")), int(m.group("day")))
        if kind == "num":
            a, b = int(m.group("a")), int(m.group("b"))
            if a > 12 or (dayfirst and b <= 12):
                a, b = b, a
            return date(_full_year(m.group("year")), a, b)
        if kind in ("zh", "ym", "num_my"):
            return date(int(m.group("year")), int(m.group("month")), 15)
        if kind == "my":
            return date(int(m.group("year")), _month_number(m.group("mon")), 15)
        if kind in ("md", "dm"):
            month, day = _month_number(m.group("mon")), int(m.group("day"))
            date(2000, month, day)  # valid in a leap year
            return (month, day)
        if kind == "zh_md":
            month, day = int(m.group("month")), int(m.group("day"))
            date(2000, month, day)
            return (month, day)
        if kind in ("zh_y", "y"):
            return int(m.group("year"))
    except (ValueError, OverflowError):
        return None
    raise AssertionError(kind)  # pragma: no cover


def _styled_month(original: str, month: int) -> str:
    """Month ``month``'s name written like ``original`` (full or abbreviated, case)."""
    full = _MONTHS[month - 1]
    name = full if len(original) > 4 or original.lower() == full else ("sept" if month == 9 and len(original) == 4 else full[:3])
    return _styled(original, name)


def _styled(original: str, word: str) -> str:
    if original.isupper():
        return word.upper()
    if original.islower():
        return word
    return word.capitalize()


def _ordinal(day: int, original: str) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return suffix.upper() if original.isupper() else suffix


def _pad(value: int, original: str, numeric: bool) -> str:
    """``value`` as wide as ``original``: numeric dates keep their width ("10/29" -> "04/04"),
    days beside a month name only a leading zero ("October 29" -> "April 4", "05 May" -> "09 Jan")."""
    width = len(original) if numeric or original.startswith("0") else 1
    return f"{value:0{width}d}"


def _replace_groups(m: re.Match, values: dict[str, str]) -> str:
    """The match's text with the named groups in ``values`` replaced."""
    out, last = [], m.start()
    spans = sorted((m.span(g), v) for g, v in values.items() if m.group(g) is not None)
    for (start, end), value in spans:
        out.append(m.string[last:start])
        out.append(value)
        last = end
    out.append(m.string[last : m.end()])
    return "".join(out)


def _shifted(kind: str, m: re.Match, parsed, shift: timedelta, reference_year: int, dayfirst: bool) -> str:
    """The matched date moved by ``shift``, in its own format; ``[DATE]`` when out of range."""
    try:
        if isinstance(parsed, int):  # a year alone ("in 2019", "2019年"): whole years
            return _replace_groups(m, {"year": str(parsed + round(shift.days / 365.2425))})
        if isinstance(parsed, tuple):  # month and day without a year
            month, day = parsed
            try:
                anchor = date(reference_year, month, day)
            except ValueError:  # 29 February
                anchor = date(2000, month, day)
            new = anchor + shift
        else:
            new = parsed + shift
        if new.year < 1:
            return PLACEHOLDERS["DATE"]
    except OverflowError:
        return PLACEHOLDERS["DATE"]
    groups = m.groupdict()
    values: dict[str, str] = {}
    if groups.get("wd"):  # the weekday of the new date, full or abbreviated as written
        wd = groups["wd"]
        full = _WEEKDAYS[new.weekday()]
        values["wd"] = _styled(wd, full if wd.lower() in _WEEKDAYS else full[:3])
    if groups.get("mon"):
        values["mon"] = _styled_month(groups["mon"], new.month)
    numeric = not groups.get("mon") and not kind.startswith("zh")  # 2022年1月5日 is not padded
    if groups.get("day"):
        values["day"] = _pad(new.day, groups["day"], numeric)
    if groups.get("ord"):
        values["ord"] = _ordinal(new.day, groups["ord"])
    if groups.get("month"):
        values["month"] = _pad(new.month, groups["month"], numeric)
    if kind == "num":  # the same reading as _parse_date
        a, b = m.group("a"), m.group("b")
        first_is_day = int(a) > 12 or (dayfirst and int(b) <= 12)
        values["a"] = _pad(new.day if first_is_day else new.month, a, True)
        values["b"] = _pad(new.month if first_is_day else new.day, b, True)
    for name in ("year", "year2"):
        if groups.get(name):
            year = groups[name]
            digits = year.lstrip("'’")
            values[name] = year[: len(year) - len(digits)] + (f"{new.year % 100:02d}" if len(digits) == 2 else f"{new.year:04d}")
    return _replace_groups(m, values)


def _shift_iso(value: str, shift: timedelta) -> str | None:
    """An ISO 8601 date or date-time (``YYYY-MM-DD[THH:MM[:SS]]``) moved by ``shift``; None if unreadable."""
    head, sep, tail = value.partition("T") if "T" in value else value.partition(" ")
    try:
        day = date.fromisoformat(head[:10]) if len(head) >= 10 else datetime.strptime(head, "%Y-%m").date()
    except ValueError:
        return None
    new = day + shift
    if len(head) >= 10:
        return new.isoformat() + head[10:] + sep + tail
    return f"{new.year:04d}-{new.month:02d}" + sep + tail


__all__ = ["AGE_CAP", "CATEGORIES", "PLACEHOLDERS", "DeidTextSummary", "TextDeidentifier"]
