"""Serving activities: endpoint, blue/green deployment, smoke test, traffic, cleanup."""

from __future__ import annotations

from activities.wrapper import activity
from backends.registry import current
from core.contracts import (
    CreateDeployment,
    DeleteDeployment,
    EnsureEndpoint,
    GetDeploymentState,
    GetEndpoint,
    PrepareEndpoint,
    RemoveUnusedEndpoint,
    SetTraffic,
    SmokeTest,
)
from core.models import DeploymentSpec, EndpointInfo, ProvisioningState, ScoreResult
from core.payload import promptflow_payload


@activity
def ensure_endpoint(inp: EnsureEndpoint) -> EndpointInfo:
    """Begin creating the endpoint if it is missing; return its state without waiting."""
    serving = current().serving
    info = serving.get_endpoint(inp.name)
    if info.state is ProvisioningState.NOT_FOUND:
        serving.begin_create_endpoint(inp.name, dict(inp.tags))
        info = serving.get_endpoint(inp.name)
    return info


@activity
def prepare_endpoint(inp: PrepareEndpoint) -> bool:
    """Begin creating the endpoint if it is missing; never changes an existing one."""
    serving = current().serving
    if serving.get_endpoint(inp.name).state is not ProvisioningState.NOT_FOUND:
        return False
    serving.begin_create_endpoint(inp.name, dict(inp.tags))
    return True


UNUSED_CHECK_TTL_S = 600.0  # the turn held while checking and deleting; given back at once


@activity
def remove_unused_endpoint(inp: RemoveUnusedEndpoint) -> bool:
    """Delete the endpoint if it carries no deployment, in `run`'s release turn, so no other run
    is creating a deployment on it meanwhile (a run releasing now keeps it: not deleted)."""
    backends = current()
    if not backends.turns.take(inp.name, inp.run, UNUSED_CHECK_TTL_S).granted:
        return False
    try:
        serving = backends.serving
        endpoint = serving.get_endpoint(inp.name)
        if endpoint.state in (ProvisioningState.NOT_FOUND, ProvisioningState.DELETING):
            return False
        if endpoint.traffic or serving.list_deployments(inp.name):
            return False
        serving.delete_endpoint(inp.name)
        return True
    finally:
        backends.turns.give_back(inp.name, inp.run)


@activity
def get_endpoint(inp: GetEndpoint) -> EndpointInfo:
    return current().serving.get_endpoint(inp.name)


@activity
def create_deployment(inp: CreateDeployment) -> None:
    current().serving.begin_create_deployment(DeploymentSpec.model_validate(inp.model_dump()))


@activity
def get_deployment_state(inp: GetDeploymentState) -> ProvisioningState:
    return current().serving.get_deployment_state(inp.endpoint, inp.deployment)


@activity
def smoke_test(inp: SmokeTest) -> ScoreResult:
    """Ask the new deployment one question with the Prompt flow tool's exact payload."""
    result = current().serving.score(inp.endpoint, inp.deployment, promptflow_payload(inp.prompt))
    if result.ok and not (result.output or "").strip():
        result = ScoreResult(
            ok=False, status_code=result.status_code, error="empty answer", latency_ms=result.latency_ms
        )
    return result


@activity
def set_traffic(inp: SetTraffic) -> None:
    current().serving.set_traffic(inp.endpoint, dict(inp.traffic))


@activity
def delete_deployment(inp: DeleteDeployment) -> None:
    current().serving.delete_deployment(inp.endpoint, inp.deployment)
