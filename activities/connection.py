"""update_connection: point the Prompt flow custom connection at the endpoint (key read inside)."""

from __future__ import annotations

from activities.blueprint import Payload, activity
from backends.registry import current


@activity
def update_connection(payload: Payload) -> str:
    """Returns the scoring URI written; the key stays inside the backend call."""
    return current().connections.publish_connection(payload["name"], payload["endpoint"])
