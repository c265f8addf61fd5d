"""Offline tests of the Prompt flow side and the sample dataset.

(a) the tool `flows/phi3_chat/integrate_with_promptflow.py` called directly against a real local
    HTTP scoring server (stdlib, 127.0.0.1, ephemeral port) that checks the exact payload and the
    bearer key;
(b) the whole flow through promptflow-devkit: a local custom connection made with `PFClient`,
    then `PFClient().test(...)` and the `pf flow test` CLI, both in subprocesses with an isolated
    PF home (`PF_HOME_DIRECTORY`), keyring (`PYTHON_KEYRING_BACKEND` + `XDG_DATA_HOME`), HOME,
    and telemetry / trace service / PyPI version check turned off;
(c) `scripts/make_sample_dataset.py`: deterministic, the committed file is its default output,
    every line has the ultrachat_200k chat shape.

This process never imports `promptflow._sdk` (the devkit resolves its home directory at import
time); promptflow runs only in the subprocesses, whose environment is built here.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from core.payload import promptflow_payload

ROOT = Path(__file__).resolve().parents[2]
FLOW_DIR = ROOT / "flows" / "phi3_chat"
SAMPLE = ROOT / "data" / "sample" / "chats.jsonl"
KEY = "test-key-3f9c2a7d51e8"
CONNECTION = "phi3-finetuned"
FAIL_PREFIX = "FAIL:"  # inputs starting with this make the server answer 503


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while the class is created
    spec.loader.exec_module(module)
    return module


tool_module = _load("integrate_with_promptflow", FLOW_DIR / "integrate_with_promptflow.py")
dataset_module = _load("make_sample_dataset", ROOT / "scripts" / "make_sample_dataset.py")


# --------------------------------------------------------------------------- local scoring server


class ScoringServer:
    """A stand-in for the managed endpoint's /score: strict about the request, records it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.override: tuple[int, bytes] | None = None  # (status, body) for every request
        self.delay_s = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": raw})
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                status, body = outer.override or outer.answer(self.path, dict(self.headers), raw)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/score"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def answer(path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        if path != "/score":
            return 404, b'{"error": "not found"}'
        if headers.get("Authorization") != f"Bearer {KEY}":
            return 401, b'{"error": "invalid key"}'
        if headers.get("Content-Type") != "application/json":
            return 415, b'{"error": "expected application/json"}'
        try:
            body = json.loads(raw)
            content = body["input_data"]["input_string"][0]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return 400, b'{"error": "malformed payload"}'
        expected = {
            "input_data": {
                "input_string": [{"role": "user", "content": content}],
                "parameters": {"temperature": 0.7, "max_new_tokens": 128},
            }
        }
        if body != expected:
            return 400, json.dumps({"error": "unexpected payload", "got": body}).encode()
        if content.startswith(FAIL_PREFIX):
            return 503, b'{"error": "no healthy upstream"}'
        return 200, json.dumps({"output": f"K2 support: {content}"}).encode()

    def __enter__(self) -> ScoringServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def module_server() -> Iterator[ScoringServer]:
    with ScoringServer() as server:
        yield server


@pytest.fixture
def server(module_server: ScoringServer, monkeypatch: pytest.MonkeyPatch) -> ScoringServer:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # urllib honours *_proxy variables
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    module_server.requests.clear()
    module_server.override = None
    module_server.delay_s = 0.0
    return module_server


def _connection(endpoint: str, key: str = KEY) -> Any:
    from promptflow.connections import CustomConnection

    return CustomConnection(configs={"endpoint": endpoint}, secrets={"key": key})


# --------------------------------------------------------------------------- (a) the tool itself


def test_tool_posts_the_tutorial_request_and_returns_output(server: ScoringServer) -> None:
    question = "How do I reset my K2 kettle?"

    answer = tool_module.integrate_with_promptflow(question, _connection(server.url))

    assert answer == f"K2 support: {question}"
    [request] = server.requests
    assert request["path"] == "/score"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {
        "input_data": {
            "input_string": [{"role": "user", "content": question}],
            "parameters": {"temperature": 0.7, "max_new_tokens": 128},
        }
    }


def test_tool_payload_is_the_pipelines_smoke_test_payload() -> None:
    """The flow and core.payload (smoke test, local scoring server) must not drift apart."""
    for text in ("hi", 'ünïcode ✓ and "quotes"\nnewline'):
        assert tool_module.build_payload(text) == promptflow_payload(text)


