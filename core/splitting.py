"""Deterministic train/validation split of a validated chat JSONL file.

The split works on the file's non-blank lines (the examples, in the same sense as
:func:`core.validation.validate_file`: lines split on ``\\n``, blank = only ASCII whitespace).
Lines are copied byte for byte except for normalisation: a UTF-8 BOM at the start of the file is
dropped, a ``\\r\\n`` terminator becomes ``\\n`` and a missing final newline is added.

Memory is O(k) for the k validation indices; the file is streamed twice (count, then write),
or once when the caller already knows the count (``examples``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["split_file", "validation_count"]

_BOM = b"\xef\xbb\xbf"
_BUFFER = 1 << 20


def validation_count(n: int, fraction: float) -> int:
    """``round(n * fraction)`` clamped to ``[1, n - 1]``; needs ``n >= 2``."""
    if n < 2:
        raise ValueError(f"need at least 2 examples to split train/validation, got {n}")
    return min(max(round(n * fraction), 1), n - 1)


def split_file(
    path: Path,
    train_out: Path,
    validation_out: Path,
    *,
    fraction: float = 0.2,
    seed: int = 42,
    examples: int | None = None,
) -> tuple[int, int]:
    """Split the non-blank lines of ``path`` into ``train_out`` and ``validation_out``.

    Exactly ``round(n * fraction)`` lines (clamped to ``[1, n - 1]``) go to validation, chosen
    with ``random.Random(seed).sample(range(n), k)``; the rest go to train, both in file order.
    The same file and seed always give byte-identical outputs.

    ``examples``, when the caller knows it (a passing validation report's ``examples``: every
    non-blank line of a valid file is one), saves the counting pass; it must be the number of
    non-blank lines, or the split raises ``OSError`` (fewer) or keeps only that many (more).

    Returns:
        ``(train_examples, validation_examples)``.

    Raises:
        ValueError: fewer than 2 non-blank lines, or ``fraction`` outside (0, 1).
        OSError: a file cannot be read or written.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1 (exclusive), got {fraction}")
    if examples is None:
        with open(path, "rb", buffering=_BUFFER) as f:
            n = sum(1 for _ in _examples(f))
    else:
        n = examples
    k = validation_count(n, fraction)
    chosen = set(random.Random(seed).sample(range(n), k))

    n_train = n_val = 0
    with (
        open(path, "rb", buffering=_BUFFER) as f,
        open(train_out, "wb", buffering=_BUFFER) as train,
        open(validation_out, "wb", buffering=_BUFFER) as val,
    ):
        for index, line in enumerate(_examples(f)):
            if index >= n:  # the file grew between the passes; keep the counted prefix only
                break
            if index in chosen:
                val.write(line)
                n_val += 1
            else:
                train.write(line)
                n_train += 1
    if (n_train, n_val) != (n - k, k):
        raise OSError(f"{path} changed while it was being split ({n_train + n_val} of {n} lines read)")
    return n_train, n_val


def _examples(f: BinaryIO) -> Iterator[bytes]:
    """Non-blank lines, normalised: BOM dropped, CRLF -> LF, always ending with "\\n".

    Same notion of line and blank line as :func:`core.validation.validate_file`. Lines are read
    whole: the input is expected to have passed validation (no line over 8 MiB).
    """
    first = True
    for raw in f:
        line = raw
        if first:
            first = False
            if line.startswith(_BOM):
                line = line[3:]
        if not line or line.isspace():
            continue
        if line.endswith(b"\r\n"):
            line = line[:-2] + b"\n"
        elif line.endswith(b"\n"):
            pass
        elif line.endswith(b"\r"):  # last line, no newline: its "\r" is a terminator too
            line = line[:-1] + b"\n"
        else:
            line += b"\n"
        yield line
