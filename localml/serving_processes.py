"""The processes behind the offline endpoints: `ServingProcesses` starts, restarts, checks and stops
one endpoint front per endpoint (`python -m localml.endpoint_front`: key auth, traffic routing)
and one scoring server per deployment (`python -m localml.scoring_server`: loads the model,
scores), as recorded in `localml.serving_state`.

There is no supervisor process: whoever asks (`LocalServing.get_endpoint`,
`get_deployment_state`, `score`, `reconcile`) restarts what died, under the state lock. The
children are detached (`localml.processes.spawn`), so they outlive the process that started them
(the dev host may be killed -9 and restarted); each also exits by itself when its state
directory disappears or its record names another pid (`scoring_server.watch_until_orphaned`).

A start that never becomes healthy is retried up to `MAX_START_ATTEMPTS` times, then the front or
server is Failed with its exit code and the end of its log. A server whose port was taken moves to
a free one (`_free_port`: below the kernel's ephemeral range, so a dead server's port is not handed
to some outgoing connection meanwhile) and the endpoint's routes follow it.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from core.models import ProvisioningState
from localml import processes, state_files
from localml.paths import RunPaths
from localml.scoring_server import EXIT_PORT_IN_USE, PORT_IN_USE_MARKER
from localml.serving_state import (
    DEPLOYMENT_FILE,
    ENDPOINT_FILE,
    FRONT_LOG,
    FRONT_RECORD_FILE,
    SERVER_LOG,
    SERVER_RECORD_FILE,
    Record,
    ServingState,
)

__all__ = [
    "MAX_START_ATTEMPTS",
    "SERVER_PORTS_FROM",
    "ServingProcesses",
    "healthy",
    "recorded_process",
    "recorded_processes",
]

log = logging.getLogger(__name__)

FRONT_MODULE = "localml.endpoint_front"
SERVER_MODULE = "localml.scoring_server"
MAX_START_ATTEMPTS = 3  # consecutive starts that never became healthy before we say Failed
HEALTH_TIMEOUT_S = 2.0
SERVER_PORTS_FROM = 20000  # lowest port given to a front or scoring server (Azurite has 10000-10002)


# ============================================================================ ports and health


def _ephemeral_ports() -> range:
    """The ports the kernel gives as the source of outgoing connections: Linux's
    ``ip_local_port_range``, elsewhere the IANA range 49152-65535."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(49152, 65536)
    return range(low, high + 1)


