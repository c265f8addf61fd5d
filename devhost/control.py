"""Start-up and shut-down helpers the CLI (`__main__`) and the demo share: wait for a host to
answer, stop a process, find the host a run directory runs, stop everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from devhost import azure_emulator, azurite


def wait_ready(port: int, proc: subprocess.Popen[bytes] | None, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the dev host exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/admin/host/status", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the dev host did not answer on port {port} within {timeout_s} s; see {log}")


def host_pid(run_dir: Path) -> tuple[int, int] | None:
    pid_file = run_dir / "devhost.pid"
    if not pid_file.exists():
        return None
    pid, _, port = pid_file.read_text().partition(":")
    return (int(pid), int(port)) if azurite.alive(int(pid)) else None


def stop_process(pid: int, grace_s: float = 20.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited after `grace_s` (the engine's state is committed
    transaction by transaction, so a kill loses nothing)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while azurite.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if azurite.alive(pid):
        os.kill(pid, signal.SIGKILL)


def stop_everything(run_dir: Path) -> list[str]:
    """Stop what `up`/`demo` started in `run_dir`: the host, the local endpoints and training
    jobs, the Azure ML emulator (and what it ran), Azurite. Returns what was stopped."""
    stopped = []
    pid = host_pid(run_dir)
    if pid is not None:
        stop_process(pid[0])
        stopped.append("host")
    (run_dir / "devhost.pid").unlink(missing_ok=True)
    try:
        from core.settings import Settings
        from localml.serving import LocalServing
        from localml.training import LocalTraining

        settings = Settings(BACKEND="local", LOCAL_RUN_DIR=str(run_dir))
        LocalServing(settings).stop_all()
        LocalTraining(settings).stop_all()
        stopped.append("local endpoints and jobs")
    except ImportError:
        pass
    if azure_emulator.stop(run_dir):
        stopped.append("Azure ML emulator")
    if azurite.stop(run_dir / "azurite"):
        stopped.append("azurite")
    return stopped
