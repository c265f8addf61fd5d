"""One deployment's scoring server: `python -m localml.scoring_server --deployment-dir <dir>`.

Reads `<dir>/deployment.json` (written by `localml.serving.LocalServing`), binds
127.0.0.1:<port> first (so the port is held while the model loads), loads the model, then serves

- `POST /score`: exactly the AI Studio chat payload
  `{"input_data": {"input_string": [{"role", "content"}...], "parameters": {"temperature",
  "max_new_tokens"}}}` → `{"output": "<text>"}`; 400 with `{"error": ...}` for anything else;
  503 while the model is still loading.
- `GET /health`: 200 `{"status": "ok", "pid": ...}` once the model is loaded, 503 before.

Loopback only and unauthenticated: the endpoint front (`localml.endpoint_front`) authenticates
callers and forwards to it.

The model loader is pluggable: `deployment.json` may name one as `"module:function"`, a callable
taking a `core.models.ModelRef` and returning `generate(messages, temperature, max_new_tokens)`.
The default wraps `localml.training.load_model` / `generate`; `load_echo` (tests, demos without
a trained model) answers with the last user message. Heavy imports happen only inside loaders.

This module is stdlib-only at import time; `localml.endpoint_front` and
`localml.serving_processes` share its small process helpers (JSON responses, the port-in-use
marker, the orphan watchdog).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.models import ModelRef

Messages = list[dict[str, str]]
Generate = Callable[[Messages, float, int], str]
Loader = Callable[["ModelRef"], Generate]

DEFAULT_LOADER = "localml.scoring_server:load_training_model"
ECHO_LOADER = "localml.scoring_server:load_echo"
# Seconds `load_echo` sleeps before it is "loaded" (lets tests observe the Creating state).
ECHO_DELAY_ENV = "LOCALML_ECHO_DELAY_S"

DEPLOYMENT_FILE = "deployment.json"
SERVER_RECORD_FILE = "server.json"

# A process that cannot bind its port says so with this line and exit code, so the supervisor
# (LocalServing) can retry on another port instead of declaring the deployment Failed.
PORT_IN_USE_MARKER = "localml: port in use"
EXIT_PORT_IN_USE = 3

MAX_BODY_BYTES = 4 * 1024 * 1024
ROLES = frozenset({"system", "user", "assistant"})
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS_LIMIT = 4096
KNOWN_PARAMETERS = frozenset({"temperature", "max_new_tokens"})

# The watchdog: a process whose state directory is gone, or whose supervisor recorded another pid
# for it, is an orphan and exits (tests that lose their tmp dir never leave servers behind).
WATCHDOG_INTERVAL_S = 2.0
WATCHDOG_GRACE_S = 3.0


class PayloadError(ValueError):
    """The request body is not the AI Studio chat payload."""


# ---------------------------------------------------------------------------- payload


def parse_payload(body: bytes) -> tuple[Messages, float, int]:
    """Validate the AI Studio chat payload; return (messages, temperature, max_new_tokens)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise PayloadError(f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object with 'input_data'")
    extra = sorted(set(data) - {"input_data"})
    if extra:
        raise PayloadError(f"unexpected top-level field(s): {', '.join(extra)}")
    input_data = data.get("input_data")
    if not isinstance(input_data, dict):
        raise PayloadError("'input_data' must be an object")
    extra = sorted(set(input_data) - {"input_string", "parameters"})
    if extra:
        raise PayloadError(f"unexpected field(s) in input_data: {', '.join(extra)}")

    raw_messages = input_data.get("input_string")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise PayloadError("'input_data.input_string' must be a non-empty list of {role, content}")
    messages: Messages = []
    for i, m in enumerate(raw_messages):
        where = f"input_data.input_string[{i}]"
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise PayloadError(f"{where} must be an object with exactly 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise PayloadError(f"{where}.role must be one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str):
            raise PayloadError(f"{where}.content must be a string")
        messages.append({"role": role, "content": content})

    params = input_data.get("parameters", {})
    if not isinstance(params, dict):
        raise PayloadError("'input_data.parameters' must be an object")
    extra = sorted(set(params) - KNOWN_PARAMETERS)
    if extra:
        raise PayloadError(f"unknown parameter(s): {', '.join(extra)}")
    temperature = params.get("temperature", DEFAULT_TEMPERATURE)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise PayloadError("parameters.temperature must be a number between 0 and 2")
    max_new_tokens = params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT
    ):
        raise PayloadError(f"parameters.max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS_LIMIT}")
    return messages, float(temperature), max_new_tokens


# ---------------------------------------------------------------------------- loaders


def load_training_model(model: ModelRef) -> Generate:
    """The real model: `localml.training.load_model` + `generate` (imported here, in the server)."""
    import torch

    from localml.training import generate, load_model

    loaded, tokenizer = load_model(model)

    def run(messages: Messages, temperature: float, max_new_tokens: int) -> str:
        # Sampling seeded by the request: the same question gets the same answer from the same
        # model, so the evaluation gate compares two deployments, not two dice rolls.
        request = json.dumps([messages, temperature, max_new_tokens], sort_keys=True).encode()
        torch.manual_seed(int.from_bytes(hashlib.sha256(request).digest()[:8], "big"))
        return generate(loaded, tokenizer, messages, temperature, max_new_tokens)

    return run


def load_echo(model: ModelRef) -> Generate:
    """A stand-in model that answers with the last user message (tests, demos without training)."""
    delay = float(os.environ.get(ECHO_DELAY_ENV) or 0)
    if delay > 0:
        time.sleep(delay)

    def run(messages: Messages, temperature: float, max_new_tokens: int) -> str:
        users = [m["content"] for m in messages if m["role"] == "user"]
        return users[-1] if users else ""

    return run


