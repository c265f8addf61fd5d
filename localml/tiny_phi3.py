"""A tiny Phi-3-architecture causal LM and the chat-format data it trains on.

Same classes as the real model (`Phi3Config`, `Phi3ForCausalLM`: fused `qkv_proj` / `gate_up_proj`,
RMSNorm, RoPE, SiLU MLP), so LoRA targets, merging, saving and MLflow logging exercise the same
code paths as Phi-3-mini; only the sizes are tiny (hidden 128, 2 layers, 4 heads, MLP 256: 0.33 M
parameters in the layers, plus 2 x 128 per vocabulary entry - 0.49 M in all with the ~620-token
vocabulary 300 short conversations give, 0.84 M at the 2000 cap) so a few hundred steps take
seconds on one CPU core.

Examples are tokenized segment by segment exactly as the chat template renders them
(`<|user|>\\n{content}<|end|>\\n<|assistant|>\\n{content}<|end|>\\n…<|endoftext|>`); the loss is taken
on the assistant turns only (their content and the `<|end|>` that closes them), every other
position has label -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerBase

from localml.tokenizer import END, EOS, ROLE_TOKENS

__all__ = [
    "IGNORE_INDEX",
    "LORA_TARGET_MODULES",
    "MAX_SEQ_LEN",
    "TRAINED_IN_FULL",
    "Example",
    "build_model",
    "collate",
    "encode_conversation",
    "encode_conversations",
    "tiny_config",
]

IGNORE_INDEX = -100
MAX_POSITIONS = 512
# Training sequences are cut here (attention cost grows with length; answers are short anyway).
MAX_SEQ_LEN = 256
# Phi-3's projections: fused attention input, attention output, fused MLP input, MLP output.
LORA_TARGET_MODULES: list[str] = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
# Trained fully next to the adapters (see train_job.py for why).
TRAINED_IN_FULL: list[str] = ["embed_tokens", "lm_head"]


def tiny_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 256,
) -> Phi3Config:
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    end_id = tokenizer.convert_tokens_to_ids(END)
    return Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=MAX_POSITIONS,
        original_max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        # No <s> in this vocabulary; generation stops at <|end|> or <|endoftext|> like Phi-3's
        # generation_config ([32000, 32007] there).
        bos_token_id=eos_id,
        eos_token_id=[end_id, eos_id],
        pad_token_id=eos_id,
        use_cache=True,
    )


def build_model(tokenizer: PreTrainedTokenizerBase, seed: int, **sizes: int) -> Phi3ForCausalLM:
    """A randomly initialised tiny Phi-3 (the same weights for the same seed and tokenizer)."""
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(tiny_config(tokenizer, **sizes))
    model.generation_config.eos_token_id = list(model.config.eos_token_id)
    model.generation_config.pad_token_id = model.config.pad_token_id
    return model


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, Any]], max_length: int = MAX_SEQ_LEN
) -> Example | None:
    """Token ids of one conversation in Phi-3 chat format, labels on assistant turns only.

    Long contents are cut so the first exchange fits: a system/user content keeps at most a
    quarter of `max_length` tokens, an assistant content at most half; the whole sequence is then
    cut at `max_length`. Returns None when nothing trainable is left (no assistant turn).
    Without truncation the ids are exactly `tokenizer(apply_chat_template(messages,
    tokenize=False))`.
    """
    roles = [m.get("role") for m in messages]
    contents = [m.get("content") if isinstance(m.get("content"), str) else "" for m in messages]
    newline = tokenizer.encode("\n", add_special_tokens=False)
    end_id = tokenizer.convert_tokens_to_ids(END)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    encoded = tokenizer(list(contents), add_special_tokens=False)["input_ids"] if contents else []

    input_ids: list[int] = []
    labels: list[int] = []
    for role, content_ids in zip(roles, encoded, strict=True):
        head = ROLE_TOKENS.get(str(role))
        if head is None:
            continue  # the template renders unknown roles as nothing
        trained = role == "assistant"
        limit = max_length // 2 if trained else max_length // 4
        content_ids = list(content_ids[:limit])
        prefix = [tokenizer.convert_tokens_to_ids(head), *newline]
        input_ids += prefix
        labels += [IGNORE_INDEX] * len(prefix)
        input_ids += content_ids
        labels += content_ids if trained else [IGNORE_INDEX] * len(content_ids)
        input_ids.append(end_id)
        labels.append(end_id if trained else IGNORE_INDEX)
        input_ids += newline
        labels += [IGNORE_INDEX] * len(newline)
    input_ids.append(eos_id)
    labels.append(IGNORE_INDEX)

    example = Example(input_ids[:max_length], labels[:max_length])
    return example if example.trained_tokens else None


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict[str, Any]], max_length: int = MAX_SEQ_LEN
) -> list[Example]:
    """`encode_conversation` over ultrachat-shaped rows, dropping rows with nothing to train on."""
    examples = []
    for row in rows:
        messages = row.get("messages")
        if isinstance(messages, list) and messages:
            example = encode_conversation(tokenizer, [m for m in messages if isinstance(m, dict)], max_length)
            if example is not None:
                examples.append(example)
    return examples


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch tensors: input_ids, attention_mask, labels (-100 on padding)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, :n] = torch.tensor(e.labels, dtype=torch.long)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
