"""Drive the dev host engine synchronously on a simulated clock (the same clock rules as testing/replay.py:
each activity result arrives 1 s after the previous event, timers fire exactly when due)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from devhost.engine import Engine

if TYPE_CHECKING:
    from devhost.host import Host
from testing.replay import T0


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def drain(engine: Engine, clock: Clock, max_steps: int = 50_000) -> int:
    """Run until nothing is left to do; return the number of episodes run."""
    episodes = 0
    for _ in range(max_steps):
        if engine.run_next_episode() is not None:
            episodes += 1
            continue
        work = engine.pending_work(set())
        if work:
            engine.run_activity(work[0])
            clock.now += timedelta(seconds=1)
            continue
        due = engine.next_due()
        if due is None:
            return episodes
        clock.now = max(clock.now, due)
    raise AssertionError("engine did not go idle")


@contextmanager
def serving(host: Host, ready_timeout_s: float = 20) -> Iterator[threading.Thread]:
    """Run `host.serve()` on its own event loop in a thread until the block ends, then stop it and
    wait for the thread (which the caller may check with `is_alive()`)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        started = asyncio.Event()
        task = asyncio.create_task(host.serve(started))
        await started.wait()
        ready.set()
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(ready_timeout_s), "the dev host did not start"
        yield thread
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        if not thread.is_alive():
            loop.close()
