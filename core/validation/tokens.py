"""Tokens per conversation: a conservative estimate by default, exact counts with a tokenizer.

The estimate (:func:`estimate_tokens`) needs no tokenizer and no extra pass: the checker computes
the same number inline from the UTF-8 lengths it measures anyway. Exact counts need a
``tokenizer.json`` and are much slower: one ``encode`` per line (:func:`tokenizer_option`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.validation.schema import Message

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Phi-3 chat template: "<|user|>\n{content}<|end|>\n" per message, "<|endoftext|>" at the end.
TEMPLATE_TOKENS_PER_MESSAGE = 4
END_OF_TEXT_TOKENS = 1
NO_LIMIT = 1 << 62  # token limit for the estimate when a tokenizer does the counting


def estimate_tokens(messages: Iterable[tuple[str, str]]) -> int:
    """Conservative estimate (meant as an upper bound) of the Phi-3 tokens of one conversation.

    ``messages`` are ``(role, content)`` pairs. No tokenizer is loaded; the estimate is::

        sum over messages of (4 + ceil(utf8_bytes(content) / 2)) + 1

    * 4 tokens per message for the chat template around the content: the role token
      (``<|system|>``, ``<|user|>`` or ``<|assistant|>``), ``\n``, ``<|end|>`` and ``\n``;
    * ``ceil(bytes / 2)`` for the content. Phi-3-mini uses the Llama-2 32k SentencePiece BPE
      vocabulary with byte fallback. Every token covers at least one byte, but nearly all tokens
      a BPE model emits for ordinary text are merges covering two bytes or more (English averages
      about 4 bytes per token; a word with its leading space, ``▁the``, is already 4), so half the
      UTF-8 byte count bounds the token count from above for typical text with a wide margin;
    * 1 for the final ``<|endoftext|>``.

    It is an estimate, not a proof: single-byte tokens exist. Llama splits numbers into single
    digits, and characters missing from the vocabulary (rare CJK, emoji, control characters) fall
    back to one token per UTF-8 byte, so long runs of digits or of rare characters can exceed it.
    The role strings are not counted (the role token is part of the 4).
    """
    total = END_OF_TEXT_TOKENS
    for _role, content in messages:
        total += TEMPLATE_TOKENS_PER_MESSAGE + (_utf8_len(content) + 1) // 2
    return total


def _utf8_len(text: str) -> int:
    # str.isascii() is O(1) in CPython; only non-ASCII text pays for an encode.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


TokenCounter = Callable[[Sequence[Message]], int]


def chat_text(messages: Iterable[tuple[str, str]]) -> str:
    """One conversation in the Phi-3 chat format the model is trained on: per message
    ``<|{role}|>\n{content}<|end|>\n``, then ``<|endoftext|>`` (e.g.
    ``<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|endoftext|>``)."""
    return "".join([f"<|{role}|>\n{content}<|end|>\n" for role, content in messages]) + "<|endoftext|>"


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a Hugging Face ``tokenizer.json`` (or a directory holding one) with ``tokenizers``.

    Raises:
        OSError: the file is missing or unreadable (``FileNotFoundError`` names the file).
        ValueError: the file is not a tokenizer ``tokenizers`` can load.
        ImportError: the ``tokenizers`` package is not installed.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    with open(file, "rb"):  # a clear OSError (missing, directory, permission) before tokenizers
        pass
    from tokenizers import Tokenizer  # not a dependency of the Function App: imported on demand

    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises plain Exception for unparsable files
        raise ValueError(f"{file} is not a tokenizer.json that tokenizers can load: {exc}") from exc


def _token_counter(tokenizer: Tokenizer) -> TokenCounter:
    """Exact token count of one conversation: :func:`chat_text` encoded with ``tokenizer``,
    special tokens included (whatever its post-processor adds, e.g. a BOS, is counted too)."""
    encode = tokenizer.encode

    def count(messages: Sequence[Message]) -> int:
        text = "".join([f"<|{m.role}|>\n{m.content}<|end|>\n" for m in messages]) + "<|endoftext|>"
        return len(encode(text).ids)

    return count


def tokenizer_option(tokenizer: str | os.PathLike[str] | None) -> tuple[TokenCounter | None, str]:
    if tokenizer is None:
        return None, "estimate"
    return _token_counter(load_tokenizer(tokenizer)), f"tokenizer:{os.fspath(tokenizer)}"
