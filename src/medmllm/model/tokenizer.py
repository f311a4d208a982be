"""A tiny real tokenizer, trained in milliseconds, for the ``tiny`` preset and tests (no download)."""

from __future__ import annotations

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "The lungs are clear. No pleural effusion or pneumothorax. The heart size is normal.",
    "Patchy consolidation in the right lower lobe, consistent with pneumonia.",
    "[Findings] Both lungs show increased markings. [Impression] Bronchopneumonia.",
    "Please caption this scan with findings. What is the modality of the input scan?",
    "Human: Assistant: yes no CT MRI X-ray ultrasound nodule mass effusion cardiomegaly",
    "[Examination time] 2022-10-29 [Examination modality] X-ray [Image]",
]


def tiny_tokenizer(chat_template: str | None = CHATML, vocab_size: int = 400):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on a few radiology sentences.

    With ``chat_template`` (ChatML, as SmolLM2 and Qwen2 use) it behaves like an instruct model;
    with None, like a base LLM (the processor then uses P2Med's Human/Assistant format).
    Deterministic: the same vocabulary every time.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast
