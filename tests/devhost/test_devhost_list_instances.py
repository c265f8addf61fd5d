"""The dev host's "get all instances status" API (`GET …/instances`, as the Durable Functions extension
serves it): the filters, showInput, keyset paging with the x-ms-continuation-token header, 400 for
every bad input, and the real SDK client's get_status_by / get_status_all against it."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import httpx
import pytest
from aiohttp import web
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from devhost.engine import CONTINUATION_HEADER, Engine, InstanceQuery, encode_continuation, list_sql
from devhost.functions import FunctionIndex
from devhost.host import _bind_durable_client_session, _close_durable_client_session
from devhost.http import RPC, WEBHOOK, build_app, client_binding
from devhost.store import Store
from testing.apps import mini_app
from testing.devhost_in_process import Clock, drain, serving
from testing.devhost_subprocess import free_port
from testing.replay import T0

LIST = f"{WEBHOOK}/instances"


class _ApiServer:
    """The dev host's HTTP app over an engine that only runs when a test drains it (no dispatcher),
    so every instance stays in the status the test put it in. Served by `serving()`."""

    def __init__(self, engine: Engine, port: int) -> None:
        self.engine = engine
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.binding = client_binding(self.base_url, "testhub")

    async def serve(self, ready: asyncio.Event) -> None:
        app = build_app(self.engine, self.engine.index, self.binding, lambda: None)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        ready.set()
        try:
            await asyncio.Event().wait()  # until serving() cancels the task
        finally:
            await runner.cleanup()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path, clock) -> Iterator[Engine]:
    mini_app.FAILURES.clear()
    mini_app.CALLS.clear()
    store = Store(tmp_path / "host.sqlite")
    yield Engine(store, FunctionIndex.from_app(mini_app.app), clock)
    store.close()


@pytest.fixture
def server(engine) -> Iterator[_ApiServer]:
    api = _ApiServer(engine, free_port())
    with serving(api):  # duck-typed: serving() only calls serve(ready)
        yield api


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def add(engine: Engine, clock: Clock, n: int, prefix: str = "bulk-", step_s: float = 1.0) -> list[str]:
    """n Pending instances of `child`, created `step_s` apart from the clock's time on."""
    ids = []
    for i in range(n):
        instance_id = f"{prefix}{i:04d}"
        engine.start("child", instance_id, json.dumps({"n": i, "blob": "x" * 64}))
        ids.append(instance_id)
        clock.now += timedelta(seconds=step_s)
    return ids


CHILD = "mix-running:0:0002"  # the sub-orchestration `mini` starts (completed)


def make_mix(engine: Engine, clock: Clock) -> dict[str, str]:
    """One instance in each status the dev host produces, created a minute apart from T0 on, plus
    the sub-orchestration of mix-running: instance id -> runtime status, in creation order."""
    mini_app.FAILURES["13"] = 10  # `fails` exhausts its retries
    starts = [
        ("mix-completed", "child", "1"),
        ("mix-failed", "fails", None),
        ("mix-running", "mini", json.dumps({"wait_for_event": True, "timer_s": 1})),
        ("mix-terminated", "child", "2"),
        ("mix-pending", "child", "3"),
    ]
    for minute, (instance_id, name, input_json) in enumerate(starts):
        clock.now = T0 + timedelta(minutes=minute)
        engine.start(name, instance_id, input_json)
        if instance_id == "mix-terminated":
            engine.terminate(instance_id, "stop")
        elif instance_id != "mix-pending":
            drain(engine, clock)
    ids = ["mix-completed", "mix-failed", "mix-running", CHILD, "mix-terminated", "mix-pending"]
    statuses = {i: engine.status(i)["runtimeStatus"] for i in ids}
    assert statuses == {
        "mix-completed": "Completed",
        "mix-failed": "Failed",
        "mix-running": "Running",
        CHILD: "Completed",
        "mix-terminated": "Terminated",
        "mix-pending": "Pending",
    }
    return statuses


