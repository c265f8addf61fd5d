"""Release turns: one run at a time releases onto an endpoint (core/turns.py)."""

from __future__ import annotations

from typing import Any

from activities.blueprint import Payload, activity
from backends.registry import current


@activity
def take_endpoint_turn(payload: Payload) -> dict[str, Any]:
    """Take (or renew) the endpoint's release turn for `run`; says who holds it if not granted."""
    answer = current().turns.take(payload["endpoint"], payload["run"], float(payload["ttl_s"]))
    return answer.model_dump(mode="json")


@activity
def give_back_endpoint_turn(payload: Payload) -> bool:
    """End `run`'s turn on the endpoint (no-op if it does not hold it)."""
    return current().turns.give_back(payload["endpoint"], payload["run"])
