"""pytest plugin: the Azure ML emulator, and the real Azure ML backend pointed at it.

`aml_server` (session): one HTTPS emulator for the test session. `aml_world` (function): a fresh
`World` served by it, with this process's environment pointed at it (the settings the SDKs read
themselves: ARM cloud metadata, registry discovery, App Service managed identity, CA bundle).
`aml_backend`: `backends.azureml.AzureMLBackend` built from Settings as on Azure, with
`DefaultAzureCredential` and real `MLClient`s: nothing in the SDK is replaced.
After each test, every request body the SDK sent must have passed the official definitions.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azureml_emulator.server import EmulatorServer
from azureml_emulator.world import World


@pytest.fixture(scope="session")
def aml_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def aml_world(aml_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    world = aml_server.reset()
    for name, value in aml_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BACKEND", "azureml")
    yield world
    assert aml_server.emulator is not None
    errors = list(aml_server.emulator.validation_errors)
    assert not errors, f"requests the service would reject: {errors}"


@pytest.fixture
def aml_settings(aml_world: World):
    from core.settings import Settings

    return Settings()


@pytest.fixture
def aml_backend(aml_settings):
    from backends.azureml import AzureMLBackend

    return AzureMLBackend(aml_settings)
