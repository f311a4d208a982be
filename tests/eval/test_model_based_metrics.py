"""Model-based metrics: BERTScore with a tiny random BERT built here (no download), and the
plugins that must say, in one line, that they are unavailable."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from medmllm.eval.metrics import MetricUnavailable, get_metric

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = [
    "the heart is normal in size",
    "small left pleural effusion with adjacent atelectasis",
    "no pneumothorax",
    "right lower lobe pneumonia",
]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer random BERT and a word-level BERT tokenizer, saved to a folder."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w for t in TEXTS for w in t.split()} | {"lungs", "are", "clear"})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    config = transformers.BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _score(folder, predictions, references, **options):
    return get_metric("bertscore").fn(predictions, references, model=str(folder), **options)


def test_bertscore_is_one_for_identical_texts_and_less_otherwise(tiny_bert):
    same = _score(tiny_bert, TEXTS, [[t] for t in TEXTS])
    for name in ("bertscore_precision", "bertscore_recall", "bertscore_f1"):
        np.testing.assert_allclose(same[name].per_sample, 1.0, atol=1e-5)
    different = _score(tiny_bert, TEXTS, [[t] for t in TEXTS[1:] + TEXTS[:1]])
    f1 = different["bertscore_f1"].per_sample
    assert np.all(f1 < 0.999) and np.all(f1 > -1)
    assert different["bertscore_f1"].value == pytest.approx(f1.mean())


def test_bertscore_precision_and_recall_swap_with_the_texts(tiny_bert):
    a, b = ["small left pleural effusion"], ["small left pleural effusion with adjacent atelectasis"]
    ab, ba = _score(tiny_bert, a, [b]), _score(tiny_bert, b, [a])
    assert ab["bertscore_precision"].value == pytest.approx(ba["bertscore_recall"].value, abs=1e-6)
    assert ab["bertscore_recall"].value == pytest.approx(ba["bertscore_precision"].value, abs=1e-6)
    p, r = ab["bertscore_precision"].value, ab["bertscore_recall"].value
    assert ab["bertscore_f1"].value == pytest.approx(2 * p * r / (p + r))


def test_bertscore_matches_a_direct_computation(tiny_bert):
    """Greedy matching computed independently with torch, on layer 1 of the model."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_bert)
    model = transformers.AutoModel.from_pretrained(tiny_bert).eval()

    def states(text):
        batch = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**batch, output_hidden_states=True).hidden_states[1][0]
        return h / h.norm(dim=-1, keepdim=True)

    c, r = states(TEXTS[1]), states(TEXTS[2])
    sim = c @ r.T
    p = sim.max(dim=1).values[1:-1].mean().item()  # [CLS] and [SEP] are not averaged
    rec = sim.max(dim=0).values[1:-1].mean().item()
    result = _score(tiny_bert, [TEXTS[1]], [[TEXTS[2]]], layer=1)
    assert result["bertscore_precision"].value == pytest.approx(p, abs=1e-5)
    assert result["bertscore_recall"].value == pytest.approx(rec, abs=1e-5)
    assert _score(tiny_bert, [TEXTS[1]], [[TEXTS[2]]], layer=2)["bertscore_f1"].value != pytest.approx(result["bertscore_f1"].value)


def test_bertscore_takes_the_best_reference_and_scores_empty_text_zero(tiny_bert):
    result = _score(tiny_bert, [TEXTS[0], ""], [[TEXTS[2], TEXTS[0]], [TEXTS[1]]])
    assert result["bertscore_f1"].per_sample[0] == pytest.approx(1.0, abs=1e-5)
    assert result["bertscore_f1"].per_sample[1] == 0.0


def test_bertscore_without_local_weights_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("MEDMLLM_BERTSCORE_MODEL", raising=False)
    with pytest.raises(MetricUnavailable) as e:
        get_metric("bertscore").fn(["a"], [["a"]], model=str(tmp_path / "no-such-model"))
    message = str(e.value)
    assert "\n" not in message and "MEDMLLM_BERTSCORE_MODEL" in message


def test_bertscore_reads_the_model_from_the_environment(tiny_bert, monkeypatch):
    monkeypatch.setenv("MEDMLLM_BERTSCORE_MODEL", str(tiny_bert))
    result = get_metric("bertscore").fn([TEXTS[0]], [[TEXTS[0]]])
    assert result["bertscore_f1"].value == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("metric", "package"), [("chexbert_f1", "f1chexbert"), ("radgraph_f1", "radgraph"), ("green", "green_score")])
def test_plugins_without_their_package_say_so_in_one_line(metric, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(MetricUnavailable) as e:
        get_metric(metric).fn(["No effusion."], [["No effusion."]])
    assert package.replace("_", "-") in str(e.value).replace("_", "-") and "\n" not in str(e.value)
