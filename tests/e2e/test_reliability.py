"""Reliability under concurrent use, for real: the dev host process + Azurite + the local backend.

Four datasets uploaded at once onto one endpoint: their training runs in parallel, their releases
one at a time (the endpoint's release turn). The run seen waiting for its turn is canceled there;
the other three end completed or rejected by the evaluation gate, never failed, and the endpoint
is left with exactly one deployment, carrying all the traffic. (The host killed while a run holds
the endpoint's turn, and restarted: tests/e2e/test_e2e_offline.py `test_kill9_and_restart_completes_once`.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.naming import instance_id
from core.settings import Settings
from testing.devhost_subprocess import SAMPLE, DevHost, serve

ENDPOINT = "phi3-ft-endpoint"
ENDED = {"completed", "rejected_by_evaluation"}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    yield from serve(tmp_path_factory.mktemp("reliability"), LOCAL_MAX_STEPS="60", EVAL_SAMPLE_SIZE="5")


def _until(what: str, check: Any, timeout_s: float = 240) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _endpoint(host: DevHost) -> dict[str, Any]:
    from localml.serving import LocalServing

    serving = LocalServing(Settings(BACKEND="local", LOCAL_RUN_DIR=str(host.run_dir)))
    info = serving.get_endpoint(ENDPOINT)
    return {"traffic": info.traffic, "deployments": [d.name for d in serving.list_deployments(ENDPOINT)]}


def test_concurrent_releases_take_turns_and_leave_one_deployment(host: DevHost) -> None:
    data = SAMPLE.read_bytes()
    runs = [instance_id(host.upload(f"conc/x-{i}.jsonl", data + b"\n" * i)) for i in range(4)]

    # One of them is seen waiting for its turn (the others train, or hold the endpoint): cancel it.
    def a_waiting_run() -> tuple[str, dict[str, Any]] | None:
        for run_id in runs:
            body = host.state(run_id)
            custom = (body or {}).get("customStatus") or {}
            if custom.get("step") == "waiting_for_endpoint":
                return run_id, custom
        return None

    waiting, custom = _until("a run waiting for the endpoint", a_waiting_run)
    assert custom["message"] == f"waiting for {custom['waiting_for']} to release {ENDPOINT}"
    assert custom["waiting_for"] in runs and custom["waiting_for"] != waiting
    import httpx

    resp = httpx.post(
        f"{host.base_url}/api/runs/{waiting}/cancel", json={"reason": "not this one"}, timeout=30
    )
    assert resp.status_code == 202, resp.text

    outcomes = {
        run_id: host.wait(run_id, lambda b: b["runtimeStatus"] == "Completed")["output"] for run_id in runs
    }

    assert outcomes[waiting]["status"] == "canceled" and "not this one" in outcomes[waiting]["reason"]
    assert outcomes[waiting].get("deployment") is None  # it never touched the endpoint
    others = {r: o for r, o in outcomes.items() if r != waiting}
    assert all(o["status"] in ENDED for o in others.values()), {
        r: (o["status"], o["reason"]) for r, o in others.items()
    }
    assert any(o["status"] == "completed" for o in others.values())
    endpoint = _endpoint(host)
    [live] = endpoint["deployments"]
    assert endpoint["traffic"] == {live: 100}
    assert not [b for b in host.blob_names() if b.startswith("_turns/")], "every turn was given back"
