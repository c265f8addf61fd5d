"""pytest plugin: the Azure ML emulator, and the real Azure ML backend pointed at it.

Loaded once, by `tests/conftest.py` (`pytest_plugins`); no test module defines these again.

`aml_server` (session): one HTTPS emulator for the test session. `aml_world` (function): a fresh
`World` served by it, with this process's environment pointed at it (the settings the SDKs read
themselves: ARM cloud metadata, registry discovery, App Service managed identity, CA bundle).
`aml_module_world` (module): the same for a whole test module. `aml_settings` / `aml_backend`:
`backends.azureml.AzureMLBackend` built from Settings as on Azure, with `DefaultAzureCredential`
and real `MLClient`s: nothing in the SDK is replaced. After each test (each module for
`aml_module_world`), every request body the SDK sent must have passed the official definitions.

For an emulator this process did not start (the dev host's, `devhost serve --azure`),
`azureml_env(env)` points the environment at it and `ml_client(env)` is the SDK's own client.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from azureml_emulator.server import EmulatorServer
from azureml_emulator.world import World


@contextmanager
def azureml_env(env: Mapping[str, str]) -> Iterator[None]:
    """This process's environment pointed at an emulator (its `env`), with BACKEND=azureml, for
    the block."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setenv("BACKEND", "azureml")
        yield


def ml_client(env: Mapping[str, str]) -> Any:
    """An `MLClient` on the emulator's workspace, authenticated as the app is on Azure (managed
    identity)."""
    from azure.ai.ml import MLClient
    from azure.identity import ManagedIdentityCredential

    return MLClient(
        ManagedIdentityCredential(),
        env["AZURE_SUBSCRIPTION_ID"],
        env["AZURE_RESOURCE_GROUP"],
        env["AZUREML_WORKSPACE"],
    )


def assert_no_rejected_requests(server: EmulatorServer) -> None:
    assert server.emulator is not None
    errors = list(server.emulator.validation_errors)
    assert not errors, f"requests the service would reject: {errors}"


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
    assert_no_rejected_requests(aml_server)


@pytest.fixture(scope="module")
def aml_module_world(aml_server: EmulatorServer) -> Iterator[World]:
    """A fresh emulator world for a whole test module, the environment pointed at it meanwhile."""
    world = aml_server.reset()
    with azureml_env(aml_server.env()):
        yield world
    assert_no_rejected_requests(aml_server)


@pytest.fixture
def aml_settings(aml_world: World):
    from core.settings import Settings

    return Settings()


@pytest.fixture
def aml_backend(aml_settings):
    from backends.azureml import AzureMLBackend

    return AzureMLBackend(aml_settings)
