"""A hostile caller against the HTTP surface (issue 15, item 3): every input below gets its exact
status and a clear message in the `{"error", "details": [{"field", "message"}]}` shape, and a
refused request costs no storage call and starts nothing.

The app's routes are driven through the registered functions' code (azure.functions requests, a
real DurableOrchestrationClient over a recording task hub, an in-memory datasets store that
names its account like `BlobDatasetStore.account_url`); 405s and the management routes also
through the dev host's HTTP layer (devhost/http.py) in-process.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from backends import registry
from backends.base import BlobStoreError
from core.contracts import ORCHESTRATOR
from core.settings import Settings, get_settings
from testing.fakes import FakeAzure, ultrachat_lines

AZURE_ACCOUNT = "https://phi3data.blob.core.windows.net"
AZURITE_ACCOUNT = "http://127.0.0.1:10000/devstoreaccount1"
DATASET = "datasets/chats/support.jsonl"
RPC = "http://127.0.0.1:17071/durabletask/"
PUBLIC = "http://localhost:7071/runtime/webhooks/durabletask/instances/INSTANCEID"
BINDING = json.dumps(
    {
        "taskHubName": "hostile",
        "creationUrls": {},
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{PUBLIC}?taskHub=hostile",
            "sendEventPostUri": f"{PUBLIC}/raiseEvent/{{eventName}}?taskHub=hostile",
            "terminatePostUri": f"{PUBLIC}/terminate?reason={{text}}&taskHub=hostile",
            "purgeHistoryDeleteUri": f"{PUBLIC}?taskHub=hostile",
        },
        "rpcBaseUrl": RPC,
    }
)
RUN_ID = "ft-0123456789abcdef"


# -- doubles ---------------------------------------------------------------------------------------


class RecordingHub:
    """The durable management API as the SDK client calls it, recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.instances: dict[str, str] = {RUN_ID: "Running"}
        self.fail = False

    async def post(self, url: str, data: Any = None, *args: Any, **kwargs: Any) -> list[Any]:
        self.calls.append(("POST", url))
        if self.fail:
            raise ConnectionError("task hub down")
        instance = url.split("?")[0].rsplit("/", 1)[1]
        if "/raiseEvent/" in url:
            return [202, None]
        self.instances[instance] = "Pending"
        return [202, {"id": instance}]

    async def get(self, url: str, *args: Any) -> list[Any]:
        self.calls.append(("GET", url))
        if self.fail:
            raise ConnectionError("task hub down")
        instance = url.split("?")[0].rsplit("/", 1)[1]
        if instance not in self.instances:
            return [404, ""]
        return [
            200,
            {
                "instanceId": instance,
                "name": ORCHESTRATOR,
                "runtimeStatus": self.instances[instance],
                "createdTime": "2026-11-01T08:00:00Z",
                "lastUpdatedTime": "2026-11-01T08:00:01Z",
            },
        ]

    @property
    def starts(self) -> list[str]:
        return [url for method, url in self.calls if method == "POST" and "/orchestrators/" in url]

    def client(self) -> df.DurableOrchestrationClient:
        client = df.DurableOrchestrationClient(BINDING)
        client._post_async_request = self.post
        client._get_async_request = self.get
        return client


class AccountStore(FakeAzure):
    """The in-memory datasets store, naming its account as BlobDatasetStore does; `failure`
    makes `describe` raise (after recording the call)."""

    def __init__(self, account_url: str) -> None:
        super().__init__()
        self.account_url = account_url
        self.failure: BaseException | None = None

    def describe(self, blob: Any) -> Any:
        if self.failure is not None:
            self.calls.append(("describe", (blob.path,)))
            raise self.failure
        return super().describe(blob)


@pytest.fixture
def hub() -> RecordingHub:
    return RecordingHub()


def _store(account_url: str) -> Iterator[AccountStore]:
    store = AccountStore(account_url)
    for container, name in (
        ("datasets", "chats/support.jsonl"),
        ("extra", "x.jsonl"),
        ("private", "s.jsonl"),
    ):
        store.put_blob(container, name, ultrachat_lines(10))
    store.calls.clear()
    with registry.use(store.backends()):
        yield store


