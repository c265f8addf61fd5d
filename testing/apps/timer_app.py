"""A small app with timer triggers for the dev host's timer runner (schedules come from app settings)."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
CALLS: list[dict[str, Any]] = []  # one entry per timer invocation
STARTED: list[str] = []  # instance ids the starter created
FAIL: set[str] = set()  # names of the timer functions that should raise (set by tests)
EVENTS: defaultdict[str, threading.Event] = defaultdict(threading.Event)


def reset() -> None:
    CALLS.clear()
    STARTED.clear()
    FAIL.clear()
    EVENTS.clear()


def _record(name: str, timer: func.TimerRequest) -> None:
    CALLS.append({"function": name, "past_due": timer.past_due, "status": timer.schedule_status})
    EVENTS[name].set()
    if name in FAIL:
        raise RuntimeError(f"{name} failed on purpose")


@app.activity_trigger(input_name="payload")
def echo(payload: dict[str, Any]) -> dict[str, Any]:
    EVENTS["echo"].set()
    return payload


@app.orchestration_trigger(context_name="context")
def stamped(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("echo", context.get_input()))


@app.timer_trigger(schedule="%STARTER_SCHEDULE%", arg_name="timer", run_on_startup=False)
@app.durable_client_input(client_name="client")
async def starter(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    _record("starter", timer)
    STARTED.append(await client.start_new("stamped", None, {"past_due": timer.past_due}))
    EVENTS["started"].set()


@app.timer_trigger(schedule="%FLAKY_SCHEDULE%", arg_name="tick")
def flaky(tick: func.TimerRequest) -> None:
    _record("flaky", tick)


@app.timer_trigger(schedule="%BOOT_SCHEDULE%", arg_name="timer", run_on_startup=True)
async def on_boot(timer: func.TimerRequest) -> None:
    _record("on_boot", timer)
