"""on_job_status_changed: Azure ML's RunStatusChanged wakes the run that owns the job, and nothing
else: events of other jobs, other workspaces or finished runs are ignored, each logged once."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import azure.functions as func
import pytest

from core.contracts import JOB_EVENT
from core.naming import job_name, run_of_job
from tests.triggers.test_triggers import FakeTaskHub, user_code
from triggers import job_events

RUN = "ft-0123456789abcdef"
TOPIC = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices/workspaces/{ws}"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeTaskHub:
    monkeypatch.setenv("AZUREML_WORKSPACE", "ws-phi3")
    monkeypatch.delenv("AI_PROJECT_NAME", raising=False)
    from core.settings import get_settings

    get_settings.cache_clear()
    job_events._ignored.clear()
    hub = FakeTaskHub()
    hub.instances[RUN] = {"runtimeStatus": "Running", "input": None}
    yield hub
    get_settings.cache_clear()


def event(
    job: Any = f"{RUN}-finetune",
    status: Any = "Completed",
    *,
    ws: str = "ws-phi3",
    event_type: str = job_events.RUN_STATUS_CHANGED,
    data: Any = None,
) -> func.EventGridEvent:
    body = {"runId": job, "runStatus": status, "runTags": {"token": "not-for-us"}} if data is None else data
    return func.EventGridEvent(
        id="e-1",
        data=body,
        topic=TOPIC.format(ws=ws),
        subject=f"experiments/x/runs/{job}",
        event_type=event_type,
        event_time=None,
        data_version="2",
    )


def deliver(functions: dict[str, Any], hub: FakeTaskHub, e: func.EventGridEvent) -> None:
    asyncio.run(user_code(functions, "on_job_status_changed")(event=e, client=hub.client()))


def test_the_event_wakes_the_run_that_owns_the_job(functions, hub):
    deliver(functions, hub, event())
    assert [(i, name, json.loads(data)) for i, name, data in hub.events] == [
        (RUN, JOB_EVENT, {"job": f"{RUN}-finetune", "status": "Completed"})
    ]


def test_a_duplicate_event_is_raised_again_and_the_run_decides(functions, hub):
    deliver(functions, hub, event())
    deliver(functions, hub, event())
    assert len(hub.events) == 2  # the orchestrator reads the job after each: no step twice


@pytest.mark.parametrize(
    "bad",
    [
        event(job="someone-elses-job"),
        event(job="ft-0123456789abcdef"),  # no suffix
        event(job="ft-NOTHEX0123456789-finetune"),
        event(job=None),
        event(job=["ft-0123456789abcdef-finetune"]),
        event(data="not an object"),
        event(ws="another-workspace"),
        event(event_type="Microsoft.MachineLearningServices.ModelRegistered"),
    ],
)
def test_events_not_for_a_run_of_ours_are_ignored(functions, hub, bad):
    deliver(functions, hub, bad)
    assert hub.events == []


def test_a_run_that_is_not_waiting_is_not_woken(functions, hub):
    hub.instances[RUN]["runtimeStatus"] = "Completed"
    deliver(functions, hub, event())
    deliver(functions, hub, event(job=f"ft-{'f' * 16}-finetune"))  # no such run at all
    assert hub.events == []


def test_each_ignored_job_is_logged_once(functions, hub, caplog):
    with caplog.at_level(logging.INFO, logger="triggers"):
        for _ in range(5):
            deliver(functions, hub, event(job="someone-elses-job"))
    assert sum("someone-elses-job" in r.getMessage() for r in caplog.records) == 1


def test_the_status_is_passed_shortened_and_tags_are_never_forwarded(functions, hub):
    deliver(functions, hub, event(status="X" * 500))
    [(_, _, data)] = hub.events
    assert json.loads(data) == {"job": f"{RUN}-finetune", "status": "X" * 40}
    assert "not-for-us" not in data


def test_run_of_job_inverts_job_name():
    assert run_of_job(job_name(RUN)) == RUN
    assert run_of_job(job_name("dry-00112233445566aa")) == "dry-00112233445566aa"
    assert run_of_job("ft-0123456789abcde-finetune") is None  # 15 hex digits
    assert run_of_job(42) is None
