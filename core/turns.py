"""Whose turn it is to release onto an endpoint: one run at a time, from "create deployment" until
traffic has moved or the new deployment is deleted.

A turn is a record per endpoint (`Turn`: holder run id + expiry), changed only by compare-and-set
(`take`, `give_back` decide; the store writes atomically, e.g. a blob with ETag conditions). The
holder renews it at each step of its release; a holder that vanished (its orchestration was
terminated, its host is gone for good) loses the turn when it expires, so nobody waits forever.
Pure logic, no I/O: the store and the fake share it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from core.frozen import Frozen


class Turn(Frozen):
    holder: str  # the run (orchestration instance id) releasing onto the endpoint
    expires_at: datetime


class TurnAnswer(Frozen):
    """What a run asking for the turn learns: granted (it holds it until `expires_at`) or not
    (who holds it, until when at most)."""

    granted: bool
    holder: str
    expires_at: datetime


def take(current: Turn | None, run: str, now: datetime, ttl_s: float) -> tuple[TurnAnswer, Turn | None]:
    """The answer to `run` asking at `now`, and the record to write (None: leave it as it is).
    Free, expired or already `run`'s: granted (renewed until now + ttl). Else refused."""
    if current is None or current.holder == run or current.expires_at <= now:
        turn = Turn(holder=run, expires_at=now + timedelta(seconds=ttl_s))
        return TurnAnswer(granted=True, holder=run, expires_at=turn.expires_at), turn
    return TurnAnswer(granted=False, holder=current.holder, expires_at=current.expires_at), None


def give_back(current: Turn | None, run: str) -> bool:
    """Whether `run` may remove the record: only the holder gives its turn back."""
    return current is not None and current.holder == run
