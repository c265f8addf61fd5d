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

from core.models import Delivery
from core.names import SWEEPER, Activity
from orchestrators.finetune import Step

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", orchestration=SWEEPER)
def endpoint_sweeper(context: df.DurableOrchestrationContext) -> Step:
    options: dict[str, Any] = context.get_input() or {}
    retry = df.RetryOptions(
        first_retry_interval_in_milliseconds=int(options.get("retry_first_interval_ms", 5000)),
        max_number_of_attempts=int(options.get("retry_attempts", 4)),
    )
    now = context.current_utc_datetime.isoformat()
    context.set_custom_status({"step": "listing", "checked_at": now})
    expired: list[dict[str, Any]] = yield context.call_activity_with_retry(
        str(Activity.LIST_EXPIRED_ENDPOINTS), retry, {"now": now}
    )
    deleted: list[str] = []
    failed: dict[str, str] = {}
    notified: dict[str, str] = {}
    for endpoint in expired:
        name = endpoint["name"]
        context.set_custom_status({"step": "deleting", "endpoint": name, "checked_at": now})
        try:
            yield context.call_activity_with_retry(str(Activity.DELETE_ENDPOINT), retry, {"name": name})
        except Exception as exc:
            failed[name] = " ".join(str(exc).split())[:300]
            continue
        deleted.append(name)
        event = {
            "outcome": "endpoint.expired",
            "subject": name,
            "data": {
                "endpoint": name,
                "expires_at": endpoint["expires_at"],
                "deleted_at": now,
                "deployments": endpoint["deployments"],
                "tags": endpoint["tags"],
            },
            "time": now,
        }
        try:
            delivery = Delivery.model_validate((yield context.call_activity(str(Activity.NOTIFY), event)))
            outcome = "delivered" if delivery.delivered else "failed"
            notified[name] = "skipped" if delivery.skipped else outcome
        except Exception:  # a crash of the activity; never stops the sweep
            notified[name] = "failed"
    context.set_custom_status({"step": "finding orphaned deployments", "checked_at": now})
    orphans: list[dict[str, Any]] = yield context.call_activity_with_retry(
        str(Activity.LIST_ORPHAN_DEPLOYMENTS), retry, {}
    )
    removed: list[str] = []
    for orphan in orphans:
        if orphan["endpoint"] in deleted:
            continue
        where = f"{orphan['endpoint']}/{orphan['deployment']}"
        context.set_custom_status(
            {"step": "deleting orphaned deployment", "deployment": where, "checked_at": now}
        )
        try:
            yield context.call_activity_with_retry(
                str(Activity.DELETE_DEPLOYMENT),
                retry,
                {"endpoint": orphan["endpoint"], "deployment": orphan["deployment"]},
            )
        except Exception as exc:
            failed[where] = " ".join(str(exc).split())[:300]
            continue
        removed.append(where)
    result = {
        "checked_at": now,
        "expired": [e["name"] for e in expired],
        "deleted": deleted,
        "orphaned_deployments_deleted": removed,
        "failed": failed,
        "notified": notified,
    }
    context.set_custom_status({"step": "done", **result})
    return result
