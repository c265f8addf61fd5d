"""The dashboard's HTTP functions (triggers/dashboard.py), called as the Functions host calls them:
the registered functions' code with azure.functions requests and a real
DurableOrchestrationClient built from a binding JSON.

The durable extension's RPC endpoint is faked twice over: instance statuses answer the SDK client
in-process (as tests/triggers/test_triggers.py does), and the instance listing, which the dashboard
asks itself over HTTP (dashboard/instances.py), is a real HTTP server on 127.0.0.1 that pages with
`x-ms-continuation-token`. The backends are the in-memory Azure of testing/fakes.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import azure.durable_functions as df
import azure.functions as func
import pytest

from core import redact
from core.contracts import ORCHESTRATOR, SWEEPER
from testing.fakes import SECRET_KEY, FakeAzure
from tests.backends.test_backend_protocols import finetune_spec

RUN_ID = "ft-0123456789abcdef"
JOB = f"{RUN_ID}-finetune"
CONTINUATION = "x-ms-continuation-token"
STATIC = Path(__file__).resolve().parents[2] / "dashboard" / "static"
API = ("dashboard_runs", "dashboard_run", "dashboard_run_loss", "dashboard_run_report")
REPORT = f"datasets/chats/reports/{RUN_ID}/"


def instance(
    run_id: str = RUN_ID,
    runtime: str = "Completed",
    *,
    name: str = ORCHESTRATOR,
    output: Any = None,
    custom: Any = None,
    created: str = "2026-11-01T08:00:00Z",
) -> dict[str, Any]:
    request = {"dataset": {"container": "datasets", "name": "chats/support.jsonl"}, "source": "blob"}
    return {
        "name": name,
        "instanceId": run_id,
        "runtimeStatus": runtime,
        "input": {"request": request},
        "customStatus": custom,
        "output": output,
        "createdTime": created,
        "lastUpdatedTime": created,
    }


class TaskHub:
    """The durable extension's RPC endpoint for one test: `GET {rpc}instances/` pages over a real
    socket (`page_size` a page, a continuation token while more remain); `GET {rpc}instances/{id}`
    answers the SDK client in-process. `listing_status` other than 200 fails the listing."""

    def __init__(self) -> None:
        self.instances: list[dict[str, Any]] = []
        self.page_size = 4
        self.listing_status = 200
        self.listing_body: Any = None  # answered instead of the page when set
        self.empty_first_page = False  # the first page: no rows, a token
        self.listings: list[tuple[dict[str, list[str]], str | None]] = []  # (query, token) per request
        self.status_urls: list[str] = []
        self.status_fails = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/durabletask/instances/":
                    self.send_error(404)
                    return
                token = self.headers.get(CONTINUATION)
                hub.listings.append((parse_qs(url.query), token))
                if hub.listing_status != 200:
                    self.answer(
                        hub.listing_status, {"error": f"storage said no to {hub.rpc}instances/"}, None
                    )
                    return
                if hub.empty_first_page and not token:
                    self.answer(200, [], "after-0")
                    return
                start = int(token.removeprefix("after-")) if token else 0
                chunk = hub.instances[start : start + hub.page_size]
                more = start + hub.page_size < len(hub.instances)
                body = chunk if hub.listing_body is None else hub.listing_body
                self.answer(200, body, f"after-{start + hub.page_size}" if more else None)

            def answer(self, code: int, body: Any, token: str | None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if token:
                    self.send_header(CONTINUATION, token)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.rpc = f"http://127.0.0.1:{self.server.server_address[1]}/durabletask/"
        # (a short poll: `shutdown` waits for the loop's next turn)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    async def get_status(self, url: str, *args: Any) -> list[Any]:
        self.status_urls.append(url)
        if self.status_fails:
            raise ConnectionError(f"cannot reach {url}")
        run_id = urlsplit(url).path.rsplit("/", 1)[1]
        found = [i for i in self.instances if i["instanceId"] == run_id]
        return [200, found[0]] if found else [404, ""]

    def client(self, rpc: str | None = None) -> df.DurableOrchestrationClient:
        public = "http://localhost:7071/runtime/webhooks/durabletask/instances/INSTANCEID"
        binding = {
            "taskHubName": "dashboard",
            "creationUrls": {},
            "managementUrls": {"id": "INSTANCEID", "statusQueryGetUri": f"{public}?taskHub=dashboard"},
            "rpcBaseUrl": rpc or self.rpc,
        }
        client = df.DurableOrchestrationClient(json.dumps(binding))
        client._get_async_request = self.get_status
        return client


@pytest.fixture
def hub() -> Iterator[TaskHub]:
    task_hub = TaskHub()
    yield task_hub
    task_hub.close()


def call(
    functions: dict[str, Any],
    function: str,
    /,
    *,
    method: str = "GET",
    params: dict[str, str] | None = None,
    client: df.DurableOrchestrationClient | None = None,
    **route: str,
) -> func.HttpResponse:
    """Invoke the registered function `function` the way the host does (`route`: its route
    parameters)."""
    req = func.HttpRequest(
        method=method,
        url=f"http://localhost:7071/api/{function}",
        headers={},
        params=params or {},
        route_params=route,
        body=b"",
    )
    user = functions[function].get_user_function()
    if client is None:
        return user(req=req)
    return asyncio.run(user.client_function(req=req, client=client))


def body_of(resp: func.HttpResponse) -> Any:
    return json.loads(resp.get_body())


def assert_error(resp: func.HttpResponse, status: int, field: str | None = None) -> dict[str, Any]:
    """The app's one error shape: `{"error", "details": [{"field", "message"}]}`."""
    assert resp.status_code == status, resp.get_body()[:300]
    assert resp.mimetype == "application/json"
    body = body_of(resp)
    assert set(body) == {"error", "details"} and isinstance(body["error"], str) and body["error"]
    assert body["details"] and all(set(d) == {"field", "message"} for d in body["details"])
    if field is not None:
        assert body["details"][0]["field"] == field, body
    return body


