"""`MedMLLMProcessor`: text formats, learned tokens, image batches, padding, errors, save/load."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from medmllm.errors import MedMLLMError, ScanError
from medmllm.model.configuration import IMAGE_END, IMAGE_PATCH, IMAGE_START, SPECIAL_TOKENS, MedMLLMConfig
from medmllm.model.processor import IGNORE_INDEX, MedMLLMProcessor, add_image_tokens
from medmllm.scans import Scan
from tests.model.conftest import make_tokenizer

HEAD_CT = Path(__file__).resolve().parents[2].parent / "shared/data/scans/head_ct.nii.gz"
NUM_LATENTS = 4
SMALL_RECIPES = {
    "image_recipe_3d": {"intensity": "minmax", "size": [32, 32], "depth": 8},
    "image_recipe_2d": {"intensity": "minmax", "size": [32, 32], "depth": 4},
}


def make_processor(chat: bool = True, describe_exams: bool = True, **config) -> MedMLLMProcessor:
    tokenizer = make_tokenizer() if chat else make_tokenizer(chat_template=None)
    add_image_tokens(tokenizer)
    return MedMLLMProcessor(
        tokenizer, MedMLLMConfig(**{"num_latents": NUM_LATENTS, **SMALL_RECIPES, **config}), describe_exams=describe_exams
    )


def learned_text(processor: MedMLLMProcessor, out, row: int = 0) -> str:
    labels = out["labels"][row]
    return processor.tokenizer.decode(labels[labels != IGNORE_INDEX], skip_special_tokens=False)


def image(array: np.ndarray, **fields) -> dict:
    return {"type": "image", "image": array, **fields}


def qa(question, answer: str, **assistant) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer, **assistant}]


RNG = np.random.default_rng(0)
XRAY = RNG.random((40, 50), dtype=np.float32)  # one (H, W) image
VOLUME = RNG.random((12, 20, 24), dtype=np.float32)  # (D, H, W)


# ----------------------------------------------------------------------------- learned tokens


def test_chatml_learns_exactly_the_answer_and_its_end_token():
    processor = make_processor()
    out = processor(qa("Is there an effusion?", "yes"))
    assert learned_text(processor, out) == "yes<|im_end|>\n"
    full = processor.tokenizer.decode(out["input_ids"][0], skip_special_tokens=False)
    assert full == "<|im_start|>user\nIs there an effusion?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n"


def test_chatml_multi_round_learns_both_answers_and_no_prompt():
    processor = make_processor()
    sample = [{"role": "system", "content": "You are a radiologist."}, *qa("CT or MRI?", "CT"), *qa("Nodule?", "no nodule")]
    out = processor(sample)
    assert learned_text(processor, out) == "CT<|im_end|>\nno nodule<|im_end|>\n"


SMOLLM2_TEMPLATE = (  # SmolLM2-Instruct's: its own system message where a conversation has none
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_config_system_prompt_comes_first_where_a_conversation_has_none():
    def text(processor, sample):
        return processor.tokenizer.decode(processor(sample)["input_ids"][0], skip_special_tokens=False)

    question = qa("Is there an effusion?", "yes")
    processor = make_processor(system_prompt="You are a radiologist.")
    assert text(processor, question) == ("<|im_start|>system\nYou are a radiologist.<|im_end|>\n"
                                         "<|im_start|>user\nIs there an effusion?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n")
    assert learned_text(processor, processor(question)) == "yes<|im_end|>\n"  # nothing learned on it
    assert processor.count_tokens(question) == processor(question)["input_ids"].shape[1]
    own = text(processor, [{"role": "system", "content": "Be brief."}, *question])  # a conversation's own is kept
    assert own.count("<|im_start|>system") == 1 and "Be brief." in own and "radiologist" not in own
    assert "system" not in text(make_processor(), question)  # None, the default: nothing added

    # "" replaces a template's own default (SmolLM2's, 21 tokens) with an empty system message
    default, empty = make_processor(), make_processor(system_prompt="")
    for p in (default, empty):
        p.tokenizer.chat_template = SMOLLM2_TEMPLATE
    assert "SmolLM" in text(default, question)
    assert text(empty, question).startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")
    assert "SmolLM" not in text(empty, question) and empty.count_tokens(question) < default.count_tokens(question)


def test_p2med_format_without_template():
    processor = make_processor(chat=False)
    sample = [{"role": "system", "content": "Be brief."}, *qa("Modality?", "CT"), *qa("Effusion?", "no")]
    out = processor(sample)
    full = processor.tokenizer.decode(out["input_ids"][0], skip_special_tokens=False)
    stop = processor.tokenizer.eos_token
    assert full == f"Be brief.\nHuman: Modality? {stop} Assistant: CT {stop} Human: Effusion? {stop} Assistant: no {stop} "
    # The assistant text (with the space after "Assistant:") and its <STOP>, nothing else.
    assert learned_text(processor, out) == f" CT {stop} no {stop}"


def test_loss_weights_follow_each_message_and_are_zero_elsewhere():
    processor = make_processor()
    out = processor([*qa("Modality?", "CT", weight=0.5), *qa("Effusion?", "no", weight=2.0)])
    labels, weights = out["labels"][0], out["loss_weights"][0]
    assert weights.dtype == torch.float32 and weights.shape == labels.shape
    assert torch.all(weights[labels == IGNORE_INDEX] == 0)
    learned_weights = weights[labels != IGNORE_INDEX].tolist()
    first = len(processor.tokenizer("CT<|im_end|>\n")["input_ids"])
    assert learned_weights == [0.5] * first + [2.0] * (len(learned_weights) - first)


# --------------------------------------------------------------------------------- image text


@pytest.mark.parametrize("chat", [True, False])
def test_image_groups_have_num_latents_patches_and_are_never_learned(chat):
    processor = make_processor(chat=chat)
    sample = [
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, image(XRAY), {"type": "text", "text": " with "}, image(VOLUME)]},
        # An image inside an answer: its tokens stay unlearned while the text around it is learned.
        {"role": "assistant", "content": [{"type": "text", "text": "yes"}, image(XRAY)]},
    ]
    out = processor(sample)
    ids, labels = out["input_ids"][0], out["labels"][0]
    starts = (ids == processor.image_start_token_id).nonzero().flatten()
    assert len(starts) == 3
    for start in starts.tolist():
        group = ids[start : start + NUM_LATENTS + 2].tolist()
        assert group == [processor.image_start_token_id] + [processor.image_patch_token_id] * NUM_LATENTS + [processor.image_end_token_id]
    image_positions = torch.isin(ids, torch.tensor(list(processor.token_ids.values())))
    assert image_positions.sum() == 3 * (NUM_LATENTS + 2)
    assert torch.all(labels[image_positions] == IGNORE_INDEX)
    assert "yes" in learned_text(processor, out)


def test_exam_description_uses_p2med_wording():
    processor = make_processor(chat=False)
    content = [
        image(XRAY, time=date(2022, 10, 29), modality="X-ray"),
        image(XRAY),  # second view of the same exam: no header
        image(VOLUME, time=datetime(2023, 1, 5, 14, 30, 59), modality="CT"),
        image(VOLUME, modality="CT"),
        image(VOLUME, time="December 31, 2022"),
    ]
    text = processor.decode(processor([{"role": "user", "content": content}])["input_ids"][0], skip_special_tokens=False)
    group = IMAGE_START + IMAGE_PATCH * NUM_LATENTS + IMAGE_END
    expected = (
        f"[Examination time] 2022-10-29 \n [Examination modality] X-ray \n [Image] {group}{group}"
        f"[Examination time] 2023-01-05 14:30 \n [Examination modality] CT \n [Image] {group}"
        f"[Examination modality] CT \n [Image] {group}"
        f"[Examination time] December 31, 2022 \n [Image] {group}"
    )
    assert expected in text
    quiet = processor([{"role": "user", "content": content}], describe_exams=False)
    assert "Examination" not in processor.decode(quiet["input_ids"][0])


def test_literal_image_tokens_in_text_are_an_error():
    processor = make_processor()
    with pytest.raises(MedMLLMError, match="sample 0: 0 image part"):
        processor([{"role": "user", "content": f"look {IMAGE_START}"}])


# ------------------------------------------------------------------------------------- images


def test_images_in_several_turns_shapes_sizes_exam_index_and_order():
    if not HEAD_CT.exists():
        pytest.skip(f"real CT not found at {HEAD_CT} (only in the project's checkout)")
    processor = make_processor()
    sample = [
        {"role": "user", "content": [image(XRAY, modality="X-ray"), {"type": "text", "text": " Findings?"}]},
        {"role": "assistant", "content": "The lungs are clear."},
        {"role": "user", "content": [image(str(HEAD_CT), modality="CT", exam_index=5), {"type": "text", "text": " and "}, image(VOLUME)]},
        {"role": "assistant", "content": "No mass."},
    ]
    out = processor(sample)
    pixel_values = out["pixel_values"]
    assert pixel_values.shape == (1, 3, 1, 8, 32, 32) and pixel_values.dtype == torch.float32
    # 2D recipe: depth 4; 3D recipe: depth 8; both 32 x 32; padding stays zero.
    assert out["image_sizes"].tolist() == [[[4, 32, 32], [8, 32, 32], [8, 32, 32]]]
    assert out["image_mask"].tolist() == [[True, True, True]]
    assert out["image_exam_index"].tolist() == [[0, 5, 2]]
    assert torch.equal(pixel_values[0, 0, :, :4], processor.image_tensor(XRAY))
    assert torch.all(pixel_values[0, 0, :, 4:] == 0)
    assert torch.equal(pixel_values[0, 1], processor.image_tensor(HEAD_CT))
    assert torch.equal(pixel_values[0, 2], processor.image_tensor(VOLUME))
    assert 0.0 <= float(pixel_values[0, 1].min()) < float(pixel_values[0, 1].max()) <= 1.0  # min-max, then resized


def test_text_only_and_image_sample_in_one_batch():
    processor = make_processor()
    out = processor([qa("Modality?", "CT"), qa([image(VOLUME), {"type": "text", "text": "Findings?"}], "clear")])
    assert out["pixel_values"].shape == (2, 1, 1, 8, 32, 32)
    assert out["image_mask"].tolist() == [[False], [True]]
    assert out["image_sizes"].tolist() == [[[0, 0, 0]], [[8, 32, 32]]]
    assert torch.all(out["pixel_values"][0] == 0)
    assert learned_text(processor, out, 0).startswith("CT<|im_end|>\n")
    assert learned_text(processor, out, 1) == "clear<|im_end|>\n"


def test_batch_without_images_has_no_pixel_values():
    out = make_processor()([qa("a", "b"), qa("c", "d")])
    assert out["pixel_values"] is None
    assert out["image_mask"].shape == (2, 0) and out["image_mask"].dtype == torch.bool
    assert out["image_sizes"].shape == (2, 0, 3) and out["image_exam_index"].shape == (2, 0)


def test_three_channels_with_mean_and_std():
    processor = make_processor(image_channels=3, image_mean=[0.5, 0.25, 0.0], image_std=[0.5, 0.25, 2.0])
    grey = make_processor().image_tensor(XRAY)[0]  # (D, H, W) in [0, 1]
    x = processor.image_tensor(Scan(voxels=XRAY[None]))
    assert x.shape == (3, 4, 32, 32)
    torch.testing.assert_close(x[0], (grey - 0.5) / 0.5)
    torch.testing.assert_close(x[1], (grey - 0.25) / 0.25)
    torch.testing.assert_close(x[2], grey / 2.0)


def test_window_recipe_on_a_non_hu_image_raises_scan_error():
    processor = make_processor(image_recipe_3d={"intensity": "window", "window": "lung", "size": [32, 32]})
    with pytest.raises(ScanError, match="Hounsfield"):
        processor([{"role": "user", "content": [image(VOLUME)]}])


# ------------------------------------------------------------------------ padding, generation


@pytest.mark.parametrize("chat", [True, False])
def test_generation_prompt_pads_on_the_left_and_learns_nothing(chat):
    processor = make_processor(chat=chat)
    short = [{"role": "user", "content": "CT?"}]
    long = [*qa("Modality?", "CT"), {"role": "user", "content": [image(XRAY), {"type": "text", "text": " Findings?"}]}]
    out = processor([short, long], add_generation_prompt=True)
    ids, mask = out["input_ids"], out["attention_mask"]
    n_short = int(mask[0].sum())
    assert n_short < ids.shape[1]
    assert mask[0, : ids.shape[1] - n_short].eq(0).all() and mask[0, ids.shape[1] - n_short :].eq(1).all()
    assert ids[0, : ids.shape[1] - n_short].eq(processor.pad_token_id).all()
    assert mask[1].eq(1).all()
    assert out["labels"].eq(IGNORE_INDEX).all() and out["loss_weights"].eq(0).all()
    text = processor.tokenizer.decode(ids[0, mask[0].bool()], skip_special_tokens=False)
    assert text.endswith("<|im_start|>assistant\n" if chat else "CT? <|endoftext|> Assistant:")


def test_training_pads_on_the_right():
    processor = make_processor()
    out = processor([qa("a", "b"), qa("Is there a pleural effusion?", "no")])
    n = int(out["attention_mask"][0].sum())
    assert out["attention_mask"][0, :n].eq(1).all() and out["attention_mask"][0, n:].eq(0).all()
    assert out["input_ids"][0, n:].eq(processor.pad_token_id).all()
    assert out["labels"][0, n:].eq(IGNORE_INDEX).all() and out["loss_weights"][0, n:].eq(0).all()
    left = processor([qa("a", "b"), qa("Is there a pleural effusion?", "no")], padding_side="left")
    assert left["attention_mask"][0, 0] == 0 and left["attention_mask"][0, -1] == 1


def test_generation_after_an_assistant_turn_is_an_error():
    with pytest.raises(MedMLLMError, match="ends with a user turn"):
        make_processor()(qa("a", "b"), add_generation_prompt=True)


# ------------------------------------------------------------------------------------- errors


def test_max_length_names_the_sample_and_its_length():
    processor = make_processor()
    samples = [qa("a", "b"), qa([image(XRAY)], "b")]
    length = int(processor(samples)["attention_mask"][1].sum())
    assert processor(samples, max_length=length)["input_ids"].shape[1] == length
    with pytest.raises(MedMLLMError, match=f"sample 1 has {length} tokens, more than max_length={length - 1}"):
        processor(samples, max_length=length - 1)


def test_missing_image_tokens_tell_to_call_add_image_tokens():
    with pytest.raises(MedMLLMError, match="add_image_tokens"):
        MedMLLMProcessor(make_tokenizer(), MedMLLMConfig(num_latents=NUM_LATENTS))


def test_config_ids_that_disagree_with_the_tokenizer_are_an_error():
    tokenizer = make_tokenizer()
    ids = add_image_tokens(tokenizer)
    with pytest.raises(MedMLLMError, match="image_patch_token_id"):
        MedMLLMProcessor(tokenizer, MedMLLMConfig(image_patch_token_id=ids[IMAGE_PATCH] + 100))


def test_add_image_tokens_is_idempotent():
    tokenizer = make_tokenizer()
    first = add_image_tokens(tokenizer)
    size = len(tokenizer)
    assert add_image_tokens(tokenizer) == first and len(tokenizer) == size
    assert set(first) == set(SPECIAL_TOKENS) and len(set(first.values())) == 3


def test_template_that_is_not_prefix_consistent_is_an_error():
    processor = make_processor()
    # Writes the number of messages first, so a shorter conversation is not a prefix of a longer one.
    processor.tokenizer.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(MedMLLMError, match="not prefix-consistent at message 1"):
        processor(qa("a", "b"))


def test_bad_messages_are_errors():
    processor = make_processor()
    with pytest.raises(MedMLLMError, match="sample 0, message 0: role"):
        processor([{"role": "doctor", "content": "x"}])
    with pytest.raises(MedMLLMError, match="part 0: type"):
        processor([{"role": "user", "content": [{"type": "video"}]}])


# ---------------------------------------------------------------------------------- save/load


def test_save_and_load_give_identical_outputs(tmp_path):
    processor = make_processor(chat=False, describe_exams=False, system_prompt="Be brief.")
    samples = [qa([image(XRAY, modality="X-ray")], "clear", weight=0.5), qa("CT?", "yes")]
    before = processor(samples)
    assert processor.decode(before["input_ids"][1]).startswith("Be brief.\nHuman: CT?")
    processor.save_pretrained(tmp_path)
    loaded = MedMLLMProcessor.from_pretrained(tmp_path)
    assert loaded.describe_exams is False and loaded.config.num_latents == NUM_LATENTS
    assert loaded.config.system_prompt == "Be brief."
    after = loaded(samples)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert loaded.decode(after["input_ids"][0]) == processor.decode(before["input_ids"][0])


def test_save_keeps_an_existing_model_config(tmp_path):
    processor = make_processor()
    MedMLLMConfig(num_latents=NUM_LATENTS, max_exams=7, **SMALL_RECIPES).save_pretrained(tmp_path)  # "the model's"
    processor.save_pretrained(tmp_path)
    assert MedMLLMProcessor.from_pretrained(tmp_path).config.max_exams == 7
