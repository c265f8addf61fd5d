"""One endpoint's front door: `python -m localml.endpoint_front --endpoint-dir <dir>`.

Serves 127.0.0.1:<port> (`<dir>/endpoint.json`) with the semantics of an Azure ML managed online
endpoint in key auth mode:

- `POST /score` needs `Authorization: Bearer <key>` (`<dir>/key`; compared in constant time),
  else 401. With an `azureml-model-deployment` header the request goes to that deployment, whatever
  its traffic weight (0 % included), or 404 if the endpoint has no such deployment. Without it, a
  deployment is drawn by the traffic weights; 503 if no deployment has traffic. The body is
  forwarded to that deployment's scoring server and its status and body come back, with an
  `azureml-model-deployment` response header naming who answered. 502 if the scoring server is
  unreachable, 408 if it takes longer than the request timeout.
- `GET /health` → 200 (no auth; loopback only).

`endpoint.json` (traffic and the deployment → port routing table) and the key are re-read when
their file changes (mtime/inode), so `LocalServing.set_traffic` takes effect on the next request.
"""

from __future__ import annotations

import argparse
import hmac
import http.client
import json
import os
import random
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from localml.scoring_server import JsonHandler, bind, watch_until_orphaned

ENDPOINT_FILE = "endpoint.json"
KEY_FILE = "key"
FRONT_RECORD_FILE = "front.json"
DEPLOYMENT_HEADER = "azureml-model-deployment"
# Azure's managed deployments default to a 5 s request timeout; ours is raised to 90 s for
# generation (backends/azureml/serving.py). Stay under the LocalServing client's 60 s+ so the
# caller sees 408.
FORWARD_TIMEOUT_S = 58.0


@dataclass
class _Watched:
    """A file parsed again only when its (mtime, inode, size) changes."""

    path: Path
    stamp: tuple[int, int, int] | None = None
    value: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, parse: Any) -> Any:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        with self.lock:
            if stamp != self.stamp:
                self.value, self.stamp = parse(self.path), stamp
            return self.value


def _parse_endpoint(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _parse_key(path: Path) -> bytes:
    return path.read_bytes().strip()


class FrontServer(ThreadingHTTPServer):
    endpoint_file: _Watched
    key_file: _Watched
    name: str


class FrontHandler(JsonHandler):
    server: FrontServer

    def do_GET(self) -> None:
        if self.path != "/health":
            self.error(HTTPStatus.NOT_FOUND, "not found")
            return
        self.reply(HTTPStatus.OK, {"status": "ok", "endpoint": self.server.name, "pid": os.getpid()})

    def do_POST(self) -> None:
        if self.path != "/score":
            self.error(HTTPStatus.NOT_FOUND, "not found")
            return
        if not self._authorized():
            self.error(HTTPStatus.UNAUTHORIZED, "missing or invalid key", {"WWW-Authenticate": "Bearer"})
            return
        body = self.read_body()
        if body is None:
            return
        config = self.server.endpoint_file.get(_parse_endpoint)
        if config is None:
            self.error(HTTPStatus.SERVICE_UNAVAILABLE, "endpoint state is missing")
            return
        routes: dict[str, dict[str, Any]] = config.get("deployments", {})
        pinned = self.headers.get(DEPLOYMENT_HEADER)
        if pinned:
            if pinned not in routes:
                self.error(HTTPStatus.NOT_FOUND, f"deployment {pinned!r} not found on this endpoint")
                return
            name = pinned
        else:
            weighted = [
                (d, int(w)) for d, w in config.get("traffic", {}).items() if int(w) > 0 and d in routes
            ]
            if not weighted:
                self.error(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"no deployment has traffic; set traffic or name one in the {DEPLOYMENT_HEADER} header",
                )
                return
            name = random.choices([d for d, _ in weighted], weights=[w for _, w in weighted])[0]
        self._forward(name, int(routes[name]["port"]), body)

    def _authorized(self) -> bool:
        key: bytes | None = self.server.key_file.get(_parse_key)
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not key or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), key)

    def _forward(self, deployment: str, port: int, body: bytes) -> None:
        tag = {DEPLOYMENT_HEADER: deployment}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=FORWARD_TIMEOUT_S)
        try:
            conn.request("POST", "/score", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            content_type = response.getheader("Content-Type", "application/json")
        except TimeoutError:
            self.error(HTTPStatus.REQUEST_TIMEOUT, f"deployment {deployment} did not answer in time", tag)
            return
        except (OSError, http.client.HTTPException) as e:
            self.error(
                HTTPStatus.BAD_GATEWAY, f"deployment {deployment} unreachable: {type(e).__name__}", tag
            )
            return
        finally:
            conn.close()
        self.reply_raw(response.status, data, content_type, tag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    directory: Path = args.endpoint_dir.resolve()
    config_file = directory / ENDPOINT_FILE
    config = _parse_endpoint(config_file)
    if not (directory / KEY_FILE).is_file():
        print(f"localml: {directory / KEY_FILE}: the endpoint key is missing", file=sys.stderr)
        return 1

    httpd: FrontServer = bind(FrontServer, int(config["port"]), FrontHandler)
    httpd.name = config["name"]
    httpd.endpoint_file = _Watched(config_file)
    httpd.key_file = _Watched(directory / KEY_FILE)
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    print(
        f"localml endpoint front {config['name']} pid {os.getpid()} listening on 127.0.0.1:{config['port']}",
        file=sys.stderr,
        flush=True,
    )
    watch_until_orphaned(config_file, directory / FRONT_RECORD_FILE)
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
