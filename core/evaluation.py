"""Evaluation gate: a dependency-light text metric and a fixed, seeded sample of prompts.

The metric
----------
Each answer (``candidate``) is compared with the dataset's own last assistant turn (``reference``):

1. Both texts go through :func:`normalize` (SQuAD-style): Unicode NFKC, lowercase, delete every
   character whose Unicode category starts with ``P`` (punctuation) or ``S`` (symbols: ``$ + ^ |``,
   emoji...), put each CJK ideograph, kana and hangul character in a token of its own (so Chinese or
   Japanese text without spaces is still compared word-ish by character), split on whitespace, drop
   the English articles ``a``, ``an`` and ``the``. Accented letters are kept as they are.
2. :func:`token_f1`: bag-of-tokens F1 (multiset overlap, as in the SQuAD evaluation script):
   ``P = overlap / len(candidate)``, ``R = overlap / len(reference)``, ``F1 = 2PR / (P + R)``.
3. :func:`rouge_l_f1`: ROUGE-L F1 with beta = 1: the same formula with ``overlap`` replaced by the
   length of the longest common subsequence of the two token lists, so it also rewards keeping the
   reference's word order. Each side is first truncated to its first :data:`MAX_EVAL_TOKENS`
   tokens (precision and recall use the truncated lengths), so a runaway answer costs bounded time.
4. :func:`score`: ``combined = (rouge_l + token_f1) / 2``; all three rounded to 4 decimals.

Edge cases, for both metrics: two texts that normalise to no tokens at all score 1.0 (they agree
on saying nothing), exactly one such text scores 0.0.

All scores are on ``[0, 1]``, higher is better. Why this metric: it needs nothing beyond the
standard library, it is deterministic (same texts, same score, on any machine and Python version),
and it is cheap, so two deployments answering the same sampled prompts (the base model and the
fine-tuned one, or the cloud and the offline runtime) can be compared number for number. What it
is not: a semantic judge. It measures lexical overlap with one reference answer; a correct answer
worded differently scores low and a fluent wrong answer that reuses the reference's words scores
high. Use it to notice a deployment that got clearly worse, not to rank close ones.

Sampling
--------
:func:`sample_indices` ranks the indices by SHA-256 of ``f"{seed}:{index}"`` and keeps the ``k``
smallest, so the sample depends only on ``(population, k, seed)``: not on ``random``, the process
or the Python version. :func:`eval_examples` / :func:`load_sample` turn a chat JSONL file into
prompts (everything before the last assistant turn) and references (that turn's content).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

__all__ = [
    "MAX_EVAL_TOKENS",
    "METRIC",
    "EvalExample",
    "eval_examples",
    "load_sample",
    "mean",
    "normalize",
    "rouge_l_f1",
    "sample_indices",
    "score",
    "shorten",
    "token_f1",
]

METRIC = "mean of ROUGE-L F1 and token F1 (SQuAD-style normalisation)"
MAX_EVAL_TOKENS = 1024

_ARTICLES = frozenset({"a", "an", "the"})
_BOM = b"\xef\xbb\xbf"
_BUFFER = 1 << 20

# Characters that are a token on their own: CJK ideographs (unified, extensions A-H, compatibility),
# the ideographic iteration/closing marks and number zero (々 〆 〇), hiragana, katakana (with its
# phonetic extensions), hangul jamo and syllables. NFKC has already turned half-width kana into
# full-width and composed hangul jamo sequences into syllables.
_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3040, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana
    (0x3130, 0x318F),  # Hangul Compatibility Jamo
    (0x31F0, 0x31FF),  # Katakana Phonetic Extensions
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xAC00, 0xD7AF),  # Hangul Syllables
    (0xD7B0, 0xD7FF),  # Hangul Jamo Extended-B
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x323AF),  # CJK Unified Ideographs Extensions B-H and Compatibility Supplement
)
_CJK = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK_RANGES) + "]")


class _CharMap(dict[int, str]):
    """``str.translate`` table built lazily: punctuation/symbols -> deleted, CJK -> `` c ``, else kept.

    ``str.translate`` looks characters up with ``__getitem__``, so ``__missing__`` fills the table
    the first time a character is seen; the table only ever holds characters actually met.
    """

    def __missing__(self, code: int) -> str:
        char = chr(code)
        if unicodedata.category(char)[0] in "PS":
            out = ""
        elif _CJK.match(char):
            out = f" {char} "
        else:
            out = char
        self[code] = out
        return out


_CHAR_MAP = _CharMap()


def normalize(text: str) -> list[str]:
    """SQuAD-style tokens of ``text`` (NFKC, lowercase, no punctuation/symbols/articles, CJK split)."""
    folded = unicodedata.normalize("NFKC", text).lower().translate(_CHAR_MAP)
    return [token for token in folded.split() if token not in _ARTICLES]


def _f1(overlap: int, n_candidate: int, n_reference: int) -> float:
    if n_candidate == 0 or n_reference == 0:
        return 1.0 if n_candidate == n_reference else 0.0
    if overlap == 0:
        return 0.0
    precision = overlap / n_candidate
    recall = overlap / n_reference
    return 2 * precision * recall / (precision + recall)


def _token_f1(candidate: list[str], reference: list[str]) -> float:
    overlap = sum((Counter(candidate) & Counter(reference)).values())
    return _f1(overlap, len(candidate), len(reference))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``.

    Bit-parallel dynamic programming (H. Hyyrö, "Bit-parallel LCS-length computation revisited",
    2004): one row of the classic DP table, over the shorter sequence, is kept as the bits of a
    Python int and updated for each token of the longer one with four big-int operations. So
    O(len(a) * len(b) / 64) machine-word steps and O(min(len(a), len(b))) bits of memory.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    matches: dict[str, int] = {}  # token -> bit i set where b[i] == token
    for i, token in enumerate(b):
        matches[token] = matches.get(token, 0) | (1 << i)
    width = (1 << len(b)) - 1
    row = width  # zero bits = positions where the LCS grew
    for token in a:
        hit = row & matches.get(token, 0)
        row = ((row + hit) | (row - hit)) & width
    return len(b) - row.bit_count()


def _rouge_l_f1(candidate: list[str], reference: list[str]) -> float:
    candidate = candidate[:MAX_EVAL_TOKENS]
    reference = reference[:MAX_EVAL_TOKENS]
    return _f1(_lcs_length(candidate, reference), len(candidate), len(reference))


def token_f1(candidate: str, reference: str) -> float:
    """Bag-of-tokens F1 of the normalised texts (both empty -> 1.0, one empty -> 0.0)."""
    return _token_f1(normalize(candidate), normalize(reference))


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) of the normalised texts, each cut to :data:`MAX_EVAL_TOKENS` tokens.

    Both empty -> 1.0, one empty -> 0.0.
    """
    return _rouge_l_f1(normalize(candidate), normalize(reference))


