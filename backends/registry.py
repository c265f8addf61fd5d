"""Which backends this process uses: built once from Settings, replaceable in tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from backends.base import (
    ConnectionStore,
    DatasetStore,
    PreflightBackend,
    ServingBackend,
    TrainingBackend,
    TurnStore,
)
from core.models import BlobRef
from core.settings import Settings, get_settings
from core.turns import Turn, TurnAnswer


@dataclass(frozen=True)
class Backends:
    training: TrainingBackend
    serving: ServingBackend
    connections: ConnectionStore
    datasets: DatasetStore
    preflight: PreflightBackend
    turns: TurnStore


_override: Backends | None = None


class _NoStorage:
    """The datasets store and the release turns of a process that has no storage account to use
    (`build(..., storage=False)`): every call is refused, saying so."""

    def __init__(self, who: str) -> None:
        self.who = who

    def _refuse(self) -> RuntimeError:
        return RuntimeError(f"{self.who} uses no datasets storage")

    @property
    def account_url(self) -> str:
        raise self._refuse()

    def describe(self, blob: BlobRef) -> BlobRef:
        raise self._refuse()

    def download(self, blob: BlobRef, dest: Path) -> None:
        raise self._refuse()

    def open_stream(self, blob: BlobRef) -> Iterator[bytes]:
        raise self._refuse()

    def upload(self, src: Path, blob: BlobRef) -> BlobRef:
        raise self._refuse()

    def upload_chunks(self, chunks: Iterable[bytes], blob: BlobRef) -> BlobRef:
        raise self._refuse()

    def take(self, endpoint: str, run: str, ttl_s: float) -> TurnAnswer:
        raise self._refuse()

    def give_back(self, endpoint: str, run: str) -> bool:
        raise self._refuse()

    def current(self, endpoint: str) -> Turn | None:
        raise self._refuse()


def build(settings: Settings, *, storage: str | None = None) -> Backends:
    """The backends `settings` name: Azure ML, or the offline stack (localml, heavy imports kept
    out of Azure). `storage=None` connects the datasets account (the store and the release turns);
    a process that needs neither (scripts/teardown.py) passes its name instead, and gets stand-ins
    that refuse every call."""
    datasets: DatasetStore
    turns: TurnStore
    if storage is None:
        from backends.turns import BlobTurnStore
        from storage.blob_store import BlobDatasetStore

        store = BlobDatasetStore.from_settings(settings)
        datasets, turns = store, BlobTurnStore(store.service, settings.DATASETS_CONTAINER)
    else:
        datasets = turns = _NoStorage(storage)
    training: TrainingBackend
    serving: ServingBackend
    connections: ConnectionStore
    preflight: PreflightBackend
    if settings.BACKEND == "azureml":
        from backends import azureml

        aml = azureml.build(settings)  # one workspace shared by the four concerns
        training, serving, connections, preflight = aml.training, aml.serving, aml.connections, aml.checks
    else:
        from backends import local

        training, local_serving, preflight = local.build(settings)
        serving = connections = local_serving
    return Backends(
        training=training,
        serving=serving,
        connections=connections,
        datasets=datasets,
        preflight=preflight,
        turns=turns,
    )


@lru_cache(maxsize=1)
def _from_settings() -> Backends:
    return build(get_settings())


def current() -> Backends:
    return _override if _override is not None else _from_settings()


@contextmanager
def use(backends: Backends) -> Iterator[Backends]:
    """Route activities to `backends` for the duration of the block (tests, devhost)."""
    global _override
    previous, _override = _override, backends
    try:
        yield backends
    finally:
        _override = previous
