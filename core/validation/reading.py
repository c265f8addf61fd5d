"""Reading a dataset file: fixed-size chunks into reused buffers, the SHA-256 on the side, and a
look at the first bytes for files that are not text JSONL at all.

The file is read in binary in 1 MiB chunks, which the checker cuts into lines on ``b"\\n"``,
handing them to the decoder as zero-copy ``memoryview`` slices (only a line crossing a chunk
boundary is copied). Memory stays bounded by a few chunks plus one line of at most
:data:`MAX_LINE_BYTES`, whatever the file size; a longer line is streamed past and never held
whole.

* Reads go into a small ring of reused buffers (:class:`ChunkReader`): a fresh 1 MiB buffer per
  read cost a quarter of the time in page faults.
* On request (``checksum=True``; the CLI's ``--sha256``) the SHA-256 of the file's bytes is
  computed in the same pass, on a helper thread (:class:`Sha256`; hashlib releases the GIL, so a
  second core hashes while this one validates). It is off by default: nothing in the pipeline
  needs it (the blob's ETag names the dataset version), and where the host has one vCPU, as a
  Functions instance may, it adds about a third to the time (0.27 s CPU per 500 MB, measured).
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import cast

MAX_LINE_BYTES = 8 * 1024 * 1024
"""Longest accepted line, in bytes, not counting the ``\\n`` / ``\\r\\n`` terminator."""

BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20  # bytes per read; lines are cut out of each chunk without copying
_HASH_QUEUE = 4  # chunks waiting for the hashing thread
_RING = _HASH_QUEUE + 2  # reused read buffers: one being cut into lines, the rest queued or spare


def count_crlf(buf: bytes | bytearray, start: int, end: int) -> int:
    """The ``b"\\r\\n"`` in ``buf[start:end]``, found one by one: ``bytearray.count`` of a
    two-byte pattern runs at 1.3 GB/s, slower than the validator (0.37 s per 500 MB)."""
    count = 0
    find = buf.find
    while (start := find(b"\r\n", start, end)) >= 0:
        count += 1
        start += 2
    return count


class ChunkReader:
    """Reads a file in :data:`_CHUNK`-byte pieces into a ring of :data:`_RING` reused buffers.

    A fresh 1 MiB ``bytes`` per read is a fresh ``mmap`` from the allocator, and touching it costs
    about 250 page faults: 0.17 s per 500 MB, a quarter of the validator's time (measured). A
    buffer comes round again only after :data:`_RING` - 1 more reads; by then
    :class:`Sha256` (which holds at most :data:`_HASH_QUEUE` chunks not yet hashed) has finished
    with it, and the validator keeps only copies (``carry``) of an earlier chunk. A short last
    read returns a copy of the bytes read.
    """

    __slots__ = ("_buffers", "_file", "_next")

    def __init__(self, file: io.RawIOBase) -> None:
        self._file = file
        self._buffers: list[bytearray] = []  # allocated as needed: a small file needs one or two
        self._next = 0

    def read(self) -> bytearray:
        if len(self._buffers) < _RING:
            self._buffers.append(bytearray(_CHUNK))
        buffer = self._buffers[self._next]
        self._next = (self._next + 1) % _RING
        got = self._file.readinto(buffer)
        return buffer if got == _CHUNK else buffer[:got]


class NoChecksum:
    """Stands in for :class:`Sha256` when no checksum was asked for."""

    def update(self, chunk: bytes | bytearray) -> None:
        pass

    def hexdigest(self) -> str:
        return ""

    def __enter__(self) -> NoChecksum:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


class Sha256:
    """SHA-256 of the chunks passed to `update`, computed on a helper thread.

    hashlib releases the GIL while hashing, so on a machine with a second core the digest costs the
    validating thread almost nothing. The first chunk is hashed inline (a file of one chunk never
    starts a thread); later ones are queued, at most `_HASH_QUEUE` at a time (`update` blocks
    when that many are waiting). C-level `SimpleQueue`s keep the hand-off cheap. Use as a context
    manager: leaving it always stops the thread.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._work: queue.SimpleQueue[bytes | bytearray | None] = queue.SimpleQueue()
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(_HASH_QUEUE):
            self._slots.put(None)
        self._thread: threading.Thread | None = None
        self._started = False
        self._error: BaseException | None = None

    def update(self, chunk: bytes | bytearray) -> None:
        if not chunk:
            return
        if not self._started:
            self._started = True
            self._hash.update(chunk)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="validation-sha256", daemon=True)
            self._thread.start()
        self._slots.get()
        self._work.put(chunk)

    def _run(self) -> None:
        update = self._hash.update
        get = self._work.get
        release = self._slots.put
        while (chunk := get()) is not None:
            if self._error is None:
                try:
                    update(chunk)
                except BaseException as exc:  # keep draining so the producer never blocks
                    self._error = exc
            release(None)

    def _stop(self) -> None:
        if self._thread is not None:
            self._work.put(None)
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        self._stop()
        if self._error is not None:
            raise RuntimeError("hashing the file failed") from self._error
        return self._hash.hexdigest()

    def __enter__(self) -> Sha256:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()


