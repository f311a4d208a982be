"""`TermWeighter` and the processor's per-token loss weights (RadFM eq. 3-4): 3 on medical terms,
1 elsewhere in the response, 0 in prompts and on image tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmllm.data.vocab import MedicalVocabulary
from medmllm.data.weights import TermWeighter
from medmllm.errors import MedMLLMError
from medmllm.model.configuration import MedMLLMConfig
from medmllm.model.processor import IGNORE_INDEX, MedMLLMProcessor, add_image_tokens
from tests.model.conftest import make_tokenizer

QUESTION = "Please describe the findings of this chest X-ray."
ANSWER = "Patchy consolidation in the right lower lobe, consistent with pneumonia. No pleural effusion."
# The medical terms of ANSWER in a small vocabulary (so the expected spans are known exactly).
TERMS = ["consolidation", "right lower lobe", "pneumonia", "pleural effusion", "patchy"]


@pytest.fixture(scope="module")
def small_vocab() -> MedicalVocabulary:
    return MedicalVocabulary(TERMS)


def make_processor(chat: bool, weighter=None) -> MedMLLMProcessor:
    tokenizer = make_tokenizer() if chat else make_tokenizer(chat_template=None)
    add_image_tokens(tokenizer)
    config = MedMLLMConfig(num_latents=4, image_recipe_2d={"intensity": "minmax", "size": [16, 16]})
    return MedMLLMProcessor(tokenizer, config, term_weighter=weighter)


def term_char_spans(text: str, vocab: MedicalVocabulary) -> list[tuple[int, int]]:
    """The terms of ANSWER, located in the rendered text."""
    offset = text.index(ANSWER)
    return [(offset + s, offset + e) for s, e, _ in vocab.find_terms(ANSWER)]


def expected_weights(processor, out, vocab, message_weight: float = 1.0) -> np.ndarray:
    """Recomputed independently: 3 where a learned token's characters overlap a term, else 1."""
    text = processor.tokenizer.decode(out["input_ids"][0], skip_special_tokens=False)
    offsets = processor.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    learned = (out["labels"][0] != IGNORE_INDEX).numpy()
    spans = term_char_spans(text, vocab)
    expected = np.zeros(len(learned), dtype=np.float32)
    for t, (start, end) in enumerate(offsets[: len(learned)]):
        if learned[t]:
            term = any(s < end and start < e for s, e in spans)
            expected[t] = (3.0 if term else 1.0) * message_weight
    return expected


# ------------------------------------------------------------------------------------ weighter


def test_term_weighter_spans(small_vocab):
    weighter = TermWeighter(small_vocab)
    spans = weighter(ANSWER)
    assert [ANSWER[s:e] for s, e, _ in spans] == ["Patchy", "consolidation", "right lower lobe", "pneumonia", "pleural effusion"]
    assert {w for _, _, w in spans} == {3.0} and weighter.other_weight == 1.0
    assert TermWeighter(small_vocab, term_weight=2.5)(ANSWER)[0][2] == 2.5
    assert weighter("") == []


def test_term_weighter_on_a_tokenised_response(small_vocab):
    """Each token of the response: 3 if it is (part of) a term, 1 otherwise."""
    tokenizer = make_tokenizer()
    encoding = tokenizer(ANSWER, return_offsets_mapping=True, add_special_tokens=False)
    spans = TermWeighter(small_vocab)(ANSWER)
    weights = [3.0 if any(s < e2 and s2 < e for s2, e2, _ in spans) else 1.0 for s, e in encoding["offset_mapping"]]
    tokens = [ANSWER[s:e] for s, e in encoding["offset_mapping"]]
    heavy = "".join(t for t, w in zip(tokens, weights) if w == 3.0)
    light = "".join(t for t, w in zip(tokens, weights) if w == 1.0)
    assert heavy.replace(" ", "") == "Patchyconsolidationrightlowerlobepneumoniapleuraleffusion"
    assert light.replace(" ", "") == "inthe,consistentwith.No."


def test_term_weighter_default_vocabulary():
    pytest.importorskip("simple_icd_10_cm")
    weighter = TermWeighter()
    found = [ANSWER[s:e] for s, e, _ in weighter(ANSWER)]
    assert {"consolidation", "right lower lobe", "pneumonia", "pleural effusion"} <= set(found)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), True, "3"])
