"""Pytest plugin: a real Azurite blob emulator for the session, and a fresh container per test.

Loaded once, by `tests/conftest.py` (`pytest_plugins`); no test module defines these again.
Azurite comes from the setup (`npm install --prefix .tools azurite@3`); `AZURITE_BIN` may point at
another binary. A missing binary fails the tests that need it (it does not skip them): offline
storage is part of the contract, not an optional extra. Tests using these fixtures get the
`azurite` marker, so `-m "not azurite"` leaves them out.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from storage.blob_store import BlobDatasetStore

ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = ROOT / ".tools" / "node_modules" / ".bin"
START_DEADLINE_S = 20.0

# Azurite's well-known development account (public, documented; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Azurite:
    host: str
    port: int
    location: Path
    startup_s: float

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{ACCOUNT_NAME}"

    @property
    def account_name(self) -> str:
        return ACCOUNT_NAME

    @property
    def account_key(self) -> str:
        return ACCOUNT_KEY

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )


@dataclass(frozen=True)
class BlobStoreFixture:
    store: BlobDatasetStore
    container: str
    service: BlobServiceClient


def azurite_binary() -> tuple[Path, bool] | None:
    """(binary, blob_only) - `azurite-blob` when present, else the all-services `azurite`."""
    override = os.environ.get("AZURITE_BIN")
    if override:
        path = Path(override)
        return (path, path.name.startswith("azurite-blob")) if path.is_file() else None
    for name, blob_only in (("azurite-blob", True), ("azurite", False)):
        path = BIN_DIR / name
        if path.is_file():
            return path, blob_only
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"azurite", "blob_store"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.azurite)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    found = azurite_binary()
    if found is None:
        pytest.fail("Azurite is not installed: run the setup (see README)", pytrace=False)
    binary, blob_only = found
    host = "127.0.0.1"
    location = tmp_path_factory.mktemp("azurite")
    log_path = location / "azurite.log"
    port = _free_port(host)
    args = [
        str(binary),
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
        "--disableTelemetry",
        "--blobHost",
        host,
        "--blobPort",
        str(port),
        "--location",
        str(location),
    ]
    if not blob_only:
        args += ["--queuePort", str(_free_port(host)), "--tablePort", str(_free_port(host))]

    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = started + START_DEADLINE_S
        while not _accepts(host, port):
            if proc.poll() is not None:
                pytest.fail(
                    f"Azurite exited with code {proc.returncode} before listening on {host}:{port}:\n"
                    + _tail(log_path),
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Azurite did not listen on {host}:{port} within {START_DEADLINE_S:.0f} s:\n"
                    + _tail(log_path),
                    pytrace=False,
                )
            time.sleep(0.05)
        yield Azurite(host=host, port=port, location=location, startup_s=time.monotonic() - started)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def blob_service(azurite: Azurite) -> Iterator[BlobServiceClient]:
    """A client of the session's Azurite, shared by a test module."""
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield client
    client.close()


@pytest.fixture
def blob_store(azurite: Azurite) -> Iterator[BlobStoreFixture]:
    container = f"test-{uuid.uuid4().hex[:16]}"
    store = BlobDatasetStore.from_connection_string(azurite.connection_string)
    service = store.service
    service.create_container(container)
    try:
        yield BlobStoreFixture(store=store, container=container, service=service)
    finally:
        try:
            service.delete_container(container)
        finally:
            store.close()
