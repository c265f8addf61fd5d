"""The offline Prompt flow connection store: `PromptflowConnections` implements `ConnectionStore`.

`publish_connection` writes a local `CustomConnection` (configs {"endpoint": scoring URI}, secrets
{"key": endpoint key}) with promptflow-devkit under `RunPaths.promptflow_home`; `connection_exists`
/ `delete_connection` read / remove it. Each works in this process or in a child process
(`python -m localml.connections ...`, see `PromptflowConnections._promptflow_in_process`), since
promptflow fixes its home when first imported and long-running hosts must not import it at all.
`promptflow_env()` gives the environment any other process (the devhost, the demo, `pf flow
test`) needs to read the connections; see it for what each variable does.

`LocalServing` (localml.serving) is this store too, for the endpoints of its run dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from core.redact import shorten
from localml import processes, state_files
from localml.paths import RunPaths
from localml.serving_state import ServingState

__all__ = ["KEYRING_BACKEND", "PromptflowConnections", "keyring_file", "promptflow_env"]

log = logging.getLogger(__name__)

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


# ============================================================================ the store


class PromptflowConnections:
    """`ConnectionStore` on promptflow-devkit's local connection DB of the run dir `paths`,
    pointing connections at the endpoints of that run dir."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths

    def publish_connection(self, name: str, endpoint: str) -> str:
        """Create/update the local Prompt flow CustomConnection `name` → this endpoint.

        configs = {"endpoint": scoring URI}, secrets = {"key": endpoint key}, stored in
        promptflow-devkit's connection DB under `RunPaths.promptflow_home` (see `promptflow_env`).
        In this process or in a child process (`python -m localml.connections publish-connection`,
        which reads the key itself): see `_promptflow_in_process`.
        """
        uri, key = ServingState(self.paths.serving_dir).endpoint_secret(endpoint)
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
        """Run `python -m localml.connections <args> --run-dir <this run>`; its stdout."""
        cmd = [sys.executable, "-m", "localml.connections", *args, "--run-dir", str(self.paths.root)]
        env = processes.child_env(promptflow_env(self.paths))
        env.pop("LOCALML_PUBLISH_IN_CHILD", None)  # the child does it itself, it does not recurse
        done = subprocess.run(
            cmd,
            cwd=processes.PROJECT_ROOT,
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


# ============================================================================ CLI (the child process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localml.connections", description="The offline Prompt flow connections."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("publish-connection", "connection-exists", "delete-connection"):
        p = sub.add_parser(command)
        p.add_argument("--run-dir", default=os.environ.get("LOCAL_RUN_DIR", ".run"))
        p.add_argument("--name", required=True)
        if command == "publish-connection":
            p.add_argument("--endpoint", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    connections = PromptflowConnections(RunPaths.at(args.run_dir))
    if args.command == "publish-connection":
        print(json.dumps({"scoring_uri": connections.publish_connection(args.name, args.endpoint)}))
    elif args.command == "connection-exists":
        print(json.dumps({"exists": connections.connection_exists(args.name)}))
    else:
        connections.delete_connection(args.name)
        print(json.dumps({"deleted": args.name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
