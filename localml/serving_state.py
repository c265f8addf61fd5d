"""The offline endpoints and deployments on disk: `ServingState` over `RunPaths.serving_dir`.

    endpoints/<endpoint>/endpoint.json   name, tags, port, traffic, deployments {name: {port}},
                                         deleting {at, id} once delete_endpoint began
                         key             the endpoint key (0600; never logged or returned)
                         front.json      the front's pid/start time/attempts/provisioned/failed
                         front.log
    endpoints/<endpoint>/deployments/<deployment>/deployment.json   model, port, loader, spec
                                                                    (instance type/count, tags)
                                                  server.json       as front.json (+ deleting)
                                                  server.log

All small JSON files written atomically (`localml.state_files`); every read-modify-write holds
`ServingState.locked()` (an flock on `.lock`), so threads and processes may share a run dir.
`endpoint.json`'s routing table and traffic map are derived from the deployment folders
(`sync_routes_locked`); the endpoint front reads them on every request.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core import redact
from core.models import ProvisioningState
from localml import state_files
from localml.endpoint_front import ENDPOINT_FILE, FRONT_RECORD_FILE, KEY_FILE
from localml.scoring_server import DEPLOYMENT_FILE, SERVER_RECORD_FILE

__all__ = [
    "DEPLOYMENT_FILE",
    "ENDPOINT_FILE",
    "FRONT_LOG",
    "FRONT_RECORD_FILE",
    "KEY_FILE",
    "SERVER_LOG",
    "SERVER_RECORD_FILE",
    "Record",
    "ServingState",
    "check_name",
    "recorded_state",
]

FRONT_LOG = "front.log"
SERVER_LOG = "server.log"
LOCK_FILE = ".lock"

# Azure: 3-32 characters, letters, digits and '-', starting with a letter, not ending with '-'.
# Names become directory names here, so they are checked on every call.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")

Record = dict[str, Any]


def check_name(kind: str, name: str) -> None:
    """Raise ValueError unless `name` is a valid endpoint / deployment name (`kind` says which)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: 3-32 letters, digits or '-', starting with a letter, "
            "not ending with '-'"
        )


def recorded_state(endpoint_cfg: Record, record_path: Path) -> ProvisioningState:
    """A front's or scoring server's provisioning state from its records alone (no restart)."""
    rec = state_files.read_json(record_path) or {}
    if endpoint_cfg.get("deleting") or rec.get("deleting"):
        return ProvisioningState.DELETING
    if rec.get("failed"):
        return ProvisioningState.FAILED
    return ProvisioningState.SUCCEEDED if rec.get("provisioned") else ProvisioningState.CREATING


class ServingState:
    """The serving state folder `root` (see the module docstring). Reading creates nothing."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def endpoint_dir(self, endpoint: str) -> Path:
        return self.root / "endpoints" / endpoint

    def deployment_dir(self, endpoint: str, deployment: str) -> Path:
        return self.endpoint_dir(endpoint) / "deployments" / deployment

    def endpoint_config(self, endpoint: str) -> Record | None:
        """The endpoint's endpoint.json; None if there is no such endpoint."""
        return state_files.read_json(self.endpoint_dir(endpoint) / ENDPOINT_FILE)

    def endpoint_names(self) -> list[str]:
        base = self.root / "endpoints"
        return (
            sorted(p.name for p in base.iterdir() if (p / ENDPOINT_FILE).is_file()) if base.is_dir() else []
        )

    def deployment_names(self, endpoint: str) -> list[str]:
        base = self.endpoint_dir(endpoint) / "deployments"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / DEPLOYMENT_FILE).is_file())

    def record_files(self) -> dict[str, Path]:
        """The front and server records of every endpoint and deployment, by "endpoint" or
        "endpoint/deployment"."""
        records: dict[str, Path] = {}
        for endpoint in self.endpoint_names():
            records[endpoint] = self.endpoint_dir(endpoint) / FRONT_RECORD_FILE
            for dep in self.deployment_names(endpoint):
                records[f"{endpoint}/{dep}"] = self.deployment_dir(endpoint, dep) / SERVER_RECORD_FILE
        return records

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across threads and processes. Not reentrant."""
        with state_files.locked(self.root / LOCK_FILE):
            yield

    def ports_in_use(self) -> set[int]:
        """The ports given to the fronts and scoring servers of this run dir."""
        ports: set[int] = set()
        for ep in self.endpoint_names():
            cfg = state_files.read_json(self.endpoint_dir(ep) / ENDPOINT_FILE) or {}
            ports.add(int(cfg.get("port", 0)))
            for dep in self.deployment_names(ep):
                dcfg = state_files.read_json(self.deployment_dir(ep, dep) / DEPLOYMENT_FILE) or {}
                ports.add(int(dcfg.get("port", 0)))
        return ports

    def sync_routes_locked(self, endpoint: str, cfg: Record | None = None) -> Record:
        """Make endpoint.json's routing table and traffic map match the deployment directories.

        Repairs a crash between writing a deployment and registering it (it gets 0 %), drops
        deployments being deleted, and follows a server that moved port. Lock held.
        """
        path = self.endpoint_dir(endpoint) / ENDPOINT_FILE
        cfg = cfg if cfg is not None else state_files.read_json(path)
        if cfg is None:
            raise ValueError(f"endpoint {endpoint} not found")
        routes: dict[str, dict[str, int]] = {}
        for dep in self.deployment_names(endpoint):
            directory = self.deployment_dir(endpoint, dep)
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

    def endpoint_secret(self, endpoint: str) -> tuple[str, str]:
        """(scoring URI, key) of the endpoint, read fresh. The key is registered with core.redact."""
        check_name("endpoint", endpoint)
        directory = self.endpoint_dir(endpoint)
        cfg = state_files.read_json(directory / ENDPOINT_FILE)
        if cfg is None:
            raise ValueError(f"endpoint {endpoint} not found")
        key = (directory / KEY_FILE).read_text().strip()
        redact.remember(key)
        return f"http://127.0.0.1:{int(cfg['port'])}/score", key