@pytest.mark.parametrize("status", [400, 401, 404, 500, 503])
def test_tool_non_2xx_raises_a_clear_error_without_the_key(server: ScoringServer, status: int) -> None:
    server.override = (status, b'{"error": "model unavailable", "detail": "try later"}')

    with pytest.raises(tool_module.EndpointError) as caught:
        tool_module.integrate_with_promptflow("hello", _connection(server.url))

    message = str(caught.value)
    assert caught.value.status == status
    assert f"HTTP {status}" in message
    assert "model unavailable" in message
    assert "127.0.0.1" in message
    assert KEY not in message and KEY not in repr(caught.value)


def test_tool_error_redacts_a_key_echoed_by_the_server_and_truncates_the_body(server: ScoringServer) -> None:
    server.override = (403, f'{{"error": "key {KEY} is not valid here", "pad": "{"x" * 2000}"}}'.encode())

    with pytest.raises(tool_module.EndpointError) as caught:
        tool_module.integrate_with_promptflow("hello", _connection(server.url))

    message = str(caught.value)
    assert "HTTP 403" in message and "is not valid here" in message
    assert KEY not in message
    assert len(message) < 600


def test_tool_wrong_key_is_rejected_by_the_server(server: ScoringServer) -> None:
    with pytest.raises(tool_module.EndpointError, match="HTTP 401") as caught:
        tool_module.integrate_with_promptflow("hello", _connection(server.url, key="wrong-key-0000"))
    assert "wrong-key-0000" not in str(caught.value)


@pytest.mark.parametrize(
    "body, expected",
    [(b'{"result": "no output field"}', 'without "output"'), (b"<html>oops</html>", "non-JSON")],
)
def test_tool_2xx_without_output_raises(server: ScoringServer, body: bytes, expected: str) -> None:
    server.override = (200, body)
    with pytest.raises(tool_module.EndpointError, match=expected):
        tool_module.integrate_with_promptflow("hello", _connection(server.url))


def test_tool_unreachable_endpoint_raises_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with ScoringServer() as closed:
        url = closed.url  # the port is free again once the server is closed
    with pytest.raises(tool_module.EndpointError, match="unreachable") as caught:
        tool_module.integrate_with_promptflow("hello", _connection(url))
    assert KEY not in str(caught.value)


def test_tool_times_out(server: ScoringServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tool_module.TIMEOUT_S == 60.0
    monkeypatch.setattr(tool_module, "TIMEOUT_S", 0.2)
    server.delay_s = 1.0
    with pytest.raises(tool_module.EndpointError, match="timed out"):
        tool_module.integrate_with_promptflow("hello", _connection(server.url))


def test_tool_rejects_an_endpoint_that_is_not_a_url() -> None:
    with pytest.raises(tool_module.EndpointError, match="must be an http"):
        tool_module.integrate_with_promptflow("hello", _connection("my-endpoint.inference.ml.azure.com"))


# --------------------------------------------------------------------------- (b) through promptflow

_DRIVER = """
import json, sys
from pathlib import Path

args = json.loads(sys.argv[1])
from promptflow._sdk._constants import HOME_PROMPT_FLOW_DIR
from promptflow._sdk._telemetry import is_telemetry_enabled
from promptflow._sdk._tracing import is_trace_feature_disabled
from promptflow.client import PFClient
from promptflow.entities import CustomConnection

pf = PFClient()
pf.connections.create_or_update(
    CustomConnection(name=args["name"], configs={"endpoint": args["endpoint"]}, secrets={"key": args["key"]})
)
stored = pf.connections.get(args["name"])
answer = pf.test(flow=args["flow"], inputs={"input_data": args["question"]})["answer"]
try:
    pf.test(flow=args["flow"], inputs={"input_data": args["failing"]})
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {e}"
Path(args["result"]).write_text(json.dumps({
    "home": str(HOME_PROMPT_FLOW_DIR),
    "telemetry_enabled": is_telemetry_enabled(),
    "trace_disabled": is_trace_feature_disabled(),
    "stored_secret": stored.secrets["key"],
    "stored_endpoint": stored.configs["endpoint"],
    "answer": answer,
    "error": error,
}))
"""


def pf_environment(base: Path) -> dict[str, str]:
    """Environment for promptflow subprocesses that keeps every piece of state under `base`.

    * PF_HOME_DIRECTORY: promptflow-devkit's home (pf.sqlite with the connections, pf.yaml,
      run outputs), read once at import in promptflow/_sdk/_constants.py (_prepare_home_dir).
    * PYTHON_KEYRING_BACKEND: the keyrings.alt plaintext file backend; promptflow keeps the key
      that encrypts connection secrets in the keyring (_sdk/_utilities/general_utils.py).
      That file lives in keyring's data root, $XDG_DATA_HOME/python_keyring on Linux.
    * HOME points at an empty directory so a test fails if anything still writes to ~.
    * pf.yaml: telemetry.enabled=false (no App Insights events: _sdk/_telemetry/telemetry.py)
      and trace.destination=none (`pf flow test` would otherwise start the background prompt
      flow service on port 23333: _sdk/_tracing.py start_trace_with_devkit). The keys must be
      nested YAML, as `pf config set` writes them; a flat "telemetry.enabled:" key is ignored.
    * pf_version_check.json with a fresh last_check_time: no PyPI lookup of the latest version
      (_sdk/_version_hint_utils.py check_latest_version, run on every flow test).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PF_", "PROMPTFLOW_", "XDG_"))}
    pf_home = base / "pf-home"
    pf_home.mkdir(parents=True, exist_ok=True)
    (base / "home").mkdir(exist_ok=True)
    (pf_home / "pf.yaml").write_text("telemetry:\n  enabled: false\ntrace:\n  destination: none\n")
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    (pf_home / "pf_version_check.json").write_text(json.dumps({"last_check_time": now}))
    env.update(
        PF_HOME_DIRECTORY=str(pf_home),
        PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
        XDG_DATA_HOME=str(base / "xdg-data"),
        XDG_CONFIG_HOME=str(base / "xdg-config"),
        HOME=str(base / "home"),
        no_proxy="127.0.0.1,localhost",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@pytest.fixture(scope="module")
def pf_setup(module_server: ScoringServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Copy the flow (pf writes .promptflow/ next to it), make the connection, run PFClient.test."""
    base = tmp_path_factory.mktemp("promptflow")
    flow = base / "phi3_chat"
    shutil.copytree(FLOW_DIR, flow, ignore=shutil.ignore_patterns(".promptflow", "__pycache__"))
    env = pf_environment(base)
    args = {
        "name": CONNECTION,
        "endpoint": module_server.url,
        "key": KEY,
        "flow": str(flow),
        "question": "How long does the K2 take to boil?",
        "failing": f"{FAIL_PREFIX} please",
        "result": str(base / "result.json"),
    }
    module_server.override = None
    module_server.requests.clear()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(args)],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(Path(args["result"]).read_text())
    return {
        "base": base,
        "flow": flow,
        "env": env,
        "result": result,
        "output": proc.stdout + proc.stderr,
        "requests": list(module_server.requests),
        "url": module_server.url,
        "elapsed": elapsed,
    }