def score(candidate: str, reference: str) -> tuple[float, float, float]:
    """``(combined, rouge_l, token_f1)``, each rounded to 4 decimals; combined is the mean of the two."""
    cand, ref = normalize(candidate), normalize(reference)
    rouge_l, tf1 = _rouge_l_f1(cand, ref), _token_f1(cand, ref)
    return round((rouge_l + tf1) / 2, 4), round(rouge_l, 4), round(tf1, 4)


def _rank(seed: int, index: int) -> bytes:
    return hashlib.sha256(f"{seed}:{index}".encode()).digest()


def sample_indices(population: int, k: int, seed: int) -> list[int]:
    """``min(k, population)`` distinct indices of ``range(population)``, sorted.

    The indices with the smallest ``sha256(f"{seed}:{index}")`` digests (ties, never seen in
    practice, go to the smaller index). Identical across processes, machines and Python versions.
    ``population <= 0`` or ``k <= 0`` gives ``[]``.
    """
    if population <= 0 or k <= 0:
        return []
    if k >= population:
        return list(range(population))
    return sorted(heapq.nsmallest(k, range(population), key=lambda i: (_rank(seed, i), i)))


@dataclass(frozen=True)
class EvalExample:
    """One evaluation prompt.

    Attributes:
        index: 0-based ordinal of the example's line among the file's non-blank lines, the same
            numbering as :mod:`core.splitting` (blank lines are not counted; lines skipped for
            having no usable assistant turn still are).
        messages: the conversation before its last assistant turn, as ``{"role", "content"}``
            dicts (system turns included; anything after the last assistant turn is dropped).
        reference: the content of the last assistant turn.
    """

    index: int
    messages: list[dict[str, str]]
    reference: str