def ids_of(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert isinstance(body, list)
    return [item["instanceId"] for item in body]


def listed(http: httpx.Client, **params: Any) -> list[str]:
    resp = http.get(LIST, params=params)
    assert CONTINUATION_HEADER not in resp.headers
    return ids_of(resp)


def all_pages(http: httpx.Client, url: str = LIST, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    headers: dict[str, str] = {}
    while True:
        resp = http.get(url, params=params, headers=headers)
        pages.append(ids_of(resp))
        token = resp.headers.get(CONTINUATION_HEADER)
        if token is None:
            return pages
        assert len(pages) < 100, "paging does not end"
        headers = {CONTINUATION_HEADER: token}


def sdk(binding: str, call: Any) -> Any:
    """Run `call(DurableOrchestrationClient)` on a fresh loop with the SDK's shared HTTP session."""

    async def go() -> Any:
        _bind_durable_client_session()
        try:
            return await call(df.DurableOrchestrationClient(binding))
        finally:
            await _close_durable_client_session()

    return asyncio.run(go())


# -- the route and the status shape ---------------------------------------------------------------


@pytest.mark.parametrize("base", [WEBHOOK, RPC])
@pytest.mark.parametrize("slash", ["", "/"])
def test_served_at_both_bases_with_and_without_slash(engine, clock, http, base, slash):
    statuses = make_mix(engine, clock)
    params = {"taskHub": "testhub", "connection": "Storage", "code": "secret", "connectionName": "x"}
    resp = http.get(f"{base}/instances{slash}", params=params)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert [item["instanceId"] for item in body] == list(statuses)  # creation order
    for item in body:
        # The same JSON as the single-instance status (one function builds both), without history.
        assert item == engine.status(item["instanceId"], show_input=True)
        assert set(item) == {
            "name", "instanceId", "runtimeStatus", "input", "customStatus", "output", "createdTime",
            "lastUpdatedTime",
        }  # fmt: skip
    by_id = {item["instanceId"]: item for item in body}
    assert by_id["mix-running"]["customStatus"] == {"a": 10, "generation": 0}
    assert by_id["mix-completed"]["output"] == 3
    assert by_id["mix-terminated"]["output"] == "stop"
    assert by_id["mix-failed"]["runtimeStatus"] == "Failed" and "flaky on 13" in by_id["mix-failed"]["output"]
    assert by_id["mix-pending"]["createdTime"] == "2026-11-01T08:04:00Z"


def test_empty_task_hub_and_no_match_are_empty_arrays(engine, clock, http):
    resp = http.get(LIST)
    assert resp.status_code == 200 and resp.json() == [] and CONTINUATION_HEADER not in resp.headers
    add(engine, clock, 3)
    assert listed(http, instanceIdPrefix="nope") == []
    assert listed(http, runtimeStatus="ContinuedAsNew,Suspended,Canceled") == []  # valid, never produced


def test_show_input(engine, clock, http):
    engine.start("child", "with-input", json.dumps({"dataset": "chats.jsonl", "n": 3}))
    clock.now += timedelta(seconds=1)
    engine.start("child", "no-input", None)
    # Default: included, as the extension does (OrchestrationStatusQueryCondition.ShowInput = true;
    # the docs: "If set to false, the function input will not be included").
    default = {i["instanceId"]: i for i in http.get(LIST).json()}
    assert default["with-input"]["input"] == {"dataset": "chats.jsonl", "n": 3}
    assert default["no-input"]["input"] is None
    shown = http.get(LIST, params={"showInput": "true"}).json()
    assert [i["input"] for i in shown] == [{"dataset": "chats.jsonl", "n": 3}, None]
    for value in ("false", "False"):
        hidden = http.get(LIST, params={"showInput": value}).json()
        assert [i["instanceId"] for i in hidden] == ["with-input", "no-input"]
        assert all("input" not in i for i in hidden)


# -- filters --------------------------------------------------------------------------------------


def test_runtime_status_filter(engine, clock, http):
    statuses = make_mix(engine, clock)
    for status in ("Pending", "Running", "Completed", "Failed", "Terminated"):
        assert listed(http, runtimeStatus=status) == [i for i, s in statuses.items() if s == status]
    # A comma-separated list, any case, spaces and empty items tolerated; order of the answer is
    # still creation order, not the order of the list.
    assert listed(http, runtimeStatus="terminated, RUNNING,,completed") == [
        "mix-completed", "mix-running", CHILD, "mix-terminated",
    ]  # fmt: skip
    # Repeated parameters add up; an empty value is no filter.
    assert listed(http, runtimeStatus=["Failed", "Pending"]) == ["mix-failed", "mix-pending"]
    assert listed(http, runtimeStatus="") == list(statuses)


def test_created_time_filters_are_inclusive(engine, clock, http):
    ids = add(engine, clock, 10, step_s=60)  # created at 08:00, 08:01, … 08:09 UTC
    assert listed(http, createdTimeFrom="2026-11-01T08:03:00Z") == ids[3:]
    assert listed(http, createdTimeTo="2026-11-01T08:05:00Z") == ids[:6]
    assert (
        listed(http, createdTimeFrom="2026-11-01T08:03:00Z", createdTimeTo="2026-11-01T08:05:00Z") == ids[3:6]
    )
    # Full precision, as the providers compare: 08:05:00.000001 excludes the instance of 08:05:00.
    assert listed(http, createdTimeFrom="2026-11-01T08:05:00.000001Z") == ids[6:]
    # Offsets (the + percent-encoded, or sent raw and decoded as a space), no zone (UTC), a date.
    assert listed(http, createdTimeFrom="2026-11-01T09:07:00+01:00") == ids[7:]
    assert (
        http.get(f"{LIST}?createdTimeFrom=2026-11-01T09:07:00+01:00").json()
        == http.get(LIST, params={"createdTimeFrom": "2026-11-01T08:07:00Z"}).json()
    )
    assert listed(http, createdTimeTo="2026-11-01T03:01:00-05:00") == ids[:2]
    assert listed(http, createdTimeFrom="2026-11-01T08:08:00") == ids[8:]
    assert listed(http, createdTimeFrom="2026-11-02") == []
    assert listed(http, createdTimeTo="2026-11-01") == []
    # An empty range is an empty answer, not an error.
    assert listed(http, createdTimeFrom="2026-11-01T08:05:00Z", createdTimeTo="2026-11-01T08:04:00Z") == []


def test_instance_id_prefix_is_case_sensitive_and_literal(engine, clock, http):
    for instance_id in ("job-a-1", "job-a-2", "job-b-1", "JOB-a-3", "job%_x", "jobXa"):
        engine.start("child", instance_id, None)
        clock.now += timedelta(seconds=1)
    assert listed(http, instanceIdPrefix="job-a") == ["job-a-1", "job-a-2"]
    assert listed(http, instanceIdPrefix="JOB") == ["JOB-a-3"]
    assert listed(http, instanceIdPrefix="job%") == ["job%_x"]  # no LIKE wildcards
    assert listed(http, instanceIdPrefix="job_") == []
    assert listed(http, instanceIdPrefix="job-a-1-and-more") == []
    assert len(listed(http, instanceIdPrefix="job")) == 5


def test_filters_combine(engine, clock, http):
    make_mix(engine, clock)  # mix-* at 08:00 … 08:04
    clock.now = T0 + timedelta(minutes=10)
    add(engine, clock, 5, prefix="late-")  # Pending, 08:10:00 … 08:10:04
    engine.terminate("late-0001", "stop")
    params = {
        "runtimeStatus": "Pending,Terminated",
        "createdTimeFrom": "2026-11-01T08:03:00Z",
        "createdTimeTo": "2026-11-01T08:10:03Z",
    }
    assert listed(http, **params) == [
        "mix-terminated", "mix-pending", "late-0000", "late-0001", "late-0002", "late-0003",
    ]  # fmt: skip
    late = {**params, "instanceIdPrefix": "late-"}
    assert listed(http, **late) == ["late-0000", "late-0001", "late-0002", "late-0003"]
    assert listed(http, **{**late, "runtimeStatus": "Terminated"}) == ["late-0001"]
    assert listed(http, **{**params, "instanceIdPrefix": "mix-", "runtimeStatus": "Running"}) == []


# -- paging ---------------------------------------------------------------------------------------


def test_paging_250_with_top_100(engine, clock, http):
    # Ten instances share each creation time: the page order breaks ties by instance id.
    ids = add(engine, clock, 250, step_s=0.1)
    clock.now = T0
    ties = add(engine, clock, 10, prefix="tie-", step_s=0)
    pages = all_pages(http, top=100, showInput="true")
    assert [len(p) for p in pages] == [100, 100, 60]
    everything = [i for p in pages for i in p]
    assert sorted(everything) == sorted(ids + ties) and len(set(everything)) == 260
    # The order: creation time, then id (bulk-0000 was created at T0 too, before "tie-…" by id).
    assert everything[:11] == ["bulk-0000", *ties]


def test_paging_through_the_rpc_base_with_the_sdk_url(engine, clock, http):
    ids = add(engine, clock, 25)
    pages = all_pages(http, f"{RPC}/instances/", top=10, showInput="false", taskHub="testhub")
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == ids


def test_default_page_size_is_100(engine, clock, http):
    ids = add(engine, clock, 150)
    first = http.get(LIST)
    assert ids_of(first) == ids[:100]
    token = first.headers[CONTINUATION_HEADER]
    second = http.get(LIST, headers={CONTINUATION_HEADER: token})
    assert ids_of(second) == ids[100:]
    assert CONTINUATION_HEADER not in second.headers


def test_last_full_page_sends_no_token(engine, clock, http):
    ids = add(engine, clock, 20)
    pages = all_pages(http, top=10)
    assert pages == [ids[:10], ids[10:]]  # no empty third page
    one = http.get(LIST, params={"top": 20})
    assert ids_of(one) == ids and CONTINUATION_HEADER not in one.headers
    # An empty token header is no token: the first page.
    assert ids_of(http.get(LIST, params={"top": 5}, headers={CONTINUATION_HEADER: ""})) == ids[:5]


def test_paging_is_stable_under_concurrent_inserts_and_filters(engine, clock, http):
    ids = add(engine, clock, 60)
    for instance_id in ids[::3]:
        engine.terminate(instance_id, "stop")
    terminated = ids[::3]
    seen: list[str] = []
    headers: dict[str, str] = {}
    params = {"top": 7, "runtimeStatus": "Terminated"}
    for page_number in range(100):
        resp = http.get(LIST, params=params, headers=headers)
        seen += ids_of(resp)
        if page_number == 0:
            # New instances arrive mid-listing (created later, so they sort last); one is terminated.
            late = add(engine, clock, 4, prefix="late-")
            engine.terminate(late[2], "stop")
            terminated.append(late[2])
        if CONTINUATION_HEADER not in resp.headers:
            break
        headers = {CONTINUATION_HEADER: resp.headers[CONTINUATION_HEADER]}
    assert seen == terminated  # every match exactly once, in order, the late one included


# -- 400 for bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("createdTimeFrom=yesterday", "createdTimeFrom"),
        ("createdTimeFrom=2026-11-01T25:00:00Z", "createdTimeFrom"),
        ("createdTimeTo=2026-13-01", "createdTimeTo"),
        ("createdTimeTo=1700000000", "createdTimeTo"),
        ("createdTimeFrom=0001-01-01T00:00:00%2B05:00", "createdTimeFrom"),  # before year 1 in UTC
        ("createdTimeTo=9999-12-31T23:59:59-05:00", "createdTimeTo"),  # after year 9999 in UTC
        ("createdTimeFrom=2026-11-01&createdTimeFrom=2026-11-02", "createdTimeFrom"),
        ("top=0", "top"),
        ("top=abc", "top"),
        ("top=-1", "top"),
        ("top=1.5", "top"),
        ("top=%D9%A3", "top"),  # an Arabic-Indic digit three: not 0-9
        ("top=2147483648", "top"),
        ("top=99999999999999999999999", "top"),
        ("top=1&top=2", "top"),
        ("runtimeStatus=Runing", "runtimeStatus"),
        ("runtimeStatus=Running,Bogus", "runtimeStatus"),
        ("runtimeStatus=0", "runtimeStatus"),
        ("instanceIdPrefix=a&instanceIdPrefix=b", "instanceIdPrefix"),
    ],
)
def test_bad_query_parameters_answer_400(engine, clock, http, query, field):
    add(engine, clock, 2)
    for base in (WEBHOOK, RPC):
        resp = http.get(f"{base}/instances/?{query}")
        assert resp.status_code == 400, resp.text
        body = resp.json()
        assert body["error"] == "invalid instance query"
        assert [d["field"] for d in body["details"]] == [field]
        assert body["details"][0]["message"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _token(**fields: Any) -> str:
    return _b64(json.dumps(fields).encode())


GOOD_CREATED = "2026-11-01T08:00:01.000000Z"


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "abc",  # base64 of bytes that are no UTF-8 JSON
        "a",  # impossible base64 length
        "eyJ2Ijox",  # base64 of a truncated JSON object
        "a" * 8100,  # longer than any token this host issues (under the header limit)
        _b64(b"\xff\xfe{}"),
        _b64(b"[]"),
        _b64(b"null"),
        _b64(b"[" * 3000),
        _token(v=2, c=GOOD_CREATED, i="bulk-0001"),
        _token(v=True, c=GOOD_CREATED, i="bulk-0001"),
        _token(v=1, c=GOOD_CREATED),
        _token(v=1, c=GOOD_CREATED, i="bulk-0001", top=5),
        _token(v=1, c=GOOD_CREATED, i=5),
        _token(v=1, c="yesterday", i="bulk-0001"),
        _token(v=1, c="2026-13-01T08:00:01.000000Z", i="bulk-0001"),
        _token(v=1, c="2026-11-01T08:00:01Z", i="bulk-0001"),
        _b64(b'{"v": 1, "c": "2026-11-01T08:00:01.000000Z", "i": "\\ud800"}'),  # a lone surrogate
    ],
)
def test_bad_continuation_tokens_answer_400(engine, clock, http, token):
    add(engine, clock, 3)
    resp = http.get(LIST, params={"top": 1}, headers={CONTINUATION_HEADER: token})
    assert resp.status_code == 400, resp.text
    assert resp.json()["details"][0]["field"] == CONTINUATION_HEADER


