"""The dev host's Event Grid webhook over real HTTP, as the Functions host serves it: the
subscription validation handshake, an array of Event Grid schema events delivered one invocation
per event (with the durable client binding), bad deliveries, unknown functions; and the app's own
`on_job_status_changed` indexed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devhost.functions import FunctionIndex
from devhost.host import Host
from testing.apps import eventgrid_app
from testing.devhost_in_process import serving
from testing.devhost_subprocess import free_port

HOOK = "/runtime/webhooks/eventgrid"
NOTIFY = {"aeg-event-type": "Notification"}


@pytest.fixture
def host(tmp_path) -> Iterator[str]:
    eventgrid_app.reset()
    port = free_port()
    h = Host(
        tmp_path / "host.sqlite", port, {"TASK_HUB_NAME": "testhub"}, module="testing.apps.eventgrid_app"
    )
    with serving(h):
        yield f"http://127.0.0.1:{port}"


def event(i: int = 0, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"ev-{i}",
        "topic": "/subscriptions/local/resourceGroups/local/providers/Microsoft.MachineLearningServices/"
        "workspaces/local",
        "subject": f"experiments/x/runs/job-{i}",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "eventTime": "2024-05-01T12:00:00.1234567Z",
        "data": {"runId": f"job-{i}", "runStatus": "Completed"},
        "dataVersion": "2",
        "metadataVersion": "1",
        **fields,
    }


def post(
    host: str, body: Any, function: str = "on_status", headers: dict[str, str] = NOTIFY
) -> httpx.Response:
    params = {"functionName": function, "code": "ignored-offline"}
    if isinstance(body, bytes):
        return httpx.post(f"{host}{HOOK}", params=params, content=body, headers=headers, timeout=10)
    return httpx.post(f"{host}{HOOK}", params=params, json=body, headers=headers, timeout=10)


def test_the_app_indexes_its_event_grid_trigger():
    index = FunctionIndex.load("function_app")
    assert "on_job_status_changed" in index.event_grid
    assert index.event_grid["on_job_status_changed"].client_param == "client"
    assert "on_job_status_changed" in index.names


def test_subscription_validation_handshake(host):
    validation = [
        {
            "id": "v-1",
            "topic": "/subscriptions/x",
            "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2024-05-01T12:00:00Z",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x"},
            "dataVersion": "2",
        }
    ]
    resp = post(host, validation, headers={"aeg-event-type": "SubscriptionValidation"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert eventgrid_app.CALLS == []  # the host answers the handshake itself

    bad = post(host, [{"data": {}}], headers={"aeg-event-type": "SubscriptionValidation"})
    assert bad.status_code == 400
    assert bad.json()["details"][0]["field"] == "[0].data.validationCode"


def test_events_are_delivered_one_invocation_each(host):
    resp = post(host, [event(0), event(1, data={"runId": "job-1", "runStatus": "Failed"})])
    assert resp.status_code == 202, resp.text
    assert [c["id"] for c in eventgrid_app.CALLS] == ["ev-0", "ev-1"]
    first = eventgrid_app.CALLS[0]
    assert first["function"] == "on_status"
    assert first["topic"].endswith("/workspaces/local")
    assert first["subject"] == "experiments/x/runs/job-0"
    assert first["event_type"] == "Microsoft.MachineLearningServices.RunStatusChanged"
    assert first["event_time"] == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert first["data_version"] == "2"
    assert first["data"] == {"runId": "job-0", "runStatus": "Completed"}
    assert eventgrid_app.CALLS[1]["data"]["runStatus"] == "Failed"

    # A function without a durable client gets the event alone.
    assert post(host, [event(2)], function="audit").status_code == 202
    assert eventgrid_app.CALLS[-1]["function"] == "audit"

    status = httpx.get(f"{host}/admin/host/status").json()
    assert {"on_status", "audit", "waiter"} <= set(status["functions"])
    assert status["eventGrid"] == {
        "audit": {"events": 1, "failures": 0},
        "on_status": {"events": 2, "failures": 0},
    }


def test_an_event_wakes_an_orchestration_through_the_durable_client(host):
    started = httpx.post(f"{host}/runtime/webhooks/durabletask/orchestrators/waiter/run-1", timeout=10)
    assert started.status_code == 202
    url = started.json()["statusQueryGetUri"]
    resp = post(host, [event(0, subject="runs/run-1", data={"runId": "run-1--ft", "runStatus": "Completed"})])
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 20
    while (body := httpx.get(url).json())["runtimeStatus"] != "Completed":
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert body["output"] == {"runId": "run-1--ft", "runStatus": "Completed"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "(body)"),
        (b"", "(body)"),
        ({"id": "x"}, "(body)"),
        ([], "(body)"),
        (["text"], "[0]"),
        ([event(0), {k: v for k, v in event(1).items() if k != "eventType"}], "[1].eventType"),
        ([event(0, id=7)], "[0].id"),
        ([event(0, eventTime="yesterday")], "[0].eventTime"),
        ([{k: v for k, v in event(0).items() if k != "data"}], "[0].data"),
        ([event(0, topic=["a"])], "[0].topic"),
        ([{"specversion": "1.0", "id": "c", "source": "s", "type": "t"}], "[0].specversion"),
    ],
)
def test_a_malformed_delivery_is_400_naming_the_field_and_invokes_nothing(host, body, field):
    resp = post(host, body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["details"][0]["field"] == field, resp.json()
    assert eventgrid_app.CALLS == []


def test_headers_and_unknown_functions(host):
    missing = post(host, [event(0)], headers={})
    assert missing.status_code == 400
    assert missing.json()["details"][0]["field"] == "aeg-event-type"

    unknown = post(host, [event(0)], function="nope")
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["details"][0]["message"]
    assert post(host, [event(0)], function="waiter").status_code == 404  # not an Event Grid trigger
    no_name = httpx.post(f"{host}{HOOK}", json=[event(0)], headers=NOTIFY)
    assert no_name.status_code == 400 and no_name.json()["details"][0]["field"] == "functionName"

    assert post(host, b"", headers={"aeg-event-type": "Unsubscribe"}).status_code == 202
    assert eventgrid_app.CALLS == []


def test_a_failing_invocation_is_500_and_the_others_still_run(host):
    eventgrid_app.FAIL_ON.add("ev-0")
    resp = post(host, [event(0), event(1)])
    assert resp.status_code == 500
    assert "1 of 2" in resp.json()["details"][0]["message"]
    assert [c["id"] for c in eventgrid_app.CALLS] == ["ev-0", "ev-1"]
    status = httpx.get(f"{host}/admin/host/status").json()
    assert status["eventGrid"]["on_status"] == {"events": 2, "failures": 1}


def _queued_job(run_dir, name: str = "ft-run-1--ft"):
    from core.models import JobState
    from localml import state_files
    from localml.paths import RunPaths
    from localml.training import SPEC_FILE, write_status

    job_dir = RunPaths.at(run_dir).jobs_dir / name
    job_dir.mkdir(parents=True)
    spec = {"output_model_prefix": "phi3-ft", "tags": {"instance-id": "run-1"}}
    state_files.write_json(job_dir / SPEC_FILE, {"spec": spec, "run_dir": str(run_dir)})
    write_status(job_dir, JobState.QUEUED)
    return job_dir


def test_the_local_backend_publishes_run_status_changed_to_the_webhook(host, tmp_path):
    from core.models import JobState
    from core.settings import Settings
    from localml.training import LocalTraining

    run_dir = tmp_path / "run"
    job_dir = _queued_job(run_dir)
    url = f"{host}{HOOK}?functionName=audit"
    LocalTraining(Settings(BACKEND="local", LOCAL_RUN_DIR=str(run_dir), LOCAL_JOB_EVENTS_URL=url)).cancel_job(
        job_dir.name
    )
    [call] = eventgrid_app.CALLS
    assert call["event_type"] == "Microsoft.MachineLearningServices.RunStatusChanged"
    assert call["topic"] == (
        "/subscriptions/local/resourceGroups/local/providers/Microsoft.MachineLearningServices/workspaces/local"
    )
    assert call["subject"] == f"experiments/phi3-ft/runs/{job_dir.name}"
    assert call["data"]["runId"] == job_dir.name and call["data"]["runStatus"] == "Canceled"
    assert call["data"]["runTags"] == {"instance-id": "run-1", "job_name": job_dir.name}
    assert call["data_version"] == "2"

    # The workspace in the topic is the project's, so on_job_status_changed's check accepts it.
    from localml.training import status_event
    from triggers.job_events import _workspace_of

    assert _workspace_of(status_event(job_dir, JobState.CANCELED, "my-ws")["topic"]) == "my-ws"


def test_publishing_is_best_effort(tmp_path, caplog):
    from core.models import JobState
    from core.settings import Settings
    from localml.training import LocalTraining, publish_status_event

    run_dir = tmp_path / "run"
    job_dir = _queued_job(run_dir)
    dead = f"http://127.0.0.1:{free_port()}{HOOK}?functionName=on_job_status_changed&code=secret-key"
    settings = Settings(BACKEND="local", LOCAL_RUN_DIR=str(run_dir), LOCAL_JOB_EVENTS_URL=dead)
    LocalTraining(settings).cancel_job(job_dir.name)  # nothing listens: logged, the cancel stands
    assert LocalTraining(settings).get_job(job_dir.name).state is JobState.CANCELED
    assert "publishing the Canceled event failed" in caplog.text and "secret-key" not in caplog.text
    assert (
        publish_status_event(
            Settings(BACKEND="local", LOCAL_RUN_DIR=str(run_dir)), job_dir, JobState.CANCELED
        )
        is False
    )
