"""Starters of the cost guard's sweep: a timer (ENDPOINT_SWEEP_SCHEDULE, NCRONTAB) and
`POST /api/sweep` for a sweep on demand (answers with the durable status links)."""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func

from core.contracts import SWEEPER
from core.settings import get_settings

bp = df.Blueprint()
log = logging.getLogger("triggers")


def sweep_input() -> dict[str, int]:
    settings = get_settings()
    return {
        "retry_attempts": settings.ACTIVITY_RETRY_ATTEMPTS,
        "retry_first_interval_ms": settings.ACTIVITY_RETRY_FIRST_INTERVAL_MS,
    }


@bp.timer_trigger(schedule="%ENDPOINT_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def sweep_expired_endpoints(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    instance = await client.start_new(SWEEPER, None, sweep_input())
    log.info("endpoint sweep %s started%s", instance, " (past due)" if timer.past_due else "")


@bp.route(route="sweep", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def sweep_now(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance = await client.start_new(SWEEPER, None, sweep_input())
    return client.create_check_status_response(req, instance)
