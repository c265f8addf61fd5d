"""A small app with Event Grid triggers for the dev host's Event Grid webhook: one records every
event and raises it on the orchestration its subject names (through the durable client binding),
one records only (no durable client)."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
CALLS: list[dict[str, Any]] = []  # one entry per invocation, in order
FAIL_ON: set[str] = set()  # event ids whose invocation should raise (set by tests)


def reset() -> None:
    CALLS.clear()
    FAIL_ON.clear()


def _record(function: str, event: func.EventGridEvent) -> None:
    CALLS.append(
        {
            "function": function,
            "id": event.id,
            "topic": event.topic,
            "subject": event.subject,
            "event_type": event.event_type,
            "event_time": event.event_time,
            "data_version": event.data_version,
            "data": event.get_json(),
        }
    )
    if event.id in FAIL_ON:
        raise RuntimeError(f"event {event.id} failed on purpose")


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    said = yield context.wait_for_external_event("job_status_changed")
    return said


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def on_status(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    _record("on_status", event)
    instance = event.subject.removeprefix("runs/")
    if instance != event.subject:
        await client.raise_event(instance, "job_status_changed", event.get_json())


@app.event_grid_trigger(arg_name="ev")
def audit(ev: func.EventGridEvent) -> None:
    _record("audit", ev)