def test_term_weighter_rejects_bad_weights(small_vocab, bad):
    with pytest.raises(ValueError):
        TermWeighter(small_vocab, term_weight=bad)
    with pytest.raises(ValueError):
        TermWeighter(small_vocab, other_weight=bad)


# ----------------------------------------------------------------------------------- processor


@pytest.mark.parametrize("chat", [True, False], ids=["chatml", "p2med"])
def test_processor_loss_weights(small_vocab, chat):
    processor = make_processor(chat, TermWeighter(small_vocab))
    out = processor([{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}])
    weights = out["loss_weights"][0].numpy()
    learned = (out["labels"][0] != IGNORE_INDEX).numpy()
    np.testing.assert_array_equal(weights, expected_weights(processor, out, small_vocab))
    assert set(weights[learned].tolist()) == {1.0, 3.0}
    assert (weights[~learned] == 0).all()  # the prompt, "X-ray" in it included
    # The tokens weighted 3 spell the terms; those weighted 1 the rest of the answer + end of turn.
    tokenizer = processor.tokenizer
    heavy = tokenizer.decode(out["input_ids"][0][torch.from_numpy(weights == 3.0)]).replace(" ", "")
    assert heavy == "Patchyconsolidationrightlowerlobepneumoniapleuraleffusion"
    # Without a weighter the same sample is learned with weight 1 everywhere.
    plain = make_processor(chat)([{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}])
    torch.testing.assert_close(plain["loss_weights"], (out["loss_weights"] > 0).float())
    assert torch.equal(plain["labels"], out["labels"])


def test_processor_weights_multiply_message_weight_and_skip_images(small_vocab):
    processor = make_processor(True, TermWeighter(small_vocab, term_weight=3.0, other_weight=1.0))
    image = {"type": "image", "image": np.random.default_rng(0).random((20, 20), dtype=np.float32)}
    sample = [
        {"role": "user", "content": [image, {"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": ANSWER, "weight": 0.5},
        {"role": "user", "content": "And the heart?"},
        {"role": "assistant", "content": "No pneumonia.", "weight": 0.0},
    ]
    out = processor(sample)
    weights = out["loss_weights"][0]
    ids = out["input_ids"][0]
    image_ids = torch.tensor(list(processor.token_ids.values()))
    assert (weights[torch.isin(ids, image_ids)] == 0).all()
    assert set(weights[weights > 0].tolist()) == {1.5, 0.5}  # 3 x 0.5 and 1 x 0.5; the 0-weight turn adds nothing
    np.testing.assert_array_equal(weights.numpy()[: len(weights)], np.where(out["labels"][0] != IGNORE_INDEX, weights, 0))


def test_processor_batch_and_generation(small_vocab):
    processor = make_processor(True, TermWeighter(small_vocab))
    batch = processor([
        [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}],
        [{"role": "user", "content": "Impression?"}, {"role": "assistant", "content": "Pneumonia."}],
    ])
    assert batch["loss_weights"][1].max() == 3.0 and (batch["loss_weights"][1] == 1.0).any()
    prompt = processor([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    assert (prompt["loss_weights"] == 0).all()


def test_processor_term_weighter_with_the_tiny_model(small_vocab):
    from medmllm.model.factory import build

    model, processor = build("tiny")
    processor.term_weighter = TermWeighter(small_vocab)
    batch = processor([{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}])
    assert batch["loss_weights"].max() == 3.0
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_term_weighter_is_not_saved(small_vocab, tmp_path):
    processor = make_processor(True, TermWeighter(small_vocab))
    processor.save_pretrained(tmp_path)
    assert "term_weighter" not in (tmp_path / "processor_config.json").read_text()
    assert MedMLLMProcessor.from_pretrained(tmp_path).term_weighter is None
    weighter = TermWeighter(small_vocab)
    assert MedMLLMProcessor.from_pretrained(tmp_path, term_weighter=weighter).term_weighter is weighter


def test_processor_rejects_a_bad_term_weighter():
    with pytest.raises(MedMLLMError, match="term_weighter"):
        make_processor(True, weighter="3x")
