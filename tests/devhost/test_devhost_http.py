"""The dev host over real HTTP: HTTP triggers with the durable client binding, and the management
API that the starters' check-status URLs point at (status, raise event, terminate, purge)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from devhost.host import Host
from testing.apps import mini_app
from testing.devhost_in_process import serving
from testing.devhost_subprocess import free_port


@pytest.fixture
def host(tmp_path) -> Iterator[str]:
    mini_app.FAILURES.clear()
    port = free_port()
    h = Host(tmp_path / "host.sqlite", port, {"TASK_HUB_NAME": "testhub"}, module="testing.apps.mini_app")
    with serving(h):
        yield f"http://127.0.0.1:{port}"


def wait_status(url: str, wanted: set[str], timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = httpx.get(url, timeout=5).json()
        if body and body.get("runtimeStatus") in wanted:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{url} never reached {wanted}")


def test_http_trigger_starts_and_status_url_works(host):
    resp = httpx.post(f"{host}/api/start/mini", json={"timer_s": 1}, timeout=10)
    assert resp.status_code == 202, resp.text
    links = resp.json()
    assert links["statusQueryGetUri"].startswith(
        f"{host}/runtime/webhooks/durabletask/instances/{links['id']}"
    )
    assert resp.headers["Location"] == links["statusQueryGetUri"]

    done = wait_status(links["statusQueryGetUri"], {"Completed"})
    assert done["output"] == {"a": 10, "b": 21, "fan": [0, 2, 4], "approved": None, "generation": 0}
    assert done["input"] == {"timer_s": 1}
    full = httpx.get(links["statusQueryGetUri"], params={"showHistory": "true", "showInput": "false"}).json()
    assert "input" not in full
    kinds = [e["EventType"] for e in full["historyEvents"]]
    assert kinds[:2] == ["OrchestratorStarted", "ExecutionStarted"] and kinds[-1] == "ExecutionCompleted"
    assert httpx.get(links["statusQueryGetUri"]).status_code == 200


def test_raise_event_terminate_and_purge(host):
    links = httpx.post(f"{host}/api/start/mini", json={"timer_s": 1, "wait_for_event": True}).json()
    running = wait_status(links["statusQueryGetUri"], {"Running"})
    assert running["customStatus"] == {"a": 10, "generation": 0}
    assert httpx.get(links["statusQueryGetUri"]).status_code == 202

    send = links["sendEventPostUri"].replace("{eventName}", "approve")
    assert httpx.post(send, json={"by": "bob"}).status_code == 202
    done = wait_status(links["statusQueryGetUri"], {"Completed"})
    assert done["output"]["approved"] == {"by": "bob"}
    assert httpx.post(send, json={}).status_code == 410

    other = httpx.post(f"{host}/api/start/mini", json={"timer_s": 60}).json()
    terminate = other["terminatePostUri"].replace("{text}", "changed%20my%20mind")
    assert httpx.post(terminate).status_code == 202
    term = wait_status(other["statusQueryGetUri"], {"Terminated"})
    assert term["output"] == "changed my mind"
    assert httpx.get(other["statusQueryGetUri"]).status_code == 400

    assert httpx.delete(other["purgeHistoryDeleteUri"]).json() == {"instancesDeleted": 1}
    assert httpx.get(other["statusQueryGetUri"]).status_code == 404
    assert httpx.delete(other["purgeHistoryDeleteUri"]).status_code == 404


def test_unknown_routes(host):
    assert httpx.post(f"{host}/api/nope").status_code == 404
    assert httpx.get(f"{host}/runtime/webhooks/durabletask/instances/missing").status_code == 404
    assert (
        httpx.post(f"{host}/runtime/webhooks/durabletask/instances/missing/raiseEvent/x").status_code == 404
    )
    resp = httpx.post(f"{host}/runtime/webhooks/durabletask/orchestrators/nope")
    assert resp.status_code == 400