# -- routes --------------------------------------------------------------------------------------


def test_the_page_is_anonymous_and_the_api_needs_the_function_key(functions):
    def trigger(name: str) -> dict[str, Any]:
        bindings = json.loads(functions[name].get_function_json())["bindings"]
        (http,) = [b for b in bindings if b["type"] == "httpTrigger"]
        return http

    assert trigger("dashboard_page")["route"] == "dashboard"
    assert trigger("dashboard_static")["route"] == "dashboard/static/{name}"
    for name in ("dashboard_page", "dashboard_static"):
        assert trigger(name)["authLevel"].lower() == "anonymous"
    for name in API:
        assert trigger(name)["authLevel"].lower() == "function"
        assert trigger(name)["route"].startswith("dashboard/api/runs")


@pytest.mark.parametrize("name", ["dashboard_page", "dashboard_static", *API])
@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT"])
def test_only_get_and_head(functions, hub, name, method):
    route = {"name": "app.js"} if name == "dashboard_static" else {}
    if name in API[1:]:
        route = {"instance_id": RUN_ID} | ({"name": "report.md"} if name == "dashboard_run_report" else {})
    client = hub.client() if name in API else None
    resp = call(functions, name, method=method, client=client, **route)

    assert_error(resp, 405, "(method)")
    assert resp.headers["Allow"] == "GET, HEAD"
    assert hub.listings == [] and hub.status_urls == []  # refused before anything is asked


# -- the page and its files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [("index.html", "text/html"), ("app.js", "text/javascript"), ("app.css", "text/css")],
)
def test_static_files(functions, name, mimetype):
    for method in ("GET", "HEAD"):
        resp = call(functions, "dashboard_static", method=method, name=name)
        assert resp.status_code == 200
        assert (resp.mimetype, resp.charset) == (mimetype, "utf-8")
        assert resp.get_body() == (STATIC / name).read_bytes()
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "name", ["../function_app.py", "app.js.map", "", "APP.JS", "index.html/", "..", "%2e%2e%2fhost.json"]
)
def test_no_other_file_is_served(functions, name):
    resp = call(functions, "dashboard_static", name=name)
    assert_error(resp, 404, "name")
    assert b"import" not in resp.get_body()


