"""AzureMLBackend's guardrail methods (model tags/listing/archiving, loss history, endpoint listing,
tagging and deletion, connection checks) against the recording SDK fakes of test_azureml_backend.

The entities handed to and returned by the fakes are the real azure-ai-ml 1.35 ones; where it is
cheap and offline the assertions look at the REST body the SDK would send (`_to_rest_*`).
Loss history runs against a fake MLflow client shaped like `mlflow.tracking.MlflowClient`, against
real `mlflow.entities` when mlflow is installed, end to end against a local SQLite MLflow store, and
through the real Azure path (azureml:// URI -> https REST base, RestStore, a fake AAD credential)
against a local HTTP server speaking the few MLflow REST 2.0 endpoints it calls.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from azure.ai.ml.entities import (
    IdentityConfiguration,
    ManagedIdentityConfiguration,
    ManagedOnlineEndpoint,
    Model,
)
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

import backends.azureml as azml
from backends.azureml import AzureMLBackend
from core import redact
from core.models import DeploymentInfo, EndpointInfo, LossHistory, MetricPoint, ModelRef, ProvisioningState
from core.naming import APP_TAG, CREATED_BY_TAG
from core.settings import Settings
from tests.test_azureml_backend import (
    DEPLOYMENT,
    JOB,
    KEY,
    PREFIX,
    SCORING_URI,
    FakeMLClient,
    make_settings,
)

ENDPOINT = "phi3-ft-endpoint"
MINE = {CREATED_BY_TAG: APP_TAG}
USER_IDENTITY = (
    "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-1"
)


def http_error(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"HTTP {status}")
    error.status_code = status
    return error


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def ml() -> FakeMLClient:
    return FakeMLClient()


@pytest.fixture
def project() -> FakeMLClient:
    return FakeMLClient()


@pytest.fixture
def backend(settings: Settings, ml: FakeMLClient, project: FakeMLClient) -> AzureMLBackend:
    return AzureMLBackend(settings, ml_client=ml, project_client=project, registry_client=FakeMLClient())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- set_model_tags


def test_set_model_tags_merges_into_the_same_version(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.models.add(
        Model(
            name=PREFIX,
            version="3",
            type="mlflow_model",
            path=f"azureml://jobs/{JOB}/outputs/registered_model",
            tags={"job_name": JOB, "stage": "candidate", **MINE},
        )
    )

    backend.set_model_tags(ModelRef(name=PREFIX, version="3"), {"stage": "live", "score": "0.81"})

    assert ml.models.calls == [
        ("get", {"name": PREFIX, "version": "3", "label": None}),
        ("create_or_update", {"name": PREFIX, "version": "3"}),
    ]
    (sent,) = ml.models.created
    assert (sent.name, sent.version) == (PREFIX, "3")  # an update of the version, not a new one
    expected = {"job_name": JOB, "stage": "live", "score": "0.81", **MINE}
    assert sent.tags == expected
    rest = sent._to_rest_object()
    assert rest.properties.tags == expected
    assert rest.properties.model_uri == f"azureml://jobs/{JOB}/outputs/registered_model"  # path unchanged
    assert ml.models.store[(PREFIX, "3")].tags == expected


def test_set_model_tags_without_change_writes_nothing(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.models.add(Model(name=PREFIX, version="3", type="mlflow_model", tags={"stage": "live"}))
    backend.set_model_tags(ModelRef(name=PREFIX, version="3"), {"stage": "live"})
    assert ml.models.created == []


def test_set_model_tags_on_a_missing_version_raises(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        backend.set_model_tags(ModelRef(name=PREFIX, version="9"), {"stage": "live"})
    assert ml.models.created == []


# --------------------------------------------------------------------------- list_models / delete_model


def add_models(ml: FakeMLClient) -> None:
    for name, version, tags in [
        (PREFIX, "1", {**MINE, "job_name": "ft-1"}),
        (PREFIX, "2", {CREATED_BY_TAG: "someone-else"}),
        (PREFIX, "10", {**MINE, "job_name": "ft-10"}),
        ("phi3-other", "1", MINE),
        ("unrelated", "1", {}),
        ("untagged", "4", None),
    ]:
        ml.models.add(Model(name=name, version=version, type="mlflow_model", tags=tags))


def test_list_models_filters_by_created_by_across_models_and_versions(
    backend: AzureMLBackend, ml: FakeMLClient
) -> None:
    add_models(ml)

    found = backend.list_models(APP_TAG)

    assert found == [
        (ModelRef(name=PREFIX, version="1"), {**MINE, "job_name": "ft-1"}),
        (ModelRef(name=PREFIX, version="10"), {**MINE, "job_name": "ft-10"}),  # numeric order
        (ModelRef(name="phi3-other", version="1"), MINE),
    ]
    lists = [c for c in ml.models.calls if c[0] == "list"]
    assert lists[0] == ("list", {"name": None})  # the containers first
    assert sorted(c[1]["name"] for c in lists[1:]) == sorted([PREFIX, "phi3-other", "unrelated", "untagged"])
    assert backend.list_models("someone-else") == [
        (ModelRef(name=PREFIX, version="2"), {CREATED_BY_TAG: "someone-else"})
    ]
    assert backend.list_models("nobody") == []


def test_list_models_skips_a_model_deleted_while_listing(
    backend: AzureMLBackend, ml: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_models(ml)
    real_list = ml.models.list

    def racing_list(name: str | None = None, **kwargs: Any) -> list[Model]:
        if name == PREFIX:
            raise ResourceNotFoundError(message="model container gone")
        return real_list(name, **kwargs)

    monkeypatch.setattr(ml.models, "list", racing_list)
    assert backend.list_models(APP_TAG) == [(ModelRef(name="phi3-other", version="1"), MINE)]


def test_list_models_transient_error_propagates(
    backend: AzureMLBackend, ml: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_list(name: str | None = None, **kwargs: Any) -> list[Model]:
        raise http_error(503)

    monkeypatch.setattr(ml.models, "list", failing_list)
    with pytest.raises(HttpResponseError):
        backend.list_models(APP_TAG)


def test_delete_model_archives_the_version_and_is_idempotent(
    backend: AzureMLBackend, ml: FakeMLClient
) -> None:
    add_models(ml)
    ref = ModelRef(name=PREFIX, version="10")

    backend.delete_model(ref)
    backend.delete_model(ref)  # archiving an archived version again is harmless

    archives = [c for c in ml.models.calls if c[0] == "archive"]
    assert archives == [("archive", {"name": PREFIX, "version": "10", "label": None})] * 2
    assert ml.models.archived == {(PREFIX, "10")}
    assert (PREFIX, "10") in ml.models.store  # archived, not deleted: the SDK cannot delete versions
    assert [m for m, _ in backend.list_models(APP_TAG)] == [
        ModelRef(name=PREFIX, version="1"),
        ModelRef(name="phi3-other", version="1"),
    ]


def test_delete_missing_model_is_a_no_op(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    backend.delete_model(ModelRef(name="never-registered", version="1"))
    assert ("archive", {"name": "never-registered", "version": "1", "label": None}) in ml.models.calls
    assert ml.models.archived == set()


def test_delete_model_transient_error_propagates(
    backend: AzureMLBackend, ml: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_archive(name: str, version: str | None = None, **kwargs: Any) -> None:
        raise http_error(500)

    monkeypatch.setattr(ml.models, "archive", failing_archive)
    with pytest.raises(HttpResponseError):
        backend.delete_model(ModelRef(name=PREFIX, version="1"))


# --------------------------------------------------------------------------- endpoints


def test_get_endpoint_fills_tags(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_endpoints.add(
        ENDPOINT, traffic={"blue": 100}, tags={**MINE, "expires_at": "2026-01-01T00:00:00Z"}
    )
    ml.online_deployments.add(ENDPOINT, "blue")

    info = backend.get_endpoint(ENDPOINT)

    assert info.tags == {**MINE, "expires_at": "2026-01-01T00:00:00Z"}
    assert info.traffic == {"blue": 100}
    assert ml.online_endpoints.key_reads == 0


def test_list_endpoints_shapes(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("zz-other", traffic=None, state="Creating", tags={"team": "x"})
    ml.online_endpoints.add(ENDPOINT, traffic={"blue": 100}, tags=MINE)
    ml.online_deployments.add(ENDPOINT, "blue")
    ml.online_deployments.add(ENDPOINT, "green", state="Creating")  # no traffic yet: listed with 0 %

    infos = backend.list_endpoints()

    assert infos == [
        EndpointInfo(
            name=ENDPOINT,
            state=ProvisioningState.SUCCEEDED,
            traffic={"blue": 100, "green": 0},
            deployments=["blue", "green"],
            scoring_uri=SCORING_URI,
            tags=MINE,
        ),
        EndpointInfo(
            name="zz-other",
            state=ProvisioningState.CREATING,
            traffic={},
            deployments=[],
            scoring_uri=SCORING_URI,
            tags={"team": "x"},
        ),
    ]
    assert ml.online_endpoints.key_reads == 0
    assert KEY not in json.dumps([i.model_dump(mode="json") for i in infos])


def test_list_endpoints_never_lists_the_deployments_of_foreign_endpoints(
    backend: AzureMLBackend, ml: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ml.online_endpoints.add("theirs", traffic={"a": 100}, tags={"team": "x"})
    ml.online_deployments.add("theirs", "b")  # zero traffic: only a deployments call would show it
    ml.online_endpoints.add(ENDPOINT, traffic={"blue": 100}, tags=MINE)
    ml.online_deployments.add(ENDPOINT, "blue")
    asked: list[str] = []
    original = ml.online_deployments.list

    def list_deployments(endpoint_name: str, **kwargs: Any) -> Any:
        asked.append(endpoint_name)
        if endpoint_name != ENDPOINT:
            raise RuntimeError("throttled")  # a foreign endpoint's error must not fail the sweep
        return original(endpoint_name, **kwargs)

    monkeypatch.setattr(ml.online_deployments, "list", list_deployments)
    infos = {i.name: i for i in backend.list_endpoints()}
    assert asked == [ENDPOINT]
    assert infos["theirs"].deployments == [] and infos["theirs"].traffic == {"a": 100}
    assert infos[ENDPOINT].deployments == ["blue"]


def test_list_endpoints_when_an_endpoint_vanishes_mid_listing(
    backend: AzureMLBackend, ml: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ml.online_endpoints.add(ENDPOINT, traffic={"blue": 100}, tags=MINE, state="Deleting")
    listed = ml.online_endpoints.list()
    monkeypatch.setattr(ml.online_endpoints, "list", lambda **kwargs: listed)
    del ml.online_endpoints.store[ENDPOINT]  # gone before its deployments are listed

    (info,) = backend.list_endpoints()
    assert info.name == ENDPOINT and info.deployments == [] and info.state is ProvisioningState.DELETING


def test_list_deployments_shapes(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_endpoints.add(ENDPOINT, traffic={"blue": 100})
    ml.online_deployments.add(
        ENDPOINT, "green", "Updating", instance_type="Standard_NC24ads_A100_v4", instance_count=2, tags=MINE
    )
    ml.online_deployments.add(
        ENDPOINT, "blue", "Succeeded", instance_type="Standard_NC6s_v3", instance_count=1
    )
    ml.online_deployments.add("other", "red", instance_type="Standard_DS3_v2", instance_count=1)

    assert backend.list_deployments(ENDPOINT) == [
        DeploymentInfo(
            name="blue",
            instance_type="Standard_NC6s_v3",
            instance_count=1,
            state=ProvisioningState.SUCCEEDED,
            tags={},
        ),
        DeploymentInfo(
            name="green",
            instance_type="Standard_NC24ads_A100_v4",
            instance_count=2,
            state=ProvisioningState.UPDATING,
            tags=MINE,
        ),
    ]


def test_list_deployments_of_a_missing_endpoint_is_empty(backend: AzureMLBackend) -> None:
    assert backend.list_deployments("gone-endpoint") == []


def test_created_deployment_carries_the_spec_tags_on_the_wire(
    backend: AzureMLBackend, ml: FakeMLClient
) -> None:
    ml.online_endpoints.add(DEPLOYMENT.endpoint_name, traffic={"blue": 100})
    backend.begin_create_deployment(DEPLOYMENT)
    (sent,) = ml.online_deployments.created
    assert sent._to_rest_object(location="westeurope").tags == DEPLOYMENT.tags


# --------------------------------------------------------------------------- update_endpoint_tags


def user_assigned() -> IdentityConfiguration:
    return IdentityConfiguration(
        type="user_assigned",
        user_assigned_identities=[ManagedIdentityConfiguration(resource_id=USER_IDENTITY)],
    )


def test_update_endpoint_tags_keeps_old_tags_traffic_and_identity(
    backend: AzureMLBackend, ml: FakeMLClient
) -> None:
    ep = ml.online_endpoints.add(
        ENDPOINT, traffic={"blue": 90, "green": 10}, tags={**MINE, "owner": "ml-team"}
    )
    ep.identity = user_assigned()
    ep.mirror_traffic = {"shadow": 5}
    ep.description = "phi-3 fine-tuned"

    backend.update_endpoint_tags(ENDPOINT, {"expires_at": "2026-01-01T00:00:00Z", "owner": "pipeline"})

    (sent,) = ml.online_endpoints.created
    assert sent.tags == {**MINE, "owner": "pipeline", "expires_at": "2026-01-01T00:00:00Z"}
    assert ml.online_endpoints.pollers[0].result_calls == 1  # waited, like set_traffic
    rest = sent._to_rest_online_endpoint(location="westeurope")
    assert rest.properties.traffic == {"blue": 90, "green": 10}
    assert rest.properties.mirror_traffic == {"shadow": 5}
    assert rest.properties.auth_mode == "Key"
    assert rest.properties.description == "phi-3 fine-tuned"
    assert rest.identity.type == "UserAssigned"
    assert set(rest.identity.user_assigned_identities) == {USER_IDENTITY}
    assert rest.tags == sent.tags
    stored = ml.online_endpoints.store[ENDPOINT]
    assert stored.traffic == {"blue": 90, "green": 10}
    assert stored.tags == sent.tags


def test_a_fresh_endpoint_entity_would_reset_traffic_and_identity() -> None:
    # Why update_endpoint_tags re-sends the entity `get` returned: the PUT body of a new entity
    # with just name/tags/auth_mode carries empty traffic and a SystemAssigned identity.
    fresh = ManagedOnlineEndpoint(name=ENDPOINT, auth_mode="key", tags=MINE)
    rest = fresh._to_rest_online_endpoint(location="westeurope")
    assert not rest.properties.traffic
    assert rest.identity.type == "SystemAssigned"


def test_update_endpoint_tags_without_change_sends_nothing(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_endpoints.add(ENDPOINT, traffic={"blue": 100}, tags=MINE)
    backend.update_endpoint_tags(ENDPOINT, dict(MINE))
    assert ml.online_endpoints.created == []


def test_update_tags_of_a_missing_endpoint_raises(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    with pytest.raises(ResourceNotFoundError):
        backend.update_endpoint_tags(ENDPOINT, {"a": "b"})
    assert ml.online_endpoints.created == []


# --------------------------------------------------------------------------- delete_endpoint


def test_delete_endpoint_begins_without_waiting_and_is_idempotent(
    backend: AzureMLBackend, ml: FakeMLClient
) -> None:
    ml.online_endpoints.add(ENDPOINT, traffic={"blue": 100}, tags=MINE)

    backend.delete_endpoint(ENDPOINT)
    backend.delete_endpoint(ENDPOINT)  # now Deleting: no second delete request

    assert ml.online_endpoints.deleted == [ENDPOINT]
    assert ml.online_endpoints.delete_pollers[0].result_calls == 0
    assert backend.get_endpoint(ENDPOINT).state is ProvisioningState.DELETING


def test_delete_missing_endpoint_is_a_no_op(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    backend.delete_endpoint("gone-endpoint")
    assert ml.online_endpoints.deleted == []


def test_delete_endpoint_racing_another_delete(
    backend: AzureMLBackend, ml: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ml.online_endpoints.add(ENDPOINT)

    def gone(name: str | None = None, **kwargs: Any) -> None:
        raise ResourceNotFoundError(message="endpoint gone")

    monkeypatch.setattr(ml.online_endpoints, "begin_delete", gone)
    backend.delete_endpoint(ENDPOINT)  # no exception


def test_delete_endpoint_server_error_propagates(
    backend: AzureMLBackend, ml: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ml.online_endpoints.add(ENDPOINT)

    def boom(name: str | None = None, **kwargs: Any) -> None:
        raise http_error(503)

    monkeypatch.setattr(ml.online_endpoints, "begin_delete", boom)
    with pytest.raises(HttpResponseError):
        backend.delete_endpoint(ENDPOINT)


# --------------------------------------------------------------------------- connections


def test_connection_exists_and_delete_on_the_project(
    backend: AzureMLBackend, ml: FakeMLClient, project: FakeMLClient
) -> None:
    ml.online_endpoints.add(ENDPOINT)
    assert backend.connection_exists("phi3-finetuned") is False

    backend.publish_connection("phi3-finetuned", ENDPOINT)
    assert backend.connection_exists("phi3-finetuned") is True

    backend.delete_connection("phi3-finetuned")
    backend.delete_connection("phi3-finetuned")  # already gone: no error

    assert backend.connection_exists("phi3-finetuned") is False
    assert project.connections.calls == [
        ("get", {"name": "phi3-finetuned"}),  # no populate_secrets: the key is never read back
        ("get", {"name": "phi3-finetuned"}),
        ("delete", {"name": "phi3-finetuned"}),
        ("delete", {"name": "phi3-finetuned"}),
        ("get", {"name": "phi3-finetuned"}),
    ]
    assert ml.connections.calls == []  # the workspace client is not the project client here


def test_connection_errors_other_than_not_found_propagate(
    backend: AzureMLBackend, project: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(name: str, **kwargs: Any) -> None:
        raise http_error(500)

    monkeypatch.setattr(project.connections, "get", boom)
    monkeypatch.setattr(project.connections, "delete", boom)
    with pytest.raises(HttpResponseError):
        backend.connection_exists("phi3-finetuned")
    with pytest.raises(HttpResponseError):
        backend.delete_connection("phi3-finetuned")


# --------------------------------------------------------------------------- loss_history (fake MLflow)


def metric(step: int, value: float, timestamp: int = 0) -> SimpleNamespace:
    return SimpleNamespace(key="", step=step, value=value, timestamp=timestamp)


def run(run_id: str, *, tags: dict[str, str], metrics: dict[str, float], start: int, exp: str = "7") -> Any:
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id, experiment_id=exp, start_time=start),
        data=SimpleNamespace(metrics=metrics, tags=tags),
    )


class Page(list[Any]):
    def __init__(self, items: list[Any], token: str | None) -> None:
        super().__init__(items)
        self.token = token


class FakeMlflowClient:
    """MlflowClient.get_run / search_runs (paged by `page_size`) / get_metric_history."""

    FILTER = re.compile(r"^tags\.mlflow\.rootRunId = '([^']+)'$")

    def __init__(self, page_size: int = 2) -> None:
        self.runs: dict[str, Any] = {}
        self.histories: dict[tuple[str, str], list[Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.page_size = page_size
        self.error: Exception | None = None
        self.uris: list[str] = []  # tracking URIs the backend built this client for

    def add(self, r: Any, **histories: list[Any]) -> None:
        self.runs[r.info.run_id] = r
        for key, points in histories.items():
            self.histories[(r.info.run_id, key)] = points

    def get_run(self, run_id: str) -> Any:
        self.calls.append(("get_run", run_id))
        if self.error is not None:
            raise self.error
        if run_id not in self.runs:
            raise NotFound(f"Run '{run_id}' not found")
        return self.runs[run_id]

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        *,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page:
        self.calls.append(("search_runs", (list(experiment_ids), filter_string, max_results, page_token)))
        match = self.FILTER.match(filter_string)
        assert match, filter_string
        hits = [
            r
            for r in self.runs.values()
            if r.info.experiment_id in experiment_ids and r.data.tags.get("mlflow.rootRunId") == match[1]
        ]
        start = int(page_token or 0)
        end = start + self.page_size
        return Page(hits[start:end], str(end) if end < len(hits) else None)

    def get_metric_history(self, run_id: str, key: str) -> list[Any]:
        self.calls.append(("get_metric_history", (run_id, key)))
        return list(self.histories.get((run_id, key), []))


class NotFound(Exception):
    """Duck-typed like MlflowException(error_code=RESOURCE_DOES_NOT_EXIST)."""

    error_code = "RESOURCE_DOES_NOT_EXIST"


@pytest.fixture
def mlflow_client(backend: AzureMLBackend, monkeypatch: pytest.MonkeyPatch) -> FakeMlflowClient:
    client = FakeMlflowClient()

    def make(tracking_uri: str) -> FakeMlflowClient:
        client.uris.append(tracking_uri)
        return client

    monkeypatch.setattr(backend, "_mlflow_client", make)
    return client


def pipeline_job(client: FakeMlflowClient) -> None:
    """A fine-tuning pipeline job: the job run (no metrics), a preprocess step, a sub-pipeline whose
    finetune step logged `loss` per step (out of order) plus a one-off `train_loss` summary and
    `eval_loss`, and a run of another job in the same experiment."""
    root = {"mlflow.rootRunId": JOB}
    client.add(run(JOB, tags={}, metrics={}, start=1))
    client.add(run("pre", tags={**root, "mlflow.parentRunId": JOB}, metrics={"rows": 100.0}, start=2))
    client.add(run("sub", tags={**root, "mlflow.parentRunId": JOB}, metrics={}, start=3))
    client.add(
        run(
            "finetune",
            tags={**root, "mlflow.parentRunId": "sub"},  # a grandchild: only rootRunId names the job
            metrics={"loss": 1.1, "train_loss": 1.6, "eval_loss": 1.3, "learning_rate": 1e-5},
            start=4,
        ),
        loss=[metric(30, 1.1), metric(10, 2.2), metric(20, 1.5)],
        train_loss=[metric(30, 1.6)],
        eval_loss=[metric(30, 1.3, timestamp=2), metric(15, 1.9), metric(30, 1.25, timestamp=1)],
    )
    client.add(
        run("other-job-step", tags={"mlflow.rootRunId": "ft-other"}, metrics={"loss": 9.0}, start=5),
        loss=[metric(1, 9.0), metric(2, 8.0), metric(3, 7.0), metric(4, 6.0)],
    )


def test_loss_history_collects_child_runs_sorted(
    backend: AzureMLBackend, ml: FakeMLClient, mlflow_client: FakeMlflowClient
) -> None:
    pipeline_job(mlflow_client)

    history = backend.loss_history(JOB)

    assert history == LossHistory(
        train=[
            MetricPoint(step=10, value=2.2),
            MetricPoint(step=20, value=1.5),
            MetricPoint(step=30, value=1.1),
        ],
        validation=[
            MetricPoint(step=15, value=1.9),
            MetricPoint(step=30, value=1.25),  # same step: logging order kept
            MetricPoint(step=30, value=1.3),
        ],
    )
    assert mlflow_client.uris == [ml.workspaces.mlflow_tracking_uri]
    assert ml.workspaces.calls == ["ws-1"]
    searches = [args for name, args in mlflow_client.calls if name == "search_runs"]
    assert searches == [
        (["7"], f"tags.mlflow.rootRunId = '{JOB}'", azml.MLFLOW_PAGE_SIZE, None),
        (["7"], f"tags.mlflow.rootRunId = '{JOB}'", azml.MLFLOW_PAGE_SIZE, "2"),
    ]
    histories = [args for name, args in mlflow_client.calls if name == "get_metric_history"]
    # train_loss (one summary point) yields to loss; no metric history is read for other jobs' runs.
    assert histories == [("finetune", "train_loss"), ("finetune", "loss"), ("finetune", "eval_loss")]


def test_loss_history_prefers_a_per_step_train_loss(
    backend: AzureMLBackend, mlflow_client: FakeMlflowClient
) -> None:
    mlflow_client.add(
        run(JOB, tags={}, metrics={"train_loss": 0.9, "loss": 0.8}, start=1),
        train_loss=[metric(2, 0.9), metric(1, 1.0)],
        loss=[metric(1, 5.0), metric(2, 4.0), metric(3, 3.0)],
    )
    history = backend.loss_history(JOB)
    assert history.train == [MetricPoint(step=1, value=1.0), MetricPoint(step=2, value=0.9)]
    assert history.validation == []


@pytest.mark.parametrize("name", ["validation_loss", "val_loss"])
def test_loss_history_fallback_metric_names(
    backend: AzureMLBackend, mlflow_client: FakeMlflowClient, name: str
) -> None:
    mlflow_client.add(run(JOB, tags={}, metrics={}, start=1))
    mlflow_client.add(
        run("train-step", tags={"mlflow.rootRunId": JOB}, metrics={"loss": 1.0, name: 1.2}, start=2),
        loss=[metric(2, 1.0), metric(1, 2.0)],
        **{name: [metric(2, 1.2), metric(1, 2.1)]},
    )
    history = backend.loss_history(JOB)
    assert history.train == [MetricPoint(step=1, value=2.0), MetricPoint(step=2, value=1.0)]
    assert history.validation == [MetricPoint(step=1, value=2.1), MetricPoint(step=2, value=1.2)]


def test_loss_history_takes_each_curve_from_the_run_with_most_points(
    backend: AzureMLBackend, mlflow_client: FakeMlflowClient
) -> None:
    # A first attempt of the step failed after 2 points; the retry logged 3. No mixing of the two.
    mlflow_client.add(run(JOB, tags={}, metrics={}, start=1))
    mlflow_client.add(
        run("attempt-1", tags={"mlflow.rootRunId": JOB}, metrics={"loss": 3.0}, start=2),
        loss=[metric(1, 3.5), metric(2, 3.0)],
    )
    mlflow_client.add(
        run("attempt-2", tags={"mlflow.rootRunId": JOB}, metrics={"loss": 1.0}, start=3),
        loss=[metric(3, 1.0), metric(1, 3.4), metric(2, 2.0)],
    )
    assert backend.loss_history(JOB).train == [
        MetricPoint(step=1, value=3.4),
        MetricPoint(step=2, value=2.0),
        MetricPoint(step=3, value=1.0),
    ]


def test_loss_history_drops_non_finite_values(
    backend: AzureMLBackend, mlflow_client: FakeMlflowClient
) -> None:
    mlflow_client.add(
        run(JOB, tags={}, metrics={"loss": 1.0}, start=1),
        loss=[metric(1, 2.0), metric(2, math.nan), metric(3, math.inf), metric(4, 1.0)],
    )
    history = backend.loss_history(JOB)
    assert history.train == [MetricPoint(step=1, value=2.0), MetricPoint(step=4, value=1.0)]
    assert LossHistory.model_validate_json(history.model_dump_json()) == history


def test_loss_history_of_a_job_without_mlflow_run_is_empty(
    backend: AzureMLBackend, mlflow_client: FakeMlflowClient
) -> None:
    assert backend.loss_history(JOB) == LossHistory()
    assert mlflow_client.calls == [("get_run", JOB)]


def test_loss_history_without_loss_metrics_is_empty(
    backend: AzureMLBackend, mlflow_client: FakeMlflowClient
) -> None:
    mlflow_client.add(run(JOB, tags={}, metrics={"accuracy": 0.5}, start=1), accuracy=[metric(1, 0.5)])
    assert backend.loss_history(JOB) == LossHistory()


def test_loss_history_transient_errors_propagate(
    backend: AzureMLBackend, mlflow_client: FakeMlflowClient
) -> None:
    mlflow_client.error = ConnectionError("tracking server unreachable")
    with pytest.raises(ConnectionError):
        backend.loss_history(JOB)


def test_loss_history_reads_the_tracking_uri_once(
    backend: AzureMLBackend, ml: FakeMLClient, mlflow_client: FakeMlflowClient
) -> None:
    backend.loss_history(JOB)
    backend.loss_history(JOB)
    assert ml.workspaces.calls == ["ws-1"]


def test_loss_history_without_tracking_uri_fails_clearly(
    backend: AzureMLBackend, ml: FakeMLClient, mlflow_client: FakeMlflowClient
) -> None:
    ml.workspaces.mlflow_tracking_uri = None
    with pytest.raises(RuntimeError, match="no MLflow tracking URI"):
        backend.loss_history(JOB)
    assert mlflow_client.calls == []


@pytest.mark.parametrize("bad", ["", "ft' OR tags.x = 'y", "-leading-dash", "a b"])
def test_loss_history_refuses_what_is_not_a_job_name(
    backend: AzureMLBackend, mlflow_client: FakeMlflowClient, bad: str
) -> None:
    with pytest.raises(ValueError, match="not an Azure ML job name"):
        backend.loss_history(bad)
    assert mlflow_client.calls == []


# --------------------------------------------------------------------------- loss_history (real mlflow)


def test_loss_history_with_real_mlflow_entities(
    backend: AzureMLBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    entities = pytest.importorskip("mlflow.entities")
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE
    from mlflow.store.entities.paged_list import PagedList

    def real_run(run_id: str, tags: dict[str, str], metrics: list[Any]) -> Any:
        info = entities.RunInfo(
            run_id=run_id,
            experiment_id="7",
            user_id="azureml",
            status="FINISHED",
            start_time=1,
            end_time=2,
            lifecycle_stage="active",
        )
        data = entities.RunData(metrics=metrics, tags=[entities.RunTag(k, v) for k, v in tags.items()])
        return entities.Run(info, data)

    def m(key: str, step: int, value: float) -> Any:
        return entities.Metric(key=key, value=value, timestamp=step, step=step)

    child_metrics = [m("loss", 2, 1.0), m("loss", 1, 2.0), m("eval_loss", 2, 1.5)]
    root = real_run(JOB, {}, [])
    child = real_run("child", {"mlflow.rootRunId": JOB}, child_metrics)

    class Client:
        missing = False
        flaky = False

        def get_run(self, run_id: str) -> Any:
            if self.missing:
                raise MlflowException(f"Run '{run_id}' not found", error_code=RESOURCE_DOES_NOT_EXIST)
            if self.flaky:
                raise MlflowException("try again", error_code=TEMPORARILY_UNAVAILABLE)
            return root

        def search_runs(self, experiment_ids: list[str], filter_string: str = "", **kwargs: Any) -> Any:
            return PagedList([root, child], None)

        def get_metric_history(self, run_id: str, key: str) -> list[Any]:
            return [x for x in child_metrics if x.key == key] if run_id == "child" else []

    client = Client()
    monkeypatch.setattr(backend, "_mlflow_client", lambda uri: client)

    assert backend.loss_history(JOB) == LossHistory(
        train=[MetricPoint(step=1, value=2.0), MetricPoint(step=2, value=1.0)],
        validation=[MetricPoint(step=2, value=1.5)],
    )
    client.missing = True
    assert backend.loss_history(JOB) == LossHistory()
    client.missing, client.flaky = False, True
    with pytest.raises(MlflowException):
        backend.loss_history(JOB)


@pytest.fixture
def sqlite_tracking(tmp_path: Any) -> Iterator[str]:
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_loss_history_end_to_end_on_a_local_mlflow_store(
    settings: Settings, ml: FakeMLClient, sqlite_tracking: str
) -> None:
    """The real MlflowClient (no fakes below `_mlflow_client`) on runs tagged the way Azure ML tags
    a pipeline job's steps: the filter syntax, paging and metric-history calls are MLflow's own."""
    from mlflow.tracking import MlflowClient

    writer = MlflowClient(tracking_uri=sqlite_tracking)
    experiment = writer.create_experiment("phi3-mini-ft")
    job = writer.create_run(experiment).info.run_id  # Azure ML: run id == job name
    sub = writer.create_run(experiment, tags={"mlflow.rootRunId": job, "mlflow.parentRunId": job}).info.run_id
    step = writer.create_run(
        experiment, tags={"mlflow.rootRunId": job, "mlflow.parentRunId": sub}
    ).info.run_id
    stray = writer.create_run(experiment, tags={"mlflow.rootRunId": "someone-else"}).info.run_id
    for s, v in [(20, 1.5), (10, 2.5), (30, 1.0)]:
        writer.log_metric(step, "loss", v, step=s)
    writer.log_metric(step, "train_loss", 1.7, step=30)
    for s, v in [(30, 1.2), (15, 1.8)]:
        writer.log_metric(step, "eval_loss", v, step=s)
    for s in range(1, 6):
        writer.log_metric(stray, "loss", 9.0 - s, step=s)

    ml.workspaces.mlflow_tracking_uri = sqlite_tracking
    backend = AzureMLBackend(settings, ml_client=ml)  # type: ignore[arg-type]

    assert backend.loss_history(job) == LossHistory(
        train=[
            MetricPoint(step=10, value=2.5),
            MetricPoint(step=20, value=1.5),
            MetricPoint(step=30, value=1.0),
        ],
        validation=[MetricPoint(step=15, value=1.8), MetricPoint(step=30, value=1.2)],
    )
    assert backend.loss_history("ft-0000000000000000") == LossHistory()  # no such run


# --------------------------------------------------------------------------- loss_history (Azure ML REST)

WS_PATH = (
    "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices/workspaces/ws-1"
)
WS_URI = f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{WS_PATH}"  # what FakeWorkspaces reports


@pytest.mark.parametrize(
    ("uri", "base"),
    [
        (WS_URI, f"https://westeurope.api.azureml.ms/mlflow/v2.0{WS_PATH}"),
        (  # as older SDKs print it, with an empty query
            "azureml://eastus2.api.azureml.ms/mlflow/v1.0/subscriptions/0b9c6d4e-1f2a-4c3b-9d8e-7f6a5b4c3d2e"
            "/resourceGroups/MY_RESOURCE_GROUP/providers/Microsoft.MachineLearningServices/workspaces/MLops-Test?",
            "https://eastus2.api.azureml.ms/mlflow/v2.0/subscriptions/0b9c6d4e-1f2a-4c3b-9d8e-7f6a5b4c3d2e"
            "/resourceGroups/MY_RESOURCE_GROUP/providers/Microsoft.MachineLearningServices/workspaces/MLops-Test",
        ),
        (  # a private-link workspace host, a query and a trailing slash
            "azureml://7f1e2d3c-aaaa-bbbb-cccc-0123456789ab.workspace.swedencentral.api.azureml.ms/mlflow/v1.0"
            "/subscriptions/sub-1/resourceGroups/rg.ml-1/providers/Microsoft.MachineLearningServices"
            "/workspaces/phi3-ws/?is-remote=True",
            "https://7f1e2d3c-aaaa-bbbb-cccc-0123456789ab.workspace.swedencentral.api.azureml.ms/mlflow/v2.0"
            "/subscriptions/sub-1/resourceGroups/rg.ml-1/providers/Microsoft.MachineLearningServices"
            "/workspaces/phi3-ws",
        ),
        (  # ARM ids are case-insensitive; the base is spelled canonically
            "AzureML://westus3.api.azureml.ms/mlflow/v2.0/subscriptions/s/resourcegroups/r"
            "/providers/microsoft.machinelearningservices/workspaces/w",
            "https://westus3.api.azureml.ms/mlflow/v2.0/subscriptions/s/resourceGroups/r"
            "/providers/Microsoft.MachineLearningServices/workspaces/w",
        ),
    ],
)
def test_azureml_tracking_uri_becomes_the_https_rest_base(uri: str, base: str) -> None:
    assert azml.azureml_tracking_base(uri) == base


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////tmp/mlflow.db",
        "file:///tmp/mlruns",
        "http://127.0.0.1:5000",
        f"https://westeurope.api.azureml.ms/mlflow/v1.0{WS_PATH}",
        "databricks",
    ],
)
def test_other_tracking_uris_pass_through_unchanged(uri: str) -> None:
    assert azml.azureml_tracking_base(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "azureml://experiments/phi3/runs/ft-1/artifacts",  # an artifact URI
        "azureml://westeurope.api.azureml.ms/mlflow/v2.0/subscriptions/s/resourceGroups/r"
        "/providers/Microsoft.MachineLearningServices/registries/azureml",  # a registry URI
        f"azureml:///mlflow/v1.0{WS_PATH}",  # no host
    ],
)
def test_azureml_uris_without_a_workspace_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="not an Azure ML workspace tracking URI"):
        azml.azureml_tracking_base(uri)


class FakeCredential:
    """azure-identity's TokenCredential.get_token: a new token per call, the scopes recorded."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(f"fake-aad-token-{len(self.scopes)}", 4102444800)