def resolve_loader(spec: str) -> Loader:
    """`"package.module:function"` → the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"loader must look like 'module:function', got {spec!r}")
    loader = getattr(importlib.import_module(module_name), attr)
    if not callable(loader):
        raise TypeError(f"loader {spec!r} is not callable")
    return loader  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- shared HTTP helpers


class JsonHandler(BaseHTTPRequestHandler):
    """Base handler: JSON replies, bounded bodies, one-line access logs without headers."""

    server_version = "localml"
    sys_version = ""

    def reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.reply_raw(status, json.dumps(body).encode(), "application/json", headers)

    def reply_raw(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.reply(status, {"error": message}, headers)

    def read_body(self) -> bytes | None:
        """The request body, or None after replying 411/413."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return None
        size = int(length)
        if size > MAX_BODY_BYTES:
            self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body larger than {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(size)

    def do_PUT(self) -> None:
        self.error(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")

    do_DELETE = do_PATCH = do_PUT

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Supervisors poll /health; only log it when it is not OK.
        if self.path != "/health" or code != HTTPStatus.OK:
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only; never headers (the front receives the endpoint key).
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")


def bind(server_cls: type[ThreadingHTTPServer], port: int, handler: type[BaseHTTPRequestHandler]) -> Any:
    """Bind 127.0.0.1:`port`, or print the port-in-use marker and exit EXIT_PORT_IN_USE.

    ThreadingHTTPServer sets SO_REUSEADDR (a restart may rebind a port in TIME_WAIT) but not
    SO_REUSEPORT, so a second live listener on the same port is refused.
    """
    try:
        return server_cls(("127.0.0.1", port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"{PORT_IN_USE_MARKER}: 127.0.0.1:{port}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_PORT_IN_USE) from None
        raise


def orphaned(config_file: Path, record_file: Path) -> bool:
    """True if our state is gone or the supervisor's record names another process."""
    if not config_file.is_file():
        return True
    try:
        record = json.loads(record_file.read_text())
    except FileNotFoundError:
        return True
    except ValueError:
        return False  # being rewritten; look again next time
    return record.get("pid") != os.getpid()


def watch_until_orphaned(config_file: Path, record_file: Path) -> None:
    """Block until this process is an orphan (two checks in a row, after a grace period)."""
    time.sleep(WATCHDOG_GRACE_S)
    strikes = 0
    while True:
        strikes = strikes + 1 if orphaned(config_file, record_file) else 0
        if strikes >= 2:
            print("localml: state gone or superseded; exiting", file=sys.stderr, flush=True)
            return
        time.sleep(WATCHDOG_INTERVAL_S)


# ---------------------------------------------------------------------------- the server


class ScoringServer(ThreadingHTTPServer):
    config: dict[str, Any]
    generate: Generate | None = None
    generate_lock: threading.Lock


class ScoringHandler(JsonHandler):
    server: ScoringServer

    def do_GET(self) -> None:
        if self.path != "/health":
            self.error(HTTPStatus.NOT_FOUND, "not found")
            return
        cfg = self.server.config
        ready = self.server.generate is not None
        self.reply(
            HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
            {
                "status": "ok" if ready else "loading",
                "endpoint": cfg.get("endpoint"),
                "deployment": cfg.get("deployment"),
                "model": cfg.get("model"),
                "pid": os.getpid(),
            },
        )

    def do_POST(self) -> None:
        if self.path != "/score":
            self.error(HTTPStatus.NOT_FOUND, "not found")
            return
        body = self.read_body()
        if body is None:
            return
        generate = self.server.generate
        if generate is None:
            self.error(HTTPStatus.SERVICE_UNAVAILABLE, "model is loading")
            return
        try:
            messages, temperature, max_new_tokens = parse_payload(body)
        except PayloadError as e:
            self.error(HTTPStatus.BAD_REQUEST, str(e))
            return
        try:
            with self.server.generate_lock:  # one generation at a time: CPU-bound, 2 cores
                text = generate(messages, temperature, max_new_tokens)
        except Exception as e:
            traceback.print_exc()
            self.error(HTTPStatus.INTERNAL_SERVER_ERROR, f"generation failed: {type(e).__name__}")
            return
        self.reply(HTTPStatus.OK, {"output": text})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployment-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    directory: Path = args.deployment_dir.resolve()
    config_file = directory / DEPLOYMENT_FILE
    config = json.loads(config_file.read_text())

    started = time.perf_counter()
    httpd: ScoringServer = bind(ScoringServer, int(config["port"]), ScoringHandler)
    httpd.config = config
    httpd.generate_lock = threading.Lock()
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    print(
        f"localml scoring server {config['endpoint']}/{config['deployment']} pid {os.getpid()} "
        f"listening on 127.0.0.1:{config['port']}",
        file=sys.stderr,
        flush=True,
    )

    spec = config.get("loader") or DEFAULT_LOADER
    try:
        from core.models import ModelRef

        model = ModelRef.model_validate(config["model"])
        httpd.generate = resolve_loader(spec)(model)
    except Exception:
        print(f"localml: loading {config['model']} with {spec} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    print(
        f"localml: model {config['model']} loaded with {spec} in {time.perf_counter() - started:.2f}s",
        file=sys.stderr,
        flush=True,
    )

    watch_until_orphaned(config_file, directory / SERVER_RECORD_FILE)
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
