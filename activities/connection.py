"""update_connection: point the Prompt flow custom connection at the endpoint (key read inside)."""

from __future__ import annotations

from activities.wrapper import activity
from backends.registry import current
from core.contracts import UpdateConnection


@activity
def update_connection(inp: UpdateConnection) -> str:
    """Returns the scoring URI written; the key stays inside the backend call."""
    return current().connections.publish_connection(inp.name, inp.endpoint)
