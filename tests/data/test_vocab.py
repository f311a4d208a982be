"""`MedicalVocabulary`: sources, term spotting on real report text, disease categories, negation."""

from __future__ import annotations

import pytest

from medmllm.data.vocab import (
    DISEASE_CATEGORIES,
    ICD_GENERIC_WORDS,
    RADIOLOGY_LEXICON,
    MedicalVocabulary,
    icd10_phrases,
    read_categories,
    read_lexicon,
)
from medmllm.errors import MedMLLMError

REPORT = """EXAMINATION: CT chest without contrast.
FINDINGS: Patchy ground-glass opacities and right lower lobe consolidation with air bronchograms.
Bilateral small pleural effusions. No pneumothorax. The cardiomediastinal silhouette is normal.
Endotracheal tube tip 3 cm above the carina. Mild degenerative changes of the thoracic spine.
IMPRESSION: Right lower lobe pneumonia. Small bilateral pleural effusions."""


@pytest.fixture(scope="module")
def vocab() -> MedicalVocabulary:
    pytest.importorskip("simple_icd_10_cm")  # the icd10cm source
    return MedicalVocabulary.load()


def spans_text(text: str, spans) -> list[str]:
    return [text[s:e] for s, e, _ in spans]


# ------------------------------------------------------------------------------------- sources


def test_load_is_cached_and_holds_both_sources(vocab):
    assert MedicalVocabulary.load() is vocab
    assert len(vocab) > 15000
    # Radiology lexicon terms, ICD-10-CM-only terms, and ICD phrases cut at connectives.
    for term in ("right lower lobe", "ground-glass opacity", "endotracheal tube", "ct", "x-ray"):
        assert term in vocab, term
    for term in ("osteomyelitis", "bronchopneumonia", "displaced fracture", "small intestine", "crohn's disease"):
        assert term in vocab, term
    assert "Ground glass OPACITY" in vocab  # case and hyphen insensitive


def test_generic_icd_words_are_not_terms(vocab):
    for word in ("unspecified", "left", "right", "encounter", "initial", "body", "small", "are", "the", "normal", "finding"):
        assert word not in vocab, word


def test_icd10_phrases_cut_descriptions_into_terms():
    phrases = icd10_phrases("Displaced fracture of shaft of right femur, initial encounter for closed fracture")
    assert {"displaced fracture", "fracture", "femur", "closed fracture"} <= set(phrases)
    assert not {"right femur", "shaft", "initial encounter", "right", "encounter"} & set(phrases)
    assert "crohn's disease" in icd10_phrases("Crohn's disease of small intestine without complications")
    assert "iliopubic" in icd10_phrases("Displaced fracture of anterior column [iliopubic] of left acetabulum")


def test_radiology_lexicon_header_and_content():
    header = RADIOLOGY_LEXICON.read_text(encoding="utf-8").splitlines()[:6]
    assert any("written for this project" in line.lower() for line in header)
    assert any("CC0" in line for line in header) and any("Apache-2.0" in line for line in header)
    terms = read_lexicon(RADIOLOGY_LEXICON)
    assert 300 < len(terms) == len(set(terms))
    assert all(t == t.lower() and not t.startswith("#") for t in terms)
    assert not {"left", "right", "small", "normal"} & set(terms)  # generic alone, as in ICD_GENERIC_WORDS
    assert {"left", "right", "small", "normal"} <= ICD_GENERIC_WORDS


def test_radiology_only_vocabulary_and_own_lexicon(tmp_path):
    radiology = MedicalVocabulary.load(sources=("radiology",), categories=None)
    assert "osteomyelitis" not in radiology and "consolidation" in radiology
    assert radiology.categories == () and radiology.disease_categories("pneumonia") == []
    lexicon = tmp_path / "mine.txt"
    lexicon.write_text("# my terms\nKawasaki disease\nmycoplasma  # inline comment\n\n", encoding="utf-8")
    mine = MedicalVocabulary.load(sources=(str(lexicon),), categories=None)
    assert len(mine) == 2 and mine.terms == {"kawasaki disease", "mycoplasma"}
    with pytest.raises(MedMLLMError, match="unknown vocabulary source"):
        MedicalVocabulary.load(sources=("umls",))


def test_category_file_covers_the_p2med_categories():
    categories = read_categories(DISEASE_CATEGORIES)
    for name in ("pneumonia", "bronchopneumonia", "pleural effusion", "pneumothorax", "atelectasis", "cardiomegaly", "nodule",
                 "mass", "consolidation", "fracture", "edema", "emphysema", "tuberculosis", "normal"):
        assert categories[name], name
    assert all(phrases for phrases in categories.values())


# -------------------------------------------------------------------------------------- terms


def test_find_terms_on_a_report(vocab):
    spans = vocab.find_terms(REPORT)
    found = spans_text(REPORT, spans)
    # Longest match: the lobe is one term, the finding another.
    assert "right lower lobe" in found and "consolidation" in found and "Right lower lobe" in found
    assert "ground-glass opacities" in found and "air bronchograms" in found and "pleural effusions" in found
    assert "cardiomediastinal silhouette" in found and "Endotracheal tube" in found and "thoracic spine" in found
    assert "CT" in found and "pneumonia" in found and "pneumothorax" in found
    # Generic words are not terms.
    assert not {"The", "is", "normal", "above", "Small", "small", "Bilateral", "of"} & set(found)
    # Spans are sorted, disjoint, and name the vocabulary's form of the term.
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    forms = {REPORT[s:e]: term for s, e, term in spans}
    assert forms["ground-glass opacities"] == "ground-glass opacity"
    assert forms["pleural effusions"] == "pleural effusion"
    assert forms["Right lower lobe"] == "right lower lobe"


