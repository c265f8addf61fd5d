"""Trigger tests: the registered functions' user code, called with azure.functions request/blob
objects and a real DurableOrchestrationClient whose HTTP transport is a fake task hub."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest

from core.contracts import ORCHESTRATOR
from core.naming import instance_id
from testing.fakes import ACCOUNT_URL, FakeAzure, ultrachat_lines

RPC = "http://127.0.0.1:17071/durabletask/"
PUBLIC = "http://localhost:7071/runtime/webhooks/durabletask/instances/INSTANCEID"
BINDING = json.dumps(
    {
        "taskHubName": "phi3finetune",
        "creationUrls": {
            "createNewInstancePostUri": "http://localhost:7071/runtime/webhooks/durabletask/orchestrators/{functionName}[/{instanceId}]?code=x",
        },
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{PUBLIC}?taskHub=phi3finetune&code=x",
            "sendEventPostUri": f"{PUBLIC}/raiseEvent/{{eventName}}?taskHub=phi3finetune&code=x",
            "terminatePostUri": f"{PUBLIC}/terminate?reason={{text}}&taskHub=phi3finetune&code=x",
            "purgeHistoryDeleteUri": f"{PUBLIC}?taskHub=phi3finetune&code=x",
        },
        "rpcBaseUrl": RPC,
    }
)


class FakeTaskHub:
    """The host's durable management API, as the SDK client calls it (start, status)."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.starts: list[str] = []
        self.race_on_start = False  # another starter wins between our status check and start
        self.events: list[tuple[str, str, Any]] = []

    async def post(self, url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
        if "/raiseEvent/" in url:
            instance, event = url.split("?")[0].removeprefix(f"{RPC}instances/").split("/raiseEvent/")
            self.events.append((instance, event, data))
            return [202, None]
        assert url.startswith(f"{RPC}orchestrators/{ORCHESTRATOR}/"), url
        instance = url.split("?")[0].rsplit("/", 1)[1]
        self.starts.append(instance)
        if self.race_on_start:
            self.instances[instance] = {"runtimeStatus": "Running", "input": None}
        if instance in self.instances and self.instances[instance]["runtimeStatus"] in ("Running", "Pending"):
            return [409, f"An instance with ID '{instance}' already exists."]
        self.instances[instance] = {"runtimeStatus": "Pending", "input": json.loads(data) if data else None}
        if instance.startswith("dry-"):  # dry runs finish at once here, with a plan as output
            self.instances[instance].update(runtimeStatus="Completed", output={"status": "planned"})
        return [202, {"id": instance}]

    async def get(self, url: str, *args: Any) -> list[Any]:
        assert url.startswith(f"{RPC}instances/"), url
        instance = url.split("?")[0].rsplit("/", 1)[1]
        if instance not in self.instances:
            return [404, ""]
        status = self.instances[instance]
        return [
            202,
            {
                "instanceId": instance,
                "name": ORCHESTRATOR,
                "runtimeStatus": status["runtimeStatus"],
                "output": status.get("output"),
                "createdTime": "2026-11-01T08:00:00Z",
                "lastUpdatedTime": "2026-11-01T08:00:01Z",
            },
        ]

    def client(self) -> df.DurableOrchestrationClient:
        client = df.DurableOrchestrationClient(BINDING)
        client._post_async_request = self.post
        client._get_async_request = self.get
        return client


@pytest.fixture
def hub() -> FakeTaskHub:
    return FakeTaskHub()


def user_code(functions: dict[str, Any], name: str) -> Any:
    return functions[name].get_user_function().client_function


def post_runs(functions: dict[str, Any], hub: FakeTaskHub, body: Any) -> func.HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = func.HttpRequest(method="POST", url="http://localhost:7071/api/runs", body=raw, headers={})
    return asyncio.run(user_code(functions, "start_run")(req=req, client=hub.client()))


def blob_event(name: str, etag: str | None) -> func.InputStream:
    props = {"ETag": etag, "ContentLength": 10} if etag else None
    return func.blob.InputStream(data=b"", name=name, uri=f"{ACCOUNT_URL}/{name}", blob_properties=props)


def fire_blob(functions: dict[str, Any], hub: FakeTaskHub, blob: func.InputStream) -> None:
    asyncio.run(user_code(functions, "on_dataset_uploaded")(blob=blob, client=hub.client()))


@pytest.fixture
def dataset(azure: FakeAzure):
    return azure.put_blob("datasets", "chats/support.jsonl", ultrachat_lines(10))


# -- HTTP POST /api/runs -------------------------------------------------------------------------


def test_post_starts_run_and_returns_check_status_payload(functions, hub, dataset):
    resp = post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl"})

    assert resp.status_code == 202
    run_id = instance_id(dataset)
    body = json.loads(resp.get_body())
    assert body["id"] == run_id
    assert body["statusQueryGetUri"].startswith(
        f"http://localhost:7071/runtime/webhooks/durabletask/instances/{run_id}"
    )
    assert resp.headers["Location"] == body["statusQueryGetUri"]
    assert hub.starts == [run_id]
    request = hub.instances[run_id]["input"]["request"]
    assert request["source"] == "http"
    assert request["dataset"]["etag"] == dataset.etag
    assert request["config"]["training_instance_type"] == "Standard_NC24ads_A100_v4"


def test_post_twice_gives_one_run_and_409(functions, hub, dataset):
    first = post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl"})
    second = post_runs(functions, hub, {"dataset": f"{ACCOUNT_URL}/datasets/chats/support.jsonl"})

    assert first.status_code == 202
    assert second.status_code == 409
    body = json.loads(second.get_body())
    assert body["id"] == instance_id(dataset) and body["runtimeStatus"] == "Pending"
    assert "statusQueryGetUri" in body
    assert hub.starts == [instance_id(dataset)]  # never a second start call


def test_post_race_reports_the_winner(functions, hub, dataset):
    hub.race_on_start = True
    resp = post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl"})
    assert resp.status_code == 409
    assert json.loads(resp.get_body())["runtimeStatus"] == "Running"


def test_overrides_and_validation_file_make_a_different_run(functions, hub, azure, dataset):
    azure.put_blob("datasets", "chats/holdout.jsonl", ultrachat_lines(3))
    plain = post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl"})
    tuned = post_runs(
        functions,
        hub,
        {
            "dataset": "datasets/chats/support.jsonl",
            "overrides": {"hyperparameters": {"learning_rate": 0.0001}},
        },
    )
    with_val = post_runs(
        functions,
        hub,
        {"dataset": "datasets/chats/support.jsonl", "validation": "datasets/chats/holdout.jsonl"},
    )

    ids = {json.loads(r.get_body())["id"] for r in (plain, tuned, with_val)}
    assert len(ids) == 3 and {r.status_code for r in (plain, tuned, with_val)} == {202}
    tuned_id = json.loads(tuned.get_body())["id"]
    request = hub.instances[tuned_id]["input"]["request"]
    assert request["config"]["hyperparameters"]["learning_rate"] == 0.0001
    assert request["overrides"]["hyperparameters"] == {
        "learning_rate": 0.0001
    }  # as asked (a retrain reuses it)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "dataset"),
        ({"dataset": ""}, "dataset"),
        ({"dataset": 42}, "dataset"),
        ({"dataset": "datasets/chats/support.jsonl", "extra": 1}, "extra"),
        (
            {"dataset": "datasets/x.jsonl", "overrides": {"hyperparameters": {"learning_rate": -1}}},
            "overrides.hyperparameters",
        ),
        (
            {"dataset": "datasets/x.jsonl", "overrides": {"hyperparameters": {"epochs": 2}}},
            "overrides.hyperparameters",
        ),
        (
            {"dataset": "datasets/x.jsonl", "overrides": {"endpoint": {"name": "bad_name!"}}},
            "overrides.endpoint.name",
        ),
        ({"dataset": "datasets/x.jsonl", "overrides": {"gpu": "A100"}}, "overrides.gpu"),
        ({"dataset": "just-a-name"}, "dataset"),
        ({"dataset": "ftp://host/container/x.jsonl"}, "dataset"),
    ],
)
def test_malformed_body_is_400_naming_the_field(functions, hub, dataset, body, field):
    resp = post_runs(functions, hub, body)

    assert resp.status_code == 400, resp.get_body()
    payload = json.loads(resp.get_body())
    assert payload["error"] == "invalid request body"
    assert any(d["field"].startswith(field) for d in payload["details"]), payload
    assert hub.starts == []


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"datasets/x.jsonl"'])
def test_non_object_body_is_400(functions, hub, raw):
    resp = post_runs(functions, hub, raw)
    assert resp.status_code == 400
    assert json.loads(resp.get_body())["details"]
    assert hub.starts == []