def _free_port(exclude: set[int]) -> int:
    """A free loopback port for a server, below the ephemeral range when there is room.

    A port from the ephemeral range (what binding port 0 gives) can be handed, the moment its
    server dies, to any process's outgoing connection as its source port; the restarted server
    then cannot have it back and must move, which breaks the connection's URL (seen in CI)."""
    ephemeral = _ephemeral_ports()
    below = range(SERVER_PORTS_FROM, ephemeral.start)
    choose = secrets.SystemRandom().choice
    for _ in range(100):
        if len(below) >= 1000:
            port = choose(below)
            if port in exclude or not _port_free(port):
                continue
        else:  # no room below the ephemeral range: let the kernel pick
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port in exclude:
                continue
        return port
    raise RuntimeError("no free loopback port")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def healthy(port: int, pid: int | None) -> bool:
    """GET /health answers 200 from the process we recorded (not a stranger on a reused port)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HEALTH_TIMEOUT_S)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    if response.status != 200:
        return False
    try:
        return bool(json.loads(body).get("pid") == pid)
    except (ValueError, AttributeError):
        return False


def recorded_process(rec: Record) -> processes.Process | None:
    """(pid, start time) a front's or server's record names; None if it names no process."""
    return (int(rec["pid"]), rec.get("start_time")) if rec.get("pid") else None


def recorded_processes(record_paths: list[Path]) -> list[processes.Process]:
    """The processes these records name (running or not: `processes.stop` skips gone ones)."""
    found = (recorded_process(state_files.read_json(path) or {}) for path in record_paths)
    return [process for process in found if process is not None]


# ============================================================================ the fronts and servers


class ServingProcesses:
    """The fronts and scoring servers of one run dir (`state`); `paths` gives their environment."""

    def __init__(self, state: ServingState, paths: RunPaths) -> None:
        self.state = state
        self.paths = paths

    def env(self) -> dict[str, str]:
        """A front's or server's environment: the scoring server's real loader finds the
        registered model through these."""
        return processes.child_env(
            {
                "LOCAL_RUN_DIR": str(self.paths.root),
                "MLFLOW_TRACKING_URI": self.paths.mlflow_uri,
                "MLFLOW_REGISTRY_URI": self.paths.mlflow_uri,
            }
        )

    def new_port(self) -> int:
        """A free loopback port no front or server of this run dir has."""
        return _free_port(self.state.ports_in_use())

    # ------------------------------------------------------------------ state of one process

    def provisioning_state(self, record_path: Path, port: int, rec: Record) -> ProvisioningState:
        """Failed, Succeeded (answers /health as the recorded pid: recorded as provisioned), or
        on its way: Updating once it has been provisioned before, else Creating. Lock not held."""
        if rec.get("failed"):
            return ProvisioningState.FAILED
        if healthy(port, rec.get("pid")):
            self._mark_healthy(record_path, int(rec["pid"]))
            return ProvisioningState.SUCCEEDED
        return ProvisioningState.UPDATING if rec.get("provisioned") else ProvisioningState.CREATING

    def _mark_healthy(self, record_path: Path, pid: int) -> None:
        with self.state.locked():
            rec = state_files.read_json(record_path)
            if rec is None or rec.get("pid") != pid or (rec.get("provisioned") and not rec.get("attempts")):
                return
            rec.update(provisioned=True, attempts=0, ready_at=state_files.now())
            state_files.write_json(record_path, rec)

    # ------------------------------------------------------------------ (re)starts

    def reconcile_front_locked(self, endpoint: str, cfg: Record) -> Record:
        """Start the front if it is not running (first start, crash, stop_all). Lock held."""
        directory = self.state.endpoint_dir(endpoint)
        record_path = directory / FRONT_RECORD_FILE
        rec = state_files.read_json(record_path) or {}
        if rec.get("failed") or processes.alive(rec.get("pid"), rec.get("start_time")):
            return rec
        attempts = int(rec.get("attempts", 0))
        died = bool(rec.get("pid")) and not rec.get("stopped")
        if died:
            if attempts >= MAX_START_ATTEMPTS:
                return self._fail_locked(record_path, rec, directory / FRONT_LOG, "endpoint front")
            log.warning("endpoint front of %s (pid %s) is gone; restarting it", endpoint, rec.get("pid"))
        return self._start_locked(
            f"endpoint {endpoint}",
            FRONT_MODULE,
            ["--endpoint-dir", str(directory)],
            directory / FRONT_LOG,
            directory / ENDPOINT_FILE,
            cfg,
            record_path,
            rec,
            (attempts if died else 0) + 1,
        )

    def reconcile_server_locked(self, endpoint: str, deployment: str, dcfg: Record) -> Record:
        """Start the scoring server if it should run and does not. Lock held."""
        directory = self.state.deployment_dir(endpoint, deployment)
        record_path = directory / SERVER_RECORD_FILE
        rec = state_files.read_json(record_path) or {}
        if rec.get("failed") or rec.get("deleting") or processes.alive(rec.get("pid"), rec.get("start_time")):
            return rec
        attempts = int(rec.get("attempts", 0))
        died = bool(rec.get("pid")) and not rec.get("stopped")
        what = f"scoring server {endpoint}/{deployment}"
        if died:
            tail = processes.log_tail(directory / SERVER_LOG, int(rec.get("log_offset", 0)))
            port_clash = PORT_IN_USE_MARKER in tail or (
                processes.exit_code(rec.get("pid"), rec.get("start_time")) == EXIT_PORT_IN_USE
            )
            # A server that never became healthy and did not merely lose its port is broken
            # (bad model, loader error): Failed, as Azure reports a crashing container.
            if attempts >= MAX_START_ATTEMPTS or not (rec.get("provisioned") or port_clash):
                return self._fail_locked(record_path, rec, directory / SERVER_LOG, what)
            log.warning("%s (pid %s) is gone; restarting it", what, rec.get("pid"))
        return self._start_locked(
            what,
            SERVER_MODULE,
            ["--deployment-dir", str(directory)],
            directory / SERVER_LOG,
            directory / DEPLOYMENT_FILE,
            dcfg,
            record_path,
            rec,
            (attempts if died else 0) + 1,
            on_port_move=lambda: self.state.sync_routes_locked(endpoint),
        )

    def _start_locked(
        self,
        what: str,
        module: str,
        args: list[str],
        log_path: Path,
        config_path: Path,
        config: Record,
        record_path: Path,
        rec: Record,
        attempts: int,
        on_port_move: Callable[[], object] | None = None,
    ) -> Record:
        """(Re)start a front or scoring server and record it: on a free port (moved, and its
        config rewritten, if its own was taken), `attempts` counted, `provisioned` kept."""
        if not _port_free(int(config["port"])):
            config["port"] = self.new_port()
            state_files.write_json(config_path, config)
            if on_port_move is not None:
                on_port_move()
            log.warning("%s moves to port %d (its port was taken)", what, config["port"])
        started = processes.spawn(module, args, log_path, self.env())
        rec = {
            **started,
            "attempts": attempts,
            "provisioned": bool(rec.get("provisioned")),
            "port": int(config["port"]),
        }
        state_files.write_json(record_path, rec)
        return rec

    def retry_failed_front_locked(self, endpoint: str) -> None:
        """Forget a front's failure so the next reconcile starts it again (re-provisioning)."""
        record_path = self.state.endpoint_dir(endpoint) / FRONT_RECORD_FILE
        rec = state_files.read_json(record_path)
        if rec and rec.get("failed"):
            rec.pop("failed")
            rec.update(attempts=0, stopped=True)
            state_files.write_json(record_path, rec)

    def _fail_locked(self, record_path: Path, rec: Record, log_path: Path, what: str) -> Record:
        code = processes.exit_code(rec.get("pid"), rec.get("start_time"))
        tail = processes.log_tail(log_path, int(rec.get("log_offset", 0)))
        rec["failed"] = {
            "at": state_files.now(),
            "exit_code": code,
            "error": f"{what} exited" + (f" with code {code}" if code is not None else ""),
            "log_tail": tail,
        }
        state_files.write_json(record_path, rec)
        log.warning("%s failed (%s); log tail:\n%s", what, record_path.parent, tail[-500:])
        return rec

    # ------------------------------------------------------------------ stops

    def running(self) -> dict[str, int]:
        """Running fronts and servers: {"endpoint" or "endpoint/deployment": pid}."""
        found: dict[str, int] = {}
        for label, path in self.state.record_files().items():
            rec = state_files.read_json(path) or {}
            if processes.alive(rec.get("pid"), rec.get("start_time")):
                found[label] = int(rec["pid"])
        return found

    def stop_all(self) -> int:
        """Stop every front and scoring server; their records say `stopped` (a stop is not a
        crash: `reconcile` restarts them without counting an attempt). How many were running."""
        with self.state.locked():
            targets: list[processes.Process] = []
            for path in self.state.record_files().values():
                rec = state_files.read_json(path)
                process = recorded_process(rec or {})
                if rec is None or process is None:
                    continue
                rec["stopped"] = True
                state_files.write_json(path, rec)
                if processes.alive(*process):
                    targets.append(process)
            processes.stop(targets)
        return len(targets)
