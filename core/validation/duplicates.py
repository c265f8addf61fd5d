"""Duplicate examples within a file, and validation examples that repeat a training example.

Two valid examples are the same when the digests of their decoded ``(role, content)`` sequences
are equal (:func:`conversation_digest`). To keep the checker fast, every example first gets a
fingerprint (a fold of its contents' UTF-8 lengths, measured anyway for the token estimate) and
only examples whose fingerprint was seen before get the digest, the earlier one being read back
from the file by its offset (:class:`ExampleIndex`; measured cost about 0.01 s per 100 MB, where
blake2b of every example would be 0.26 s). Memory: about 160 bytes per valid example
(fingerprint dict entry, line number and offset; ~16 MB per 100k examples, ultrachat_200k's 208k
training conversations ~33 MB). ``validate_pair`` keeps the training file's index while reading
the validation file to find train/validation overlap. Both kinds are warnings, listed by
:class:`Repeats`.
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

from msgspec.structs import astuple

from core.models import ValidationIssue
from core.validation.reading import MAX_LINE_BYTES
from core.validation.schema import DECODE_ERRORS, RELAXED, Message

FP_PRIME = 1_000_003  # fingerprint = fold of (fingerprint * prime) ^ length over the contents
FP_MASK = (1 << 60) - 1  # fingerprints fit a 2-digit int: 32 bytes instead of 48


def conversation_digest(messages: Iterable[tuple[str, str]]) -> int:
    """The digest that decides duplicates and overlap, from ``(role, content)`` pairs: two
    examples are the same when their digests are equal.

    It is Python's own 64-bit ``hash`` of the tuple of ``(role, content)`` tuples: SipHash-1-3 of
    each string (keyed with a random per-process seed unless ``PYTHONHASHSEED`` is set) combined
    by the tuple hash. It depends only on the decoded role/content sequence, so JSON whitespace,
    key order, escapes (``"\\u00e9"`` vs ``"é"``), ``prompt``/``prompt_id`` and extra fields
    never hide a duplicate. Values are comparable within one process only (fine: a pair of files
    is validated in one call); they are never stored. With 64 bits the chance of any false
    "duplicate" among n examples is about n² / 2⁶⁵ (3 × 10⁻⁸ for a million examples), and a false
    match only causes a warning.

    Cost, measured on ultrachat-shaped data (2 cores, CPython 3.11): ``blake2b(digest_size=16)``
    of the contents joined with separators needs every string encoded and joined and runs below
    1 GB/s: 0.26 s per 100 MB, more than the whole validator (0.15 s). This ``hash`` runs at about
    2 GB/s over strings msgspec already decoded: 0.046 s per 100 MB, still +30 %. So the validator
    computes it only when needed: every example gets a nearly free *fingerprint*, a polynomial
    fold of the UTF-8 lengths of its contents (computed anyway for the token estimate; equal
    conversations have equal fingerprints), and only examples whose fingerprint was already seen
    get the digest; the first example with that fingerprint is then read back from the file by
    its offset. On ultrachat-shaped data 0.2 % of examples share a fingerprint, and duplicate
    detection (with the other summary fields) costs about 0.01 s per 100 MB (+6-9 % CPU). Data
    where most examples share their length pattern (templated, fixed-length fields) gets a digest
    per example instead: about 1 µs per example more, e.g. 0.25 s -> 0.49 s for 200k tiny lines.
    """
    return hash(tuple((role, content) for role, content in messages))


def _digest(messages: Sequence[Message]) -> int:
    return hash(tuple(map(astuple, messages)))  # == conversation_digest((m.role, m.content) ...)


def content_fingerprint(messages: Sequence[Message]) -> int:
    """The contents' UTF-8 lengths folded into 60 bits, as :func:`passes` computes it."""
    fingerprint = 0
    for m in messages:
        fingerprint = fingerprint * FP_PRIME ^ (
            len(m.content) if m.content.isascii() else len(m.content.encode())
        )
    return fingerprint & FP_MASK


class ExampleIndex:
    """The valid examples of one file, for duplicates and train/validation overlap.

    ``fingerprints`` maps a fingerprint to the ordinal of the first example that had it (bitwise
    inverted once that example's full digest is known); ``digests`` maps full digests to
    ordinals, but only for examples whose fingerprint is shared. ``lines`` / ``offsets`` give each
    example's line number and byte offset (to read it back). About 160 bytes per example.
    """

    __slots__ = ("_file", "digests", "fingerprints", "lines", "offsets", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fingerprints: dict[int, int] = {}
        self.digests: dict[int, int] = {}
        self.lines = array("L")
        self.offsets = array("Q")
        self._file: io.BufferedReader | None = None

    def match(self, fingerprint: int, messages: Sequence[Message]) -> int:
        """The line of an example of this file with the same messages (from another file), or 0."""
        first = self.fingerprints.get(fingerprint)
        if first is None:
            return 0
        if first >= 0:
            self.promote(fingerprint, first)
        earlier = self.digests.get(_digest(messages))
        return 0 if earlier is None else self.lines[earlier]

    def promote(self, fingerprint: int, first: int) -> None:
        """Record the full digest of example ``first``, the first with ``fingerprint``, read back
        from the file (the validator adds the digests of later examples with it as they come)."""
        self.fingerprints[fingerprint] = ~first
        try:
            if self._file is None:
                self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
            self._file.seek(self.offsets[first])
            messages = RELAXED.decode(self._file.readline(MAX_LINE_BYTES + 2)).messages
        except (OSError, *DECODE_ERRORS):  # not seekable, or changed since: no match for it
            return
        self.digests.setdefault(_digest(messages), first)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Repeats:
    """Per-line warnings for repeated examples: the first ``cap`` kept, all counted."""

    __slots__ = ("after", "before", "cap", "count", "file", "issues")

    def __init__(self, file: str, cap: int, before: str, after: str) -> None:
        self.file = file
        self.cap = cap
        self.before = before  # message: before + the earlier line's number + after
        self.after = after
        self.issues: list[ValidationIssue] = []
        self.count = 0

    def add(self, line: int, first: int) -> None:
        self.count += 1
        if len(self.issues) < self.cap:
            message = f"{self.before}{first}{self.after}"
            self.issues.append(ValidationIssue(line=line, field="messages", message=message, file=self.file))

    def warnings(self, what: str) -> list[ValidationIssue]:
        if self.count <= len(self.issues):
            return self.issues
        note = ValidationIssue(
            line=0,
            field="messages",
            message=f"{self.count} {what} in all; only the first {len(self.issues)} are listed",
            file=self.file,
        )
        return [*self.issues, note]
