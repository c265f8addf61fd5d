"""Which backends this process uses: built once from Settings, replaceable in tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from backends.base import (
    ConnectionStore,
    DatasetStore,
    PreflightBackend,
    ServingBackend,
    TrainingBackend,
    TurnStore,
)
from core.settings import get_settings


@dataclass(frozen=True)
class Backends:
    training: TrainingBackend
    serving: ServingBackend
    connections: ConnectionStore
    datasets: DatasetStore
    preflight: PreflightBackend
    turns: TurnStore


_override: Backends | None = None


@lru_cache(maxsize=1)
def _from_settings() -> Backends:
    settings = get_settings()
    from backends.blob_store import BlobDatasetStore
    from backends.turns import BlobTurnStore

    datasets = BlobDatasetStore.from_settings(settings)
    turns = BlobTurnStore(datasets.service, settings.DATASETS_CONTAINER)
    if settings.BACKEND == "azureml":
        from backends import azureml

        aml = azureml.build(settings)
        return Backends(
            training=aml, serving=aml, connections=aml, datasets=datasets, preflight=aml, turns=turns
        )
    from backends import local  # the offline stack (devhost); heavy imports stay out of Azure

    training, serving, preflight = local.build(settings)
    return Backends(
        training=training,
        serving=serving,
        connections=serving,
        datasets=datasets,
        preflight=preflight,
        turns=turns,
    )


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