def test_a_token_is_a_position_not_a_secret(engine, clock, http):
    """The token only names where the next page starts (any well-formed position is served; it
    grants nothing the filters would not). Two copies of the header are refused."""
    ids = add(engine, clock, 5)
    position = encode_continuation("2026-11-01T08:00:01.000000Z", "bulk-0001")
    assert ids_of(http.get(LIST, headers={CONTINUATION_HEADER: position})) == ids[2:]
    two = [(CONTINUATION_HEADER, position), (CONTINUATION_HEADER, position)]
    resp = http.get(LIST, headers=two)
    assert resp.status_code == 400 and resp.json()["details"][0]["field"] == CONTINUATION_HEADER


# -- the real SDK client --------------------------------------------------------------------------


def test_sdk_get_status_by_and_get_status_all(engine, clock, server):
    statuses = make_mix(engine, clock)

    everything = sdk(server.binding, lambda c: c.get_status_all())
    assert [s.instance_id for s in everything] == list(statuses)
    assert {s.instance_id: s.runtime_status.value for s in everything} == statuses
    completed = next(s for s in everything if s.instance_id == "mix-completed")
    assert completed.output == 3 and completed.input_ == 1 and completed.name == "child"

    running = sdk(
        server.binding, lambda c: c.get_status_by(runtime_status=[OrchestrationRuntimeStatus.Running])
    )
    assert [s.instance_id for s in running] == ["mix-running"]
    assert running[0].custom_status == {"a": 10, "generation": 0}

    finished = sdk(
        server.binding,
        lambda c: c.get_status_by(
            runtime_status=[OrchestrationRuntimeStatus.Completed, OrchestrationRuntimeStatus.Failed]
        ),
    )
    assert [s.instance_id for s in finished] == ["mix-completed", "mix-failed", CHILD]

    # The SDK formats naive datetimes as UTC ("…%fZ").
    window = sdk(
        server.binding,
        lambda c: c.get_status_by(
            created_time_from=(T0 + timedelta(minutes=1)).replace(tzinfo=None),
            created_time_to=(T0 + timedelta(minutes=3)).replace(tzinfo=None),
        ),
    )
    assert [s.instance_id for s in window] == ["mix-failed", "mix-running", CHILD, "mix-terminated"]
    prefixed = sdk(server.binding, lambda c: c.get_status_by(instance_id_prefix="mix-p"))
    assert [s.instance_id for s in prefixed] == ["mix-pending"]


