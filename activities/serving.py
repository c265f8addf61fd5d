"""Serving activities: endpoint, blue/green deployment, smoke test, traffic, cleanup."""

from __future__ import annotations

from typing import Any

from activities.blueprint import Payload, activity
from backends.registry import current
from core.models import DeploymentSpec, ProvisioningState, ScoreResult
from core.payload import promptflow_payload


@activity
def ensure_endpoint(payload: Payload) -> dict[str, Any]:
    """Begin creating the endpoint if it is missing; return its state without waiting."""
    serving = current().serving
    info = serving.get_endpoint(payload["name"])
    if info.state is ProvisioningState.NOT_FOUND:
        serving.begin_create_endpoint(payload["name"], dict(payload["tags"]))
        info = serving.get_endpoint(payload["name"])
    return info.model_dump(mode="json")


@activity
def get_endpoint(payload: Payload) -> dict[str, Any]:
    return current().serving.get_endpoint(payload["name"]).model_dump(mode="json")


@activity
def create_deployment(payload: Payload) -> None:
    current().serving.begin_create_deployment(DeploymentSpec.model_validate(payload))


@activity
def get_deployment_state(payload: Payload) -> str:
    return current().serving.get_deployment_state(payload["endpoint"], payload["deployment"]).value


@activity
def smoke_test(payload: Payload) -> dict[str, Any]:
    """Ask the new deployment one question with the Prompt flow tool's exact payload."""
    result = current().serving.score(
        payload["endpoint"], payload["deployment"], promptflow_payload(payload["prompt"])
    )
    if result.ok and not (result.output or "").strip():
        result = ScoreResult(
            ok=False, status_code=result.status_code, error="empty answer", latency_ms=result.latency_ms
        )
    return result.model_dump(mode="json")


@activity
def set_traffic(payload: Payload) -> None:
    traffic = {str(k): int(v) for k, v in payload["traffic"].items()}
    current().serving.set_traffic(payload["endpoint"], traffic)


@activity
def delete_deployment(payload: Payload) -> None:
    current().serving.delete_deployment(payload["endpoint"], payload["deployment"])
