"""Release turns: one run at a time releases onto an endpoint (core/turns.py)."""

from __future__ import annotations

from activities.wrapper import activity
from backends.registry import current
from core.contracts import GiveBackEndpointTurn, TakeEndpointTurn
from core.turns import TurnAnswer


@activity
def take_endpoint_turn(inp: TakeEndpointTurn) -> TurnAnswer:
    """Take (or renew) the endpoint's release turn for `run`; says who holds it if not granted."""
    return current().turns.take(inp.endpoint, inp.run, float(inp.ttl_s))


@activity
def give_back_endpoint_turn(inp: GiveBackEndpointTurn) -> bool:
    """End `run`'s turn on the endpoint (no-op if it does not hold it)."""
    return current().turns.give_back(inp.endpoint, inp.run)