def test_sdk_sees_the_first_page_only_as_against_azure(engine, clock, server):
    """azure-functions-durable v1 ignores the continuation header (azure-functions-durable-python
    issue #580): against the extension's default page size it gets 100 instances, here too."""
    ids = add(engine, clock, 120)
    everything = sdk(server.binding, lambda c: c.get_status_all())
    assert [s.instance_id for s in everything] == ids[:100]


# -- the query stays in SQLite --------------------------------------------------------------------


def test_a_page_is_an_index_range_scan_in_sqlite(engine):
    """Each page seeks the (created, id) index to its start and stops after top + 1 rows: no full
    scan of the table, no sort, whatever the filters."""
    query = InstanceQuery(
        created_from=T0, created_to=T0 + timedelta(days=1), runtime_status=("Running", "Pending"),
        instance_id_prefix="job-",
    )  # fmt: skip
    for q, after in [
        (InstanceQuery(), None),
        (InstanceQuery(), ("2026-11-01T08:00:01.000000Z", "x")),
        (query, None),
        (query, ("2026-11-01T09:00:00.000000Z", "x")),  # after createdTimeFrom: the keyset bounds
        (query, ("2026-10-01T00:00:00.000000Z", "x")),  # before it: createdTimeFrom bounds
    ]:
        sql, params = list_sql(q, after, 101, True)
        assert sql.endswith("ORDER BY created, id LIMIT ?") and params[-1] == 101
        with engine.store.read() as db:
            plan = " | ".join(r["detail"] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "USING INDEX instances_created" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        if after is not None or q.created_from is not None:
            assert plan.startswith("SEARCH"), plan
