"""Text metrics against their reference implementations (pycocoevalcap 1.2, rouge-score 0.1.2) on report text.

The fixture tests/eval/data/reports.jsonl holds 62 hand-written chest X-ray / CT report pairs in the
style of IU X-ray and MIMIC-CXR (no real patient data): rewordings, identical pairs, empty texts,
numbers and punctuation, repeated words, and 8 samples with several references.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medmllm.errors import MedMLLMError
from medmllm.eval.metrics import get_metric, load_all
from medmllm.eval.metrics.text import normalize, tokenize

pytest.importorskip("pycocoevalcap")
pytest.importorskip("rouge_score")

from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402
from rouge_score import tokenize as rs_tokenize  # noqa: E402

DATA = Path(__file__).parent / "data" / "reports.jsonl"
TOL = 1e-9


def load_reports() -> tuple[list[str], list[list[str]]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return [r["prediction"] for r in rows], [r["references"] if "references" in r else [r["reference"]] for r in rows]


PREDICTIONS, REFERENCES = load_reports()


def coco(predictions, references):
    """Our tokenizer's output in pycocoevalcap's input form (it normally runs the Java PTBTokenizer first)."""
    gts = {i: [normalize(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [normalize(p)] for i, p in enumerate(predictions)}
    return gts, res


def ours(name, predictions=PREDICTIONS, references=REFERENCES):
    return get_metric(name).fn(predictions, references)


def test_fixture_is_varied():
    assert len(PREDICTIONS) >= 60
    assert sum(len(r) > 1 for r in REFERENCES) >= 6
    assert sum(p == r[0] for p, r in zip(PREDICTIONS, REFERENCES)) >= 2
    assert any(not p for p in PREDICTIONS) and any(not r for refs in REFERENCES for r in refs)
    assert any(any(c.isdigit() for c in p) for p in PREDICTIONS)


def test_tokenizer_leaves_clean_text_alone_and_matches_rouge_score_on_ascii():
    clean = "the heart is normal in size 4 mm nodule in the rll"
    assert normalize(clean) == clean
    for text in PREDICTIONS + [r for refs in REFERENCES for r in refs]:
        assert tokenize(text) == rs_tokenize.tokenize(text, None)
    assert tokenize("ET tube 4.5 cm above the carina; NG tube -> stomach.") == ["et", "tube", "4", "5", "cm", "above", "the", "carina", "ng", "tube", "stomach"]
    assert tokenize("右肺下叶结节 3mm，ＣＴ随访") == ["右", "肺", "下", "叶", "结", "节", "3mm", "ct", "随", "访"]
    assert tokenize("a_b  c\td", "whitespace") == ["a_b", "c", "d"]
    with pytest.raises(MedMLLMError, match="unknown tokenizer"):
        tokenize("x", "ptb")


def assert_bleu_matches(predictions, references):
    gts, res = coco(predictions, references)
    corpus, per_sample = Bleu(4).compute_score(gts, res, verbose=0)
    scores = ours("bleu", predictions, references)
    for k in range(4):
        s = scores[f"bleu_{k + 1}"]
        assert s.value == pytest.approx(corpus[k], abs=TOL)
        np.testing.assert_allclose(s.per_sample, per_sample[k], atol=TOL, rtol=0)
        assert s.corpus(np.arange(len(predictions))) == pytest.approx(corpus[k], abs=1e-12)
    return scores


def test_bleu_equals_pycocoevalcap_corpus_and_per_sample():
    scores = assert_bleu_matches(PREDICTIONS, REFERENCES)
    per_sample_mean = scores["bleu_1"].per_sample.mean()
    assert abs(scores["bleu_1"].value - per_sample_mean) > 1e-3  # corpus BLEU is not the mean of sentence BLEU
    single = [i for i, r in enumerate(REFERENCES) if len(r) == 1]
    assert_bleu_matches([PREDICTIONS[i] for i in single], [REFERENCES[i] for i in single])


def test_bleu_resample_equals_pycocoevalcap_on_the_resampled_set():
    rng = np.random.default_rng(3)
    indices = rng.integers(0, len(PREDICTIONS), size=len(PREDICTIONS))
    scores = ours("bleu")
    gts, res = coco([PREDICTIONS[i] for i in indices], [REFERENCES[i] for i in indices])
    corpus, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        assert scores[f"bleu_{k + 1}"].resample(indices) == pytest.approx(corpus[k], abs=1e-12)


def test_bleu_1_mean_is_the_mean_of_per_sample_bleu_1():
    s = ours("bleu_1_mean")["bleu_1_mean"]
    np.testing.assert_array_equal(s.per_sample, ours("bleu")["bleu_1"].per_sample)
    assert s.corpus is None and s.value == pytest.approx(s.per_sample.mean())


def test_rouge_l_equals_pycocoevalcap():
    gts, res = coco(PREDICTIONS, REFERENCES)
    corpus, per_sample = Rouge().compute_score(gts, res)
    s = ours("rouge_l")["rouge_l"]
    assert s.value == pytest.approx(corpus, abs=TOL)
    np.testing.assert_allclose(s.per_sample, per_sample, atol=TOL, rtol=0)
    assert s.per_sample[PREDICTIONS.index("")] in (0.0, 1.0)


@pytest.mark.parametrize(("name", "rouge_type"), [("rouge_l_f", "rougeL"), ("rouge_1", "rouge1")])
def test_rouge_score_variants_equal_rouge_score_on_raw_text(name, rouge_type):
    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=False)
    expected = np.array([scorer.score_multi(refs, p)[rouge_type].fmeasure for p, refs in zip(PREDICTIONS, REFERENCES)])
    s = ours(name)[name]
    np.testing.assert_allclose(s.per_sample, expected, atol=TOL, rtol=0)
    assert s.value == pytest.approx(expected.mean(), abs=TOL) and s.corpus is None


def test_cider_d_equals_pycocoevalcap():
    gts, res = coco(PREDICTIONS, REFERENCES)
    corpus, per_sample = Cider().compute_score(gts, res)
    s = ours("cider")["cider"]
    assert s.value == pytest.approx(corpus, abs=TOL)
    np.testing.assert_allclose(s.per_sample, per_sample, atol=TOL, rtol=0)
    assert s.per_sample.max() == pytest.approx(10.0)  # identical single-reference pairs: 10 x mean of 4 cosines of 1


def test_metrics_do_not_crash_on_empty_or_single_samples():
    for predictions, references in [([""], [[""]]), (["", "a b"], [["a b"], [""]]), (["x"], [["x"]])]:
        for name in ("bleu", "rouge_l", "rouge_l_f", "rouge_1", "cider"):
            for s in ours(name, predictions, references).values():
                assert s.per_sample.shape == (len(predictions),) and np.isfinite(s.per_sample).all()
    assert ours("rouge_l", [""], [[""]])["rouge_l"].per_sample[0] == Rouge().calc_score([""], [""])


words = st.sampled_from(["the", "heart", "lungs", "are", "clear", "no", "effusion", "small", "left", "right", "pleural", "normal", "size"])
text = st.lists(words, min_size=0, max_size=14).map(" ".join)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(text, st.lists(text, min_size=1, max_size=3)), min_size=2, max_size=6))
def test_all_metrics_equal_the_references_on_random_token_sequences(samples):
    predictions = [p for p, _ in samples]
    references = [r for _, r in samples]
    gts, res = coco(predictions, references)
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    scores = ours("bleu", predictions, references)
    for k in range(4):
        assert scores[f"bleu_{k + 1}"].value == pytest.approx(bleu[k], abs=TOL)
        np.testing.assert_allclose(scores[f"bleu_{k + 1}"].per_sample, bleu_per[k], atol=TOL, rtol=0)
    np.testing.assert_allclose(ours("rouge_l", predictions, references)["rouge_l"].per_sample, Rouge().compute_score(gts, res)[1], atol=TOL, rtol=0)
    if any(r for refs in references for r in refs):  # pycocoevalcap's Cider fails when no reference has a word
        np.testing.assert_allclose(ours("cider", predictions, references)["cider"].per_sample, Cider().compute_score(gts, res)[1], atol=TOL, rtol=0)
    scorer = rouge_scorer.RougeScorer(["rougeL", "rouge1"])
    multi = [scorer.score_multi(refs, p) for p, refs in zip(predictions, references)]
    np.testing.assert_allclose(ours("rouge_l_f", predictions, references)["rouge_l_f"].per_sample, [m["rougeL"].fmeasure for m in multi], atol=TOL, rtol=0)
    np.testing.assert_allclose(ours("rouge_1", predictions, references)["rouge_1"].per_sample, [m["rouge1"].fmeasure for m in multi], atol=TOL, rtol=0)


def test_registry_names_signatures_and_outputs():
    metrics = load_all()
    for name in ("bleu", "bleu_1_mean", "rouge_l", "rouge_l_f", "rouge_1", "cider"):
        assert name in metrics and "medmllm-v1" in metrics[name].signature and "|=" in metrics[name].signature
    assert get_metric("bleu_4").name == "bleu"
    with pytest.raises(MedMLLMError, match="unknown metric"):
        get_metric("meteor2")