@pytest.fixture
def store() -> Iterator[AccountStore]:
    yield from _store(AZURE_ACCOUNT)


@pytest.fixture
def azurite_store() -> Iterator[AccountStore]:
    yield from _store(AZURITE_ACCOUNT)


def call(
    functions: dict[str, Any], hub: RecordingHub, method: str, path: str, body: Any
) -> func.HttpResponse:
    """Invoke the function behind `path` the way the host does."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    cancel = re.fullmatch(r"/api/runs/(?P<instance_id>.*)/cancel", path)
    name = "cancel_run" if cancel else "start_run"
    assert cancel or path == "/api/runs", path
    req = func.HttpRequest(
        method=method,
        url=f"http://localhost:7071{path}",
        body=raw,
        headers={},
        route_params=cancel.groupdict() if cancel else {},
    )
    user = functions[name].get_user_function().client_function
    return asyncio.run(user(req=req, client=hub.client()))


def assert_refused(
    resp: func.HttpResponse, status: int, fragment: str, store: AccountStore, hub: RecordingHub
):
    raw = resp.get_body()
    assert resp.status_code == status, raw[:500]
    body = json.loads(raw)
    assert isinstance(body["error"], str) and body["error"]
    assert body["details"] and all(set(d) == {"field", "message"} for d in body["details"]), body
    assert fragment in json.dumps(body, ensure_ascii=False), body
    assert len(raw) < 2000, f"{len(raw)}-byte answer: a value is echoed back"
    assert store.calls == [], store.calls  # no storage call for a refused request
    assert hub.starts == []  # and no run


# -- the hostile table ------------------------------------------------------------------------------

BIG = "x" * (70 * 1024)
NESTED = (
    b'{"dataset": "datasets/a.jsonl", "overrides": {"hyperparameters": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
)
A, ZA = AZURE_ACCOUNT, AZURITE_ACCOUNT
R, C = "/api/runs", f"/api/runs/{RUN_ID}/cancel"
P = "POST"
PATTERN = "should match pattern"


def ds(dataset: Any, **fields: Any) -> dict[str, Any]:
    return {"dataset": dataset, **fields}


def body_with(**fields: Any) -> dict[str, Any]:
    return {"dataset": DATASET, **fields}


def hyper(**fields: Any) -> dict[str, Any]:
    return body_with(overrides={"hyperparameters": fields})


def ep(**fields: Any) -> dict[str, Any]:
    return body_with(overrides={"endpoint": fields})


def model(**fields: Any) -> dict[str, Any]:
    return body_with(overrides={"model": fields})


def raw_hyper(value: bytes) -> bytes:
    return b'{"dataset": "datasets/a.jsonl", "overrides": {"hyperparameters": ' + value + b"}}"


# (case, method, path, body, status, fragment of the answer); the configured account is A
# fmt: off
HOSTILE: list[tuple[str, str, str, Any, int, str]] = [
    # size, shape, types
    ("oversized body", P, R, json.dumps({"dataset": BIG}).encode(), 413, "at most 65536"),
    ("empty body", P, R, b"", 400, "Invalid JSON"),
    ("broken JSON", P, R, b'{"dataset": ', 400, "Invalid JSON"),
    ("not UTF-8", P, R, b'{"dataset": "\xff\xfe"}', 400, "Invalid JSON"),
    ("UTF-8 BOM", P, R, b'\xef\xbb\xbf{"dataset": "datasets/a.jsonl"}', 400, "Invalid JSON"),
    ("JSON array", P, R, b"[1, 2]", 400, "Input should be an object"),
    ("JSON string", P, R, b'"datasets/x.jsonl"', 400, "Input should be an object"),
    ("JSON null", P, R, b"null", 400, "Input should be an object"),
    ("absurd nesting", P, R, NESTED, 400, "recursion limit"),
    ("unknown field", P, R, body_with(extra=1), 400, "Extra inputs are not permitted"),
    ("huge unknown key", P, R, body_with(**{"k" * 5000: 1}), 400, "Extra inputs are not permitted"),
    ("dataset missing", P, R, {}, 400, '"field": "dataset"'),
    ("dataset number", P, R, ds(42), 400, "valid string"),
    ("dataset null", P, R, ds(None), 400, "valid string"),
    ("dataset list", P, R, ds([DATASET]), 400, "valid string"),
    ("dataset empty", P, R, ds(""), 400, "at least 1 character"),
    ("dataset over 2048 chars", P, R, ds("datasets/" + "a" * 3000), 400, "at most 2048"),
    ("validation empty", P, R, body_with(validation=""), 400, "at least 1 character"),
    ("dry_run 'yes'", P, R, body_with(dry_run="yes"), 400, "valid boolean"),
    ("dry_run 'true'", P, R, body_with(dry_run="true"), 400, "valid boolean"),
    ("dry_run 1", P, R, body_with(dry_run=1), 400, "valid boolean"),
    ("dry_run null", P, R, body_with(dry_run=None), 400, "valid boolean"),
    ("overrides a string", P, R, body_with(overrides="x"), 400, "Input should be an object"),
    ("epochs '2'", P, R, hyper(num_train_epochs="2"), 400, "valid integer"),
    ("epochs true", P, R, hyper(num_train_epochs=True), 400, "valid integer"),
    ("epochs 2.5", P, R, hyper(num_train_epochs=2.5), 400, "valid integer"),
    ("epochs 1e400", P, R, raw_hyper(b'{"num_train_epochs": 1e400}'), 400, "valid integer"),
    ("learning rate '0.1'", P, R, hyper(learning_rate="0.1"), 400, "valid number"),
    ("learning rate NaN", P, R, raw_hyper(b'{"learning_rate": NaN}'), 400, "learning_rate"),
    ("unknown hyperparameter", P, R, hyper(epochs=2), 400, "Extra inputs"),
    ("instance_count '2'", P, R, ep(instance_count="2"), 400, "valid integer"),
    ("instance_count 0", P, R, ep(instance_count=0), 400, "greater than or equal to 1"),
    ("unknown endpoint field", P, R, ep(nme="x"), 400, "Extra inputs"),
    # names that end up in Azure resource paths
    ("connection a/../../b", P, R, ep(connection_name="a/../../b"), 400, PATTERN),
    ("connection empty", P, R, ep(connection_name=""), 400, PATTERN),
    ("connection 34 chars", P, R, ep(connection_name="c" * 34), 400, PATTERN),
    ("connection with NUL", P, R, ep(connection_name="conn\x00x"), 400, PATTERN),
    ("endpoint a/../b", P, R, ep(name="a/../b"), 400, PATTERN),
    ("instance type with /", P, R, ep(instance_type="Standard/../x"), 400, PATTERN),
    ("training type with space", P, R, body_with(overrides={"training_instance_type": "A B"}), 400, PATTERN),
    ("model name ../../x", P, R, model(name="../../x"), 400, PATTERN),
    ("model version 1/../2", P, R, model(version="1/../2"), 400, PATTERN),
    ("registry with ..", P, R, model(registry="azureml/../evil"), 400, PATTERN),
    # another account, host or scheme: the answer names the expected account
    ("another host", P, R, ds("https://evil.example.com/datasets/x.jsonl"), 400, A),
    ("another account", P, R, ds("https://other.blob.core.windows.net/datasets/x.jsonl"), 400, A),
    ("lookalike host", P, R, ds(f"{A}.evil.com/datasets/x.jsonl"), 400, "another host"),
    ("metadata address", P, R, ds("http://169.254.169.254/metadata/instance?api-version=2021-02-01"), 400, A),
    ("metadata address https", P, R, ds("https://169.254.169.254/datasets/x.jsonl"), 400, "another host"),
    ("http for an https account", P, R, ds(f"http://phi3data.blob.core.windows.net/{DATASET}"), 400,
     "http instead of https"),
    ("another port", P, R, ds(f"{A}:8443/{DATASET}"), 400, "another host"),
    ("invalid port", P, R, ds(f"{A}:99999/{DATASET}"), 400, "not a valid URL"),
    ("user info in URL", P, R, ds(f"https://u:pw@phi3data.blob.core.windows.net/{DATASET}"), 400,
     "user info"),
    ("ftp URL", P, R, ds("ftp://phi3data.blob.core.windows.net/datasets/x.jsonl"), 400, "not a blob URL"),
    ("file URL", P, R, ds("file:///etc/passwd"), 400, "not a blob URL"),
    ("validation on another host", P, R, body_with(validation="https://evil.example.com/datasets/v.jsonl"),
     400, '"field": "validation"'),
    ("account URL without a blob", P, R, ds(f"{A}/datasets"), 400, "no container and blob name"),
    # containers
    ("container not allowed", P, R, ds("private/secret.jsonl"), 400, "allowed: datasets"),
    ("container not allowed, URL", P, R, ds(f"{A}/private/secret.jsonl"), 400, "DATASET_CONTAINERS"),
    ("$root container", P, R, ds("$root/x.jsonl"), 400, "not a dataset container"),
    ("validation container not allowed", P, R, body_with(validation="private/v.jsonl"), 400,
     "allowed: datasets"),
    ("uppercase container", P, R, ds("Datasets/x.jsonl"), 400, "invalid container name"),
    ("container only", P, R, ds("datasets"), 400, "needs a container and a blob name"),
    ("leading slash", P, R, ds("/datasets/x.jsonl"), 400, "needs a container and a blob name"),
    ("javascript: URL", P, R, ds("javascript:alert(1)"), 400, "needs a container and a blob name"),
    # paths
    ("dot-dot", P, R, ds("datasets/../crash/r1.jsonl"), 400, "relative paths are not allowed"),
    ("encoded dot-dot", P, R, ds("datasets/%2e%2e/crash/r1.jsonl"), 400, "relative paths"),
    ("double-encoded dot-dot", P, R, ds("datasets/%252E%252E/x.jsonl"), 400, "relative paths"),
    ("encoded dot-dot in URL", P, R, ds(f"{A}/datasets/a/%2E%2E/%2E%2E/private/x.jsonl"), 400,
     "relative paths"),
    ("encoded slash dot-dot", P, R, ds("datasets/a%2F..%2Fx.jsonl"), 400, "relative paths"),
    ("single dot", P, R, ds("datasets/./x.jsonl"), 400, "relative paths"),
    ("three dots", P, R, ds("datasets/.../x.jsonl"), 400, "relative paths"),
    ("empty segment", P, R, ds("datasets/a//x.jsonl"), 400, "empty path segment"),
    ("trailing slash", P, R, ds("datasets/dir/"), 400, "needs a container and a blob name"),
    ("trailing dot", P, R, ds("datasets/x.jsonl."), 400, "ends with '.'"),
    ("backslash traversal", P, R, ds("datasets/..\\..\\x.jsonl"), 400, "backslash"),
    ("encoded backslash", P, R, ds("datasets/a%5Cx.jsonl"), 400, "backslash"),
    ("NUL", P, R, ds("datasets/x\x00.jsonl"), 400, "U+0000"),
    ("encoded NUL", P, R, ds("datasets/x%00.jsonl"), 400, "U+0000"),
    ("newline", P, R, ds("datasets/x\n.jsonl"), 400, "U+000A"),
    ("trailing newline", P, R, ds(DATASET + "\n"), 400, "U+000A"),
    ("DEL", P, R, ds("datasets/x\x7f.jsonl"), 400, "U+007F"),
    ("C1 control", P, R, ds("datasets/x\x85.jsonl"), 400, "U+0085"),
    ("bidi override", P, R, ds("datasets/x\u202elnosj.exe"), 400, "U+202E"),
    ("zero-width space", P, R, ds("datasets/x\u200b.jsonl"), 400, "U+200B"),
    ("line separator", P, R, ds("datasets/x\u2028.jsonl"), 400, "U+2028"),
    ("control char in URL", P, R, ds(f"{A}/datasets/x\t.jsonl"), 400, "U+0009"),
    ("blob name over 1024", P, R, ds("datasets/" + "n" * 1100), 400, "at most 1024"),
    ("255 path segments", P, R, ds("datasets/" + "a/" * 254 + "x.jsonl"), 400, "at most 254"),
    # wrong methods
    ("GET /api/runs", "GET", R, b"", 405, "use POST"),
    ("PUT /api/runs", "PUT", R, body_with(), 405, "use POST"),
    ("DELETE /api/runs", "DELETE", R, b"", 405, "use POST"),
    ("GET cancel", "GET", C, b"", 405, "use POST"),
    # cancel
    ("cancel id '..'", P, "/api/runs/../cancel", b"", 400, "not a run id"),
    ("cancel id with a dot", P, "/api/runs/ft-1.json/cancel", b"", 400, "not a run id"),
    ("cancel id 300 chars", P, f"/api/runs/{'f' * 300}/cancel", b"", 400, "…"),
    ("cancel id with NUL", P, "/api/runs/ft-1\x00/cancel", b"", 400, "not a run id"),
    ("cancel broken JSON", P, C, b"{", 400, "Invalid JSON"),
    ("cancel reason number", P, C, {"reason": 123}, 400, "valid string"),
    ("cancel reason 501 chars", P, C, {"reason": "r" * 501}, 400, "at most 500"),
    ("cancel unknown field", P, C, {"why": "x"}, 400, "Extra inputs"),
    ("cancel oversized body", P, C, json.dumps({"reason": BIG}).encode(), 413, "at most 65536"),
]

# The offline account is path-style (Azurite): the account is the first path segment.
HOSTILE_AZURITE: list[tuple[str, str, str, Any, int, str]] = [
    ("another Azurite account", P, R, ds(f"http://127.0.0.1:10000/other/{DATASET}"), 400, "another account"),
    ("Azurite on another port", P, R, ds(f"http://127.0.0.1:10001/devstoreaccount1/{DATASET}"), 400, ZA),
    ("localhost for 127.0.0.1", P, R, ds(f"http://localhost:10000/devstoreaccount1/{DATASET}"), 400,
     "another host"),
    ("https for an http account", P, R, ds(f"https://127.0.0.1:10000/devstoreaccount1/{DATASET}"), 400,
     "https instead of http"),
    ("Azure URL offline", P, R, ds(f"{AZURE_ACCOUNT}/{DATASET}"), 400, ZA),
    ("account without container", P, R, ds(f"{ZA}/datasets"), 400, "no container and blob name"),
    ("traversal past the account", P, R, ds(f"{ZA}/datasets/../../other/datasets/x.jsonl"), 400,
     "relative paths"),
    ("metadata address offline", P, R, ds("http://169.254.169.254/devstoreaccount1/datasets/x.jsonl"), 400,
     ZA),
]
# fmt: on


def _ids(table: list[tuple[Any, ...]]) -> list[str]:
    return [case[0] for case in table]


@pytest.mark.parametrize(("case", "method", "path", "body", "status", "fragment"), HOSTILE, ids=_ids(HOSTILE))
def test_hostile_input_is_refused(functions, hub, store, case, method, path, body, status, fragment):
    resp = call(functions, hub, method, path, body)
    assert_refused(resp, status, fragment, store, hub)
    assert hub.calls == []  # not even a status lookup
    if status == 405:
        assert resp.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "status", "fragment"), HOSTILE_AZURITE, ids=_ids(HOSTILE_AZURITE)
)
def test_hostile_input_is_refused_offline(
    functions, hub, azurite_store, case, method, path, body, status, fragment
):
    resp = call(functions, hub, method, path, body)
    assert_refused(resp, status, fragment, azurite_store, hub)
    assert hub.calls == []


def test_a_50_mb_field_is_not_echoed(functions, hub, store):
    resp = call(functions, hub, "POST", R, json.dumps({"dataset": "d" * 50_000_000}).encode())
    assert_refused(resp, 413, "request body too large", store, hub)


def test_long_values_are_quoted_as_a_short_prefix(functions, hub, store):
    name = "datasets/" + "q" * 1500  # under the body and field limits, over the blob-name limit
    resp = call(functions, hub, "POST", R, {"dataset": "https://evil.example.com/" + name})
    assert_refused(resp, 400, "…", store, hub)
    message = json.loads(resp.get_body())["details"][0]["message"]
    assert "q" * 81 not in message and "q" * 40 in message


# -- what still goes through --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset",
    [
        DATASET,
        f"{AZURE_ACCOUNT}/{DATASET}",
        f"{AZURE_ACCOUNT}:443/{DATASET}",
        f"HTTPS://PHI3DATA.blob.core.windows.net/{DATASET}",
        f"{AZURE_ACCOUNT}/{DATASET}?sv=2024&sig=ignored",
        f"  {DATASET}  ",
    ],
)
def test_valid_references_still_start_a_run(functions, hub, store, dataset):
    resp = call(functions, hub, "POST", R, {"dataset": dataset})
    assert resp.status_code == 202, resp.get_body()
    assert len(hub.starts) == 1 and store.calls == [("describe", (DATASET,))]


def test_valid_azurite_url_starts_a_run(functions, hub, azurite_store):
    resp = call(functions, hub, "POST", R, {"dataset": f"{AZURITE_ACCOUNT}/{DATASET}", "dry_run": False})
    assert resp.status_code == 202, resp.get_body()
    assert len(hub.starts) == 1


def test_valid_overrides_still_accepted(functions, hub, store):
    body = body_with(
        overrides={
            "hyperparameters": {"learning_rate": 1, "num_train_epochs": 2, "lr_scheduler_type": "cosine"},
            "model": {"name": "Phi-3.5-mini-instruct", "version": "3", "registry": "azureml"},
            "endpoint": {
                "name": "support-phi3",
                "connection_name": "my_conn-2",
                "instance_type": "Standard_NC6s_v3",
            },
            "training_instance_type": "Standard_NC24ads_A100_v4",
        }
    )
    resp = call(functions, hub, "POST", R, body)
    assert resp.status_code == 202, resp.get_body()


@pytest.fixture
def extra_containers(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("DATASET_CONTAINERS", "datasets, extra")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_dataset_containers_setting_widens_the_list(functions, hub, store, extra_containers):
    assert call(functions, hub, "POST", R, {"dataset": "extra/x.jsonl"}).status_code == 202
    refused = call(functions, hub, "POST", R, {"dataset": "private/s.jsonl"})
    assert refused.status_code == 400
    assert "allowed: datasets, extra (DATASET_CONTAINERS)" in refused.get_body().decode()


def test_dataset_containers_setting_is_checked():
    assert Settings(BACKEND="local").dataset_containers == ("datasets",)
    assert Settings(BACKEND="local", DATASET_CONTAINERS=" a-b1 ,datasets,,a-b1").dataset_containers == (
        "a-b1",
        "datasets",
    )
    with pytest.raises(ValueError, match="not container names"):
        Settings(BACKEND="local", DATASET_CONTAINERS="datasets,Bad_Name")
    with pytest.raises(ValueError, match="AZUREML_DATASTORE"):
        Settings(
            BACKEND="azureml",
            AZURE_SUBSCRIPTION_ID="s",
            AZURE_RESOURCE_GROUP="g",
            AZUREML_WORKSPACE="w",
            AZUREML_DATASTORE="datasets_store",
            DATASET_CONTAINERS="datasets,extra",
        )


# -- storage and task hub failures: answered, never a 500 ------------------------------------------


def failing(status: int | None, code: str | None = None) -> BlobStoreError:
    return BlobStoreError("sanitized", container="datasets", name="n", status_code=status, error_code=code)


# fmt: off
STORAGE_FAILURES = [
    ("not found", FileNotFoundError("blob not found"), 404, "no blob"),
    ("403 permission", failing(403, "AuthorizationPermissionMismatch"), 502, "Storage Blob Data Reader"),
    ("401", failing(401, "InvalidAuthenticationInfo"), 502, "InvalidAuthenticationInfo"),
    ("no token / unreachable", failing(None), 503, "get a token"),
    ("throttled", failing(429, "ServerBusy"), 503, "ServerBusy"),
    ("storage 500", failing(500, "InternalError"), 503, "try again"),
    ("name refused by storage", failing(400, "InvalidResourceName"), 400, "InvalidResourceName"),
    ("409 lease", failing(409, "LeaseIdMissing"), 502, "LeaseIdMissing"),
    ("connection reset", ConnectionError("reset"), 503, "ConnectionError"),
    ("timeout", TimeoutError(), 503, "TimeoutError"),
]
# fmt: on


@pytest.mark.parametrize(
    ("case", "failure", "status", "fragment"), STORAGE_FAILURES, ids=_ids(STORAGE_FAILURES)
)
def test_storage_errors_are_clear_answers(functions, hub, store, case, failure, status, fragment):
    store.failure = failure
    resp = call(functions, hub, "POST", R, {"dataset": DATASET})
    raw = resp.get_body()
    assert resp.status_code == status, raw
    body = json.loads(raw)
    assert fragment in json.dumps(body) and body["details"][0]["field"] in ("dataset", "(service)"), body
    assert hub.starts == [] and store.calls == [("describe", (DATASET,))]
    if status == 503:
        assert resp.headers["Retry-After"]


def test_unusable_configuration_is_503(functions, hub, store, monkeypatch):
    import triggers.http

    def broken() -> Any:
        raise ValueError("no datasets storage configured")

    monkeypatch.setattr(triggers.http, "current", broken)
    resp = call(functions, hub, "POST", R, {"dataset": DATASET})
    assert resp.status_code == 503 and b"misconfigured" in resp.get_body()
    assert hub.calls == []


def test_task_hub_down_is_503(functions, hub, store):
    hub.fail = True
    resp = call(functions, hub, "POST", R, {"dataset": DATASET})
    assert resp.status_code == 503 and b"could not start the run" in resp.get_body()
    cancel = call(functions, hub, "POST", C, b"")
    assert cancel.status_code == 503 and b"could not read the run" in cancel.get_body()


# -- the blob trigger ignores names the starter would refuse -----------------------------------------


@pytest.mark.parametrize(
    "name", ["datasets/a/../b.jsonl", "datasets/a/%2e%2e/b.jsonl", "datasets/x\x00.jsonl"]
)
def test_blob_trigger_ignores_unsafe_names(functions, hub, store, name):
    blob = func.blob.InputStream(
        data=b"", name=name, uri=f"{AZURE_ACCOUNT}/{name}", blob_properties={"ETag": '"0x1"'}
    )
    asyncio.run(
        functions["on_dataset_uploaded"].get_user_function().client_function(blob=blob, client=hub.client())
    )
    assert hub.calls == [] and store.calls == []


# -- the dev host's HTTP layer ------------------------------------------------------------------------


async def _request(
    make_app: Callable[[], web.Application], method: str, path: str, data: bytes | None
) -> tuple[int, dict, bytes]:
    async with TestClient(TestServer(make_app())) as client:  # an app binds to one event loop
        resp = await client.request(method, path, data=data)
        return resp.status, dict(resp.headers), await resp.read()


@pytest.fixture
def devhost(tmp_path):
    """`(module) -> call(method, path, body)` through devhost/http.py's aiohttp app."""
    import importlib

    from devhost.engine import Engine
    from devhost.functions import FunctionIndex
    from devhost.http import build_app, client_binding
    from devhost.store import Store

    stores: list[Store] = []

    def make(module: str):
        apps = [
            v for v in vars(importlib.import_module(module)).values() if isinstance(v, func.FunctionRegister)
        ]
        store = Store(tmp_path / f"{module}.sqlite")
        stores.append(store)
        engine = Engine(store, FunctionIndex.from_app(apps[0]))
        binding = client_binding("http://127.0.0.1:1", "hostile")

        def app() -> web.Application:
            return build_app(engine, engine.index, binding, lambda: None)

        def request(method: str, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
            return asyncio.run(_request(app, method, path, body))

        request.engine = engine  # type: ignore[attr-defined]
        return request

    yield make
    for s in stores:
        s.close()


HOOK = "/runtime/webhooks/durabletask"
# (case, method, path, body, status, fragment) against function_app through the dev host
# fmt: off
DEVHOST_APP_ROUTES: list[tuple[str, str, str, Any, int, str]] = [
    ("GET /api/runs", "GET", "/api/runs", None, 405, "use POST"),
    ("HEAD /api/runs", "HEAD", "/api/runs", None, 405, "(no body)"),
    ("PATCH cancel", "PATCH", f"/api/runs/{RUN_ID}/cancel", None, 405, "use POST"),
    ("GET /api/sweep", "GET", "/api/sweep", None, 405, "use POST"),
    ("unknown route", "GET", "/api/nope", None, 404, "no function"),
    ("unknown long route", "GET", "/api/" + "n" * 5000, None, 404, "…"),
    ("traversal through the dev host", P, R, b'{"dataset": "datasets/%2e%2e/x.jsonl"}', 400,
     "relative paths"),
    ("metadata address through the dev host", P, R, b'{"dataset": "http://169.254.169.254/latest/meta-data"}',
     400, AZURE_ACCOUNT),
]
# fmt: on


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "status", "fragment"), DEVHOST_APP_ROUTES, ids=_ids(DEVHOST_APP_ROUTES)
)
def test_devhost_app_routes(devhost, store, case, method, path, body, status, fragment):
    status_, headers, raw = devhost("function_app")(method, path, body)
    assert status_ == status, raw[:300]
    if method != "HEAD":
        answer = json.loads(raw)
        assert set(answer) == {"error", "details"} and fragment in json.dumps(answer, ensure_ascii=False), (
            answer
        )
        assert len(raw) < 2000
    if status == 405:
        assert headers["Allow"] == "POST"
    assert store.calls == []


