"""Start a run exactly once per (dataset version, validation file, overrides)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import azure.durable_functions as df

from core.contracts import ORCHESTRATOR
from core.models import RunRequest
from orchestrators.run_input import RunInput

log = logging.getLogger("triggers")


@dataclass(frozen=True)
class StartOutcome:
    instance_id: str
    started: bool
    existing_status: str | None = None  # runtime status of the run that already existed


async def _existing(client: df.DurableOrchestrationClient, instance_id: str) -> str | None:
    status = await client.get_status(instance_id)
    return status.runtime_status.value if status.runtime_status is not None else None


async def start_once(
    client: df.DurableOrchestrationClient, instance_id: str, request: RunRequest
) -> StartOutcome:
    """Start the orchestration unless an instance with this id exists (in any state).

    The id is derived from the blob version, so duplicate events and repeated POSTs land here
    with the same id. If two starts race, the host refuses the second (host.json
    `overridableExistingInstanceStates: NonRunningStates`) and we report the winner.
    """
    existing = await _existing(client, instance_id)
    if existing is not None:
        log.info("run %s already exists (%s); not starting another", instance_id, existing)
        return StartOutcome(instance_id, started=False, existing_status=existing)
    try:
        await client.start_new(ORCHESTRATOR, instance_id, RunInput(request=request).model_dump(mode="json"))
    except Exception:
        existing = await _existing(client, instance_id)
        if existing is None:
            raise
        return StartOutcome(instance_id, started=False, existing_status=existing)
    log.info("started run %s for %s (%s)", instance_id, request.dataset.path, request.source)
    return StartOutcome(instance_id, started=True)
