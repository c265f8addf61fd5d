"""Start, find and stop the Azurite blob emulator installed by the setup under `.tools/`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localml import processes as procs

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public; documented by Microsoft), not a secret.
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Azurite:
    port: int
    pid: int

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )


def binary() -> Path:
    override = os.environ.get("AZURITE_BIN")
    path = Path(override) if override else ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if not path.exists():
        raise FileNotFoundError(f"Azurite is not installed at {path}: run `make setup` (see README)")
    return path


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    return procs.running(pid, None)


def ensure(data_dir: Path, port: int, timeout_s: float = 30.0) -> Azurite:
    """Reuse the Azurite this data dir already runs (after a host crash), or start one."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pid_file = data_dir / "azurite.pid"
    if pid_file.exists():
        pid, _, old_port = pid_file.read_text().partition(":")
        if alive(int(pid)) and port_open(int(old_port)):
            return Azurite(int(old_port), int(pid))
    if port_open(port):
        raise RuntimeError(f"port {port} is taken by another process; set AZURITE_PORT to a free port")
    log = open(data_dir / "azurite.log", "ab")  # noqa: SIM115 (kept open by the child)
    proc = subprocess.Popen(
        [str(binary()), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data_dir),
         "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not port_open(port):
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with {proc.returncode}; see {data_dir / 'azurite.log'}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"Azurite did not listen on {port} within {timeout_s} s")
        time.sleep(0.05)
    pid_file.write_text(f"{proc.pid}:{port}")
    return Azurite(port, proc.pid)


def stop(data_dir: Path) -> bool:
    pid_file = data_dir / "azurite.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().partition(":")[0])
    pid_file.unlink()
    if alive(pid):
        os.killpg(pid, signal.SIGTERM)
        return True
    return False