def test_find_terms_matching_rules(vocab):
    text = "Ground glass opacity. Masses and nodules. Vertebrae. Massive. Pleural. Effusion. pleural\neffusion"
    found = spans_text(text, vocab.find_terms(text))
    assert "Ground glass opacity" in found  # space for the lexicon's hyphen
    assert "Masses" in found and "nodules" in found and "Vertebrae" in found
    assert MedicalVocabulary(["mass"]).find_terms("Massive amass mass-like") == [(14, 18, "mass")]  # whole words only
    assert "Pleural. Effusion" not in found  # terms never span a sentence end
    assert "pleural\neffusion" in found  # but do span a line break
    assert [t for _, _, t in vocab.find_terms("CT示右下肺肺炎")] == ["ct"]  # Chinese beside an English term
    assert vocab.find_terms("") == []


def test_find_terms_is_fast(vocab):
    import time

    text = REPORT * 40  # ~2,500 words
    start = time.perf_counter()
    vocab.find_terms(text)
    assert time.perf_counter() - start < 0.5  # ~5 ms; generous for a busy machine


# --------------------------------------------------------------------------------- categories

CATEGORY_CASES = [
    ("Right lower lobe pneumonia. No pleural effusion or pneumothorax.", ["pneumonia"]),
    ("Bronchopneumonia.", ["bronchopneumonia"]),
    ("No pleural effusion.", []),
    ("No effusion, pneumothorax, consolidation or edema.", []),
    ("Pleural effusion and pneumothorax are not seen.", []),
    ("Pneumothorax has resolved. Small left pleural effusion.", ["pleural effusion"]),
    ("No pneumothorax, but there is a small right pleural effusion.", ["pleural effusion"]),
    ("No interval change in the right pleural effusion.", ["pleural effusion"]),
    ("Pneumonia cannot be excluded.", ["pneumonia"]),
    ("Negative for pneumonia. Ruled out tuberculosis.", []),
    ("Without evidence of pneumothorax. Atelectasis at the left base.", ["atelectasis"]),
    ("Pericardial effusion.", ["pericardial effusion"]),
    ("Mycoplasma pneumoniae pneumonia with small effusions.", ["pneumonia", "pleural effusion"]),
    ("Mass effect on the lateral ventricle.", []),
    ("Cardiomegaly with pulmonary edema; emphysema.", ["cardiomegaly", "edema", "emphysema"]),
    ("Healing rib fractures. Spiculated mass. Several nodules.", ["fracture", "mass", "nodule"]),
    ("双肺纹理增多，右下肺见斑片状实变影，考虑支气管肺炎。未见胸腔积液。", ["consolidation", "bronchopneumonia"]),
    ("肺炎支原体感染，支气管肺炎，未见气胸", ["mycoplasma infection", "bronchopneumonia"]),
    ("右侧气胸已吸收。", []),
    ("不除外肺结核。", ["tuberculosis"]),
    ("No acute cardiopulmonary process.", ["normal"]),
    ("Lungs are clear. No pleural effusion.", ["normal"]),
    ("Lungs are clear. Cardiomegaly.", ["cardiomegaly"]),
    ("心肺膈未见明显异常。", ["normal"]),
    ("Not within normal limits.", []),
]


@pytest.mark.parametrize("text, expected", CATEGORY_CASES)
def test_disease_categories(vocab, text, expected):
    assert vocab.disease_categories(text) == expected


def test_is_normal(vocab):
    assert vocab.is_normal("IMPRESSION: No acute cardiopulmonary abnormality.")
    assert vocab.is_normal("心肺未见异常。")
    assert not vocab.is_normal("Lungs are clear. Small left pleural effusion.")
    assert not vocab.is_normal("Mild degenerative changes of the spine.")  # nothing said about normal


def test_category_mentions_mark_negation(vocab):
    mentions = vocab.category_mentions("No pneumothorax. Left pleural effusion, no consolidation.")
    assert [(m.category, m.negated) for m in mentions] == [("pneumothorax", True), ("pleural effusion", False), ("consolidation", True)]
    text = "No pneumothorax."
    assert text[mentions[0].start : mentions[0].end] == "pneumothorax"


def test_custom_categories():
    vocab = MedicalVocabulary([], {"kawasaki": ["Kawasaki disease", "川崎病"], "_ignore": ["kawasaki disease shock"]})
    assert vocab.categories == ("kawasaki",)
    assert vocab.disease_categories("Findings suggest Kawasaki disease.") == ["kawasaki"]
    assert vocab.disease_categories("诊断：川崎病") == ["kawasaki"]
    assert vocab.disease_categories("Kawasaki disease shock syndrome") == []
    assert vocab.disease_categories("No Kawasaki disease") == []


def test_icd10_terms_are_cached_on_disk_and_read_back_identically(tmp_path, monkeypatch):
    from medmllm.data import vocab

    monkeypatch.setenv("MEDMLLM_HOME", str(tmp_path))
    vocab.icd10cm_terms.cache_clear()
    derived = vocab.icd10cm_terms()
    [cached] = (tmp_path / "vocab").glob("icd10cm-*.txt")
    vocab.icd10cm_terms.cache_clear()
    cached.write_text(cached.read_text() + "\nplanted term")  # proves the second call reads the file
    assert vocab.icd10cm_terms() == (*derived, "planted term")
    vocab.icd10cm_terms.cache_clear()