def test_host_creds_ask_for_an_arm_token_per_request() -> None:
    pytest.importorskip("mlflow")
    base = azml.azureml_tracking_base(WS_URI)
    cred = FakeCredential()
    get_host_creds = azml.AzureMLHostCreds(base, cred)
    assert cred.scopes == []  # nothing fetched up front

    first, second = get_host_creds(), get_host_creds()

    assert cred.scopes == [("https://management.azure.com/.default",)] * 2
    assert (first.host, first.token) == (base, "fake-aad-token-1")
    assert (second.host, second.token) == (base, "fake-aad-token-2")
    assert "fake-aad-token" not in repr(get_host_creds)
    assert "fake-aad-token-2" not in redact.scrub("echoed: fake-aad-token-2")


class MlflowRestServer:
    """Just enough of the MLflow REST API 2.0, under the workspace's /mlflow/v2.0 prefix, for the
    three calls RestStore makes here: GET runs/get, POST runs/search, GET metrics/get-history
    (mlflow RestStore._METHOD_TO_INFO). Search and metric history answer one and two items a page.
    `echo_auth` makes every answer a 403 that repeats the Authorization header (a leaky server)."""

    PREFIX = f"/mlflow/v2.0{WS_PATH}/api/2.0/mlflow/"

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.histories: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, endpoint, Authorization)
        self.echo_auth = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.handle(self, dict(parse_qsl(urlsplit(self.path).query)))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server.handle(self, json.loads(self.rfile.read(length) or b"{}"))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01})

    def add_run(
        self, run_id: str, tags: dict[str, str], start: int, **histories: list[tuple[int, float]]
    ) -> None:
        self.runs[run_id] = {
            "info": {
                "run_id": run_id,
                "run_uuid": run_id,
                "experiment_id": "7",
                "user_id": "azureml",
                "status": "FINISHED",
                "start_time": start,
                "end_time": start + 1,
                "lifecycle_stage": "active",
            },
            "data": {
                "metrics": [
                    {"key": k, "value": points[-1][1], "timestamp": 1, "step": points[-1][0]}
                    for k, points in histories.items()
                ],
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        }
        for key, points in histories.items():
            self.histories[(run_id, key)] = [
                {"key": key, "value": value, "timestamp": i, "step": step}
                for i, (step, value) in enumerate(points)
            ]

    def handle(self, h: BaseHTTPRequestHandler, args: dict[str, Any]) -> None:
        path = urlsplit(h.path).path
        auth = h.headers.get("Authorization")
        endpoint = path.removeprefix(self.PREFIX)
        self.requests.append((h.command, endpoint, auth))  # anything outside PREFIX keeps its full path
        if endpoint == path:
            return self.reply(h, 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": path})
        if self.echo_auth:
            return self.reply(h, 403, {"error_code": "PERMISSION_DENIED", "message": f"bad token {auth}"})
        if (h.command, endpoint) == ("GET", "runs/get"):
            found = self.runs.get(args["run_id"])
            if found is None:
                return self.reply(h, 404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"})
            return self.reply(h, 200, {"run": found})
        if (h.command, endpoint) == ("POST", "runs/search"):
            match = re.fullmatch(r"tags\.mlflow\.rootRunId = '([^']+)'", args["filter"])
            assert match and args["experiment_ids"] == ["7"], args
            hits = [
                r
                for r in self.runs.values()
                if {"key": "mlflow.rootRunId", "value": match[1]} in r["data"]["tags"]
            ]
            return self.reply(h, 200, self.page("runs", hits, args.get("page_token"), 1))
        if (h.command, endpoint) == ("GET", "metrics/get-history"):
            points = self.histories.get((args["run_id"], args["metric_key"]), [])
            return self.reply(h, 200, self.page("metrics", points, args.get("page_token"), 2))
        return self.reply(h, 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": endpoint})

    @staticmethod
    def page(field: str, items: list[Any], token: str | None, size: int) -> dict[str, Any]:
        start = int(token or 0)
        body: dict[str, Any] = {field: items[start : start + size]}
        if start + size < len(items):
            body["next_page_token"] = str(start + size)
        return body

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def mlflow_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowRestServer]:
    pytest.importorskip("mlflow")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection fails at once
    server = MlflowRestServer()
    server.thread.start()
    # The real conversion, then the https host swapped for the local http server.
    to_base = azml.azureml_tracking_base
    monkeypatch.setattr(
        azml,
        "azureml_tracking_base",
        lambda uri: to_base(uri).replace("https://westeurope.api.azureml.ms", server.url),
    )
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join()


@pytest.fixture
def credential(backend: AzureMLBackend, monkeypatch: pytest.MonkeyPatch) -> FakeCredential:
    cred = FakeCredential()
    monkeypatch.setattr(backend, "_cred", lambda: cred)
    return cred


def test_loss_history_over_the_workspace_rest_api_with_an_aad_token(
    backend: AzureMLBackend, ml: FakeMLClient, mlflow_server: MlflowRestServer, credential: FakeCredential
) -> None:
    """The real `_mlflow_client` on the workspace's azureml:// URI: MlflowClient + RestStore against
    a local server, no azureml-mlflow; every request carries a token minted for it."""
    assert ml.workspaces.mlflow_tracking_uri == WS_URI
    root = {"mlflow.rootRunId": JOB}
    mlflow_server.add_run(JOB, {}, start=1)
    mlflow_server.add_run("sub", {**root, "mlflow.parentRunId": JOB}, start=2)
    mlflow_server.add_run(
        "finetune",
        {**root, "mlflow.parentRunId": "sub"},
        start=3,
        loss=[(20, 1.5), (10, 2.5), (40, 0.7), (30, 1.0)],
        train_loss=[(40, 1.6)],
        eval_loss=[(40, 1.1), (20, 1.8)],
    )
    mlflow_server.add_run("stray", {"mlflow.rootRunId": "ft-other"}, start=4, loss=[(1, 9.0), (2, 8.0)])

    history = backend.loss_history(JOB)

    assert history == LossHistory(
        train=[
            MetricPoint(step=10, value=2.5),
            MetricPoint(step=20, value=1.5),
            MetricPoint(step=30, value=1.0),
            MetricPoint(step=40, value=0.7),
        ],
        validation=[MetricPoint(step=20, value=1.8), MetricPoint(step=40, value=1.1)],
    )
    calls = [(method, endpoint) for method, endpoint, _ in mlflow_server.requests]
    assert calls == [
        ("GET", "runs/get"),
        ("POST", "runs/search"),  # two matching runs, one a page
        ("POST", "runs/search"),
        ("GET", "metrics/get-history"),  # train_loss: one point
        ("GET", "metrics/get-history"),  # loss: four points, two a page
        ("GET", "metrics/get-history"),
        ("GET", "metrics/get-history"),  # eval_loss
    ]
    n = len(calls)
    assert [auth for _, _, auth in mlflow_server.requests] == [
        f"Bearer fake-aad-token-{i}" for i in range(1, n + 1)
    ]
    assert credential.scopes == [(azml.AZUREML_MLFLOW_SCOPE,)] * n

    assert backend.loss_history("ft-0000000000000000") == LossHistory()  # 404 RESOURCE_DOES_NOT_EXIST


def test_mlflow_failures_carry_no_token(
    backend: AzureMLBackend, mlflow_server: MlflowRestServer, credential: FakeCredential
) -> None:
    from mlflow.exceptions import MlflowException

    mlflow_server.echo_auth = True
    with pytest.raises(MlflowException) as denied:
        backend.loss_history(JOB)
    assert denied.value.error_code == "PERMISSION_DENIED"
    assert "fake-aad-token" not in str(denied.value)
    assert (denied.value.__cause__, denied.value.__context__) == (None, None)

    # A refused connection: mlflow raises inside its `except`, its context the requests error
    # whose PreparedRequest holds the Authorization header; none of that chain comes out.
    mlflow_server.httpd.shutdown()
    mlflow_server.httpd.server_close()
    with pytest.raises(MlflowException) as refused:
        backend.loss_history(JOB)
    assert "fake-aad-token" not in str(refused.value)
    assert (refused.value.__cause__, refused.value.__context__) == (None, None)


def test_mlflow_client_for_another_uri_is_a_plain_mlflow_client(backend: AzureMLBackend) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    client = backend._mlflow_client("http://127.0.0.1:5000")  # no request is made
    assert isinstance(client, MlflowClient)
