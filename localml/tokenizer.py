"""A small byte-level BPE tokenizer with Phi-3's chat tokens and chat template.

The real Phi-3 tokenizer (32k SentencePiece vocab) lives on the Hugging Face hub, which the offline
stack never touches. Instead we train a BPE on the dataset's own message contents (a few hundred
milliseconds for a few hundred conversations) and wrap it as a `transformers.PreTrainedTokenizerFast`
that speaks Phi-3's chat format exactly: same special tokens, same Jinja chat template
(`microsoft/Phi-3-mini-4k-instruct`'s `tokenizer_config.json`), `<|endoftext|>` as eos and pad.

Byte-level pre-tokenization means every string round-trips (newlines included, which the chat
format depends on) and there is no unknown token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

__all__ = [
    "ASSISTANT",
    "CHAT_TEMPLATE",
    "END",
    "EOS",
    "ROLE_TOKENS",
    "SPECIAL_TOKENS",
    "SYSTEM",
    "USER",
    "build_tokenizer",
    "conversation_texts",
]

EOS = "<|endoftext|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
ROLE_TOKENS: dict[str, str] = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
# Order fixes the ids: <|endoftext|> = 0, <|system|> = 1, <|user|> = 2, <|assistant|> = 3, <|end|> = 4.
SPECIAL_TOKENS: list[str] = [EOS, SYSTEM, USER, ASSISTANT, END]

# Phi-3-mini-4k-instruct's template, verbatim (without a generation prompt it ends with eos).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

DEFAULT_VOCAB_SIZE = 2000


def conversation_texts(conversations: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Every message content of ultrachat-shaped rows (`{"messages": [{"role", "content"}]}`)."""
    for row in conversations:
        for message in row.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str) and content:
                yield content


def build_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of at most `vocab_size` tokens on `texts` and wrap it Phi-3 style.

    Deterministic for the same texts (the `tokenizers` BPE trainer breaks ties by token order).
    The vocabulary may end up smaller than `vocab_size` when the texts have fewer merges to offer.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # "\n" is part of every chat turn: make sure the trainer sees it even in one-line datasets.
    bpe.train_from_iterator(_with_newline(texts), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS,
        pad_token=EOS,
        # transformers 5 name for what v4 called `additional_special_tokens`.
        extra_special_tokens=[SYSTEM, USER, ASSISTANT, END],
        model_max_length=512,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _with_newline(texts: Iterable[str]) -> Iterator[str]:
    yield "\n"
    yield from texts
