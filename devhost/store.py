"""SQLite persistence for the embedded durable runtime.

Everything that must survive `kill -9` lives here and changes only inside transactions:
- `instances`: one row per orchestration instance (status, input, output, custom status, and the
  replay bookkeeping: execution number, next task id, how many actions were already scheduled);
- `history`: the current execution's history events, in order (continue-as-new replaces it);
- `inbox`: events waiting to be delivered to an instance in a new episode (activity results,
  timers with a due time, external events, the start of an execution);
- `work`: activities to run. A work row is deleted in the same transaction that records its
  result in the inbox, so a crash re-runs at most the activity that was in flight;
- `receipts`: blob versions the blob trigger has seen (fire once per version across restarts).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    execution INTEGER NOT NULL DEFAULT 0,
    next_seq INTEGER NOT NULL DEFAULT 0,
    known_actions INTEGER NOT NULL DEFAULT 0,
    parent_id TEXT,
    parent_seq INTEGER
);
-- The list-instances API walks this index: (created, id) is its page order and keyset.
CREATE INDEX IF NOT EXISTS instances_created ON instances (created, id);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (instance_id, idx)
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution INTEGER NOT NULL,
    event TEXT NOT NULL,
    due TEXT,
    retry TEXT
);
CREATE INDEX IF NOT EXISTS inbox_due ON inbox (due);
CREATE TABLE IF NOT EXISTS work (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    input TEXT,
    retry TEXT
);
CREATE TABLE IF NOT EXISTS receipts (
    container TEXT NOT NULL,
    name TEXT NOT NULL,
    etag TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    seen TEXT NOT NULL,
    PRIMARY KEY (container, name, etag)
);
"""


class Store:
    """A single SQLite connection shared by the runtime's threads, serialised by a lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work (BEGIN IMMEDIATE … COMMIT, rolled back on error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
