"""Drive the dev host engine synchronously on a simulated clock (the same clock rules as tests/replay.py:
each activity result arrives 1 s after the previous event, timers fire exactly when due)."""

from __future__ import annotations

from datetime import datetime, timedelta

from devhost.engine import Engine
from tests.replay import T0


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
