"""The activities' blueprint and the wrapper every activity runs in."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.durable_functions as df

from core.names import Activity
from core.redact import scrub

bp = df.Blueprint()
log = logging.getLogger("activities")

Payload = dict[str, Any]


class ActivityError(RuntimeError):
    """What the durable history sees when an activity fails: a scrubbed one-line message."""


def activity(fn: Callable[[Payload], Any]) -> Callable[[Payload], Any]:
    """Register `fn` as the activity named after it, which must be an `Activity` member (the name
    the orchestrator calls it by).

    The payload always arrives as a JSON object. Exceptions are re-raised as `ActivityError`
    with credentials scrubbed and the original chain dropped, because the host writes the
    failure text into the durable history (TaskFailed) where secrets must never appear.
    """

    if fn.__name__ not in {a.value for a in Activity}:
        raise ValueError(f"activity {fn.__name__!r} is not a member of core.names.Activity; add it there")

    @functools.wraps(fn)
    def run(payload: Payload) -> Any:
        if isinstance(payload, str):  # some hosts hand over the raw JSON text
            payload = json.loads(payload)
        try:
            return fn(payload)
        except Exception as exc:
            message = scrub(f"{type(exc).__name__}: {exc}")
            log.warning("activity %s failed: %s", fn.__name__, message)
            raise ActivityError(message) from None

    bp.activity_trigger(input_name="payload")(run)
    return run
