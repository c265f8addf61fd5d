"""The cost guard's activities: renew an endpoint's expiry, find expired endpoints this app
created, delete one, find orphaned deployments. The timer-started sweeper orchestration
(orchestrators/sweep.py) calls them."""

from __future__ import annotations

from datetime import datetime

from activities.wrapper import activity
from backends.registry import current
from core.contracts import (
    DeleteEndpoint,
    ExpiredEndpoint,
    ListExpiredEndpoints,
    ListOrphanDeployments,
    OrphanDeployment,
    UpdateEndpointTags,
)
from core.models import ProvisioningState
from core.naming import APP_TAG, CREATED_BY_TAG, EXPIRES_TAG, expired


@activity
def update_endpoint_tags(inp: UpdateEndpointTags) -> None:
    current().serving.update_endpoint_tags(inp.name, dict(inp.tags))


@activity
def list_expired_endpoints(inp: ListExpiredEndpoints) -> list[ExpiredEndpoint]:
    """Endpoints tagged created-by this app whose expires_at is at or before `now` (the
    orchestration's clock) and that are not already being deleted. Untagged endpoints are never
    listed, whatever their name."""
    now = datetime.fromisoformat(inp.now)
    serving = current().serving
    out: list[ExpiredEndpoint] = []
    for endpoint in serving.list_endpoints():
        if endpoint.state is not ProvisioningState.DELETING and expired(endpoint.tags, now):
            out.append(
                ExpiredEndpoint(
                    name=endpoint.name,
                    expires_at=endpoint.tags[EXPIRES_TAG],
                    tags=dict(endpoint.tags),
                    deployments=sorted(endpoint.traffic) or list(endpoint.deployments),
                )
            )
    return sorted(out, key=lambda e: e.name)


@activity
def delete_endpoint(inp: DeleteEndpoint) -> None:
    current().serving.delete_endpoint(inp.name)


@activity
def list_orphan_deployments(inp: ListOrphanDeployments) -> list[OrphanDeployment]:
    """Deployments this app created (created-by tag) on its endpoints that carry 0 % traffic and
    belong to no run releasing now. Only the holder of an endpoint's release turn creates
    deployments on it, and a release ends with its new deployment live or deleted, so any other
    0 % deployment of ours is a leftover (a crashed or stalled release) still billing its VMs.
    The deployments are listed before the turn is read: one created after the listing is not in
    it, and one in it was created by the holder read after, or by a release that has ended."""
    backends = current()
    out: list[OrphanDeployment] = []
    for endpoint in backends.serving.list_endpoints():
        if endpoint.tags.get(CREATED_BY_TAG) != APP_TAG or endpoint.state is ProvisioningState.DELETING:
            continue
        idle = [
            d
            for d in backends.serving.list_deployments(endpoint.name)
            if endpoint.traffic.get(d.name, 0) == 0
            and d.tags.get(CREATED_BY_TAG) == APP_TAG
            and d.state is not ProvisioningState.DELETING
        ]
        if not idle:
            continue
        turn = backends.turns.current(endpoint.name)
        releasing = turn.holder if turn is not None else None
        for d in idle:
            if d.tags.get("instance-id") != releasing:
                out.append(
                    OrphanDeployment(endpoint=endpoint.name, deployment=d.name, run=d.tags.get("instance-id"))
                )
    return out