def sniff_format(first: bytes | bytearray) -> str | None:
    """A message for files that are not text JSONL at all, judged from the first bytes."""
    if first.startswith(b"\x1f\x8b"):
        return "file is gzip-compressed; upload the uncompressed .jsonl"
    if first.startswith(b"PK\x03\x04"):
        return "file is a zip archive; upload the uncompressed .jsonl"
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "file is UTF-16 encoded; save it as UTF-8"
    return None


TEE_QUEUE = 2  # chunks downloaded ahead of the validator (network chunks are 4 MiB: 8 MiB)
_END = object()  # queued after the last chunk


class _Failed:
    """Queued in place of a chunk when the chunk source raised: the validator re-raises it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class StreamTee:
    """Chunks of an iterator (a download), written to a file and handed to the validator as they
    arrive, so that downloading and validating overlap.

    A helper thread (``validation-download``) pulls each chunk from ``chunks``, writes it to
    ``path`` (unbuffered) and then queues it; :meth:`read` takes the next one (``b""`` at the end),
    so any byte the validator has seen is already in the file (the duplicate check reads earlier
    examples back from it). At most ``depth`` chunks wait in the queue: memory is bounded by
    ``depth + 2`` chunks (queued, being validated, being downloaded). The file is complete and
    closed once :meth:`read` has returned ``b""``.

    An exception raised by ``chunks`` is re-raised by :meth:`read`, in the validator's thread.
    :meth:`close` (or leaving the ``with`` block) stops the helper after at most the chunk it is
    fetching, closes ``chunks`` (if it has ``close``) and the file, and joins the thread. Chunks
    must not be changed after they are yielded; empty ones are skipped.
    """

    def __init__(self, chunks: Iterable[bytes | bytearray], path: Path, *, depth: int = TEE_QUEUE) -> None:
        self._chunks = chunks
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by the helper thread)
        self._thread = threading.Thread(target=self._run, name="validation-download", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            try:
                out = self._file
                for chunk in self._chunks:
                    if self._stop.is_set():
                        return
                    if not chunk:
                        continue
                    view = memoryview(chunk)
                    while view:  # a raw write may be short
                        view = view[out.write(view) or 0 :]
                    if not self._put(chunk):
                        return
            finally:
                self._file.close()
                close = getattr(self._chunks, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed over: read() raises it in the validator's thread
            self._put(_Failed(exc))
        else:
            self._put(_END)

    def _put(self, item: object) -> bool:
        """Queue `item`, waiting for room unless told to stop; False if stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False

    def read(self) -> bytes | bytearray:
        if self._done:
            return b""
        item = self._queue.get()
        if item is _END:
            self._done = True
            self._thread.join()
            return b""
        if isinstance(item, _Failed):
            self._done = True
            raise item.error
        return cast("bytes | bytearray", item)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> StreamTee:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
