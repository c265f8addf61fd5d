"""LocalServing end to end: real endpoint fronts and scoring servers, real HTTP, an echo model.

Nothing of ours is mocked. The scoring servers use `localml.scoring_server:load_echo` (answers with
the last user message) so these tests do not depend on the training stack. Waiting is always a
bounded poll of a real process, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

import localml.serving_processes as serving_module
from backends.base import ConnectionStore, ServingBackend
from core.models import DeploymentSpec, ModelRef, ProvisioningState
from core.payload import promptflow_payload
from localml.connections import keyring_file, promptflow_env
from localml.endpoint_front import ENDPOINT_FILE
from localml.paths import RunPaths
from localml.processes import PROJECT_ROOT
from localml.scoring_server import ECHO_DELAY_ENV, ECHO_LOADER, PayloadError, parse_payload
from localml.serving import LocalServing
from testing.polling import DEADLINE_S, wait_for

ENDPOINT = "phi3-ft-endpoint"
PS = ProvisioningState
T = TypeVar("T")


def spec(deployment: str, endpoint: str = ENDPOINT, version: str = "1") -> DeploymentSpec:
    return DeploymentSpec(
        endpoint_name=endpoint,
        deployment_name=deployment,
        model=ModelRef(name="phi3-mini-ft", version=version),
        instance_type="Standard_NC6s_v3",
        instance_count=1,
        tags={"created-by": "test"},
    )


def key_of(serving: LocalServing, endpoint: str = ENDPOINT) -> str:
    return serving._endpoint_secret(endpoint)[1]


def post(
    serving: LocalServing,
    *,
    key: str | None = None,
    deployment: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
) -> httpx.Response:
    """POST to the endpoint front as a client would (Prompt flow tool, curl)."""
    uri = serving.get_endpoint(ENDPOINT).scoring_uri
    assert uri
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if deployment is not None:
        headers["azureml-model-deployment"] = deployment
    content = raw if raw is not None else json.dumps(body if body is not None else promptflow_payload("hi"))
    return httpx.post(uri, content=content, headers=headers, timeout=30, trust_env=False)


def gone(pid: int) -> bool:
    """The process no longer runs (no /proc entry, or a zombie nobody reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def paths(tmp_path: Path) -> RunPaths:
    return RunPaths.at(tmp_path / "run")


@pytest.fixture
def serving(paths: RunPaths) -> Iterator[LocalServing]:
    backend = LocalServing(paths, loader=ECHO_LOADER, ready_timeout_s=DEADLINE_S)
    yield backend
    backend.stop_all()
    assert backend.processes() == {}


def create_endpoint(serving: LocalServing, name: str = ENDPOINT) -> None:
    serving.begin_create_endpoint(name, {"created-by": "test"})
    wait_for(lambda: serving.get_endpoint(name).state, lambda s: s is PS.SUCCEEDED, f"endpoint {name}")


def create_deployment(serving: LocalServing, name: str, endpoint: str = ENDPOINT) -> None:
    serving.begin_create_deployment(spec(name, endpoint))
    wait_for(
        lambda: serving.get_deployment_state(endpoint, name),
        lambda s: s is PS.SUCCEEDED,
        f"deployment {name}",
    )


@pytest.fixture
def blue_green(serving: LocalServing) -> LocalServing:
    """An endpoint with blue (100 %) and green (0 %), both answering."""
    create_endpoint(serving)
    create_deployment(serving, "blue")
    create_deployment(serving, "green")
    serving.set_traffic(ENDPOINT, {"blue": 100, "green": 0})
    return serving


# ---------------------------------------------------------------------------- endpoint and deployments


def test_implements_the_backend_protocols(serving: LocalServing) -> None:
    assert isinstance(serving, ServingBackend)
    assert isinstance(serving, ConnectionStore)


def test_endpoint_is_created_in_the_background_and_idempotently(
    serving: LocalServing, paths: RunPaths
) -> None:
    assert serving.get_endpoint(ENDPOINT).state is PS.NOT_FOUND

    serving.begin_create_endpoint(ENDPOINT, {"created-by": "test"})
    first = serving.get_endpoint(ENDPOINT)
    assert first.state in {PS.CREATING, PS.SUCCEEDED}
    info = wait_for(lambda: serving.get_endpoint(ENDPOINT), lambda i: i.state is PS.SUCCEEDED, "endpoint")
    assert info.scoring_uri == first.scoring_uri
    assert info.scoring_uri is not None and info.scoring_uri.startswith("http://127.0.0.1:")
    assert info.scoring_uri.endswith("/score")
    assert info.traffic == {} and info.deployments == []

    key_file = paths.serving_dir / "endpoints" / ENDPOINT / "key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_of(serving)
    assert len(key) >= 32
    pid = serving.processes()[ENDPOINT]

    serving.begin_create_endpoint(ENDPOINT, {"other": "tags"})  # exists: nothing changes
    assert serving.get_endpoint(ENDPOINT) == info
    assert key_of(serving) == key
    assert serving.processes()[ENDPOINT] == pid
    assert key not in info.model_dump_json()


def test_deployment_is_creating_until_its_model_loads_and_joins_with_zero_traffic(
    serving: LocalServing, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_endpoint(serving)
    assert serving.get_deployment_state(ENDPOINT, "blue") is PS.NOT_FOUND
    monkeypatch.setenv(ECHO_DELAY_ENV, "1.5")  # the spawned server's echo model loads for 1.5 s

    serving.begin_create_deployment(spec("blue"))
    assert serving.get_deployment_state(ENDPOINT, "blue") is PS.CREATING
    info = serving.get_endpoint(ENDPOINT)
    assert info.deployments == ["blue"] and info.traffic == {"blue": 0}
    pid = serving.processes()[f"{ENDPOINT}/blue"]
    serving.begin_create_deployment(spec("blue", version="2"))  # exists: nothing changes
    assert serving.processes()[f"{ENDPOINT}/blue"] == pid

    wait_for(lambda: serving.get_deployment_state(ENDPOINT, "blue"), lambda s: s is PS.SUCCEEDED, "blue")
    assert serving.score(ENDPOINT, "blue", promptflow_payload("ping")).output == "ping"


def test_deployment_needs_its_endpoint(serving: LocalServing) -> None:
    with pytest.raises(ValueError, match="not found"):
        serving.begin_create_deployment(spec("blue"))


def test_a_deployment_whose_model_cannot_load_fails_with_its_log(paths: RunPaths) -> None:
    broken = LocalServing(paths, loader="no_such_module_for_tests:load")
    try:
        create_endpoint(broken)
        broken.begin_create_deployment(spec("blue"))
        state = wait_for(
            lambda: broken.get_deployment_state(ENDPOINT, "blue"), lambda s: s.settled, "blue to settle"
        )
        assert state is PS.FAILED
        error = broken.deployment_error(ENDPOINT, "blue")
        assert error is not None and "exit" in error and "ModuleNotFoundError" in error
        assert broken.get_deployment_state(ENDPOINT, "blue") is PS.FAILED  # no restart loop
        broken.delete_deployment(ENDPOINT, "blue")  # 0 % traffic: the orchestrator's rollback works
        assert broken.get_deployment_state(ENDPOINT, "blue") is PS.NOT_FOUND
    finally:
        broken.stop_all()


@pytest.mark.parametrize("name", ["a", "-blue", "blue-", "../escape", "a/b", "x" * 33, "1blue"])
def test_names_are_checked_like_azure(serving: LocalServing, name: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        serving.begin_create_endpoint(name, {})
    with pytest.raises(ValueError, match="invalid"):
        serving.get_deployment_state(ENDPOINT, name)


# ---------------------------------------------------------------------------- the front: auth and routing


def test_front_requires_the_endpoint_key(blue_green: LocalServing) -> None:
    key = key_of(blue_green)
    for response in (
        post(blue_green),
        post(blue_green, key="not-the-key"),
        post(blue_green, key=key[:-1]),
        post(blue_green, key=key + "x"),
    ):
        assert response.status_code == 401
        assert "error" in response.json()
    for header in (f"Basic {key}", "Bearer", key):
        response = httpx.post(
            blue_green.get_endpoint(ENDPOINT).scoring_uri or "",
            json=promptflow_payload("hi"),
            headers={"Authorization": header},
            trust_env=False,
        )
        assert response.status_code == 401
    assert post(blue_green, key=key).status_code == 200
    health = httpx.get((blue_green.get_endpoint(ENDPOINT).scoring_uri or "").replace("/score", "/health"))
    assert health.status_code == 200


def test_front_routes_by_traffic_and_pins_by_header(blue_green: LocalServing) -> None:
    key = key_of(blue_green)

    def served_by(**kwargs: Any) -> str:
        response = post(blue_green, key=key, **kwargs)
        assert response.status_code == 200, response.text
        assert response.json() == {"output": "hi"}
        return response.headers["azureml-model-deployment"]

    assert {served_by() for _ in range(20)} == {"blue"}  # 100 / 0
    assert served_by(deployment="green") == "green"  # 0 % is reachable only through the header
    assert served_by(deployment="blue") == "blue"
    unknown = post(blue_green, key=key, deployment="purple")
    assert unknown.status_code == 404 and "purple" in unknown.json()["error"]

    blue_green.set_traffic(ENDPOINT, {"blue": 0, "green": 100})  # the front re-reads endpoint.json
    assert {served_by() for _ in range(10)} == {"green"}

    blue_green.set_traffic(ENDPOINT, {"blue": 50, "green": 50})
    assert {served_by() for _ in range(60)} == {"blue", "green"}  # P(one colour only) = 2**-59

    blue_green.set_traffic(ENDPOINT, {"blue": 0, "green": 0})
    nobody = post(blue_green, key=key)
    assert nobody.status_code == 503 and "traffic" in nobody.json()["error"]
    assert served_by(deployment="blue") == "blue"


def test_malformed_payloads_get_400_with_a_json_error(blue_green: LocalServing) -> None:
    key = key_of(blue_green)
    not_json = post(blue_green, key=key, deployment="blue", raw=b"{not json")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    wrong_shape = post(blue_green, key=key, deployment="blue", body={"inputs": "hi"})
    assert wrong_shape.status_code == 400 and "inputs" in wrong_shape.json()["error"]


GOOD = promptflow_payload("hello")["input_data"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"input_data": "hi"}, "'input_data' must be an object"),
        ({"input_data": GOOD, "extra": 1}, "extra"),
        ({"input_data": {**GOOD, "input_string": []}}, "non-empty list"),
        ({"input_data": {**GOOD, "input_string": [{"role": "user"}]}}, "exactly 'role' and 'content'"),
        ({"input_data": {**GOOD, "input_string": [{"role": "bot", "content": "x"}]}}, "role must be"),
        ({"input_data": {**GOOD, "input_string": [{"role": "user", "content": 3}]}}, "content must be"),
        ({"input_data": {**GOOD, "parameters": {"temperature": "hot"}}}, "temperature"),
        ({"input_data": {**GOOD, "parameters": {"temperature": True}}}, "temperature"),
        ({"input_data": {**GOOD, "parameters": {"max_new_tokens": 0}}}, "max_new_tokens"),
        ({"input_data": {**GOOD, "parameters": {"max_new_tokens": 1.5}}}, "max_new_tokens"),
        ({"input_data": {**GOOD, "parameters": {"top_q": 1}}}, "top_q"),
    ],
)
def test_payload_validation(body: Any, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_payload(json.dumps(body).encode())


def test_the_prompt_flow_payload_is_accepted_as_is() -> None:
    messages, temperature, max_new_tokens = parse_payload(json.dumps(promptflow_payload("hello")).encode())
    assert messages == [{"role": "user", "content": "hello"}]
    assert (temperature, max_new_tokens) == (0.7, 128)


# ---------------------------------------------------------------------------- traffic and deletion


def test_set_traffic_is_validated_like_azure(blue_green: LocalServing) -> None:
    for bad, message in [
        ({"blue": 60, "green": 30}, "add up to 100"),
        ({"blue": 100, "purple": 0}, "purple"),
        ({"blue": 120, "green": -20}, "from 0 to 100"),
        ({"blue": True}, "integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            blue_green.set_traffic(ENDPOINT, bad)  # type: ignore[arg-type]
    assert blue_green.get_endpoint(ENDPOINT).traffic == {"blue": 100, "green": 0}

    blue_green.set_traffic(ENDPOINT, {"green": 100})  # replaces the map: blue drops to 0
    assert blue_green.get_endpoint(ENDPOINT).traffic == {"blue": 0, "green": 100}
    blue_green.set_traffic(ENDPOINT, {})
    assert blue_green.get_endpoint(ENDPOINT).traffic == {"blue": 0, "green": 0}
    with pytest.raises(ValueError, match="not found"):
        blue_green.set_traffic("no-such-endpoint", {})


def test_delete_refuses_a_deployment_with_traffic_and_removes_one_without(blue_green: LocalServing) -> None:
    blue_pid = blue_green.processes()[f"{ENDPOINT}/blue"]
    with pytest.raises(ValueError, match="100% of the traffic"):
        blue_green.delete_deployment(ENDPOINT, "blue")
    assert blue_green.score(ENDPOINT, None, promptflow_payload("still here")).ok

    blue_green.set_traffic(ENDPOINT, {"blue": 0, "green": 100})
    blue_green.delete_deployment(ENDPOINT, "blue")
    assert blue_green.get_deployment_state(ENDPOINT, "blue") is PS.NOT_FOUND
    info = blue_green.get_endpoint(ENDPOINT)
    assert info.deployments == ["green"] and info.traffic == {"green": 100}
    assert gone(blue_pid)
    assert post(blue_green, key=key_of(blue_green), deployment="blue").status_code == 404
    assert blue_green.score(ENDPOINT, None, promptflow_payload("green now")).output == "green now"

    blue_green.delete_deployment(ENDPOINT, "blue")  # already gone: no-op
    blue_green.delete_deployment("no-such-endpoint", "blue")


# ---------------------------------------------------------------------------- score()


def test_score_returns_the_output_and_never_the_key(blue_green: LocalServing, caplog: Any) -> None:
    key = key_of(blue_green)
    result = blue_green.score(ENDPOINT, None, promptflow_payload("What is LoRA?"))
    assert result.ok and result.status_code == 200 and result.output == "What is LoRA?"
    assert result.latency_ms >= 0
    pinned = blue_green.score(ENDPOINT, "green", promptflow_payload("green?"))
    assert pinned.ok and pinned.output == "green?"

    bad = blue_green.score(ENDPOINT, "blue", {"input_data": {"input_string": "hi"}})
    assert not bad.ok and bad.status_code == 400 and bad.error and "input_string" in bad.error
    missing = blue_green.score(ENDPOINT, "purple", promptflow_payload("hi"))
    assert not missing.ok and missing.status_code == 404

    for r in (result, pinned, bad, missing):
        assert key not in r.model_dump_json()
    assert key not in caplog.text
    for path in blue_green.paths.serving_dir.rglob("*"):
        if path.is_file() and path.name != "key":
            assert key not in path.read_text(errors="replace"), path


def test_score_connection_errors_do_not_carry_the_key(blue_green: LocalServing) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    cut = LocalServing(blue_green.paths, http=httpx.Client(transport=httpx.MockTransport(refuse)))
    key = key_of(blue_green)
    with pytest.raises(ConnectionError) as caught:
        cut.score(ENDPOINT, "blue", promptflow_payload("hi"))
    assert key not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


# ---------------------------------------------------------------------------- crashes and restarts


def test_killed_front_and_server_are_restarted_on_the_same_port(blue_green: LocalServing) -> None:
    before = blue_green.get_endpoint(ENDPOINT)
    procs = blue_green.processes()
    front, blue = procs[ENDPOINT], procs[f"{ENDPOINT}/blue"]
    os.kill(front, signal.SIGKILL)
    os.kill(blue, signal.SIGKILL)
    wait_for(
        lambda: blue_green.processes(), lambda p: ENDPOINT not in p and f"{ENDPOINT}/blue" not in p, "kill"
    )

    info = wait_for(
        lambda: blue_green.get_endpoint(ENDPOINT), lambda i: i.state is PS.SUCCEEDED, "front back"
    )
    assert info == before  # same port, traffic and deployments
    state = blue_green.get_deployment_state(ENDPOINT, "blue")
    assert state in {PS.UPDATING, PS.SUCCEEDED}  # restarting: not settled, so pollers keep waiting
    wait_for(
        lambda: blue_green.get_deployment_state(ENDPOINT, "blue"), lambda s: s is PS.SUCCEEDED, "blue back"
    )

    after = blue_green.processes()
    assert after[ENDPOINT] != front and after[f"{ENDPOINT}/blue"] != blue
    assert blue_green.score(ENDPOINT, None, promptflow_payload("back")).output == "back"


def test_server_ports_come_from_below_the_ephemeral_range(
    blue_green: LocalServing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port from the ephemeral range can become some connection's source port as soon as its
    server dies, and the restarted server would then have to move (the test above once failed
    that way). Servers get ports the kernel never hands out by itself."""
    ephemeral = serving_module._ephemeral_ports()
    config = json.loads((blue_green._endpoint_dir(ENDPOINT) / ENDPOINT_FILE).read_text())
    ports = [config["port"], *(d["port"] for d in config["deployments"].values())]
    assert len(ports) == 3  # the front, blue and green
    assert all(serving_module.SERVER_PORTS_FROM <= port < ephemeral.start for port in ports)
    taken = {serving_module._free_port(set()) for _ in range(20)}
    assert all(serving_module.SERVER_PORTS_FROM <= port < ephemeral.start for port in taken)
    assert serving_module._free_port(taken) not in taken
    # No room below the range (a kernel configured to use nearly all ports): the kernel picks.
    monkeypatch.setattr(serving_module, "_ephemeral_ports", lambda: range(20500, 65536))
    assert serving_module._free_port(set()) >= 20500


def test_score_brings_a_dead_deployment_back_before_sending(blue_green: LocalServing) -> None:
    os.kill(blue_green.processes()[f"{ENDPOINT}/blue"], signal.SIGKILL)
    wait_for(lambda: blue_green.processes(), lambda p: f"{ENDPOINT}/blue" not in p, "kill")
    result = blue_green.score(ENDPOINT, None, promptflow_payload("smoke"))
    assert result.ok and result.output == "smoke"


def servers_running(directory: Path) -> list[int]:
    """Every live process whose command line names `directory` (ours or strays)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(directory).encode() in cmdline and not gone(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_concurrent_callers_restart_a_dead_server_once(blue_green: LocalServing) -> None:
    from concurrent.futures import ThreadPoolExecutor

    blue_dir = blue_green.paths.serving_dir / "endpoints" / ENDPOINT / "deployments" / "blue"
    os.kill(blue_green.processes()[f"{ENDPOINT}/blue"], signal.SIGKILL)
    wait_for(lambda: blue_green.processes(), lambda p: f"{ENDPOINT}/blue" not in p, "kill")

    others = [LocalServing(blue_green.paths) for _ in range(3)]  # as several activities would
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(
                lambda i: others[i % 3].score(ENDPOINT, None, promptflow_payload(f"q{i}")),
                range(12),
            )
        )
    assert [r.output for r in results] == [f"q{i}" for i in range(12)]
    assert servers_running(blue_dir) == [blue_green.processes()[f"{ENDPOINT}/blue"]]


def test_serving_survives_the_host_being_killed(paths: RunPaths) -> None:
    """A host process builds the endpoint and is killed -9; a new LocalServing carries on."""
    host = textwrap.dedent(
        f"""
        import sys, time
        from core.models import DeploymentSpec, ModelRef
        from localml.paths import RunPaths
        from localml.serving import LocalServing
        s = LocalServing(RunPaths.at({str(paths.root)!r}), loader={ECHO_LOADER!r})
        s.begin_create_endpoint({ENDPOINT!r}, {{}})
        for name in ("blue", "green"):
            s.begin_create_deployment(DeploymentSpec(endpoint_name={ENDPOINT!r}, deployment_name=name,
                model=ModelRef(name="m", version="1"), instance_type="cpu", instance_count=1, tags={{}}))
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", host],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    restarted = LocalServing(paths)  # no loader given: each deployment remembers its own
    try:
        wait_for(lambda: restarted.get_endpoint(ENDPOINT).state, lambda s: s is PS.SUCCEEDED, "endpoint")
        for name in ("blue", "green"):
            wait_for(
                lambda n=name: restarted.get_deployment_state(ENDPOINT, n), lambda s: s is PS.SUCCEEDED, name
            )
        restarted.set_traffic(ENDPOINT, {"green": 100})
        assert restarted.score(ENDPOINT, None, promptflow_payload("survived")).output == "survived"

        green = restarted.processes()[f"{ENDPOINT}/green"]  # not our child: no Popen to reap it
        os.kill(green, signal.SIGKILL)
        wait_for(lambda: restarted.processes(), lambda p: f"{ENDPOINT}/green" not in p, "kill")
        assert restarted.score(ENDPOINT, None, promptflow_payload("again")).output == "again"
    finally:
        restarted.stop_all()
    assert restarted.processes() == {}


def test_stop_all_leaves_no_process_and_reconcile_resumes(blue_green: LocalServing) -> None:
    pids = blue_green.processes()
    assert set(pids) == {ENDPOINT, f"{ENDPOINT}/blue", f"{ENDPOINT}/green"}
    blue_green.stop_all()
    assert blue_green.processes() == {}
    assert all(gone(pid) for pid in pids.values())

    states = blue_green.reconcile()  # what the devhost does when it starts again
    assert set(states) == set(pids)
    wait_for(lambda: blue_green.reconcile(), lambda s: set(s.values()) == {PS.SUCCEEDED}, "resume")
    assert blue_green.score(ENDPOINT, None, promptflow_payload("resumed")).output == "resumed"


def test_a_front_that_keeps_dying_fails_and_is_retried_on_reconcile(serving: LocalServing) -> None:
    create_endpoint(serving)
    serving.stop_all()
    key_file = serving.paths.serving_dir / "endpoints" / ENDPOINT / "key"
    hidden = key_file.with_name("key.hidden")
    key_file.rename(hidden)  # the front refuses to start without its key

    info = wait_for(lambda: serving.get_endpoint(ENDPOINT), lambda i: i.state.settled, "front to settle")
    assert info.state is PS.FAILED
    assert "key is missing" in (serving.paths.serving_dir / "endpoints" / ENDPOINT / "front.log").read_text()
    assert serving.get_endpoint(ENDPOINT).state is PS.FAILED  # no restart loop

    hidden.rename(key_file)
    serving.reconcile()  # a devhost restart tries again
    wait_for(lambda: serving.get_endpoint(ENDPOINT).state, lambda s: s is PS.SUCCEEDED, "front back")


def test_orphaned_processes_exit_when_their_state_is_removed(blue_green: LocalServing) -> None:
    import shutil

    pids = blue_green.processes()
    shutil.rmtree(blue_green.paths.serving_dir)
    wait_for(
        lambda: [pid for pid in pids.values() if not gone(pid)], lambda left: not left, "orphans to exit"
    )


# ---------------------------------------------------------------------------- Prompt flow connection

READ_CONNECTION = textwrap.dedent(
    """
    import json, sys
    from promptflow.client import PFClient
    c = PFClient().connections.get(sys.argv[1], with_secrets=True)
    from promptflow._sdk._constants import HOME_PROMPT_FLOW_DIR
    from promptflow._sdk._configuration import Configuration
    print(json.dumps({"type": type(c).__name__, "configs": dict(c.configs), "secrets": dict(c.secrets),
                      "home": str(HOME_PROMPT_FLOW_DIR),
                      "telemetry": Configuration.get_instance().get_telemetry_consent()}))
    """
)


def read_connection(paths: RunPaths, name: str, home: Path) -> dict[str, Any]:
    """Read a connection back the way the demo / `pf flow test` would: a fresh process with
    `promptflow_env` and an empty HOME of its own (nothing may land in ~/.promptflow or ~/.local)."""
    env = os.environ | promptflow_env(paths) | {"HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", READ_CONNECTION, name], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "visualstudio.com" not in done.stderr  # no telemetry upload attempt
    assert list(home.iterdir()) == []
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_publish_connection_writes_a_custom_connection_under_each_run_dir(
    serving: LocalServing, tmp_path: Path
) -> None:
    """Run A publishes (twice: update in place), then run B. promptflow fixes its home once per
    process, so at least B goes through a child process; each run's store holds its own connection."""
    other = LocalServing(RunPaths.at(tmp_path / "run-b"), loader=ECHO_LOADER)
    home = tmp_path / "home"
    home.mkdir()
    try:
        create_endpoint(serving)
        create_endpoint(other)
        uri = serving.publish_connection("phi3-finetuned", ENDPOINT)
        assert uri == serving.get_endpoint(ENDPOINT).scoring_uri
        assert serving.publish_connection("phi3-finetuned", ENDPOINT) == uri
        other_uri = other.publish_connection("phi3-finetuned", ENDPOINT)
        assert other_uri == other.get_endpoint(ENDPOINT).scoring_uri != uri

        for backend, expected in ((serving, uri), (other, other_uri)):
            seen = read_connection(backend.paths, "phi3-finetuned", home)
            assert seen["type"] == "CustomConnection"
            assert seen["configs"] == {"endpoint": expected}
            assert seen["secrets"] == {"key": key_of(backend)}
            assert Path(seen["home"]) == backend.paths.promptflow_home.resolve()
            assert seen["telemetry"] is False
            assert (backend.paths.promptflow_home / "pf.sqlite").is_file()
            assert keyring_file(backend.paths).is_file()
    finally:
        other.stop_all()

    from promptflow._sdk._constants import HOME_PROMPT_FLOW_DIR

    if Path(HOME_PROMPT_FLOW_DIR).resolve() == serving.paths.promptflow_home.resolve():
        from promptflow.client import PFClient  # published in this process: readable here too

        here = PFClient().connections.get("phi3-finetuned", with_secrets=True)
        assert here.configs["endpoint"] == uri and here.secrets["key"] == key_of(serving)


def test_a_host_can_ask_for_the_child_process_publish(
    serving: LocalServing, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dev host sets LOCALML_PUBLISH_IN_CHILD=1 to keep promptflow out of its process: the
    child must publish itself (not spawn another child) and the connection must be readable."""
    monkeypatch.setenv("LOCALML_PUBLISH_IN_CHILD", "1")
    home = tmp_path / "home"
    home.mkdir()
    create_endpoint(serving)
    started = time.monotonic()
    uri = serving.publish_connection("phi3-finetuned", ENDPOINT)
    assert time.monotonic() - started < 120
    seen = read_connection(serving.paths, "phi3-finetuned", home)
    assert seen["configs"] == {"endpoint": uri} and seen["secrets"] == {"key": key_of(serving)}


def test_promptflow_env_keeps_everything_in_the_run_dir(paths: RunPaths) -> None:
    import yaml

    env = promptflow_env(paths)
    home = paths.promptflow_home
    assert env["PF_HOME_DIRECTORY"] == str(home)
    assert env["PYTHON_KEYRING_BACKEND"] == "keyrings.alt.file.PlaintextKeyring"
    assert keyring_file(paths) == Path(env["XDG_DATA_HOME"]) / "python_keyring" / "keyring_pass.cfg"
    assert "127.0.0.1" in env["NO_PROXY"].split(",") and "localhost" in env["no_proxy"].split(",")
    config = yaml.safe_load((home / "pf.yaml").read_text())
    assert config["telemetry"]["enabled"] is False and config["trace"]["destination"] == "none"
    assert "last_check_time" in json.loads((home / "pf_version_check.json").read_text())

    config["trace"]["destination"] = "local"  # a user's choice survives; telemetry stays off
    config["telemetry"]["enabled"] = True
    (home / "pf.yaml").write_text(yaml.safe_dump(config))
    promptflow_env(paths)
    again = yaml.safe_load((home / "pf.yaml").read_text())
    assert again["trace"]["destination"] == "local" and again["telemetry"]["enabled"] is False


def test_settings_name_the_run_dir(tmp_path: Path) -> None:
    from core.settings import Settings

    backend = LocalServing(Settings(BACKEND="local", LOCAL_RUN_DIR=str(tmp_path / "from-settings")))
    assert backend.paths.root == (tmp_path / "from-settings").resolve()
    assert backend.get_endpoint(ENDPOINT).state is PS.NOT_FOUND
