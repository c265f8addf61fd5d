"""Start, find and stop the Azure ML emulator for `--azure` (the app on its Azure code path).

With `--azure` the dev host runs function_app.py with BACKEND=azureml: the real azure-ai-ml,
azure-identity and mlflow clients talk HTTPS to `python -m azureml_emulator`, which runs the
fine-tuning jobs and deployments on the offline stack (tiny Phi-3 on CPU, local scoring servers)
under `<run dir>/azureml`. The emulator's state (jobs, models, endpoints, connections) lives in its
process: `make down` (or `devhost down`) ends it together with what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devhost import azurite

ROOT = Path(__file__).resolve().parents[1]
DATASTORE = "datasets"  # the workspace datastore over the datasets container (Bicep makes one too)


@dataclass(frozen=True)
class Emulator:
    pid: int
    url: str
    arm_proxy: str
    env: dict[str, str]  # what a client process sets to use it (no secret: a throwaway CA, an MSI header)

    def app_env(self, container: str) -> dict[str, str]:
        """The app's settings for its Azure path against this emulator."""
        app = {"BACKEND": "azureml", "AZUREML_DATASTORE": DATASTORE, "DATASETS_CONTAINER": container}
        return {**self.env, **app}

    def workspace_uri(self) -> str:
        return (
            f"azureml://subscriptions/{self.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/"
            f"{self.env['AZURE_RESOURCE_GROUP']}/providers/Microsoft.MachineLearningServices/workspaces/"
            f"{self.env['AZUREML_WORKSPACE']}"
        )


def state_dir(run_dir: Path) -> Path:
    return run_dir / "azureml-emulator"


def executor_dir(run_dir: Path) -> Path:
    """Where the emulator's jobs and deployments run (a run dir of the offline stack)."""
    return run_dir / "azureml"


def running(run_dir: Path) -> Emulator | None:
    return _read(state_dir(run_dir))


def promptflow_env(run_dir: Path) -> dict[str, str]:
    """For a flow to read its connections from the emulator's workspace, as a flow deployed on
    Azure does: `PF_CONNECTION_PROVIDER` names the workspace (promptflow-core's workspace
    provider), a Prompt flow home of its own (under the executor's run dir), the emulator's client
    settings, and HTTPS_PROXY = the emulator's CONNECT proxy, because that provider always calls
    https://management.azure.com whatever the cloud (loopback stays direct)."""
    from localml.connections import promptflow_env as local_promptflow_env
    from localml.paths import RunPaths

    emulator = running(run_dir)
    if emulator is None:
        raise RuntimeError(f"the Azure ML emulator of {run_dir} is not running: start the host with --azure")
    loopback = "127.0.0.1,localhost"
    return {
        **local_promptflow_env(RunPaths.at(executor_dir(run_dir))),
        **emulator.env,
        "PF_CONNECTION_PROVIDER": emulator.workspace_uri(),
        "HTTPS_PROXY": emulator.arm_proxy,
        "NO_PROXY": loopback,
        "no_proxy": loopback,
    }


def _read(directory: Path) -> Emulator | None:
    try:
        info = json.loads((directory / "env.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not azurite.alive(int(info["pid"])):
        return None
    return Emulator(int(info["pid"]), str(info["url"]), str(info["arm_proxy"]), dict(info["env"]))


def ensure(run_dir: Path, env: dict[str, str], container: str, timeout_s: float = 60.0) -> Emulator:
    """Reuse the emulator this run dir already runs, or start one with `env` (the datasets storage
    settings and the offline trainer's settings come from it)."""
    directory = state_dir(run_dir)
    running = _read(directory)
    if running is not None:
        return running
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "azureml_emulator", "--state-dir", str(directory),
           "--execute-local", str(executor_dir(run_dir)),
           "--datastore", f"{DATASTORE}={container}"]  # fmt: skip
    child_env = {k: v for k, v in env.items() if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
    with open(directory / "emulator.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while (found := _read(directory)) is None or found.pid != proc.pid:
        if proc.poll() is not None:
            log_path = directory / "emulator.log"
            raise RuntimeError(f"the Azure ML emulator exited ({proc.returncode}); see {log_path}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"the Azure ML emulator did not start within {timeout_s:.0f} s")
        time.sleep(0.1)
    return found


def stop(run_dir: Path) -> bool:
    """End the emulator, then what it ran (training jobs, scoring servers). True if it ran."""
    running = _read(state_dir(run_dir))
    if running is not None:
        os.killpg(running.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while azurite.alive(running.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if executor_dir(run_dir).exists():
        from core.settings import Settings
        from localml.serving import LocalServing
        from localml.training import LocalTraining

        settings = Settings(BACKEND="local", LOCAL_RUN_DIR=str(executor_dir(run_dir)))
        LocalServing(settings).stop_all()
        LocalTraining(settings).stop_all()
    return running is not None
