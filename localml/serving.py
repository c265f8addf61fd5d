"""The offline managed online endpoint: `LocalServing` implements `ServingBackend`.

`LocalServing` has no process of its own: each call reads the state of the run dir
(`localml.serving_state`: endpoints, deployments, keys, traffic), restarts what should be running
and died (`localml.serving_processes`: one endpoint front per endpoint, one scoring server per
deployment, detached, so they outlive the caller) and returns. `get_endpoint`,
`get_deployment_state`, `score` and `reconcile()` restart a front or a server that died;
`delete_deployment` stops its server; `delete_endpoint` stops the front and every server of the
endpoint and removes its state; `stop_all()` stops everything this run dir started. Every
read-modify-write holds the state lock, so threads and processes may share a run dir.

`LocalServing` is also the run's Prompt flow `ConnectionStore`: it is a `PromptflowConnections`
(`localml.connections`), whose connections point at these endpoints.

`python -m localml.serving stop-all|reconcile|status --run-dir <dir>` does the same from a shell.
POSIX only (flock, process groups, /proc when present).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import sys
import time
from typing import TYPE_CHECKING

import httpx

from core.models import DeploymentInfo, DeploymentSpec, EndpointInfo, ProvisioningState, ScoreResult
from core.scoring import Scorer, post_score
from localml import processes, state_files
from localml.connections import PromptflowConnections
from localml.paths import RunPaths
from localml.scoring_server import ECHO_LOADER
from localml.serving_processes import ServingProcesses, recorded_process, recorded_processes
from localml.serving_state import (
    DEPLOYMENT_FILE,
    ENDPOINT_FILE,
    FRONT_RECORD_FILE,
    KEY_FILE,
    SERVER_RECORD_FILE,
    Record,
    ServingState,
    check_name,
    recorded_state,
)

if TYPE_CHECKING:
    from pathlib import Path

    from core.settings import Settings

__all__ = ["ECHO_LOADER", "LocalServing"]

log = logging.getLogger(__name__)

SCORE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0  # how long `score` waits for a restarting front/server


class LocalServing(PromptflowConnections):
    """`ServingBackend` (+ `ConnectionStore`, inherited) on local processes; see the module docstring.

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
        super().__init__(paths)
        self.root = paths.serving_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = ServingState(self.root)
        self.servers = ServingProcesses(self.state, paths)
        self.loader = loader
        self.ready_timeout_s = ready_timeout_s
        self.score_timeout_s = score_timeout_s
        self._http = http

    def _endpoint_dir(self, endpoint: str) -> Path:
        return self.state.endpoint_dir(endpoint)

    def _deployment_dir(self, endpoint: str, deployment: str) -> Path:
        """The deployment's state folder, once both names are checked (ValueError if invalid)."""
        check_name("endpoint", endpoint)
        check_name("deployment", deployment)
        return self.state.deployment_dir(endpoint, deployment)

    def _endpoint_secret(self, endpoint: str) -> tuple[str, str]:
        """(scoring URI, key), read fresh. The key is registered with core.redact."""
        return self.state.endpoint_secret(endpoint)

    # ------------------------------------------------------------------ endpoints

    def begin_create_endpoint(self, name: str, tags: dict[str, str]) -> None:
        check_name("endpoint", name)
        directory = self.state.endpoint_dir(name)
        with self.state.locked():
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
                    "port": self.servers.new_port(),
                    "traffic": {},
                    "deployments": {},
                    "created_at": state_files.now(),
                }
                state_files.write_json(directory / ENDPOINT_FILE, cfg)
                log.info("endpoint %s created on 127.0.0.1:%d", name, cfg["port"])
            self.servers.retry_failed_front_locked(name)  # like create_or_update on a Failed endpoint
            self.servers.reconcile_front_locked(name, cfg)

    def get_endpoint(self, name: str) -> EndpointInfo:
        check_name("endpoint", name)
        directory = self.state.endpoint_dir(name)
        with self.state.locked():
            cfg = state_files.read_json(directory / ENDPOINT_FILE)
            if cfg is None:
                return EndpointInfo(name=name, state=ProvisioningState.NOT_FOUND)
            if cfg.get("deleting"):  # nothing is restarted any more; delete_endpoint finishes
                return self._endpoint_info(name, cfg, ProvisioningState.DELETING)
            cfg = self.state.sync_routes_locked(name, cfg)
            rec = self.servers.reconcile_front_locked(name, cfg)
        state = self.servers.provisioning_state(directory / FRONT_RECORD_FILE, int(cfg["port"]), rec)
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
        with self.state.locked():
            for name in self.state.endpoint_names():
                directory = self.state.endpoint_dir(name)
                cfg = state_files.read_json(directory / ENDPOINT_FILE)
                if cfg is None:
                    continue
                found.append(
                    self._endpoint_info(name, cfg, recorded_state(cfg, directory / FRONT_RECORD_FILE))
                )
        return found

    def update_endpoint_tags(self, name: str, tags: dict[str, str]) -> None:
        """Merge `tags` into the endpoint's tags (endpoint.json, rewritten atomically under the
        lock); traffic, deployments and processes are left as they are."""
        check_name("endpoint", name)
        path = self.state.endpoint_dir(name) / ENDPOINT_FILE
        with self.state.locked():
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
        check_name("endpoint", name)
        directory = self.state.endpoint_dir(name)
        with self.state.locked():
            cfg = state_files.read_json(directory / ENDPOINT_FILE)
            if cfg is None:
                shutil.rmtree(directory, ignore_errors=True)  # what a crashed create/delete left
                return
            if not cfg.get("deleting"):
                cfg["deleting"] = {"at": state_files.now(), "id": secrets.token_hex(8)}
                state_files.write_json(directory / ENDPOINT_FILE, cfg)
            marker = cfg["deleting"]
            records = [directory / FRONT_RECORD_FILE]
            deployments = directory / "deployments"
            if deployments.is_dir():
                records += [d / SERVER_RECORD_FILE for d in sorted(deployments.iterdir()) if d.is_dir()]
            targets = recorded_processes(records)
        processes.stop(targets)
        with self.state.locked():
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

    def begin_create_deployment(self, spec: DeploymentSpec) -> None:
        endpoint, deployment = spec.endpoint_name, spec.deployment_name
        directory = self._deployment_dir(endpoint, deployment)
        with self.state.locked():
            cfg = self.state.endpoint_config(endpoint)
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
                    "port": self.servers.new_port(),
                    "loader": self.loader,
                    "instance_type": spec.instance_type,
                    "instance_count": spec.instance_count,
                    "tags": dict(spec.tags),
                    "created_at": state_files.now(),
                }
                state_files.write_json(directory / DEPLOYMENT_FILE, dcfg)
                log.info("deployment %s/%s created on 127.0.0.1:%d", endpoint, deployment, dcfg["port"])
            self.state.sync_routes_locked(endpoint, cfg)  # registers it with 0 % traffic
            self.servers.reconcile_server_locked(endpoint, deployment, dcfg)

    def get_deployment_state(self, endpoint: str, deployment: str) -> ProvisioningState:
        directory = self._deployment_dir(endpoint, deployment)
        with self.state.locked():
            cfg = self.state.endpoint_config(endpoint)
            if cfg is None:
                return ProvisioningState.NOT_FOUND
            dcfg = state_files.read_json(directory / DEPLOYMENT_FILE)
            if dcfg is None:
                return ProvisioningState.NOT_FOUND
            if cfg.get("deleting") or (state_files.read_json(directory / SERVER_RECORD_FILE) or {}).get(
                "deleting"
            ):
                return ProvisioningState.DELETING
            rec = self.servers.reconcile_server_locked(endpoint, deployment, dcfg)
            self.state.sync_routes_locked(endpoint)
        return self.servers.provisioning_state(directory / SERVER_RECORD_FILE, int(dcfg["port"]), rec)

    def deployment_error(self, endpoint: str, deployment: str) -> str | None:
        """Why a Failed deployment failed (exit code and the end of its log), else None. No secrets."""
        record_path = self._deployment_dir(endpoint, deployment) / SERVER_RECORD_FILE
        rec = state_files.read_json(record_path) or {}
        failed = rec.get("failed")
        if not failed:
            return None
        return f"{failed['error']}\n{failed.get('log_tail', '')}".strip()

    def deployment_scoring_uri(self, endpoint: str, deployment: str) -> str | None:
        """The deployment's own scoring server (loopback, no key: the front, or the Azure ML
        emulator, checks the key), or None if there is no such deployment."""
        dcfg = state_files.read_json(self._deployment_dir(endpoint, deployment) / DEPLOYMENT_FILE)
        return None if dcfg is None else f"http://127.0.0.1:{int(dcfg['port'])}/score"

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        """The endpoint's deployments (by name) with the instance type/count and tags of their
        spec and their provisioning state, read from the records like `list_endpoints` (no
        scoring server is restarted); [] if the endpoint is gone."""
        check_name("endpoint", endpoint)
        found = []
        with self.state.locked():
            cfg = self.state.endpoint_config(endpoint)
            names = self.state.deployment_names(endpoint) if cfg is not None else []
            records = {}
            for deployment in names:
                directory = self.state.deployment_dir(endpoint, deployment)
                dcfg = state_files.read_json(directory / DEPLOYMENT_FILE)
                if dcfg is not None:  # else deleted meanwhile
                    records[deployment] = (dcfg, recorded_state(cfg or {}, directory / SERVER_RECORD_FILE))
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
        check_name("endpoint", endpoint)
        for name, weight in traffic.items():
            check_name("deployment", name)
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise ValueError(f"traffic for {name} must be an integer from 0 to 100, got {weight!r}")
        total = sum(traffic.values())
        if total not in (0, 100):
            raise ValueError(f"traffic weights on {endpoint} must add up to 100 (or 0), got {total}")
        with self.state.locked():
            cfg = self.state.sync_routes_locked(endpoint)
            unknown = sorted(set(traffic) - set(cfg["deployments"]))
            if unknown:
                raise ValueError(f"endpoint {endpoint} has no deployment(s) {', '.join(unknown)}")
            # Like assigning endpoint.traffic in Azure: the map is replaced; unnamed deployments get 0.
            cfg["traffic"] = {d: int(traffic.get(d, 0)) for d in cfg["deployments"]}
            state_files.write_json(self.state.endpoint_dir(endpoint) / ENDPOINT_FILE, cfg)
        log.info("traffic on %s set to %s", endpoint, traffic)

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        directory = self._deployment_dir(endpoint, deployment)
        with self.state.locked():
            if not (self.state.endpoint_dir(endpoint) / ENDPOINT_FILE).is_file():
                return
            cfg = self.state.sync_routes_locked(endpoint)
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
            self.state.sync_routes_locked(endpoint, cfg)
        server = recorded_process(rec)
        if server is not None:
            processes.stop([server])
        with self.state.locked():
            # deployment.json first: from then on the deployment does not exist, whatever a kill
            # -9 during rmtree leaves behind (a leftover server.json alone is cleaned up on retry).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / DEPLOYMENT_FILE)
            shutil.rmtree(directory, ignore_errors=True)
            if (self.state.endpoint_dir(endpoint) / ENDPOINT_FILE).is_file():  # not deleted meanwhile
                self.state.sync_routes_locked(endpoint)
        log.info("deployment %s/%s deleted", endpoint, deployment)

    # ------------------------------------------------------------------ scoring

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
                check_name("deployment", deployment)
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

    # ------------------------------------------------------------------ lifecycle

    def reconcile(self) -> dict[str, ProvisioningState]:
        """Bring every endpoint and deployment of this run dir back up (devhost start-up).

        Fronts that had failed get a new try; Failed deployments stay Failed (a model problem:
        the orchestrator deletes them). Endpoint deletions that were interrupted are finished.
        """
        states: dict[str, ProvisioningState] = {}
        for endpoint in self.state.endpoint_names():
            cfg = self.state.endpoint_config(endpoint) or {}
            if cfg.get("deleting"):
                self.delete_endpoint(endpoint)  # a delete that was interrupted: finish it
                continue
            with self.state.locked():
                self.servers.retry_failed_front_locked(endpoint)
            states[endpoint] = self.get_endpoint(endpoint).state
            for deployment in self.state.deployment_names(endpoint):
                states[f"{endpoint}/{deployment}"] = self.get_deployment_state(endpoint, deployment)
        return states

    def processes(self) -> dict[str, int]:
        """Running fronts and servers of this run dir: {"endpoint" or "endpoint/deployment": pid}."""
        return self.servers.running()

    def stop_all(self) -> None:
        """Stop every front and scoring server this run dir started; state stays (`reconcile` resumes)."""
        stopped = self.servers.stop_all()
        if stopped:
            log.info("stopped %d serving process(es) under %s", stopped, self.root)


# ============================================================================ CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localml.serving", description="Offline serving tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("stop-all", "reconcile", "status"):
        p = sub.add_parser(command)
        p.add_argument("--run-dir", default=os.environ.get("LOCAL_RUN_DIR", ".run"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serving = LocalServing(RunPaths.at(args.run_dir))
    if args.command == "stop-all":
        serving.stop_all()
    elif args.command == "reconcile":
        print(json.dumps({k: v.value for k, v in serving.reconcile().items()}, indent=2))
    else:
        print(json.dumps(serving.processes(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