def test_flow_runs_through_promptflow_with_a_local_connection(pf_setup: dict[str, Any]) -> None:
    result = pf_setup["result"]
    assert result["answer"] == "K2 support: How long does the K2 take to boil?"
    assert result["stored_endpoint"] == pf_setup["url"]
    assert result["stored_secret"] == KEY  # round trip: encrypted in pf.sqlite, key in the keyring
    assert KEY.encode() not in (pf_setup["base"] / "pf-home" / "pf.sqlite").read_bytes()
    ok = pf_setup["requests"][0]
    assert ok["headers"]["Authorization"] == f"Bearer {KEY}"
    assert json.loads(ok["body"]) == promptflow_payload("How long does the K2 take to boil?")


def test_flow_failure_surfaces_the_status_not_the_key(pf_setup: dict[str, Any]) -> None:
    error = pf_setup["result"]["error"]
    assert error is not None
    assert "EndpointError" in error and "HTTP 503" in error and "no healthy upstream" in error
    assert KEY not in error
    assert KEY not in pf_setup["output"]


def test_promptflow_state_stays_in_the_temporary_home(pf_setup: dict[str, Any]) -> None:
    base: Path = pf_setup["base"]
    result = pf_setup["result"]
    assert Path(result["home"]) == (base / "pf-home").resolve()
    assert (base / "pf-home" / "pf.sqlite").is_file()  # the connection database
    assert (base / "xdg-data" / "python_keyring" / "keyring_pass.cfg").is_file()  # encryption key
    assert list((base / "home").iterdir()) == []  # nothing written to ~
    assert result["telemetry_enabled"] is False
    assert result["trace_disabled"] is True
    assert not (base / "pf-home" / "pfs").exists()  # no background prompt flow service
    last_check = json.loads((base / "pf-home" / "pf_version_check.json").read_text())
    assert "latest_version" not in last_check  # PyPI was not asked


