"""Deterministic train/validation split of a validated chat JSONL file.

The split works on the file's non-blank lines (the examples, in the same sense as
:func:`core.validation.validate_file`: lines split on ``\\n``, blank = only ASCII whitespace).
Lines are copied byte for byte except for normalisation: a UTF-8 BOM at the start of the file is
dropped, a ``\\r\\n`` terminator becomes ``\\n`` and a missing final newline is added.

Memory is O(k) for the k validation indices; the file is streamed twice (count, then write),
or once when the caller already knows the count (``examples``).

:func:`split_lines` routes the lines to two sinks instead of two files (:func:`split_file` is it
with two files' ``write``); :func:`split_streaming` feeds each output to an upload running on its
own thread (a bounded queue of byte chunks per output), so the uploads overlap the split and no
split file is written locally.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

__all__ = [
    "SplitAborted",
    "StreamedSplit",
    "split_file",
    "split_lines",
    "split_streaming",
    "validation_count",
]

_T = TypeVar("_T")

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
    with (
        open(train_out, "wb", buffering=_BUFFER) as train,
        open(validation_out, "wb", buffering=_BUFFER) as val,
    ):
        return split_lines(path, train.write, val.write, fraction=fraction, seed=seed, examples=examples)


def split_lines(
    path: Path,
    train: Callable[[bytes], object],
    validation: Callable[[bytes], object],
    *,
    fraction: float = 0.2,
    seed: int = 42,
    examples: int | None = None,
) -> tuple[int, int]:
    """:func:`split_file`, handing each (normalised) line to ``train`` or ``validation`` in file
    order instead of writing two files: the same assignment, the same bytes.

    Raises what :func:`split_file` raises, and whatever a sink raises (the split stops there).
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
    with open(path, "rb", buffering=_BUFFER) as f:
        for index, line in enumerate(_examples(f)):
            if index >= n:  # the file grew between the passes; keep the counted prefix only
                break
            if index in chosen:
                validation(line)
                n_val += 1
            else:
                train(line)
                n_train += 1
    if (n_train, n_val) != (n - k, k):
        raise OSError(f"{path} changed while it was being split ({n_train + n_val} of {n} lines read)")
    return n_train, n_val


@dataclass(frozen=True)
class StreamedSplit(Generic[_T]):
    """What :func:`split_streaming` returns: each upload's result and each output's line count."""

    train: _T
    validation: _T
    train_examples: int
    validation_examples: int


def split_streaming(
    path: Path,
    upload_train: Callable[[Iterable[bytes]], _T],
    upload_validation: Callable[[Iterable[bytes]], _T],
    *,
    fraction: float = 0.2,
    seed: int = 42,
    examples: int | None = None,
    chunk_size: int = 4 * 1024 * 1024,
    depth: int = 2,
) -> StreamedSplit[_T]:
    """:func:`split_lines` into two uploads that run while the split is written.

    Each upload is called once, on a thread of its own, with an iterable of byte chunks (of about
    ``chunk_size`` bytes; at most ``depth`` of them wait in its queue) whose concatenation is
    exactly what :func:`split_file` would write to that output. Both threads are joined before
    this returns or raises.

    If an upload raises, the split stops at that output's next chunk and the error is raised. If
    the split fails (or the other upload does), an upload still reading gets `SplitAborted` from
    its iterable instead of its end, so it must not commit what it has read: azure-storage-blob's
    staged upload and the in-memory fake both drop it.
    """
    if chunk_size < 1 or depth < 1:
        raise ValueError("chunk_size and depth must be at least 1")
    pipes = (
        _UploadPipe(upload_train, chunk_size, depth, "split-upload-train"),
        _UploadPipe(upload_validation, chunk_size, depth, "split-upload-validation"),
    )
    train, val = pipes
    try:
        for pipe in pipes:
            pipe.start()
        n_train, n_val = split_lines(
            path, train.write, val.write, fraction=fraction, seed=seed, examples=examples
        )
        for pipe in pipes:
            pipe.finish()
    except BaseException:
        for pipe in pipes:
            pipe.abort()
        raise
    finally:
        for pipe in pipes:
            pipe.join()
    for pipe in pipes:
        pipe.raise_error()
    return StreamedSplit(train.result(), val.result(), n_train, n_val)


class SplitAborted(Exception):
    """Raised into an upload's chunk iterable when the split it was reading from failed."""


_END: object = object()  # no more chunks: the upload may commit
_ABORTED: object = object()  # the split failed: the upload must not commit


class _UploadPipe(Generic[_T]):
    """One output of :func:`split_streaming`: lines are gathered into chunks, queued, and read by
    ``upload`` on a thread. After ``upload`` returns or raises, the thread discards whatever is
    still queued up to the end marker, so the producer never blocks on a dead consumer."""

    def __init__(
        self, upload: Callable[[Iterable[bytes]], _T], chunk_size: int, depth: int, name: str
    ) -> None:
        self._upload = upload
        self._chunk_size = chunk_size
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._buffer = bytearray()
        self._ended = False  # the consumer has taken the end (or abort) marker
        self._closed = False  # the producer has queued the end (or abort) marker
        self._error: BaseException | None = None
        self._result: list[_T] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- producer side (the splitting thread) --

    def start(self) -> None:
        self._thread.start()

    def write(self, line: bytes) -> None:
        self._buffer += line
        if len(self._buffer) >= self._chunk_size:
            self._put(bytes(self._buffer))
            self._buffer.clear()

    def finish(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        self._close(_END)

    def abort(self) -> None:
        self._close(_ABORTED)

    def join(self) -> None:
        if self._thread.ident is not None:
            self._close(_ABORTED)  # no-op after finish(): makes sure the thread can end
            self._thread.join()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def result(self) -> _T:
        return self._result[0]

    def _put(self, chunk: bytes) -> None:
        self.raise_error()  # a failed upload stops the split at the next chunk
        self._queue.put(chunk)

    def _close(self, marker: object) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(marker)

    # -- consumer side (the upload thread) --

    def _chunks(self) -> Iterator[bytes]:
        while not self._ended:
            item = self._queue.get()
            if item is _ABORTED:
                self._ended = True
                raise SplitAborted("the split feeding this upload failed")
            if item is _END:
                self._ended = True
                return
            assert isinstance(item, bytes)
            yield item

    def _run(self) -> None:
        try:
            self._result.append(self._upload(self._chunks()))
        except BaseException as exc:  # handed to the splitting thread
            self._error = exc
        finally:
            while not self._ended:  # the upload stopped reading: let the producer finish
                item = self._queue.get()
                self._ended = item is _END or item is _ABORTED


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
