"""Blob triggers offline: watch the containers the app's blob triggers name, fire once per blob version.

In Azure the trigger is fed by Event Grid; Azurite has no Event Grid, so the watcher lists the
container on a short cadence. Each (container, name, ETag) gets a receipt in SQLite *before* the
function runs ("firing") and is marked "done" after it returns, so a restart neither re-fires a
handled version nor misses one that arrived while the host was down. A version whose function
was interrupted mid-call ("firing" at restart) is fired again: at-least-once, as in Azure, and
the app's starters are idempotent by instance id. A function that keeps failing is retried up to
MAX_ATTEMPTS times, then its receipt is marked "poisoned" and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from re import Pattern
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devhost.functions import Function, FunctionIndex, blob_path_regex, resolve_setting_expressions
from devhost.store import Store

log = logging.getLogger("devhost.blobs")
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Watch:
    function: Function
    container: str
    pattern: Pattern[str]
    service: BlobServiceClient


@dataclass(frozen=True)
class SeenBlob:
    name: str
    etag: str
    size: int
    url: str
    last_modified: datetime | None


class BlobWatcher:
    def __init__(
        self,
        store: Store,
        index: FunctionIndex,
        env: dict[str, str],
        binding_json: str,
        interval_s: float = 0.25,
    ) -> None:
        self.store = store
        self.binding_json = binding_json
        self.interval_s = interval_s
        self.watches: list[Watch] = []
        for fn in index.blob:
            b = fn.binding("blobTrigger")
            assert b is not None
            container, pattern = blob_path_regex(resolve_setting_expressions(b["path"], env))
            conn_name = b.get("connection") or "AzureWebJobsStorage"
            conn = env.get(conn_name)
            if not conn:
                raise RuntimeError(
                    f"blob trigger {fn.name}: app setting {conn_name} (a connection string) is not set"
                )
            self.watches.append(Watch(fn, container, pattern, BlobServiceClient.from_connection_string(conn)))

    async def run(self, on_fired: Callable[[], None] = lambda: None) -> None:
        while True:
            for watch in self.watches:
                try:
                    await self.scan(watch)
                except Exception:
                    log.exception("scanning %s failed; will retry", watch.container)
                on_fired()
            await asyncio.sleep(self.interval_s)

    async def scan(self, watch: Watch) -> list[str]:
        """Fire the function for every blob version without a 'done' receipt; return their names."""
        blobs = await asyncio.to_thread(self._list, watch)
        fired = []
        for blob in blobs:
            if not watch.pattern.fullmatch(blob.name) or not self._claim(watch.container, blob):
                continue
            fired.append(blob.name)
            await self._fire(watch, blob)
        return fired

    @staticmethod
    def _list(watch: Watch) -> list[SeenBlob]:
        container = watch.service.get_container_client(watch.container)
        try:
            return [
                SeenBlob(b.name, b.etag, b.size, f"{container.url}/{b.name}", b.last_modified)
                for b in container.list_blobs()
            ]
        except ResourceNotFoundError:
            return []

    def _claim(self, container: str, blob: SeenBlob) -> bool:
        now = datetime.now(UTC).isoformat()
        with self.store.tx() as db:
            row = db.execute(
                "SELECT state, attempts FROM receipts WHERE container=? AND name=? AND etag=?",
                (container, blob.name, blob.etag),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO receipts (container, name, etag, state, attempts, seen)"
                    " VALUES (?, ?, ?, 'firing', 0, ?)",
                    (container, blob.name, blob.etag, now),
                )
                return True
            return row["state"] == "firing" and row["attempts"] < MAX_ATTEMPTS

    async def _fire(self, watch: Watch, blob: SeenBlob) -> None:
        trigger = watch.function.binding("blobTrigger")
        assert trigger is not None
        stream = func.blob.InputStream(
            data=b"",  # the app reads only the name and properties; content is fetched by activities
            name=f"{watch.container}/{blob.name}",
            uri=blob.url,
            blob_properties={
                "ETag": blob.etag,
                "ContentLength": blob.size,
                "LastModified": blob.last_modified.isoformat() if blob.last_modified else None,
            },
        )
        kwargs: dict[str, Any] = {trigger["name"]: stream}
        if watch.function.client_param:
            kwargs[watch.function.client_param] = self.binding_json
        try:
            await watch.function.acall(**kwargs)
        except Exception:
            log.exception("blob trigger %s failed for %s/%s", watch.function.name, watch.container, blob.name)
            self._mark(watch.container, blob, failed=True)
            return
        self._mark(watch.container, blob, failed=False)

    def _mark(self, container: str, blob: SeenBlob, failed: bool) -> None:
        with self.store.tx() as db:
            if failed:
                db.execute(
                    "UPDATE receipts SET attempts = attempts + 1,"
                    " state = CASE WHEN attempts + 1 >= ? THEN 'poisoned' ELSE 'firing' END"
                    " WHERE container=? AND name=? AND etag=?",
                    (MAX_ATTEMPTS, container, blob.name, blob.etag),
                )
            else:
                db.execute(
                    "UPDATE receipts SET state='done' WHERE container=? AND name=? AND etag=?",
                    (container, blob.name, blob.etag),
                )
