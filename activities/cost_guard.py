"""The cost guard's activities: renew an endpoint's expiry, find expired endpoints this app
created, delete one. The timer-started sweeper orchestration (orchestrators/sweep.py) calls them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from activities.blueprint import Payload, activity
from backends.registry import current
from core.models import ProvisioningState
from core.naming import EXPIRES_TAG, expired


@activity
def update_endpoint_tags(payload: Payload) -> None:
    current().serving.update_endpoint_tags(
        payload["name"], {str(k): str(v) for k, v in payload["tags"].items()}
    )


@activity
def list_expired_endpoints(payload: Payload) -> list[dict[str, Any]]:
    """Endpoints tagged created-by this app whose expires_at is at or before `now` (the
    orchestration's clock) and that are not already being deleted. Untagged endpoints are never
    listed, whatever their name."""
    now = datetime.fromisoformat(payload["now"])
    serving = current().serving
    out = []
    for endpoint in serving.list_endpoints():
        if endpoint.state is not ProvisioningState.DELETING and expired(endpoint.tags, now):
            out.append(
                {
                    "name": endpoint.name,
                    "expires_at": endpoint.tags[EXPIRES_TAG],
                    "tags": dict(endpoint.tags),
                    "deployments": sorted(endpoint.traffic) or list(endpoint.deployments),
                }
            )
    return sorted(out, key=lambda e: e["name"])


@activity
def delete_endpoint(payload: Payload) -> None:
    current().serving.delete_endpoint(payload["name"])