START, EVENT = f"{HOOK}/orchestrators/mini", f"{HOOK}/instances/i1/raiseEvent/approve"
# fmt: off
DEVHOST_MANAGEMENT: list[tuple[str, str, str, Any, int, str]] = [
    ("start: broken JSON", P, START, b"{", 400, "not JSON"),
    ("start: not UTF-8", P, START, b'{"a": "\xff"}', 400, "not UTF-8"),
    ("start: NaN", P, START, b'{"timer_s": NaN}', 400, "NaN is not JSON"),
    ("start: absurd nesting", P, START, b"[" * 100_000 + b"]" * 100_000, 400, "not JSON"),
    ("start: unknown orchestrator", P, f"{HOOK}/orchestrators/nope", b"{}", 400, "no orchestrator"),
    ("RPC start: broken JSON", P, "/durabletask/orchestrators/mini", b"{", 400, "not JSON"),
    ("raise event: broken JSON", P, EVENT, b"{", 400, "not JSON"),
    ("raise event: truncated", P, EVENT, b'{"by": "bo', 400, "not JSON"),
    ("raise event: not UTF-8", P, EVENT, b"\xc3\x28", 400, "not UTF-8"),
    ("raise event: Infinity", P, EVENT, b"Infinity", 400, "not JSON"),
    ("raise event: unknown instance", P, f"{HOOK}/instances/nope/raiseEvent/approve", b"{}", 404, "nope"),
    ("GET terminate", "GET", f"{HOOK}/instances/i1/terminate", None, 405, "use POST"),
    ("PUT status", "PUT", f"{HOOK}/instances/i1", b"{}", 405, "use DELETE, GET, HEAD"),
]
# fmt: on


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "status", "fragment"), DEVHOST_MANAGEMENT, ids=_ids(DEVHOST_MANAGEMENT)
)
def test_devhost_management_routes(devhost, case, method, path, body, status, fragment):
    request = devhost("testing.apps.mini_app")
    started, _, _ = request("POST", f"{START}/i1", b'{"timer_s": 1, "wait_for_event": true}')
    assert started == 202
    status_, headers, raw = request(method, path, body)
    assert status_ == status, raw[:300]
    assert fragment.encode() in raw
    if status in (400, 405) and "no orchestrator" not in fragment:  # that one keeps the host's shape
        assert set(json.loads(raw)) == {"error", "details"}
    if status == 405:
        assert headers["Allow"] in fragment
    assert request.engine.status("i1", show_history=True)["runtimeStatus"] == "Pending"  # untouched


def test_devhost_event_that_is_a_plain_string_reaches_the_orchestration(devhost):
    """A JSON string that is not JSON text (curl -d '"hello"') is the event's value, not a body
    the orchestration would choke on."""
    from testing.devhost_in_process import Clock, drain

    request = devhost("testing.apps.mini_app")
    assert request("POST", f"{START}/i2", b'{"timer_s": 1, "wait_for_event": true}')[0] == 202
    assert request("POST", f"{HOOK}/instances/i2/raiseEvent/approve", b'"hello"')[0] == 202
    engine = request.engine
    engine.clock = Clock()
    drain(engine, engine.clock)
    done = engine.status("i2", show_history=False)
    assert done["runtimeStatus"] == "Completed" and done["output"]["approved"] == "hello"