def test_pf_flow_test_cli(pf_setup: dict[str, Any], module_server: ScoringServer) -> None:
    """The README's command, against the connection made above."""
    module_server.override = None
    pf = Path(sys.executable).with_name("pf")
    question = "Can I put the K2 in the dishwasher?"
    started = time.monotonic()
    proc = subprocess.run(
        [str(pf), "flow", "test", "--flow", str(pf_setup["flow"]), "--inputs", f"input_data={question}"],
        env=pf_setup["env"],
        cwd=pf_setup["base"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = json.loads((pf_setup["flow"] / ".promptflow" / "flow.output.json").read_text())
    assert output == {"answer": f"K2 support: {question}"}
    assert f'"answer": "K2 support: {question}"' in proc.stdout
    assert KEY not in proc.stdout + proc.stderr
    assert not (pf_setup["base"] / "pf-home" / "pfs").exists()
    print(f"pf flow test took {elapsed:.1f} s; PFClient driver {pf_setup['elapsed']:.1f} s")


def test_flow_definition_matches_the_tutorial() -> None:
    """flow.dag.yaml: chat flow, input input_data, python node with the default connection."""
    import yaml  # PyYAML comes with the offline extras (promptflow, mlflow)

    dag = yaml.safe_load((FLOW_DIR / "flow.dag.yaml").read_text())
    assert dag["inputs"]["input_data"]["type"] == "string"
    assert dag["inputs"]["input_data"]["is_chat_input"] is True
    assert dag["inputs"]["chat_history"]["is_chat_history"] is True
    assert dag["outputs"] == {
        "answer": {
            "type": "string",
            "reference": "${integrate_with_promptflow.output}",
            "is_chat_output": True,
        }
    }
    [node] = dag["nodes"]
    assert node["name"] == "integrate_with_promptflow" and node["type"] == "python"
    assert node["source"] == {"type": "code", "path": "integrate_with_promptflow.py"}
    assert node["inputs"] == {"connection": CONNECTION, "input_data": "${inputs.input_data}"}
    assert dag["environment"]["python_requirements_txt"] == "requirements.txt"
    requirements = (FLOW_DIR / "requirements.txt").read_text().splitlines()
    assert [r for r in requirements if r.strip() and not r.startswith("#")] == []


# --------------------------------------------------------------------------- (c) sample dataset


def test_sample_dataset_is_deterministic() -> None:
    first = dataset_module.render(60, 7)
    assert first == dataset_module.render(60, 7)
    assert first != dataset_module.render(60, 8)
    assert first.count(b"\n") == 60


def test_committed_sample_equals_a_fresh_generation() -> None:
    committed = SAMPLE.read_bytes()
    assert committed == dataset_module.render(), "regenerate: python scripts/make_sample_dataset.py"
    assert len(committed) < 300 * 1024


def _check_shape(record: dict[str, Any]) -> None:
    assert list(record) == ["prompt", "prompt_id", "messages"]
    messages = record["messages"]
    assert all(set(m) == {"role", "content"} for m in messages)
    assert all(isinstance(m["content"], str) and m["content"].strip() for m in messages)
    roles = [m["role"] for m in messages]
    if roles[0] == "system":
        roles = roles[1:]
    assert len(roles) >= 2 and len(roles) % 2 == 0
    assert roles == ["user", "assistant"] * (len(roles) // 2)
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    assert record["prompt"] == first_user
    assert record["prompt_id"] == hashlib.sha256(record["prompt"].encode("utf-8")).hexdigest()


def test_committed_sample_shape() -> None:
    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert len(records) == dataset_module.DEFAULT_COUNT == 300
    for record in records:
        _check_shape(record)
    lengths = [len([m for m in r["messages"] if m["role"] != "system"]) for r in records]
    assert lengths.count(2) > 100 and lengths.count(4) > 30 and max(lengths) >= 6
    assert 10 <= sum(r["messages"][0]["role"] == "system" for r in records) <= 60
    assert len({r["prompt_id"] for r in records}) == len(records)  # unique prompts
    # Consistent answers: the same question always gets the same reply.
    replies: dict[str, set[str]] = {}
    for r in records:
        turns = [m for m in r["messages"] if m["role"] != "system"]
        for question, reply in zip(turns[::2], turns[1::2], strict=True):
            replies.setdefault(question["content"], set()).add(reply["content"])
    assert all(len(v) == 1 for v in replies.values())
    # Every topic appears.
    answers = {m["content"] for r in records for m in r["messages"] if m["role"] == "assistant"}
    assert {t.answer for t in dataset_module.TOPICS} <= answers


def test_committed_sample_passes_the_pipeline_validator() -> None:
    from core.validation import validate_file

    report = validate_file(SAMPLE)
    assert report.ok, report.errors
    assert report.examples == 300 and not report.warnings


def test_sample_cli(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "chats.jsonl"
    script = ROOT / "scripts" / "make_sample_dataset.py"
    cmd = [sys.executable, str(script), "--count", "25", "--seed", "3", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == dataset_module.render(25, 3)
    for line in out.read_text(encoding="utf-8").splitlines():
        _check_shape(json.loads(line))
    bad = subprocess.run([*cmd[:3], "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--count" in bad.stderr