def test_missing_dataset_is_404(functions, hub, azure):
    resp = post_runs(functions, hub, {"dataset": "datasets/nope.jsonl"})
    assert resp.status_code == 404
    assert json.loads(resp.get_body())["details"][0]["field"] == "dataset"
    assert hub.starts == []


# -- Blob trigger ---------------------------------------------------------------------------------


def test_blob_and_http_agree_on_the_run_id(functions, hub, dataset):
    fire_blob(functions, hub, blob_event("datasets/chats/support.jsonl", dataset.etag))
    resp = post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl"})

    assert hub.starts == [instance_id(dataset)]
    assert resp.status_code == 409
    assert hub.instances[instance_id(dataset)]["input"]["request"]["source"] == "blob"


def test_same_blob_version_twenty_times_is_one_run(functions, hub, dataset):
    unquoted = dataset.etag.strip('"')  # Event Grid sends the ETag without quotes
    for i in range(20):
        fire_blob(
            functions, hub, blob_event("datasets/chats/support.jsonl", dataset.etag if i % 2 else unquoted)
        )
    assert list(hub.instances) == [instance_id(dataset)]
    assert hub.starts == [instance_id(dataset)]


def test_new_upload_is_a_new_run(functions, hub, azure, dataset):
    fire_blob(functions, hub, blob_event("datasets/chats/support.jsonl", dataset.etag))
    updated = azure.put_blob("datasets", "chats/support.jsonl", ultrachat_lines(12))
    fire_blob(functions, hub, blob_event("datasets/chats/support.jsonl", updated.etag))
    assert updated.etag != dataset.etag
    assert list(hub.instances) == [instance_id(dataset), instance_id(updated)]


