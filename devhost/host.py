"""The dev host process: engine dispatcher + activity workers + HTTP (with the Event Grid webhook) + blob
watcher + timer triggers in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from devhost.blobwatch import BlobWatcher
from devhost.engine import Engine, WorkItem
from devhost.functions import FunctionIndex
from devhost.http import build_app, client_binding
from devhost.store import Store
from devhost.timers import TimerRunner

log = logging.getLogger("devhost")
SHUTDOWN_GRACE_S = 5.0


def _bind_durable_client_session() -> None:
    """The SDK's DurableOrchestrationClient keeps one module-level aiohttp session (and lock), bound
    to the event loop that first used it. Reset them so they bind to this host's loop."""
    from azure.durable_functions.models.utils import http_utils

    http_utils._client_session = None
    http_utils._session_lock = asyncio.Lock()


async def _close_durable_client_session() -> None:
    from azure.durable_functions.models.utils import http_utils

    if http_utils._client_session is not None:
        await http_utils._client_session.close()
        http_utils._client_session = None


class Host:
    def __init__(
        self,
        db_path: Path,
        port: int,
        env: dict[str, str],
        module: str = "function_app",
        max_activities: int = 4,
        blob_interval_s: float = 0.25,
    ) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.store = Store(db_path)
        self.index = FunctionIndex.load(module)
        self.engine = Engine(self.store, self.index)
        self.binding = client_binding(self.base_url, env.get("TASK_HUB_NAME", "devhost"))
        self.env = env
        self.max_activities = max_activities
        self.blob_interval_s = blob_interval_s
        self.timers: TimerRunner | None = None
        self._wake: asyncio.Event | None = None

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        self._wake = asyncio.Event()
        _bind_durable_client_session()
        # Stopping waits at most SHUTDOWN_GRACE_S for requests in flight (aiohttp's default is 60 s).
        runner = web.AppRunner(
            build_app(self.engine, self.index, self.binding, self.wake),
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE_S,
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        tasks = [asyncio.create_task(self.dispatch(), name="dispatch")]
        if self.index.blob:
            watcher = BlobWatcher(self.store, self.index, self.env, self.binding, self.blob_interval_s)
            tasks.append(asyncio.create_task(watcher.run(self.wake), name="blobs"))
        if self.index.timers:
            self.timers = TimerRunner(self.store, self.index, self.env, self.binding)
            tasks.append(asyncio.create_task(self.timers.run(self.wake), name="timers"))
        log.info("dev host listening on %s (%d functions)", self.base_url, self.function_count)
        if ready is not None:
            ready.set()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests)
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The app's durable client talks to this very server: close its keep-alive connections
            # first, so the server's graceful shutdown has no client of its own to wait for.
            await _close_durable_client_session()
            await runner.cleanup()
            # An episode or activity already running on a worker thread finishes first, with this
            # loop still running (it may need it); only then is the store closed. Closing it here
            # while such a thread holds the store's lock would block the loop, and that thread
            # could be waiting for the loop: the host would never stop.
            await loop.shutdown_default_executor()
            self.store.close()

    @property
    def function_count(self) -> int:
        return len(self.index.names)

    async def dispatch(self) -> None:
        """Run episodes while there are due events; start activities up to the concurrency limit;
        sleep until woken (new work, API call, activity done) or the next timer is due."""
        assert self._wake is not None
        running: dict[int, asyncio.Task[None]] = {}
        while True:
            self._wake.clear()
            while await asyncio.to_thread(self.engine.run_next_episode) is not None:
                pass
            for item in self.engine.pending_work(set(running)):
                if len(running) >= self.max_activities:
                    break
                task = asyncio.create_task(self._activity(item))
                running[item.id] = task
                task.add_done_callback(lambda _t, i=item.id: (running.pop(i, None), self.wake()))
            due = self.engine.next_due()
            timeout = 1.0
            if due is not None:
                timeout = min(1.0, max(0.0, (due - datetime.now(UTC)).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def _activity(self, item: WorkItem) -> None:
        try:
            await asyncio.to_thread(self.engine.run_activity, item)
        except Exception:  # run_activity records failures itself; this is a bug in the host
            log.exception("recording activity %s failed", item.name)
