"""The offline managed online endpoint: `LocalServing` implements `ServingBackend` and `ConnectionStore`.

Process model. `LocalServing` is a supervisor without a process of its own: each call reads the
state under `RunPaths.serving_dir`, (re)starts what should be running and returns. It spawns

- one endpoint front per endpoint (`python -m localml.endpoint_front`): key auth, traffic routing;
- one scoring server per deployment (`python -m localml.scoring_server`): loads the model, scores.

Both are detached (`start_new_session=True`, own process group, logs in the state directory), so
they outlive the process that started them (the devhost may be killed -9 and restarted).
`get_endpoint`, `get_deployment_state`, `score` and `reconcile()` restart a front or a server that
died; `delete_deployment` stops its server; `delete_endpoint` stops the front and every server of
the endpoint and removes its state; `stop_all()` stops everything this run dir started.
Each child also exits by itself when its state directory disappears or its supervisor recorded
another pid for it (see `scoring_server.watch_until_orphaned`).

State (all small JSON files written atomically: temp file + fsync + `os.replace`; every
read-modify-write holds an `flock` on `serving/.lock`, so threads and processes may share a run dir):

    serving/endpoints/<endpoint>/endpoint.json   name, tags, port, traffic, deployments {name: {port}},
                                                 deleting {at, id} once delete_endpoint began
                                  key            the endpoint key (0600; never logged or returned)
                                  front.json     the front's pid/start time/attempts/provisioned/failed
                                  front.log
    serving/endpoints/<endpoint>/deployments/<deployment>/deployment.json   model, port, loader, spec
                                                                            (instance type/count, tags)
                                                          server.json       as front.json (+ deleting)
                                                          server.log

Prompt flow. `publish_connection` writes a local `CustomConnection` with promptflow-devkit under
`RunPaths.promptflow_home` (`connection_exists` / `delete_connection` read / remove it), in this
process or a child process (see `_promptflow_in_process`); `promptflow_env()` gives the environment
any other process (the devhost, the demo, `pf flow test`) needs to read it. See `promptflow_env` for
what each variable does.

POSIX only (flock, process groups, /proc when present).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from core import redact
from core.models import DeploymentInfo, DeploymentSpec, EndpointInfo, ProvisioningState, ScoreResult
from core.redact import shorten
from core.scoring import Scorer, post_score
from localml import procs, state_files
from localml.endpoint_front import ENDPOINT_FILE, FRONT_RECORD_FILE, KEY_FILE
from localml.paths import RunPaths
from localml.scoring_server import (
    DEPLOYMENT_FILE,
    ECHO_LOADER,
    EXIT_PORT_IN_USE,
    PORT_IN_USE_MARKER,
    SERVER_RECORD_FILE,
)

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FRONT_MODULE = "localml.endpoint_front"
SERVER_MODULE = "localml.scoring_server"
FRONT_LOG = "front.log"
SERVER_LOG = "server.log"
LOCK_FILE = ".lock"

# Azure: 3-32 characters, letters, digits and '-', starting with a letter, not ending with '-'.
# Names become directory names here, so they are checked on every call.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")

MAX_START_ATTEMPTS = 3  # consecutive starts that never became healthy before we say Failed
HEALTH_TIMEOUT_S = 2.0
SCORE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0  # how long `score` waits for a restarting front/server
STOP_GRACE_S = 5.0
LOG_TAIL_BYTES = 2000
LOG_ROTATE_BYTES = 5 * 1024 * 1024
MAX_ERROR_CHARS = 300

# Prompt flow (promptflow-devkit 1.18.5), verified in its installed source:
# - promptflow/_sdk/_constants.py: HOME_PROMPT_FLOW_DIR = $PF_HOME_DIRECTORY or ~/.promptflow, resolved
#   ONCE, when that module is first imported; the connection DB is HOME/pf.sqlite.
# - promptflow/_sdk/_configuration.py: config is HOME/pf.yaml; there is no telemetry env var, only
#   `telemetry.enabled` (what `pf config set telemetry.enabled=false` writes), read by
#   promptflow/_sdk/_telemetry/telemetry.py:is_telemetry_enabled.
# - promptflow/_sdk/_tracing.py: `trace.destination: none` stops `pf flow test` from starting the
#   local prompt flow service (a daemon on port 23333+) to collect traces.
# - promptflow/_sdk/_utilities/general_utils.py: connection secrets are Fernet-encrypted with a key
#   kept in the `keyring` ("promptflow"/"encryption_key"); keyrings.alt's PlaintextKeyring keeps it
#   in $XDG_DATA_HOME/python_keyring/keyring_pass.cfg (keyring/util/platform_.py).
# - promptflow/_sdk/_version_hint_utils.py: `pf flow test` asks PyPI for the latest version unless
#   HOME/pf_version_check.json has a `last_check_time` under 7 days old.
KEYRING_BACKEND = "keyrings.alt.file.PlaintextKeyring"
PF_CONFIG_FILE = "pf.yaml"
PF_VERSION_CHECK_FILE = "pf_version_check.json"
PF_DB_FILE = "pf.sqlite"
LOOPBACK = ("127.0.0.1", "localhost")

Record = dict[str, Any]

_PF_LOCK = threading.Lock()


# ============================================================================ Prompt flow environment


def promptflow_env(paths: RunPaths) -> dict[str, str]:
    """Environment for any process that uses this run's Prompt flow connections.

    Also prepares the home, so the settings hold for `pf` commands too: creates it; `pf.yaml`
    gets `telemetry.enabled: false` always and `trace.destination: none` unless one is set (no
    background trace service); `pf_version_check.json` gets a fresh `last_check_time` (no PyPI
    lookup). Set these variables before promptflow is first imported in a process:

    - PF_HOME_DIRECTORY: promptflow's home (pf.sqlite with the connections, pf.yaml) = the run's
      promptflow_home, never ~/.promptflow.
    - PYTHON_KEYRING_BACKEND: keyrings.alt's PlaintextKeyring (no OS keyring offline / in CI).
    - XDG_DATA_HOME: where PlaintextKeyring keeps the Fernet key that encrypts connection secrets:
      `<promptflow_home>/python_keyring/keyring_pass.cfg`, so the key lives with the DB it opens.
    - NO_PROXY / no_proxy (+ 127.0.0.1, localhost): the flow's tool calls the loopback endpoint.

    Telemetry has no environment switch in promptflow-devkit 1.18.5; it is the `pf.yaml` setting.
    """
    home = paths.promptflow_home
    _prepare_promptflow_home(home)
    env = {
        "PF_HOME_DIRECTORY": str(home),
        "PYTHON_KEYRING_BACKEND": KEYRING_BACKEND,
        "XDG_DATA_HOME": str(home),
    }
    for name in ("NO_PROXY", "no_proxy"):
        current = [h for h in os.environ.get(name, "").split(",") if h.strip()]
        env[name] = ",".join(current + [h for h in LOOPBACK if h not in current])
    return env


def keyring_file(paths: RunPaths) -> Path:
    """The PlaintextKeyring file under `promptflow_env(paths)` (holds promptflow's encryption key)."""
    return paths.promptflow_home / "python_keyring" / "keyring_pass.cfg"


def _prepare_promptflow_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    # A fresh "last checked" stamp (promptflow's format, local time): no PyPI lookup offline.
    check_path = home / PF_VERSION_CHECK_FILE
    try:
        check = json.loads(check_path.read_text())
        check = check if isinstance(check, dict) else {}
    except (FileNotFoundError, ValueError):
        check = {}
    check["last_check_time"] = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    state_files.write_atomic(check_path, json.dumps(check).encode())

    config_path = home / PF_CONFIG_FILE
    try:
        import yaml  # PyYAML, a promptflow-devkit dependency

        config: dict[str, Any] = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
        config = config if isinstance(config, dict) else {}
    except ImportError:
        yaml = None
        config = {}
    for section in ("telemetry", "trace"):  # nested, as `pf config set` writes them
        if not isinstance(config.get(section), dict):
            config[section] = {}
    telemetry, trace = config["telemetry"], config["trace"]
    if telemetry.get("enabled") is False and "destination" in trace:
        return
    telemetry["enabled"] = False
    trace.setdefault("destination", "none")
    if yaml is not None:
        text = yaml.safe_dump(config, default_flow_style=False)
    else:
        text = "telemetry:\n  enabled: false\ntrace:\n  destination: none\n"
    state_files.write_atomic(config_path, text.encode())


def _bound_promptflow_home() -> Path | None:
    """The home promptflow resolved in this process, or None if it has not been imported yet."""
    constants = sys.modules.get("promptflow._sdk._constants")
    home = getattr(constants, "HOME_PROMPT_FLOW_DIR", None)
    return Path(home).resolve() if home is not None else None


# ============================================================================ files


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _log_tail(path: Path, offset: int) -> str:
    """The end of `path` from `offset` on (what the latest start of a process wrote)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = offset if 0 <= offset <= size else 0  # a rotated log starts over
            f.seek(max(start, size - LOG_TAIL_BYTES))
            return redact.scrub(f.read().decode("utf-8", errors="replace")).strip()
    except FileNotFoundError:
        return ""


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: 3-32 letters, digits or '-', starting with a letter, "
            "not ending with '-'"
        )


# ============================================================================ processes

# Popen objects of the children this process started, by (pid, start time): polling them reaps
# zombies and gives exit codes. Children of an earlier process (before a host restart) are not here.
_CHILDREN: dict[tuple[int, int | None], subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


def _child(pid: int, start_time: int | None) -> subprocess.Popen[bytes] | None:
    with _CHILDREN_LOCK:
        return _CHILDREN.get((pid, start_time))


def _alive(pid: int | None, start_time: int | None) -> bool:
    """Is the process we recorded (pid + start time, so a reused pid does not count) running?"""
    if not pid:
        return False
    child = _child(pid, start_time)
    if child is not None and child.poll() is not None:
        return False
    return procs.running(pid, start_time)


def _exit_code(pid: int | None, start_time: int | None) -> int | None:
    child = _child(pid, start_time) if pid else None
    return child.returncode if child is not None else None


def _terminate(pid: int | None, start_time: int | None) -> None:
    """Stop the process group we started (pgid == pid: start_new_session); SIGTERM, then SIGKILL."""
    if not _alive(pid, start_time):
        return
    assert pid is not None
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)  # ESRCH if pid is no longer a group leader: never hits a stranger
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _alive(pid, start_time):
                return
            time.sleep(0.02)


def _stop(targets: list[tuple[int, int | None]]) -> None:
    """`_terminate` several process groups: all are sent SIGTERM first, then each is waited for."""
    for pid, start_time in targets:
        if _alive(pid, start_time):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
    for pid, start_time in targets:
        _terminate(pid, start_time)


def _recorded_state(endpoint_cfg: Record, record_path: Path) -> ProvisioningState:
    """A front's or scoring server's provisioning state from its records alone (no restart)."""
    rec = state_files.read_json(record_path) or {}
    if endpoint_cfg.get("deleting") or rec.get("deleting"):
        return ProvisioningState.DELETING
    if rec.get("failed"):
        return ProvisioningState.FAILED
    return ProvisioningState.SUCCEEDED if rec.get("provisioned") else ProvisioningState.CREATING


SERVER_PORTS_FROM = 20000  # lowest port given to a front or scoring server (Azurite has 10000-10002)


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


def _healthy(port: int, pid: int | None) -> bool:
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
        return json.loads(body).get("pid") == pid
    except (ValueError, AttributeError):
        return False


# ============================================================================ scoring result helpers


# ============================================================================ the backend


class LocalServing:
    """`ServingBackend` + `ConnectionStore` on local processes; see the module docstring.

    `paths`: the run directory, or the `Settings` naming it (`LOCAL_RUN_DIR`).
    `loader` is the scoring servers' model loader, `"module:function"` (None: the real one,
    `localml.scoring_server:load_training_model`); it is stored with each deployment, so a
    restarted server loads the same way. `scoring_server.ECHO_LOADER` serves an echo model.
    """

    def __init__(
        self,
        paths: RunPaths | Settings,
        *,
        loader: str | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        score_timeout_s: float = SCORE_TIMEOUT_S,
        http: httpx.Client | None = None,
    ) -> None:
        if not isinstance(paths, RunPaths):  # Settings: the run dir (and, if set, a loader) from it
            loader = loader or getattr(paths, "LOCAL_SCORING_LOADER", None)
            paths = RunPaths.at(paths.LOCAL_RUN_DIR)
        self.paths = paths
        self.root = paths.serving_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.loader = loader
        self.ready_timeout_s = ready_timeout_s
        self.score_timeout_s = score_timeout_s
        self._http = http

    # ------------------------------------------------------------------ layout and locking

    def _endpoint_dir(self, endpoint: str) -> Path:
        return self.root / "endpoints" / endpoint

    def _deployment_dir(self, endpoint: str, deployment: str) -> Path:
        return self._endpoint_dir(endpoint) / "deployments" / deployment

    def _endpoint_names(self) -> list[str]:
        base = self.root / "endpoints"
        return (
            sorted(p.name for p in base.iterdir() if (p / ENDPOINT_FILE).is_file()) if base.is_dir() else []
        )

    def _deployment_names(self, endpoint: str) -> list[str]:
        base = self._endpoint_dir(endpoint) / "deployments"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / DEPLOYMENT_FILE).is_file())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across threads and processes (flock on a fresh descriptor). Not reentrant."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _ports_in_use(self) -> set[int]:
        ports: set[int] = set()
        for ep in self._endpoint_names():
            cfg = state_files.read_json(self._endpoint_dir(ep) / ENDPOINT_FILE) or {}
            ports.add(int(cfg.get("port", 0)))
            for dep in self._deployment_names(ep):
                dcfg = state_files.read_json(self._deployment_dir(ep, dep) / DEPLOYMENT_FILE) or {}
                ports.add(int(dcfg.get("port", 0)))
        return ports

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        # The scoring server's real loader finds the registered model through these.
        env["LOCAL_RUN_DIR"] = str(self.paths.root)
        env["MLFLOW_TRACKING_URI"] = self.paths.mlflow_uri
        env["MLFLOW_REGISTRY_URI"] = self.paths.mlflow_uri
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        env.setdefault("HF_HUB_OFFLINE", "1")
        return env

    def _spawn(self, module: str, args: list[str], log_path: Path) -> Record:
        """Start `python -m module args` detached, output appended to `log_path`."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(log_path, log_path.with_suffix(log_path.suffix + ".1"))
        with open(log_path, "ab") as out:
            out.write(f"--- {_now()} starting {module} {' '.join(args)}\n".encode())
            out.flush()
            offset = out.tell()
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=PROJECT_ROOT,
                env=self._child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        start_time = procs.start_time(proc.pid)
        with _CHILDREN_LOCK:
            _CHILDREN[(proc.pid, start_time)] = proc
        return {"pid": proc.pid, "start_time": start_time, "started_at": _now(), "log_offset": offset}

    def _mark_healthy(self, record_path: Path, pid: int) -> None:
        with self._locked():
            rec = state_files.read_json(record_path)
            if rec is None or rec.get("pid") != pid or (rec.get("provisioned") and not rec.get("attempts")):
                return
            rec.update(provisioned=True, attempts=0, ready_at=_now())
            state_files.write_json(record_path, rec)

    # ------------------------------------------------------------------ endpoint front

    def _reconcile_front_locked(self, endpoint: str, cfg: Record) -> Record:
        """Start the front if it is not running (first start, crash, stop_all). Lock held."""
        directory = self._endpoint_dir(endpoint)
        record_path = directory / FRONT_RECORD_FILE
        rec = state_files.read_json(record_path) or {}
        if rec.get("failed") or _alive(rec.get("pid"), rec.get("start_time")):
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
            config["port"] = _free_port(self._ports_in_use())
            state_files.write_json(config_path, config)
            if on_port_move is not None:
                on_port_move()
            log.warning("%s moves to port %d (its port was taken)", what, config["port"])
        started = self._spawn(module, args, log_path)
        rec = {
            **started,
            "attempts": attempts,
            "provisioned": bool(rec.get("provisioned")),
            "port": int(config["port"]),
        }
        state_files.write_json(record_path, rec)
        return rec

    def _retry_failed_front_locked(self, endpoint: str) -> None:
        """Forget a front's failure so the next reconcile starts it again (re-provisioning)."""
        record_path = self._endpoint_dir(endpoint) / FRONT_RECORD_FILE
        rec = state_files.read_json(record_path)
        if rec and rec.get("failed"):
            rec.pop("failed")
            rec.update(attempts=0, stopped=True)
            state_files.write_json(record_path, rec)

    def _fail_locked(self, record_path: Path, rec: Record, log_path: Path, what: str) -> Record:
        code = _exit_code(rec.get("pid"), rec.get("start_time"))
        tail = _log_tail(log_path, int(rec.get("log_offset", 0)))
        rec["failed"] = {
            "at": _now(),
            "exit_code": code,
            "error": f"{what} exited" + (f" with code {code}" if code is not None else ""),
            "log_tail": tail,
        }
        state_files.write_json(record_path, rec)
        log.warning("%s failed (%s); log tail:\n%s", what, record_path.parent, tail[-500:])
        return rec

    def begin_create_endpoint(self, name: str, tags: dict[str, str]) -> None:
        _check_name("endpoint", name)
        directory = self._endpoint_dir(name)
        with self._locked():
            cfg = state_files.read_json(directory / ENDPOINT_FILE)
            if cfg is not None and cfg.get("deleting"):
                raise ValueError(f"endpoint {name} is being deleted")
            if cfg is None:
                # Without endpoint.json (written last, under this lock) a folder is what a crashed
                # create or delete left: start clean, so no old deployment or key is adopted.
                shutil.rmtree(directory, ignore_errors=True)
                directory.mkdir(parents=True, exist_ok=True)
                os.chmod(directory, 0o700)
                if not (directory / KEY_FILE).is_file():
                    state_files.write_atomic(directory / KEY_FILE, secrets.token_urlsafe(32).encode())  # 0600
                cfg = {
                    "name": name,
                    "tags": dict(tags),
                    "port": _free_port(self._ports_in_use()),
                    "traffic": {},
                    "deployments": {},
                    "created_at": _now(),
                }
                state_files.write_json(directory / ENDPOINT_FILE, cfg)
                log.info("endpoint %s created on 127.0.0.1:%d", name, cfg["port"])
            self._retry_failed_front_locked(name)  # like create_or_update on a Failed endpoint
            self._reconcile_front_locked(name, cfg)

    def get_endpoint(self, name: str) -> EndpointInfo:
        _check_name("endpoint", name)
        directory = self._endpoint_dir(name)
        with self._locked():
            cfg = state_files.read_json(directory / ENDPOINT_FILE)
            if cfg is None:
                return EndpointInfo(name=name, state=ProvisioningState.NOT_FOUND)
            if cfg.get("deleting"):  # nothing is restarted any more; delete_endpoint finishes
                return self._endpoint_info(name, cfg, ProvisioningState.DELETING)
            cfg = self._sync_routes_locked(name, cfg)
            rec = self._reconcile_front_locked(name, cfg)
        port = int(cfg["port"])
        if rec.get("failed"):
            state = ProvisioningState.FAILED
        elif _healthy(port, rec.get("pid")):
            self._mark_healthy(directory / FRONT_RECORD_FILE, int(rec["pid"]))
            state = ProvisioningState.SUCCEEDED
        else:
            state = ProvisioningState.UPDATING if rec.get("provisioned") else ProvisioningState.CREATING
        return self._endpoint_info(name, cfg, state)

    @staticmethod
    def _endpoint_info(name: str, cfg: Record, state: ProvisioningState) -> EndpointInfo:
        return EndpointInfo(
            name=name,
            state=state,
            traffic={str(k): int(v) for k, v in cfg["traffic"].items()},
            deployments=sorted(cfg["deployments"]),
            scoring_uri=f"http://127.0.0.1:{int(cfg['port'])}/score",
            tags={str(k): str(v) for k, v in (cfg.get("tags") or {}).items()},
        )

    def list_endpoints(self) -> list[EndpointInfo]:
        """Every endpoint of this run dir (by name), read from its records only: unlike
        `get_endpoint`, listing never restarts a stopped front (the cost guard's sweep and
        `scripts/teardown.py` list after `make down` too). The state is the resource's
        provisioning state, as Azure reports an idle endpoint: Succeeded once provisioned."""
        found = []
        with self._locked():
            for name in self._endpoint_names():
                directory = self._endpoint_dir(name)
                cfg = state_files.read_json(directory / ENDPOINT_FILE)
                if cfg is None:
                    continue
                found.append(
                    self._endpoint_info(name, cfg, _recorded_state(cfg, directory / FRONT_RECORD_FILE))
                )
        return found

    def update_endpoint_tags(self, name: str, tags: dict[str, str]) -> None:
        """Merge `tags` into the endpoint's tags (endpoint.json, rewritten atomically under the
        lock); traffic, deployments and processes are left as they are."""
        _check_name("endpoint", name)
        path = self._endpoint_dir(name) / ENDPOINT_FILE
        with self._locked():
            cfg = state_files.read_json(path)
            if cfg is None:
                raise ValueError(f"endpoint {name} not found")
            if cfg.get("deleting"):
                raise ValueError(f"endpoint {name} is being deleted")
            merged = {**(cfg.get("tags") or {}), **{str(k): str(v) for k, v in tags.items()}}
            if merged != cfg.get("tags"):
                cfg["tags"] = merged
                state_files.write_json(path, cfg)
        log.info("tags of endpoint %s updated: %s", name, sorted(tags))

    def delete_endpoint(self, name: str) -> None:
        """Stop the endpoint's front and scoring servers and remove its state; no-op if it is gone.

        Crash-safe in three steps: endpoint.json is marked `deleting` (from then on nothing of it
        is restarted or created, and it reports Deleting); the processes are stopped (SIGTERM,
        then SIGKILL); endpoint.json is removed (the endpoint no longer exists), then the folder.
        A call interrupted anywhere is finished by the next `delete_endpoint` or `reconcile`.
        The Prompt flow connection that points at it is left alone (`delete_connection`).
        """
        _check_name("endpoint", name)
        directory = self._endpoint_dir(name)
        with self._locked():
            cfg = state_files.read_json(directory / ENDPOINT_FILE)
            if cfg is None:
                shutil.rmtree(directory, ignore_errors=True)  # what a crashed create/delete left
                return
            if not cfg.get("deleting"):
                cfg["deleting"] = {"at": _now(), "id": secrets.token_hex(8)}
                state_files.write_json(directory / ENDPOINT_FILE, cfg)
            marker = cfg["deleting"]
            records = [directory / FRONT_RECORD_FILE]
            deployments = directory / "deployments"
            if deployments.is_dir():
                records += [d / SERVER_RECORD_FILE for d in sorted(deployments.iterdir()) if d.is_dir()]
            targets = []
            for path in records:
                rec = state_files.read_json(path) or {}
                if rec.get("pid"):
                    targets.append((int(rec["pid"]), rec.get("start_time")))
        _stop(targets)
        with self._locked():
            cfg = state_files.read_json(directory / ENDPOINT_FILE)
            if cfg is not None and cfg.get("deleting") != marker:
                return  # not ours any more (cannot happen while marked; a new endpoint is kept)
            # endpoint.json first: from then on the endpoint does not exist, whatever a kill -9
            # during rmtree leaves behind (a folder without it is cleared on the next create).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / ENDPOINT_FILE)
            shutil.rmtree(directory, ignore_errors=True)
        log.info("endpoint %s deleted (%d process(es) stopped)", name, len(targets))

    # ------------------------------------------------------------------ deployments

    def _sync_routes_locked(self, endpoint: str, cfg: Record | None = None) -> Record:
        """Make endpoint.json's routing table and traffic map match the deployment directories.

        Repairs a crash between writing a deployment and registering it (it gets 0 %), drops
        deployments being deleted, and follows a server that moved port. Lock held.
        """
        path = self._endpoint_dir(endpoint) / ENDPOINT_FILE
        cfg = cfg if cfg is not None else state_files.read_json(path)
        if cfg is None:
            raise ValueError(f"endpoint {endpoint} not found")
        routes: dict[str, dict[str, int]] = {}
        for dep in self._deployment_names(endpoint):
            directory = self._deployment_dir(endpoint, dep)
            dcfg = state_files.read_json(directory / DEPLOYMENT_FILE)
            rec = state_files.read_json(directory / SERVER_RECORD_FILE) or {}
            if dcfg is not None and not rec.get("deleting"):
                routes[dep] = {"port": int(dcfg["port"])}
        old_traffic = cfg.get("traffic", {})
        traffic = {d: int(old_traffic.get(d, 0)) for d in routes}
        if routes != cfg.get("deployments") or traffic != old_traffic:
            cfg["deployments"], cfg["traffic"] = routes, traffic
            state_files.write_json(path, cfg)
        return cfg

    def _reconcile_server_locked(self, endpoint: str, deployment: str, dcfg: Record) -> Record:
        """Start the scoring server if it should run and does not. Lock held."""
        directory = self._deployment_dir(endpoint, deployment)
        record_path = directory / SERVER_RECORD_FILE
        rec = state_files.read_json(record_path) or {}
        if rec.get("failed") or rec.get("deleting") or _alive(rec.get("pid"), rec.get("start_time")):
            return rec
        attempts = int(rec.get("attempts", 0))
        died = bool(rec.get("pid")) and not rec.get("stopped")
        what = f"scoring server {endpoint}/{deployment}"
        if died:
            tail = _log_tail(directory / SERVER_LOG, int(rec.get("log_offset", 0)))
            port_clash = PORT_IN_USE_MARKER in tail or (
                _exit_code(rec.get("pid"), rec.get("start_time")) == EXIT_PORT_IN_USE
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
            on_port_move=lambda: self._sync_routes_locked(endpoint),
        )

    def begin_create_deployment(self, spec: DeploymentSpec) -> None:
        endpoint, deployment = spec.endpoint_name, spec.deployment_name
        _check_name("endpoint", endpoint)
        _check_name("deployment", deployment)
        directory = self._deployment_dir(endpoint, deployment)
        with self._locked():
            cfg = state_files.read_json(self._endpoint_dir(endpoint) / ENDPOINT_FILE)
            if cfg is None:
                raise ValueError(f"endpoint {endpoint} not found; create it before its deployments")
            if cfg.get("deleting"):
                raise ValueError(f"endpoint {endpoint} is being deleted")
            dcfg = state_files.read_json(directory / DEPLOYMENT_FILE)
            if dcfg is not None:
                if (state_files.read_json(directory / SERVER_RECORD_FILE) or {}).get("deleting"):
                    raise ValueError(f"deployment {endpoint}/{deployment} is being deleted")
            else:
                dcfg = {
                    "endpoint": endpoint,
                    "deployment": deployment,
                    "model": spec.model.model_dump(mode="json"),
                    "port": _free_port(self._ports_in_use()),
                    "loader": self.loader,
                    "instance_type": spec.instance_type,
                    "instance_count": spec.instance_count,
                    "tags": dict(spec.tags),
                    "created_at": _now(),
                }
                state_files.write_json(directory / DEPLOYMENT_FILE, dcfg)
                log.info("deployment %s/%s created on 127.0.0.1:%d", endpoint, deployment, dcfg["port"])
            self._sync_routes_locked(endpoint, cfg)  # registers it with 0 % traffic
            self._reconcile_server_locked(endpoint, deployment, dcfg)

    def get_deployment_state(self, endpoint: str, deployment: str) -> ProvisioningState:
        _check_name("endpoint", endpoint)
        _check_name("deployment", deployment)
        directory = self._deployment_dir(endpoint, deployment)
        with self._locked():
            cfg = state_files.read_json(self._endpoint_dir(endpoint) / ENDPOINT_FILE)
            if cfg is None:
                return ProvisioningState.NOT_FOUND
            dcfg = state_files.read_json(directory / DEPLOYMENT_FILE)
            if dcfg is None:
                return ProvisioningState.NOT_FOUND
            if cfg.get("deleting") or (state_files.read_json(directory / SERVER_RECORD_FILE) or {}).get(
                "deleting"
            ):
                return ProvisioningState.DELETING
            rec = self._reconcile_server_locked(endpoint, deployment, dcfg)
            self._sync_routes_locked(endpoint)
        if rec.get("failed"):
            return ProvisioningState.FAILED
        if _healthy(int(dcfg["port"]), rec.get("pid")):
            self._mark_healthy(directory / SERVER_RECORD_FILE, int(rec["pid"]))
            return ProvisioningState.SUCCEEDED
        return ProvisioningState.UPDATING if rec.get("provisioned") else ProvisioningState.CREATING

    def deployment_error(self, endpoint: str, deployment: str) -> str | None:
        """Why a Failed deployment failed (exit code and the end of its log), else None. No secrets."""
        _check_name("endpoint", endpoint)
        _check_name("deployment", deployment)
        rec = state_files.read_json(self._deployment_dir(endpoint, deployment) / SERVER_RECORD_FILE) or {}
        failed = rec.get("failed")
        if not failed:
            return None
        return f"{failed['error']}\n{failed.get('log_tail', '')}".strip()

    def deployment_scoring_uri(self, endpoint: str, deployment: str) -> str | None:
        """The deployment's own scoring server (loopback, no key: the front, or the Azure ML
        emulator, checks the key), or None if there is no such deployment."""
        _check_name("endpoint", endpoint)
        _check_name("deployment", deployment)
        dcfg = state_files.read_json(self._deployment_dir(endpoint, deployment) / DEPLOYMENT_FILE)
        return None if dcfg is None else f"http://127.0.0.1:{int(dcfg['port'])}/score"

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        """The endpoint's deployments (by name) with the instance type/count and tags of their
        spec and their provisioning state, read from the records like `list_endpoints` (no
        scoring server is restarted); [] if the endpoint is gone."""
        _check_name("endpoint", endpoint)
        found = []
        with self._locked():
            cfg = state_files.read_json(self._endpoint_dir(endpoint) / ENDPOINT_FILE)
            names = self._deployment_names(endpoint) if cfg is not None else []
            records = {}
            for deployment in names:
                directory = self._deployment_dir(endpoint, deployment)
                dcfg = state_files.read_json(directory / DEPLOYMENT_FILE)
                if dcfg is not None:  # else deleted meanwhile
                    records[deployment] = (dcfg, _recorded_state(cfg or {}, directory / SERVER_RECORD_FILE))
        for deployment, (dcfg, state) in records.items():
            found.append(
                DeploymentInfo(
                    name=deployment,
                    instance_type=str(dcfg.get("instance_type") or ""),
                    instance_count=int(dcfg.get("instance_count") or 1),
                    state=state,
                    tags={str(k): str(v) for k, v in (dcfg.get("tags") or {}).items()},
                )
            )
        return found

    # ------------------------------------------------------------------ traffic and deletion

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> None:
        _check_name("endpoint", endpoint)
        for name, weight in traffic.items():
            _check_name("deployment", name)
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise ValueError(f"traffic for {name} must be an integer from 0 to 100, got {weight!r}")
        total = sum(traffic.values())
        if total not in (0, 100):
            raise ValueError(f"traffic weights on {endpoint} must add up to 100 (or 0), got {total}")
        with self._locked():
            cfg = self._sync_routes_locked(endpoint)
            unknown = sorted(set(traffic) - set(cfg["deployments"]))
            if unknown:
                raise ValueError(f"endpoint {endpoint} has no deployment(s) {', '.join(unknown)}")
            # Like assigning endpoint.traffic in Azure: the map is replaced; unnamed deployments get 0.
            cfg["traffic"] = {d: int(traffic.get(d, 0)) for d in cfg["deployments"]}
            state_files.write_json(self._endpoint_dir(endpoint) / ENDPOINT_FILE, cfg)
        log.info("traffic on %s set to %s", endpoint, traffic)

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        _check_name("endpoint", endpoint)
        _check_name("deployment", deployment)
        directory = self._deployment_dir(endpoint, deployment)
        with self._locked():
            if not (self._endpoint_dir(endpoint) / ENDPOINT_FILE).is_file():
                return
            cfg = self._sync_routes_locked(endpoint)
            rec = state_files.read_json(directory / SERVER_RECORD_FILE) or {}
            if not (directory / DEPLOYMENT_FILE).is_file() and not rec:
                shutil.rmtree(directory, ignore_errors=True)
                return
            weight = int(cfg["traffic"].get(deployment, 0))
            if weight > 0:
                raise ValueError(
                    f"deployment {deployment} has {weight}% of the traffic on {endpoint}; "
                    "move its traffic elsewhere (set_traffic) before deleting it"
                )
            rec["deleting"] = True  # no more routes to it, no restarts; finished below or on retry
            state_files.write_json(directory / SERVER_RECORD_FILE, rec)
            self._sync_routes_locked(endpoint, cfg)
        _terminate(rec.get("pid"), rec.get("start_time"))
        with self._locked():
            # deployment.json first: from then on the deployment does not exist, whatever a kill
            # -9 during rmtree leaves behind (a leftover server.json alone is cleaned up on retry).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / DEPLOYMENT_FILE)
            shutil.rmtree(directory, ignore_errors=True)
            if (self._endpoint_dir(endpoint) / ENDPOINT_FILE).is_file():  # not deleted meanwhile
                self._sync_routes_locked(endpoint)
        log.info("deployment %s/%s deleted", endpoint, deployment)

    # ------------------------------------------------------------------ scoring

    def _endpoint_secret(self, endpoint: str) -> tuple[str, str]:
        """(scoring URI, key), read fresh. The key is registered with core.redact."""
        _check_name("endpoint", endpoint)
        directory = self._endpoint_dir(endpoint)
        cfg = state_files.read_json(directory / ENDPOINT_FILE)
        if cfg is None:
            raise ValueError(f"endpoint {endpoint} not found")
        key = (directory / KEY_FILE).read_text().strip()
        redact.remember(key)
        return f"http://127.0.0.1:{int(cfg['port'])}/score", key

    def _wait_ready(self, endpoint: str, deployment: str | None) -> None:
        """Restart what died and wait (bounded) until the front and the target deployment(s) answer.

        Targets: the pinned deployment, else every deployment with traffic. Only states that are
        on their way (Creating, Updating) are waited for; anything else is left to the request.
        """
        pending = {ProvisioningState.CREATING, ProvisioningState.UPDATING}
        deadline = time.monotonic() + self.ready_timeout_s
        delay = 0.05
        while True:
            info = self.get_endpoint(endpoint)
            if info.state is ProvisioningState.NOT_FOUND:
                raise ValueError(f"endpoint {endpoint} not found")
            targets = [deployment] if deployment else [d for d, w in info.traffic.items() if w > 0]
            waiting = info.state in pending or any(
                self.get_deployment_state(endpoint, t) in pending for t in targets
            )
            if not waiting or time.monotonic() >= deadline:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def score(self, endpoint: str, deployment: str | None, payload: dict[str, object]) -> ScoreResult:
        return self.scorer(endpoint, timeout_s=self.score_timeout_s)(deployment, payload)

    def scorer(self, endpoint: str, *, timeout_s: float) -> Scorer:
        """The key and front URI read once; each call restarts what died and waits until ready."""
        uri, key = self._endpoint_secret(endpoint)

        def score(deployment: str | None, payload: dict[str, object]) -> ScoreResult:
            if deployment is not None:
                _check_name("deployment", deployment)
            self._wait_ready(endpoint, deployment)
            label = f"{endpoint}/{deployment or '*'}"
            return post_score(
                uri,
                key,
                deployment,
                payload,
                timeout_s=timeout_s,
                label=label,
                http=self._http,
                trust_env=False,
            )

        return score

    # ------------------------------------------------------------------ Prompt flow connection

    def publish_connection(self, name: str, endpoint: str) -> str:
        """Create/update the local Prompt flow CustomConnection `name` → this endpoint.

        configs = {"endpoint": scoring URI}, secrets = {"key": endpoint key}, stored in
        promptflow-devkit's connection DB under `RunPaths.promptflow_home` (see `promptflow_env`).
        In this process or in a child process (`python -m localml.serving publish-connection`,
        which reads the key itself): see `_promptflow_in_process`.
        """
        uri, key = self._endpoint_secret(endpoint)
        with _PF_LOCK:
            if self._promptflow_in_process():
                self._publish_here(name, uri, key)
            else:
                self._promptflow_child(
                    ["publish-connection", "--name", name, "--endpoint", endpoint],
                    f"publishing Prompt flow connection {name}",
                )
        log.info("Prompt flow connection %s now points at %s", name, uri)
        return uri

    def connection_exists(self, name: str) -> bool:
        """Is there a Prompt flow connection `name` in this run's store? (No store yet: False,
        without importing promptflow.) In this process or a child, as `publish_connection`."""
        if not (self.paths.promptflow_home / PF_DB_FILE).is_file():
            return False
        with _PF_LOCK:
            if self._promptflow_in_process():
                return self._connection_exists_here(name)
            out = self._promptflow_child(
                ["connection-exists", "--name", name], f"looking up Prompt flow connection {name}"
            )
        try:
            return bool(json.loads(out.strip().splitlines()[-1])["exists"])
        except (ValueError, IndexError, KeyError, TypeError):
            raise RuntimeError(f"looking up Prompt flow connection {name}: unexpected answer") from None

    def delete_connection(self, name: str) -> None:
        """Delete the Prompt flow connection `name`; no error if it (or the store) is not there.
        In this process or a child, as `publish_connection`."""
        if not (self.paths.promptflow_home / PF_DB_FILE).is_file():
            return
        with _PF_LOCK:
            if self._promptflow_in_process():
                self._delete_connection_here(name)
            else:
                self._promptflow_child(
                    ["delete-connection", "--name", name], f"deleting Prompt flow connection {name}"
                )
        log.info("Prompt flow connection %s deleted", name)

    def _promptflow_in_process(self) -> bool:
        """Use promptflow in this process? Call with `_PF_LOCK` held.

        Yes when it is not imported yet or already uses this run's home (then PF_HOME_DIRECTORY
        and PYTHON_KEYRING_BACKEND are set in os.environ before the import); no when it is bound
        to another home (promptflow fixes its home at import), and no when the host asks for
        children with LOCALML_PUBLISH_IN_CHILD=1: long-running hosts (the devhost) must not import
        promptflow, which brings its tracing/telemetry threads and signal handlers into the host
        process (it broke the devhost's SIGTERM handling).
        """
        if os.environ.get("LOCALML_PUBLISH_IN_CHILD") == "1":
            return False
        bound = _bound_promptflow_home()
        return bound is None or bound == self.paths.promptflow_home.resolve()

    def _connections(self) -> Any:
        """promptflow's local connection operations for this run's home, in this process. Call it
        before anything else of promptflow is imported (promptflow fixes its home at import)."""
        env = promptflow_env(self.paths)
        # XDG_DATA_HOME is not set process-wide (it would move every XDG user's data); the keyring
        # backend is given the same file explicitly instead.
        os.environ["PF_HOME_DIRECTORY"] = env["PF_HOME_DIRECTORY"]
        os.environ["PYTHON_KEYRING_BACKEND"] = env["PYTHON_KEYRING_BACKEND"]
        import keyring
        from keyrings.alt.file import PlaintextKeyring

        backend = PlaintextKeyring()
        backend.file_path = str(keyring_file(self.paths))
        keyring.set_keyring(backend)

        from promptflow.client import PFClient

        return PFClient().connections

    def _publish_here(self, name: str, uri: str, key: str) -> None:
        failure: str | None = None
        try:
            connections = self._connections()  # first: it sets promptflow's home before the import
            from promptflow.entities import CustomConnection

            connection = CustomConnection(name=name, configs={"endpoint": uri}, secrets={"key": key})
            connections.create_or_update(connection)
        except Exception as e:
            failure = shorten(f"{type(e).__name__}: {e}", MAX_ERROR_CHARS)
        if failure is not None:  # raised outside the except block: no chained exception to leak from
            raise RuntimeError(f"publishing Prompt flow connection {name} failed: {failure}")

    def _connection_exists_here(self, name: str) -> bool:
        failure: str | None = None
        try:
            found = self._connections().get(name, with_secrets=False, raise_error=False)
        except Exception as e:
            failure = shorten(f"{type(e).__name__}: {e}", MAX_ERROR_CHARS)
        if failure is not None:
            raise RuntimeError(f"looking up Prompt flow connection {name} failed: {failure}")
        return found is not None

    def _delete_connection_here(self, name: str) -> None:
        failure: str | None = None
        try:
            self._connections().delete(name)  # a missing name deletes nothing, no error
        except Exception as e:
            failure = shorten(f"{type(e).__name__}: {e}", MAX_ERROR_CHARS)
        if failure is not None:
            raise RuntimeError(f"deleting Prompt flow connection {name} failed: {failure}")

    def _promptflow_child(self, args: list[str], what: str) -> str:
        """Run `python -m localml.serving <args> --run-dir <this run>`; its stdout."""
        cmd = [sys.executable, "-m", "localml.serving", *args, "--run-dir", str(self.paths.root)]
        env = self._child_env() | promptflow_env(self.paths)
        env.pop("LOCALML_PUBLISH_IN_CHILD", None)  # the child does it itself, it does not recurse
        done = subprocess.run(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            tail = shorten(done.stderr.strip()[-MAX_ERROR_CHARS:], MAX_ERROR_CHARS)
            raise RuntimeError(f"{what} failed: {tail}")
        return done.stdout

    # ------------------------------------------------------------------ lifecycle

    def reconcile(self) -> dict[str, ProvisioningState]:
        """Bring every endpoint and deployment of this run dir back up (devhost start-up).

        Fronts that had failed get a new try; Failed deployments stay Failed (a model problem:
        the orchestrator deletes them). Endpoint deletions that were interrupted are finished.
        """
        states: dict[str, ProvisioningState] = {}
        for endpoint in self._endpoint_names():
            if (state_files.read_json(self._endpoint_dir(endpoint) / ENDPOINT_FILE) or {}).get("deleting"):
                self.delete_endpoint(endpoint)  # a delete that was interrupted: finish it
                continue
            with self._locked():
                self._retry_failed_front_locked(endpoint)
            states[endpoint] = self.get_endpoint(endpoint).state
            for deployment in self._deployment_names(endpoint):
                states[f"{endpoint}/{deployment}"] = self.get_deployment_state(endpoint, deployment)
        return states

    def processes(self) -> dict[str, int]:
        """Running fronts and servers of this run dir: {"endpoint" or "endpoint/deployment": pid}."""
        found: dict[str, int] = {}
        for endpoint in self._endpoint_names():
            records = {endpoint: self._endpoint_dir(endpoint) / FRONT_RECORD_FILE}
            for dep in self._deployment_names(endpoint):
                records[f"{endpoint}/{dep}"] = self._deployment_dir(endpoint, dep) / SERVER_RECORD_FILE
            for label, path in records.items():
                rec = state_files.read_json(path) or {}
                if _alive(rec.get("pid"), rec.get("start_time")):
                    found[label] = int(rec["pid"])
        return found

    def stop_all(self) -> None:
        """Stop every front and scoring server this run dir started; state stays (`reconcile` resumes)."""
        with self._locked():
            records: list[Path] = []
            for endpoint in self._endpoint_names():
                records.append(self._endpoint_dir(endpoint) / FRONT_RECORD_FILE)
                records += [
                    self._deployment_dir(endpoint, dep) / SERVER_RECORD_FILE
                    for dep in self._deployment_names(endpoint)
                ]
            targets: list[tuple[int, int | None]] = []
            for path in records:
                rec = state_files.read_json(path)
                if rec is None or not rec.get("pid"):
                    continue
                rec["stopped"] = True  # a stopped process is restarted by reconcile, not counted as a crash
                state_files.write_json(path, rec)
                if _alive(rec["pid"], rec.get("start_time")):
                    targets.append((int(rec["pid"]), rec.get("start_time")))
            _stop(targets)
        if targets:
            log.info("stopped %d serving process(es) under %s", len(targets), self.root)


# ============================================================================ CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localml.serving", description="Offline serving tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    connection_commands = ("publish-connection", "connection-exists", "delete-connection")
    for command in (*connection_commands, "stop-all", "reconcile", "status"):
        p = sub.add_parser(command)
        p.add_argument("--run-dir", default=os.environ.get("LOCAL_RUN_DIR", ".run"))
        if command in connection_commands:
            p.add_argument("--name", required=True)
        if command == "publish-connection":
            p.add_argument("--endpoint", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serving = LocalServing(RunPaths.at(args.run_dir))
    if args.command == "publish-connection":
        print(json.dumps({"scoring_uri": serving.publish_connection(args.name, args.endpoint)}))
    elif args.command == "connection-exists":
        print(json.dumps({"exists": serving.connection_exists(args.name)}))
    elif args.command == "delete-connection":
        serving.delete_connection(args.name)
        print(json.dumps({"deleted": args.name}))
    elif args.command == "stop-all":
        serving.stop_all()
    elif args.command == "reconcile":
        print(json.dumps({k: v.value for k, v in serving.reconcile().items()}, indent=2))
    else:
        print(json.dumps(serving.processes(), indent=2))
    return 0


__all__ = ["ECHO_LOADER", "KEYRING_BACKEND", "LocalServing", "keyring_file", "promptflow_env"]

if __name__ == "__main__":
    sys.exit(main())
