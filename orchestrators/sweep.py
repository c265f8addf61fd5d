"""The cost guard's sweep: delete the endpoints this app created whose TTL has passed, then the
orphaned deployments of the others (0 % traffic, created by a run that is not releasing now).

Started by the timer trigger (ENDPOINT_SWEEP_SCHEDULE) or `POST /api/sweep`. Deterministic like
the run orchestration: the clock is `context.current_utc_datetime`, passed to the activity that
lists expired endpoints; every deletion is announced with an `endpoint.expired` CloudEvent. One
endpoint failing to delete does not stop the others.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from core.contracts import (
    SWEEPER,
    ActivityInput,
    DeleteDeployment,
    DeleteEndpoint,
    ListExpiredEndpoints,
    ListOrphanDeployments,
    Notify,
    payload_of,
)
from orchestrators.finetune import Flow

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=SWEEPER)
def endpoint_sweeper(context: df.DurableOrchestrationContext) -> Flow:
    options: dict[str, Any] = context.get_input() or {}
    retry = df.RetryOptions(
        first_retry_interval_in_milliseconds=int(options.get("retry_first_interval_ms", 5000)),
        max_number_of_attempts=int(options.get("retry_attempts", 4)),
    )

    def call(inp: ActivityInput[Any]) -> df.Task:
        return context.call_activity_with_retry(inp.activity.value, retry, payload_of(inp))

    now = context.current_utc_datetime.isoformat()
    context.set_custom_status({"step": "listing", "checked_at": now})
    listing = ListExpiredEndpoints(now=now)
    expired = listing.parse_output((yield call(listing)))
    deleted: list[str] = []
    failed: dict[str, str] = {}
    notified: dict[str, str] = {}
    for endpoint in expired:
        name = endpoint.name
        context.set_custom_status({"step": "deleting", "endpoint": name, "checked_at": now})
        try:
            yield call(DeleteEndpoint(name=name))
        except Exception as exc:
            failed[name] = " ".join(str(exc).split())[:300]
            continue
        deleted.append(name)
        event = Notify(
            outcome="endpoint.expired",
            subject=name,
            data={
                "endpoint": name,
                "expires_at": endpoint.expires_at,
                "deleted_at": now,
                "deployments": endpoint.deployments,
                "tags": endpoint.tags,
            },
            time=now,
        )
        try:
            delivery = event.parse_output(
                (yield context.call_activity(event.activity.value, payload_of(event)))
            )
            outcome = "delivered" if delivery.delivered else "failed"
            notified[name] = "skipped" if delivery.skipped else outcome
        except Exception:  # a crash of the activity; never stops the sweep
            notified[name] = "failed"
    context.set_custom_status({"step": "finding orphaned deployments", "checked_at": now})
    orphans = ListOrphanDeployments.parse_output((yield call(ListOrphanDeployments())))
    removed: list[str] = []
    for orphan in orphans:
        if orphan.endpoint in deleted:
            continue
        where = f"{orphan.endpoint}/{orphan.deployment}"
        context.set_custom_status(
            {"step": "deleting orphaned deployment", "deployment": where, "checked_at": now}
        )
        try:
            yield call(DeleteDeployment(endpoint=orphan.endpoint, deployment=orphan.deployment))
        except Exception as exc:
            failed[where] = " ".join(str(exc).split())[:300]
            continue
        removed.append(where)
    result = {
        "checked_at": now,
        "expired": [e.name for e in expired],
        "deleted": deleted,
        "orphaned_deployments_deleted": removed,
        "failed": failed,
        "notified": notified,
    }
    context.set_custom_status({"step": "done", **result})
    return result
