"""LocalPreflight on a temporary run directory: the offline stack's preflight, read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backends.base import PreflightBackend
from core.models import RunConfig
from core.naming import APP_TAG
from core.settings import Settings
from localml.endpoint_front import ENDPOINT_FILE
from localml.preflight import LOCAL_MODEL_ID, LOCAL_MODEL_VERSION, OFFLINE_CPU, LocalPreflight
from localml.serving import LocalServing

ENDPOINT = "phi3-ft-endpoint"
CHECKS = [
    "base_model",
    "training_instance",
    "training_quota",
    "serving_instance",
    "serving_quota",
    "endpoint_name",
    "endpoint_owner",
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(BACKEND="local", LOCAL_RUN_DIR=str(tmp_path / "run"))


@pytest.fixture
def preflight(settings: Settings) -> LocalPreflight:
    return LocalPreflight(settings)


def config(settings: Settings, **overrides: Any) -> RunConfig:
    return settings.run_config().model_copy(update=overrides)


def check(report: Any, name: str) -> Any:
    (found,) = [c for c in report.checks if c.name == name]
    return found


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def test_implements_the_preflight_protocol(preflight: LocalPreflight) -> None:
    assert isinstance(preflight, PreflightBackend)


def test_valid_config_passes_and_names_the_local_model(preflight: LocalPreflight, settings: Settings) -> None:
    report = preflight.preflight(config(settings))

    assert report.ok, report.reasons
    assert [c.name for c in report.checks] == CHECKS
    assert (report.model_id, report.model_version) == (LOCAL_MODEL_ID, LOCAL_MODEL_VERSION)
    assert "tiny local Phi-3" in check(report, "base_model").detail
    assert "Phi-3-mini-4k-instruct (latest) from registry azureml" in check(report, "base_model").detail
    assert check(report, "endpoint_owner").detail == (
        f"endpoint {ENDPOINT} does not exist in {preflight.serving.root} yet: the run creates it"
    )


def test_instance_types_are_accepted_and_ignored(preflight: LocalPreflight, settings: Settings) -> None:
    report = preflight.preflight(
        config(settings, training_instance_type="anything at all", serving_instance_count=3)
    )
    assert report.ok
    training, serving = check(report, "training_instance"), check(report, "serving_instance")
    assert training.detail == f"{OFFLINE_CPU} (instance type anything at all is ignored offline)"
    assert serving.detail == f"{OFFLINE_CPU} (instance type 3 × Standard_NC24ads_A100_v4 is ignored offline)"
    assert check(report, "training_quota").ok and check(report, "serving_quota").ok


@pytest.mark.parametrize("name", ["ab", "9endpoint", "bad_name", "ends-with-", "x" * 33, "../escape"])
def test_invalid_endpoint_name_fails(preflight: LocalPreflight, settings: Settings, name: str) -> None:
    report = preflight.preflight(config(settings, endpoint_name=name))

    assert not report.ok
    assert [c.name for c in report.checks if not c.ok] == ["endpoint_name", "endpoint_owner"]
    assert "is not a valid online endpoint name" in check(report, "endpoint_name").detail
    assert check(report, "endpoint_owner").detail.startswith("not checked")
    assert len(report.checks) == len(CHECKS)  # the other checks still ran


@pytest.mark.parametrize("name", ["abc", "phi3-ft-endpoint", "A" + "b" * 31])
def test_valid_endpoint_name_passes(preflight: LocalPreflight, settings: Settings, name: str) -> None:
    report = preflight.preflight(config(settings, endpoint_name=name))
    assert report.ok, report.reasons
    assert check(report, "endpoint_name").detail == f"{name} is a valid endpoint name"


def test_existing_local_endpoint_is_ours(settings: Settings) -> None:
    serving = LocalServing(settings)
    try:
        serving.begin_create_endpoint(ENDPOINT, {"created-by": APP_TAG})
        report = LocalPreflight(settings).preflight(config(settings))
    finally:
        serving.stop_all()

    assert report.ok, report.reasons
    detail = check(report, "endpoint_owner").detail
    assert detail.startswith(f"endpoint {ENDPOINT} exists in {serving.root} and is this app's")


def test_existing_endpoint_without_tags_is_still_ours(preflight: LocalPreflight, settings: Settings) -> None:
    state = preflight.serving._endpoint_dir(ENDPOINT) / ENDPOINT_FILE
    state.parent.mkdir(parents=True)
    state.write_text('{"name": "phi3-ft-endpoint", "tags": {}, "port": 1, "traffic": {}, "deployments": {}}')
    report = preflight.preflight(config(settings))
    assert check(report, "endpoint_owner").ok
    assert "is this app's" in check(report, "endpoint_owner").detail


def test_preflight_writes_nothing_and_starts_nothing(preflight: LocalPreflight, settings: Settings) -> None:
    root = Path(settings.LOCAL_RUN_DIR).resolve()
    before = tree(root)
    preflight.preflight(config(settings))
    preflight.preflight(config(settings, endpoint_name="other-endpoint"))
    assert tree(root) == before
    assert preflight.serving.processes() == {}
