"""The dev host engine and the replay harness are two independent implementations of the host side
of the durable protocol. Driven through the same scenario on the same simulated clock, they must
write the same history (event for event, ids, names, inputs, results, timer due times) and reach
the same output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backends import registry
from core.contracts import ORCHESTRATOR
from core.models import ModelRef, RunRequest
from core.settings import Settings
from devhost.engine import EVENT_NAMES, Engine
from devhost.functions import FunctionIndex
from devhost.store import Store
from orchestrators.run_input import RunInput
from testing.devhost_in_process import Clock, drain
from testing.fakes import FakeAzure, ultrachat_lines
from testing.replay import Replayer

RUN_ID = "ft-00112233445566aa"
KEEP = ("EventType", "EventId", "TaskScheduledId", "TimerId", "Name", "Input", "Result", "FireAt", "Reason")


def normalise(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in events:
        kind = e["EventType"]
        e = {k: v for k, v in e.items() if k in KEEP and v is not None}
        e["EventType"] = EVENT_NAMES.get(kind, kind) if isinstance(kind, int) else kind
        out.append(e)
    return out


def scenario(fake: FakeAzure) -> dict[str, Any]:
    dataset = fake.put_blob("datasets", "chats/support.jsonl", ultrachat_lines(40))
    request = RunRequest(dataset=dataset, config=Settings(BACKEND="local").run_config(), source="blob")
    return RunInput(request=request).model_dump(mode="json")


SCENARIOS = {
    "happy": {},
    "retries": {"failures": {"get_job": 2, "score": 1}},
    "continue_as_new": {"job_states": ["Queued"] + ["Running"] * 30 + ["Completed"]},
    "rollback": {"smoke_status": 500, "live": True},
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_engine_writes_the_harness_history(name, orchestrator_handler, activity_functions, tmp_path):
    knobs = dict(SCENARIOS[name])
    live = knobs.pop("live", False)

    def world() -> FakeAzure:
        fake = FakeAzure(**knobs)
        if live:
            fake.live_endpoint(
                "phi3-ft-endpoint", "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="3")
            )
        return fake

    harness_world = world()
    with registry.use(harness_world.backends()):
        expected = Replayer(
            orchestrator_handler, activity_functions, name=ORCHESTRATOR, instance_id=RUN_ID,
            input_=scenario(harness_world),
        ).run()  # fmt: skip

    engine_world = world()
    clock = Clock()
    import function_app

    engine = Engine(Store(tmp_path / "host.sqlite"), FunctionIndex.from_app(function_app.app), clock)
    with registry.use(engine_world.backends()):
        engine.start(ORCHESTRATOR, RUN_ID, json.dumps(scenario(engine_world)))
        drain(engine, clock)
    status = engine.status(RUN_ID, show_history=True)

    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == expected.output
    assert normalise(status["historyEvents"]) == normalise(expected.histories[-1])
    assert [m for m, _ in engine_world.calls] == [m for m, _ in harness_world.calls]
    assert status["customStatus"] == expected.custom_statuses[-1]
