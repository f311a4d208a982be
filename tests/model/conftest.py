"""Tiny real tokenizers for model tests: no downloads, built in milliseconds."""

from __future__ import annotations

import pytest

from medmllm.model.tokenizer import CHATML, tiny_tokenizer


def make_tokenizer(chat_template: str | None = CHATML, vocab_size: int = 400):
    """See `medmllm.model.tokenizer.tiny_tokenizer`."""
    return tiny_tokenizer(chat_template, vocab_size)


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def plain_tokenizer():
    return make_tokenizer(chat_template=None)
