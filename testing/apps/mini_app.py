"""A small Durable Functions app exercising every engine feature the dev host supports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
FAILURES: dict[str, int] = {}  # activity input -> failures left (set by tests)
CALLS: list[Any] = []


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    CALLS.append(value)
    key = str(value)
    if FAILURES.get(key, 0) > 0:
        FAILURES[key] -= 1
        raise RuntimeError(f"flaky on {value}")
    return value * 2


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    n = context.get_input()
    return (yield context.call_activity("double", n)) + 1


@app.orchestration_trigger(context_name="context")
def mini(context: df.DurableOrchestrationContext):
    state = context.get_input() or {}
    generation = state.get("generation", 0)
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)
    a = yield context.call_activity_with_retry("double", retry, 5)
    context.set_custom_status({"a": a, "generation": generation})
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=state.get("timer_s", 30)))
    b = yield context.call_sub_orchestrator("child", a)
    fan = yield context.task_all([context.call_activity("double", i) for i in range(3)])
    if state.get("wait_for_event"):
        approved = yield context.wait_for_external_event("approve")
    else:
        approved = None
    if generation < state.get("generations", 0):
        context.continue_as_new({**state, "generation": generation + 1})
        return None
    return {"a": a, "b": b, "fan": fan, "approved": approved, "generation": generation}


@app.orchestration_trigger(context_name="context")
def fails(context: df.DurableOrchestrationContext):
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=500, max_number_of_attempts=2)
    yield context.call_activity_with_retry("double", retry, 13)
    return "unreachable"


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new(
        req.route_params["name"], None, req.get_json() if req.get_body() else None
    )
    return client.create_check_status_response(req, instance_id)