def test_blob_without_etag_is_described(functions, hub, azure, dataset):
    fire_blob(functions, hub, blob_event("datasets/chats/support.jsonl", None))
    assert list(hub.instances) == [instance_id(dataset)]
    assert ("describe", ("datasets/chats/support.jsonl",)) in azure.calls


@pytest.mark.parametrize(
    "name",
    [
        "datasets/chats/_splits/ft-0123456789abcdef/train.jsonl",
        "datasets/_splits/ft-0123456789abcdef/validation.jsonl",
        "datasets/chats/reports/ft-0123456789abcdef/summary.json",
        "datasets/reports/ft-0123456789abcdef/report.jsonl",
        "datasets/notes.md",
        "datasets/chats/data.json",
        "datasets/chats/data.jsonl.gz",
    ],
)
def test_pipeline_outputs_and_non_jsonl_are_ignored(functions, hub, azure, name):
    fire_blob(functions, hub, blob_event(name, '"0x8DC0000000000AB"'))
    assert hub.starts == [] and hub.instances == {}


def test_uppercase_extension_is_a_dataset(functions, hub, azure):
    ref = azure.put_blob("datasets", "CHATS.JSONL", ultrachat_lines(5))
    fire_blob(functions, hub, blob_event("datasets/CHATS.JSONL", ref.etag))
    assert list(hub.instances) == [instance_id(ref)]


# -- dry run and cancel ---------------------------------------------------------------------------


def test_dry_run_answers_with_the_plan_and_does_not_block_the_real_run(functions, hub, dataset):
    resp = post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl", "dry_run": True})

    assert resp.status_code == 200, resp.get_body()
    assert json.loads(resp.get_body()) == {"status": "planned"}
    dry_id = instance_id(dataset, dry_run=True)
    request = hub.instances[dry_id]["input"]["request"]
    assert request["dry_run"] is True and request["real_run_id"] == instance_id(dataset)
    real = post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl"})
    assert real.status_code == 202 and json.loads(real.get_body())["id"] == instance_id(dataset)


def cancel(functions, hub, run_id: str, body: bytes = b"") -> func.HttpResponse:
    req = func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/runs/{run_id}/cancel",
        body=body,
        headers={},
        route_params={"instance_id": run_id},
    )
    return asyncio.run(user_code(functions, "cancel_run")(req=req, client=hub.client()))


def test_cancel_raises_the_event_for_a_running_run(functions, hub, dataset):
    run_id = json.loads(post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl"}).get_body())[
        "id"
    ]
    resp = cancel(functions, hub, run_id, json.dumps({"reason": "wrong file"}).encode())

    assert resp.status_code == 202
    assert json.loads(resp.get_body())["statusQueryGetUri"].startswith("http://localhost:7071/")
    assert hub.events == [(run_id, "cancel", json.dumps({"reason": "wrong file"}))]


def test_cancel_unknown_run_is_404_and_finished_run_is_409(functions, hub, dataset):
    assert cancel(functions, hub, "ft-doesnotexist0000").status_code == 404
    run_id = json.loads(post_runs(functions, hub, {"dataset": "datasets/chats/support.jsonl"}).get_body())[
        "id"
    ]
    hub.instances[run_id]["runtimeStatus"] = "Completed"
    resp = cancel(functions, hub, run_id)
    assert resp.status_code == 409 and "Completed" in json.loads(resp.get_body())["error"]
    assert cancel(functions, hub, run_id, b'{"why": 1}').status_code == 400
    assert hub.events == []