class _Message(msgspec.Struct, gc=False):
    role: str
    content: str


class _Line(msgspec.Struct, gc=False):
    messages: list[_Message]


_DECODER = msgspec.json.Decoder(_Line)
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _lines(f: BinaryIO) -> Iterator[bytes]:
    """Non-blank lines (BOM dropped; blank = only ASCII whitespace, as in :mod:`core.validation`)."""
    first = True
    for line in f:
        if first:
            first = False
            if line.startswith(_BOM):
                line = line[3:]
        if line and not line.isspace():
            yield line


def _split(line: bytes) -> tuple[list[_Message], str] | None:
    """``(prompt, reference)`` of one JSONL line, or None if it has no usable last assistant turn.

    Usable: the line decodes as an object whose ``messages`` is a list of ``{"role": str,
    "content": str}`` objects (other fields ignored), and its last assistant turn comes after at
    least one user turn.
    """
    try:
        messages = _DECODER.decode(line).messages
    except _DECODE_ERRORS:
        return None
    for last in range(len(messages) - 1, 0, -1):
        if messages[last].role == "assistant":
            prompt = messages[:last]
            if any(m.role == "user" for m in prompt):
                return prompt, messages[last].content
            return None
    return None


def _example(index: int, split: tuple[list[_Message], str]) -> EvalExample:
    prompt, reference = split
    return EvalExample(index, [{"role": m.role, "content": m.content} for m in prompt], reference)


def eval_examples(path: Path) -> list[EvalExample]:
    """Every usable example of a chat JSONL file, in file order (see :class:`EvalExample`).

    Lines that are not valid JSON, not shaped like ``{"messages": [{"role", "content"}, ...]}`` or
    without an assistant turn preceded by a user turn are skipped, never an error.

    Raises:
        OSError: the file cannot be read.
    """
    examples = []
    with open(path, "rb", buffering=_BUFFER) as f:
        for index, line in enumerate(_lines(f)):
            split = _split(line)
            if split is not None:
                examples.append(_example(index, split))
    return examples


def load_sample(path: Path, k: int, seed: int) -> list[EvalExample]:
    """``[eval_examples(path)[i] for i in sample_indices(len(eval_examples(path)), k, seed)]``, cheaply.

    Two passes over the file: the first decodes each line only to learn whether it is usable and
    keeps just the usable lines' ordinals; the second builds :class:`EvalExample` objects for the
    sampled ones only. Memory is O(usable lines) small ints plus the ``k`` examples.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb", buffering=_BUFFER) as f:
        usable = [index for index, line in enumerate(_lines(f)) if _split(line) is not None]
    chosen = {usable[i] for i in sample_indices(len(usable), k, seed)}
    if not chosen:
        return []
    last = max(chosen)
    picked = []
    with open(path, "rb", buffering=_BUFFER) as f:
        for index, line in enumerate(_lines(f)):
            if index in chosen:
                split = _split(line)
                if split is not None:  # None only if the file changed between the passes
                    picked.append(_example(index, split))
            if index >= last:
                break
    return picked


def shorten(text: str, limit: int = 160) -> str:
    """``text`` on one line (whitespace runs -> one space), cut to ``limit`` chars ending in "…"."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    return line[: limit - 1].rstrip() + "…"


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean rounded to 4 decimals; 0.0 for no values."""
    if not values:
        return 0.0
    return round(math.fsum(values) / len(values), 4)
