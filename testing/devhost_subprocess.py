"""The dev host as a separate process (`python -m devhost serve`) with its own Azurite, for the
end-to-end tests that need the real thing: its log file, its SQLite store, its HTTP answers, and
a `kill -9` and a restart (tests/e2e/: test_e2e_offline.py, test_reliability.py, test_log_secrets.py,
test_e2e_azure_path.py with `--azure`), and for bench/trigger_latency.py. `DevHost` adds a webhook
receiving the run's completion events; `serve` runs one for a test module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from core import notify
from core.models import BlobRef

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "chats.jsonl"
MANAGEMENT = "/runtime/webhooks/durabletask/instances"
RUN_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """An HTTP server that accepts any POST (path and query included) and keeps what it got."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, str], bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DevHostProcess:
    """`python -m devhost serve` in a run directory of its own, with `env` on top of the offline
    defaults (the tests' in-process BACKEND / DatasetsStorage are not inherited)."""

    def __init__(self, run_dir: Path, env: dict[str, str], *, args: tuple[str, ...] = ()) -> None:
        from localml.connections import promptflow_env
        from localml.paths import RunPaths

        self.args = args  # e.g. ("--azure",)
        self.run_dir = run_dir
        self.port, self.azurite_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = run_dir / "devhost.log"
        self.env = {**os.environ, **promptflow_env(RunPaths.at(run_dir)), **env}
        self.env.pop("BACKEND", None)
        self.env.pop("DatasetsStorage", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 90) -> None:
        from devhost.control import wait_ready

        cmd = [sys.executable, "-m", "devhost", "serve", *self.args, "--run-dir", str(self.run_dir),
               "--port", str(self.port), "--azurite-port", str(self.azurite_port)]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        wait_ready(self.port, self.proc, ready_timeout_s, self.log)

    def stop(self) -> None:
        """Stop the host, then everything it started (local endpoints, jobs, Azurite)."""
        from devhost.control import stop_everything

        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:  # state is committed per transaction: a kill is safe
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            stop_everything(self.run_dir)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    @property
    def connection_string(self) -> str:
        from devhost import azurite

        return azurite.Azurite(self.azurite_port, 0).connection_string

    def _service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def _container(self, container: str = "datasets") -> Any:
        return self._service().get_container_client(container)

    def upload(self, name: str, data: bytes | None = None, container: str = "datasets") -> BlobRef:
        from storage.blob_store import BlobDatasetStore

        service = self._service()
        if not service.get_container_client(container).exists():
            service.create_container(container)
        path = self.run_dir / "upload.jsonl"
        path.write_bytes(SAMPLE.read_bytes() if data is None else data)
        return BlobDatasetStore(service).upload(path, BlobRef(container=container, name=name))

    def blob(self, name: str) -> bytes:
        return bytes(self._container().download_blob(name).readall())

    def blob_names(self) -> list[str]:
        return [b.name for b in self._container().list_blobs()]

    def status(self, run_id: str, **params: str) -> httpx.Response:
        return httpx.get(f"{self.base_url}{MANAGEMENT}/{run_id}", params=params, timeout=10)

    def state(self, run_id: str) -> dict[str, Any] | None:
        """The durable status body, None while the instance does not exist yet."""
        resp = self.status(run_id)
        return None if resp.status_code == 404 else resp.json()

    def wait(
        self, run_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = RUN_TIMEOUT_S
    ) -> dict[str, Any]:
        """Poll the durable status (what users do) until `done(status)`; a run that ends Failed or
        Terminated first fails the test."""
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            body = self.state(run_id)
            if body is not None and done(body):
                return body
            if body is not None and body["runtimeStatus"] in ("Failed", "Terminated"):
                raise AssertionError(f"run {run_id} ended {body['runtimeStatus']}: {body.get('output')}")
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} did not get there in {timeout_s} s; last status: {body}")


def finished(body: dict[str, Any]) -> bool:
    return bool(body["runtimeStatus"] == "Completed")


WEBHOOK_SECRET = "e2e-webhook-secret-7f3a"


class Webhook(Receiver):
    """A real HTTP receiver for the completion events (CloudEvents, HMAC-signed)."""

    @property
    def url(self) -> str:
        return f"{self.base_url}/events"

    def of(self, subject: str) -> list[dict[str, Any]]:
        """The verified events about `subject` (a bad signature fails the test)."""
        out = []
        for _, headers, body in list(self.received):
            assert notify.verify(body, WEBHOOK_SECRET, headers[notify.SIGNATURE_HEADER.lower()])
            event = json.loads(body)
            if event["subject"] == subject:
                out.append(event)
        return out


class DevHost(DevHostProcess):
    """The dev host as a separate process that a test can kill -9 and restart, sending its
    completion events to `webhook`."""

    def __init__(self, run_dir: Path, webhook: Webhook, **env: str) -> None:
        super().__init__(
            run_dir,
            {
                "LOCAL_MAX_STEPS": "150",  # enough to learn the sample's words, quick on 2 cores
                "NUM_TRAIN_EPOCHS": "1",
                "NOTIFY_WEBHOOK_URL": webhook.url,
                "NOTIFY_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "NOTIFY_FIRST_BACKOFF_S": "0.2",
                **env,
            },
        )
        self.webhook = webhook


def serve(run_dir: Path, **env: str) -> Iterator[DevHost]:
    """A running DevHost for a test module; everything it started is stopped afterwards."""
    webhook = Webhook()
    host = DevHost(run_dir, webhook, **env)
    try:
        host.start()
        yield host
    finally:
        try:
            host.stop()
        finally:
            webhook.close()
