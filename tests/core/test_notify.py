"""Completion events: CloudEvents shape, HMAC signature, retries, against a real local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from core import notify
from core.models import Delivery, RunStatus

SECRET = "whsec-very-secret-value-0123456789"
TIME = "2024-05-01T12:34:56.789000+00:00"
REQUIRED = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Hook:
    """A scripted webhook receiver: answers each request with the next scripted reply (then 200)."""

    port: int
    script: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    delay_s: float = 0.0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.received.append(
                    Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                reply = state.script.pop(0) if state.script else 200
            status, headers = reply if isinstance(reply, tuple) else (reply, {})
            if state.delay_s:
                time.sleep(state.delay_s)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def make_event(outcome: str = "completed", subject: str = "run-42") -> dict[str, Any]:
    data = {"status": outcome, "instance_id": subject, "endpoint": "phi3-ft", "note": "café ✓"}
    return notify.cloud_event(notify.event_type_for(outcome), subject, data, time=TIME)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- event shape -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcome",
    [
        "completed",
        "invalid_dataset",
        "preflight_failed",
        "failed",
        "rejected_by_evaluation",
        "canceled",
        "planned",
    ],
)
def test_event_type_for_run_statuses(outcome):
    assert notify.event_type_for(outcome) == f"run.{outcome}"
    assert notify.event_type_for(RunStatus(outcome)) == f"run.{outcome}"


def test_event_type_for_endpoint_expired_and_unknown():
    assert notify.event_type_for("endpoint.expired") == "endpoint.expired"
    for bad in ("running", "done", "", "run.completed"):
        with pytest.raises(ValueError):
            notify.event_type_for(bad)


def test_every_terminal_run_status_has_an_event_type():
    for status in RunStatus:
        if status is RunStatus.RUNNING:
            continue
        assert notify.event_type_for(status) == f"run.{status.value}"


def test_cloud_event_attributes_and_deterministic_id():
    event = make_event()
    assert set(event) == REQUIRED
    assert event["specversion"] == "1.0"
    assert event["source"] == "/phi3-finetune"
    assert event["type"] == "run.completed"
    assert event["subject"] == "run-42"
    assert event["time"] == TIME
    assert event["datacontenttype"] == "application/json"
    expected = hashlib.sha256(f"run.completed\nrun-42\n{TIME}".encode()).hexdigest()[:32]
    assert event["id"] == expected and len(event["id"]) == 32
    assert make_event()["id"] == event["id"]  # a retried activity sends the same id
    assert make_event(subject="run-43")["id"] != event["id"]
    assert make_event(outcome="failed")["id"] != event["id"]
    other_time = notify.cloud_event("run.completed", "run-42", {}, time="2024-05-01T12:34:57+00:00")
    assert other_time["id"] != event["id"]
    custom = notify.cloud_event("endpoint.expired", "phi3-ft", {}, time=TIME, source="/elsewhere")
    assert custom["source"] == "/elsewhere"


def test_encode_is_compact_sorted_utf8():
    event = make_event()
    body = notify.encode(event)
    text = body.decode("utf-8")
    assert json.loads(text) == event
    assert "café ✓" in text  # ensure_ascii=False
    assert ": " not in text and ", " not in text
    assert text.startswith('{"data":')  # sort_keys
    assert notify.encode(dict(reversed(list(event.items())))) == body


def test_sign_and_verify():
    body = notify.encode(make_event())
    signature = notify.sign(body, SECRET)
    assert signature == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert notify.verify(body, SECRET, signature)
    assert not notify.verify(body + b" ", SECRET, signature)
    assert not notify.verify(body, "other-secret", signature)
    assert not notify.verify(body, SECRET, signature.upper())
    assert not notify.verify(body, SECRET, "")
    assert not notify.verify(body, "", signature)
    assert not notify.verify(body, SECRET, "sha256=é")  # non-ASCII header does not raise


def test_programming_errors_raise():
    with pytest.raises(TypeError):
        notify.encode(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        notify.deliver("http://127.0.0.1:1/", "nope", SECRET)  # type: ignore[arg-type]


# --- delivery against a real server -----------------------------------------------------------


def test_delivers_signed_cloudevent(hook):
    event = make_event()
    sleeps: list[float] = []
    result = notify.deliver(hook.url(), event, SECRET, sleep=sleeps.append)
    assert result == Delivery(
        event_type="run.completed", event_id=event["id"], delivered=True, attempts=1, status_code=200
    )
    assert sleeps == []
    [request] = hook.received
    assert request.method == "POST" and request.path == "/hook"
    headers = request.headers
    assert headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    signature = headers["x-signature-sha256"]
    # The server recomputes the HMAC over the raw bytes it received, both ways.
    assert notify.verify(request.body, SECRET, signature)
    assert signature == "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.body == notify.encode(event)  # what was signed is what was sent
    received = json.loads(request.body)
    assert set(received) >= REQUIRED
    assert received == event


def test_retries_500_503_then_succeeds_with_same_id(hook):
    hook.script = [500, 503]
    sleeps: list[float] = []
    result = notify.deliver(hook.url(), make_event(), SECRET, sleep=sleeps.append)
    assert result.delivered and result.attempts == 3 and result.status_code == 200
    assert result.error is None
    assert sleeps == [1.0, 2.0]
    bodies = [r.body for r in hook.received]
    assert len(bodies) == 3 and len(set(bodies)) == 1  # identical body, hence identical id
    assert {json.loads(b)["id"] for b in bodies} == {result.event_id}
    for r in hook.received:
        assert notify.verify(r.body, SECRET, r.headers["x-signature-sha256"])


def test_408_and_429_are_retried(hook):
    hook.script = [408, 429]
    sleeps: list[float] = []
    result = notify.deliver(hook.url(), make_event(), SECRET, sleep=sleeps.append)
    assert result.delivered and result.attempts == 3
    assert sleeps == [1.0, 2.0]  # 429 without Retry-After: normal backoff


def test_gives_up_with_short_safe_error(hook):
    hook.script = [500] * 10
    url = hook.url("/hooks/SECRET-TOKEN-123?sig=abc")
    sleeps: list[float] = []
    result = notify.deliver(
        url, make_event(), SECRET, attempts=4, first_backoff_s=1.0, max_backoff_s=5.0, sleep=sleeps.append
    )
    assert not result.delivered and not result.skipped
    assert result.attempts == 4 and len(hook.received) == 4
    assert result.status_code == 500
    assert sleeps == [1.0, 2.0, 4.0]  # no sleep after the last try
    assert hook.received[0].path == "/hooks/SECRET-TOKEN-123?sig=abc"
    error = result.error or ""
    assert error.startswith(f"HTTP 500 from http://127.0.0.1:{hook.port}/")
    assert "4 attempts" in error
    for leak in ("SECRET-TOKEN-123", "sig=abc", "hooks", SECRET, notify.sign(b"", SECRET)[:20]):
        assert leak not in error
    assert "\n" not in error and len(error) <= 200


def test_backoff_is_capped(hook):
    hook.script = [502] * 10
    sleeps: list[float] = []
    notify.deliver(
        hook.url(),
        make_event(),
        None,
        attempts=6,
        first_backoff_s=0.5,
        max_backoff_s=3.0,
        sleep=sleeps.append,
    )
    assert sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_400_stops_at_once(hook):
    hook.script = [400, 200]
    sleeps: list[float] = []
    result = notify.deliver(hook.url("/x?token=t0k3n"), make_event(), SECRET, sleep=sleeps.append)
    assert not result.delivered
    assert result.attempts == 1 and result.status_code == 400
    assert sleeps == [] and len(hook.received) == 1
    assert "not retryable" in (result.error or "")
    assert "t0k3n" not in (result.error or "")


def test_redirect_is_not_followed(hook):
    hook.script = [(302, {"Location": "http://127.0.0.1:1/elsewhere"})]
    result = notify.deliver(hook.url(), make_event(), SECRET, sleep=[].append)
    assert not result.delivered and result.attempts == 1 and result.status_code == 302
    assert len(hook.received) == 1


def test_retry_after_is_honoured_and_capped(hook):
    hook.script = [
        (429, {"Retry-After": "7"}),
        (503, {"Retry-After": "120"}),
        (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        (500, {"Retry-After": "9"}),  # only 429/503 honour it
    ]
    sleeps: list[float] = []
    result = notify.deliver(hook.url(), make_event(), SECRET, max_backoff_s=30.0, sleep=sleeps.append)
    assert result.delivered and result.attempts == 5
    assert sleeps == [7.0, 30.0, 4.0, 8.0]


def test_timeout_is_retried_then_reported(hook):
    hook.delay_s = 0.5
    sleeps: list[float] = []
    result = notify.deliver(
        hook.url("/slow/SECRET-TOKEN-123"),
        make_event(),
        SECRET,
        attempts=2,
        timeout_s=0.1,
        sleep=sleeps.append,
    )
    assert not result.delivered and result.attempts == 2 and result.status_code is None
    assert sleeps == [1.0]
    assert "Timeout" in (result.error or "")
    assert "SECRET-TOKEN-123" not in (result.error or "")


def test_connection_refused_is_retried_then_reported():
    port = closed_port()
    url = f"http://user:pa55word@127.0.0.1:{port}/hooks/SECRET-TOKEN-123?sig=abc"
    sleeps: list[float] = []
    result = notify.deliver(url, make_event(), SECRET, attempts=3, sleep=sleeps.append)
    assert not result.delivered and result.attempts == 3 and result.status_code is None
    assert sleeps == [1.0, 2.0]
    error = result.error or ""
    assert error.startswith("ConnectError")
    assert f"http://127.0.0.1:{port}/" in error
    for leak in ("SECRET-TOKEN-123", "sig=abc", "pa55word", "user", SECRET):
        assert leak not in error
    assert "\n" not in error and len(error) <= 200


def test_recovers_after_connection_refused(hook):
    # First try hits a closed port through an injected client that fails once, then the real server.
    calls = {"n": 0}
    real = httpx.Client(trust_env=False)

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        response = real.post(str(request.url), content=request.content, headers=dict(request.headers))
        return httpx.Response(response.status_code)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    sleeps: list[float] = []
    result = notify.deliver(hook.url(), make_event(), SECRET, client=client, sleep=sleeps.append)
    assert result.delivered and result.attempts == 2 and sleeps == [1.0]
    assert notify.verify(hook.received[0].body, SECRET, hook.received[0].headers["x-signature-sha256"])
    assert not client.is_closed  # a client passed in is left open for its owner
    client.close()
    real.close()


def test_url_none_or_empty_is_skipped():
    event = make_event()
    for url in (None, ""):
        result = notify.deliver(url, event, SECRET, sleep=[].append)
        assert result == Delivery(
            event_type="run.completed", event_id=event["id"], delivered=False, attempts=0, skipped=True
        )


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "not a url", "/relative/path", "http://"])
def test_unusable_url_is_reported_not_raised(url):
    result = notify.deliver(url, make_event(), SECRET, sleep=[].append)
    assert not result.delivered and not result.skipped and result.attempts == 0
    assert result.error and "http(s)" in result.error


@pytest.mark.parametrize("secret", [None, ""])
def test_unsigned_without_secret(hook, secret):
    event = make_event()
    result = notify.deliver(hook.url(), event, secret, sleep=[].append)
    assert result.delivered
    [request] = hook.received
    assert "x-signature-sha256" not in {k.lower() for k in request.headers}
    assert request.body == notify.encode(event)


def test_default_client_ignores_proxy_environment(hook, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    result = notify.deliver(hook.url(), make_event(), SECRET, attempts=1, sleep=[].append)
    assert result.delivered and len(hook.received) == 1


def test_endpoint_expired_event(hook):
    event = notify.cloud_event(
        notify.event_type_for("endpoint.expired"),
        "phi3-ft",
        {"endpoint": "phi3-ft", "expires_at": TIME},
        time=TIME,
    )
    result = notify.deliver(hook.url(), event, SECRET, sleep=[].append)
    assert result.delivered and result.event_type == "endpoint.expired"
    assert json.loads(hook.received[0].body)["type"] == "endpoint.expired"
