"""Duplicate blob events against the dev host: the same blob version delivered 20 times at once,
seen again after a restart, and POSTed 20 times, gives one orchestration."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import azure.functions as func
import httpx
import pytest

from backends import registry
from core.models import BlobRef
from core.naming import instance_id
from devhost.blobwatch import BlobWatcher
from devhost.host import Host
from storage.blob_store import BlobDatasetStore
from testing.devhost_subprocess import free_port
from testing.fakes import FakeAzure, ultrachat_lines


class RunningHost:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        ready = threading.Event()

        async def main() -> None:
            self.stop_event = asyncio.Event()
            started = asyncio.Event()
            task = asyncio.create_task(host.serve(started))
            await started.wait()
            ready.set()
            await self.stop_event.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self.thread.start()
        assert ready.wait(20)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)


@pytest.fixture
def world(azurite, tmp_path) -> Iterator[tuple[FakeAzure, BlobDatasetStore, dict[str, str]]]:
    store = BlobDatasetStore.from_connection_string(azurite.connection_string)
    container = store.service.get_container_client("datasets")
    if not container.exists():
        container.create_container()
    fake = FakeAzure(job_states=["Running"])  # the run stays in training; we only count runs
    backends = registry.Backends(
        training=fake, serving=fake, connections=fake, datasets=store, preflight=fake, turns=fake
    )
    env = {
        "DatasetsStorage": azurite.connection_string,
        "DATASETS_CONTAINER": "datasets",
        "TASK_HUB_NAME": "t",
    }
    with registry.use(backends):
        yield fake, store, env


def count_runs(host: Host) -> int:
    with host.store.read() as db:
        return db.execute("SELECT COUNT(*) FROM instances WHERE name='finetune_orchestrator'").fetchone()[0]


def test_same_version_many_times_is_one_run(world, tmp_path):
    _, store, env = world
    src = tmp_path / "chats.jsonl"
    src.write_bytes(ultrachat_lines(20))
    dataset = store.upload(src, BlobRef(container="datasets", name=f"dupes/{tmp_path.name}.jsonl"))
    db = tmp_path / "host.sqlite"

    first = RunningHost(Host(db, free_port(), env, blob_interval_s=60))  # one scan at start, then quiet
    try:
        # 20 deliveries of the same BlobCreated event, concurrently (Event Grid is at-least-once).
        blob_fn = first.host.index.blob[0]
        event = func.blob.InputStream(
            data=b"", name=dataset.path, uri=dataset.url, blob_properties={"ETag": dataset.etag.strip('"')}
        )

        async def deliver_20() -> None:
            await asyncio.gather(*(blob_fn.acall(blob=event, client=first.host.binding) for _ in range(20)))

        first.run(deliver_20())
        assert count_runs(first.host) == 1
        codes = {
            httpx.post(f"{first.host.base_url}/api/runs", json={"dataset": dataset.path}).status_code
            for _ in range(20)
        }
        assert codes == {409}
        status = httpx.get(
            f"{first.host.base_url}/runtime/webhooks/durabletask/instances/{instance_id(dataset)}"
        )
        assert status.json()["runtimeStatus"] in ("Pending", "Running")
    finally:
        first.stop()

    # A restart scans the container again: the version has a receipt, nothing fires.
    second = RunningHost(Host(db, free_port(), env, blob_interval_s=60))
    try:
        watcher = BlobWatcher(second.host.store, second.host.index, env, second.host.binding)
        fired = second.run(watcher.scan(watcher.watches[0]))
        assert dataset.name not in fired  # only blobs the first host never scanned (its _splits output)
        assert count_runs(second.host) == 1
    finally:
        second.stop()
