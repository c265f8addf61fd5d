"""The offline stack's state files (job status, endpoint and deployment records): JSON objects
written atomically, so a reader, or a process killed -9 mid-write, sees the old file or the new
one, never a torn one; `locked` serialises a read-modify-write across threads and processes, and
`now` is the timestamp they record."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now() -> str:
    """The current UTC time as recorded in state files (ISO 8601, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on the file `path` (created 0600, with its folder), across
    threads and processes: an flock on a descriptor of its own. Not reentrant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: Path, data: bytes) -> None:
    """Write `path` (mode 0600) through a flushed, fsynced temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, *, unreadable_is_missing: bool = False) -> dict[str, Any] | None:
    """The JSON object in `path`, None if there is no such file. A file that is not a JSON object
    raises ValueError, or reads as missing with `unreadable_is_missing` (a job's status written by
    an older version of the trainer)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        if unreadable_is_missing:
            return None
        raise
    if not isinstance(data, dict):
        if unreadable_is_missing:
            return None
        raise ValueError(f"{path} does not hold a JSON object")
    return data
