"""Shared fixtures: the real registered functions, fake backends, a run input."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Settings for the process under test: no Azure workspace needed, the local backend is never built
# because every test that runs activities injects fakes through backends.registry.use().
os.environ.setdefault("BACKEND", "local")
os.environ.setdefault("DatasetsStorage", "UseDevelopmentStorage=true")

from backends import registry
from core.contracts import ORCHESTRATOR
from core.models import RunRequest
from core.settings import Settings
from orchestrators.run_input import RunInput
from testing import app
from testing.fakes import FakeAzure, ultrachat_lines

pytest_plugins = ["testing.azurite_fixtures", "testing.azureml_fixtures", "testing.browser"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Browser tests skipped for lack of Chromium (or Playwright): one line says so, never silently."""
    # Imported here: a module imported before pytest_plugins loads it escapes assertion rewriting.
    from testing.browser import write_skip_summary

    write_skip_summary(terminalreporter)


@pytest.fixture(scope="session")
def functions() -> dict[str, Any]:
    return app.functions()


@pytest.fixture(scope="session")
def orchestrator_handler(functions: dict[str, Any]) -> Callable[..., str]:
    return functions[ORCHESTRATOR].get_user_function()


@pytest.fixture(scope="session")
def activity_functions(functions: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """Every activity the app registers, by name, straight from the indexing API."""
    return app.activities(functions)


@pytest.fixture
def settings() -> Settings:
    return Settings(BACKEND="local")


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    fake = FakeAzure()
    with registry.use(fake.backends()):
        yield fake


@pytest.fixture
def make_input(azure: FakeAzure, settings: Settings) -> Callable[..., dict[str, Any]]:
    def make(lines: bytes | None = None, name: str = "chats/support.jsonl", **config: Any) -> dict[str, Any]:
        dataset = azure.put_blob("datasets", name, ultrachat_lines(50) if lines is None else lines)
        cfg = settings.run_config().model_copy(update=config)
        return RunInput(request=RunRequest(dataset=dataset, config=cfg, source="blob")).model_dump(
            mode="json"
        )

    return make