def test_the_page_loads_its_own_script_and_style(functions):
    resp = call(functions, "dashboard_page")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert "Content-Security-Policy" in resp.headers
    html = resp.get_body().decode()
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', html)
    styles = re.findall(r'<link rel="stylesheet"[^>]*\bhref="([^"]+)"', html)
    assert scripts == ["dashboard/static/app.js"] and "dashboard/static/app.css" in styles
    assert "<script>" not in html  # no inline script: the CSP would block it
    # Relative to the page's address, each one is the static route, which serves it.
    page = "https://app.azurewebsites.net/api/dashboard?code=k"
    for ref in scripts + styles:
        url = urlsplit(urljoin(page, ref))
        assert url.path.startswith("/api/dashboard/static/"), url
        served = call(functions, "dashboard_static", name=url.path.rsplit("/", 1)[1])
        assert served.status_code == 200


# -- the runs list -------------------------------------------------------------------------------


def test_every_run_of_every_listing_page_arrives_once(functions, hub):
    runs = [instance(f"ft-{i:016x}", created=f"2026-11-01T08:{i:02d}:00Z") for i in range(10)]
    sweep = instance("sweep-20261101", name=SWEEPER, created="2026-11-01T09:00:00Z")
    hub.instances = [*runs[:5], sweep, *runs[5:]]  # 11 instances: pages of 4, 4, 3
    before = datetime.now(UTC)
    resp = call(functions, "dashboard_runs", params={"per_page": "100", "days": "7"}, client=hub.client())
    after = datetime.now(UTC)

    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body = body_of(resp)
    listed = [row["id"] for row in body["runs"]]
    assert sorted(listed) == sorted(r["instanceId"] for r in runs)  # each once, the sweep not at all
    assert listed == [r["instanceId"] for r in reversed(runs)]  # newest first
    assert body["total"] == 10 and body["pages"] == 1 and body["counts"]["completed"] == 0
    # Three requests, the 2nd and 3rd carrying the token the one before answered.
    assert [token for _, token in hub.listings] == [None, "after-4", "after-8"]
    for query, _ in hub.listings:
        assert query["top"] == ["100"] and query["showInput"] == ["true"]
        since = datetime.strptime(query["createdTimeFrom"][0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before - timedelta(days=7, seconds=1) <= since <= after - timedelta(days=7)


def test_the_list_pages_and_filters_after_listing_everything(functions, hub):
    done = {"status": "completed"}
    hub.instances = [
        instance(f"ft-{i:016x}", output=done if i % 2 else None, created=f"2026-11-01T08:{i:02d}:00Z")
        for i in range(9)
    ]
    resp = call(
        functions,
        "dashboard_runs",
        params={"state": "completed", "page": "2", "per_page": "3"},
        client=hub.client(),
    )
    body = body_of(resp)
    assert (body["page"], body["pages"], body["total"]) == (2, 2, 4)
    assert [row["id"] for row in body["runs"]] == ["ft-0000000000000001"]
    assert body["counts"]["completed"] == 4 and body["counts"]["failed"] == 5  # Completed with no summary
    assert len(hub.listings) == 3


@pytest.mark.parametrize(
    "params",
    [
        {"state": "bogus"},
        {"state": "Completed"},
        {"page": "0"},
        {"page": "-1"},
        {"page": "1.5"},
        {"per_page": "101"},
        {"per_page": "0"},
        {"days": "abc"},
        {"days": "366"},
        {"days": " 7"},
    ],
)
def test_bad_list_queries_are_400(functions, hub, params):
    resp = call(functions, "dashboard_runs", params=params, client=hub.client())
    assert_error(resp, 400, next(iter(params)))
    assert hub.listings == []


@pytest.mark.parametrize("raw", ["²", "9" * 5000])
def test_numbers_int_cannot_read_are_400(functions, hub, raw):
    resp = call(functions, "dashboard_runs", params={"page": raw}, client=hub.client())
    assert_error(resp, 400, "page")


@pytest.mark.parametrize("failure", ["status 500", "not a list", "unreachable"])
def test_a_listing_that_fails_is_503_and_names_no_url(functions, hub, failure):
    hub.instances = [instance()]
    rpc = None
    if failure == "status 500":
        hub.listing_status = 500
    elif failure == "not a list":
        hub.listing_body = {"value": [instance()]}
    else:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            rpc = f"http://127.0.0.1:{s.getsockname()[1]}/durabletask/"
    resp = call(functions, "dashboard_runs", client=hub.client(rpc))

    body = assert_error(resp, 503, "(service)")
    assert resp.headers["Retry-After"]
    text = json.dumps(body)
    assert "127.0.0.1" not in text and "http" not in text and "durabletask" not in text
    assert str(hub.server.server_address[1]) not in text


# -- one run -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", API[1:])
@pytest.mark.parametrize("run_id", ["../etc", "ft 1", "x" * 101, "-ft", "ft-1/loss", ""])
def test_bad_run_ids_are_400(functions, hub, name, run_id):
    route = {"instance_id": run_id} | ({"name": "report.md"} if name == "dashboard_run_report" else {})
    resp = call(functions, name, client=hub.client(), **route)
    assert_error(resp, 400, "instance_id")
    assert hub.status_urls == []


@pytest.mark.parametrize("name", API[1:])
def test_unknown_runs_and_runs_of_other_orchestrators_are_404(functions, hub, name):
    hub.instances = [instance("sweep-20261101", name=SWEEPER)]
    for run_id in (RUN_ID, "sweep-20261101"):
        route = {"instance_id": run_id} | ({"name": "report.md"} if name == "dashboard_run_report" else {})
        resp = call(functions, name, client=hub.client(), **route)
        assert_error(resp, 404, "instance_id")


def test_a_run(functions, hub):
    output = {"status": "rejected_by_evaluation", "reason": "evaluation gate: below the floor"}
    hub.instances = [instance(output=output, custom={"step": "rejected_by_evaluation"})]
    resp = call(functions, "dashboard_run", client=hub.client(), instance_id=RUN_ID)

    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body = body_of(resp)
    assert (body["id"], body["state"], body["reason"]) == (RUN_ID, "rejected_by_evaluation", output["reason"])
    assert body["timeline"] and body["links"] == {}  # offline backend: no studio
    (url,) = hub.status_urls
    assert urlsplit(url).path.endswith(f"/instances/{RUN_ID}")
    assert parse_qs(urlsplit(url).query)["showInput"] == ["True"]  # the input holds the request


def test_a_task_hub_that_does_not_answer_is_503(functions, hub):
    hub.status_fails = True
    resp = call(functions, "dashboard_run", client=hub.client(), instance_id=RUN_ID)
    body = assert_error(resp, 503, "(service)")
    assert "127.0.0.1" not in json.dumps(body)


# -- the loss curve ------------------------------------------------------------------------------


def test_the_loss_of_the_runs_job(functions, hub, azure: FakeAzure):
    azure.submit_finetune(finetune_spec(JOB))
    hub.instances = [instance(runtime="Running", custom={"step": "training", "job": JOB})]
    resp = call(functions, "dashboard_run_loss", client=hub.client(), instance_id=RUN_ID)

    assert resp.status_code == 200
    body = body_of(resp)
    expected = azure.loss_history(JOB)
    # The job's state now, from one read by the route (with job events the run's own status
    # holds only its first read): the fake job's first state.
    assert azure.count("get_job") == 1
    assert body == {
        "job": JOB,
        "state": azure.job_states[0],
        "metrics": {},
        **expected.model_dump(mode="json"),
    }
    assert len(body["train"]) == len(expected.train) > 0 and body["validation"]
    assert azure.count("loss_history") == 2  # the route's call and ours


def test_no_job_no_loss_and_no_backend_call(functions, hub, azure: FakeAzure):
    hub.instances = [instance(runtime="Running", custom={"step": "validating"})]
    resp = call(functions, "dashboard_run_loss", client=hub.client(), instance_id=RUN_ID)
    assert body_of(resp) == {"job": None, "state": None, "metrics": {}, "train": [], "validation": []}
    assert azure.count("loss_history") == 0


def test_a_backend_that_fails_is_503_without_its_error(functions, hub, azure: FakeAzure):
    azure.submit_finetune(finetune_spec(JOB))
    azure.failures["loss_history"] = 1  # its error echoes a bearer token
    hub.instances = [instance(runtime="Running", custom={"step": "training", "job": JOB})]
    resp = call(functions, "dashboard_run_loss", client=hub.client(), instance_id=RUN_ID)

    body = assert_error(resp, 503, "(service)")
    text = resp.get_body().decode()
    assert SECRET_KEY not in text and "connection reset" not in text and "TransientError" not in text
    assert body["error"] == "loss history unavailable"


# -- the run report ------------------------------------------------------------------------------


@pytest.fixture
def reported(hub: TaskHub, azure: FakeAzure) -> FakeAzure:
    """A finished run whose report folder holds the three files."""
    hub.instances = [instance(output={"status": "completed", "report": REPORT})]
    _, _, folder = REPORT.partition("/")
    azure.put_blob("datasets", folder + "summary.json", json.dumps({"status": "completed"}).encode())
    azure.put_blob("datasets", folder + "loss.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    azure.calls.clear()
    return azure


@pytest.mark.parametrize("name", ["../secret", "x.md", "summary.json.bak", "", "REPORT.MD", "report.md/.."])
def test_only_the_report_files_are_served(functions, hub, reported, name):
    resp = call(functions, "dashboard_run_report", client=hub.client(), instance_id=RUN_ID, name=name)
    assert_error(resp, 404, "name")
    assert reported.count("download") == 0


def test_report_files(functions, hub, reported):
    secret = "report-Secret-c0ffee42"
    redact.remember(secret)
    _, _, folder = REPORT.partition("/")
    sas = "https://acct.blob.core.windows.net/datasets/x.jsonl?sv=2022-11-02&sig=SASsig0123"
    reported.put_blob("datasets", folder + "report.md", f"# Run\nkey {secret}\ndata {sas}\n".encode())

    def get(name: str) -> func.HttpResponse:
        return call(functions, "dashboard_run_report", client=hub.client(), instance_id=RUN_ID, name=name)

    md = get("report.md")
    assert md.status_code == 200 and md.mimetype == "text/markdown"
    text = md.get_body().decode()
    assert text.startswith("# Run\n") and secret not in text and "SASsig0123" not in text
    assert "https://acct.blob.core.windows.net/datasets/x.jsonl?" in text
    summary = get("summary.json")
    assert summary.mimetype == "application/json" and json.loads(summary.get_body()) == {
        "status": "completed"
    }
    png = get("loss.png")
    assert png.mimetype == "image/png"
    assert png.get_body() == reported.blobs[("datasets", folder + "loss.png")]  # bytes as stored
    assert all(r.headers["Cache-Control"] == "no-store" for r in (md, summary, png))


def test_a_report_file_not_written_is_404(functions, hub, reported):
    resp = call(functions, "dashboard_run_report", client=hub.client(), instance_id=RUN_ID, name="report.md")
    assert_error(resp, 404, "name")


def test_a_run_without_a_report_is_404(functions, hub, azure):
    hub.instances = [instance(output={"status": "invalid_dataset"})]
    resp = call(functions, "dashboard_run_report", client=hub.client(), instance_id=RUN_ID, name="report.md")
    assert_error(resp, 404, "instance_id")
    assert azure.count("download") == 0


def test_storage_that_fails_is_503_without_its_error(functions, hub, reported):
    reported.failures["download"] = 1
    resp = call(
        functions, "dashboard_run_report", client=hub.client(), instance_id=RUN_ID, name="summary.json"
    )
    assert_error(resp, 503, "(service)")
    assert SECRET_KEY not in resp.get_body().decode() and "download" not in resp.get_body().decode()


def test_summary_json_is_scrubbed_value_by_value_and_stays_json(functions, hub, reported):
    """A prompt quoting a URL with a query (JSON-escaped quotes around it) and a SAS: the answer
    is still JSON, the SAS is gone, the prompt's words are kept; and the report's answers are
    never sniffed or run as a page."""
    _, _, folder = REPORT.partition("/")
    prompt = 'open "https://example.com/a?q=1" please'
    sas = "https://acct.blob.core.windows.net/datasets/x.jsonl?sv=2022-11-02&sig=SASsig0123"
    data = {"status": "completed", "evaluation_examples": {"new": [{"prompt": prompt, "data": sas}]}}
    reported.put_blob("datasets", folder + "summary.json", json.dumps(data).encode())
    resp = call(
        functions, "dashboard_run_report", client=hub.client(), instance_id=RUN_ID, name="summary.json"
    )
    body = body_of(resp)
    (example,) = body["evaluation_examples"]["new"]
    assert example["prompt"].startswith('open "https://example.com/a?') and example["prompt"].endswith(
        '" please'
    )
    assert "SASsig0123" not in resp.get_body().decode()
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Security-Policy"].startswith("sandbox")


def test_a_nan_loss_is_null_not_invalid_json(functions, hub, azure: FakeAzure):
    from core.models import LossHistory, MetricPoint

    azure.submit_finetune(finetune_spec(JOB))
    hub.instances = [instance(runtime="Running", custom={"step": "training", "job": JOB})]
    diverged = LossHistory(train=[MetricPoint(step=1, value=2.5), MetricPoint(step=2, value=float("nan"))])
    azure.loss_history = lambda job: diverged  # type: ignore[method-assign]
    resp = call(functions, "dashboard_run_loss", client=hub.client(), instance_id=RUN_ID)
    assert json.loads(resp.get_body(), parse_constant=lambda c: pytest.fail(f"{c} in the answer"))[
        "train"
    ] == [
        {"step": 1, "value": 2.5},
        {"step": 2, "value": None},
    ]


def test_the_page_with_a_trailing_slash_redirects_to_its_url(functions):
    user = functions["dashboard_page"].get_user_function()
    req = func.HttpRequest(method="GET", url="http://localhost:7071/api/dashboard/?x=1", headers={}, body=b"")
    resp = user(req=req)
    assert resp.status_code == 308 and resp.headers["Location"] == "/api/dashboard"


def test_a_listing_cut_at_its_limit_says_so(functions, hub, monkeypatch):
    from dashboard import instances as listing

    monkeypatch.setattr(listing, "MAX_INSTANCES", 6)
    hub.instances = [
        instance(run_id=f"ft-{i:016x}", created=f"2026-12-0{1 + i % 5}T08:00:00Z") for i in range(10)
    ]
    body = body_of(call(functions, "dashboard_runs", client=hub.client()))
    assert body["truncated"] is True and body["total"] == 6
    monkeypatch.setattr(listing, "MAX_INSTANCES", 100)
    assert body_of(call(functions, "dashboard_runs", client=hub.client()))["truncated"] is False


def test_an_empty_page_with_a_token_does_not_end_the_listing(functions, hub):
    """Azure Table queries may answer a page with no rows and a continuation token."""
    hub.instances = [instance(run_id=f"ft-{i:016x}") for i in range(6)]
    hub.empty_first_page = True
    body = body_of(call(functions, "dashboard_runs", client=hub.client()))
    assert body["total"] == 6


def test_a_job_that_cannot_be_read_still_gives_its_loss(functions, hub, azure: FakeAzure):
    azure.submit_finetune(finetune_spec(JOB))
    azure.failures["get_job"] = 1  # its error echoes a bearer token
    hub.instances = [instance(runtime="Running", custom={"step": "training", "job": JOB})]
    resp = call(functions, "dashboard_run_loss", client=hub.client(), instance_id=RUN_ID)
    body = body_of(resp)
    assert resp.status_code == 200 and body["state"] is None and body["train"]
    assert SECRET_KEY not in resp.get_body().decode()
