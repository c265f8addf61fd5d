"""AzureMLBackend against recording fakes of MLClient's operations and an httpx MockTransport.

The entities handed to the fakes are the real azure-ai-ml 1.35 ones, so the assertions check what
would go on the wire (including `_to_rest_object()` where that is cheap and offline).
"""

from __future__ import annotations

import copy
import json
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from azure.ai.ml import Output
from azure.ai.ml._restclient.arm_ml_service.models import JobStatus as RestJobStatus
from azure.ai.ml.entities import (
    EndpointAuthKeys,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    WorkspaceConnection,
)
from azure.ai.ml.entities._job.finetuning.custom_model_finetuning_job import CustomModelFineTuningJob
from azure.ai.ml.operations._run_history_constants import JobStatus as RunHistoryJobStatus
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

import backends.azureml as azml
from backends.azureml import JOB_STATE_BY_STATUS, AzureMLBackend, build
from backends.base import ConnectionStore, ServingBackend, TrainingBackend
from core import scoring
from core.models import (
    BlobRef,
    DeploymentSpec,
    FineTuneSpec,
    Hyperparameters,
    JobState,
    ModelRef,
    ProvisioningState,
)
from core.settings import Settings

KEY = "k3y-Sup3rS3cret-0123456789abcdefXYZ"
SECONDARY = "s3condary-0123456789abcdefXYZ"
SCORING_URI = "https://phi3-ft-endpoint.westeurope.inference.ml.azure.com/score"
JOB = "ft-0123456789abcdef"
PREFIX = "phi3-mini-ft"


# --------------------------------------------------------------------------- fakes


class Poller:
    def __init__(self, value: Any = None) -> None:
        self.value = value
        self.result_calls = 0

    def result(self, timeout: float | None = None) -> Any:
        self.result_calls += 1
        return self.value


def not_found(what: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(message=f"{what} not found")


class FakeRuns:
    def __init__(self) -> None:
        self.details: dict[str, Any] = {}

    def get_run_details(self, run_id: str) -> Any:
        value = self.details[run_id]
        if isinstance(value, Exception):
            raise value
        return value


class FakeJobs:
    def __init__(self) -> None:
        self.store: dict[str, Any] = {}
        self.created: list[tuple[Any, dict[str, Any]]] = []
        self.cancelled: list[str] = []
        self.cancel_error: Exception | None = None
        self._runs_operations = FakeRuns()

    def add(self, name: str, status: str, outputs: dict[str, Any] | None = None) -> Any:
        job = SimpleNamespace(
            name=name,
            status=status,
            studio_url=f"https://ml.azure.com/runs/{name}",
            outputs=outputs or {},
        )
        self.store[name] = job
        return job

    def get(self, name: str) -> Any:
        if name not in self.store:
            raise not_found(f"job {name}")
        return self.store[name]

    def create_or_update(self, job: Any, **kwargs: Any) -> Any:
        self.created.append((job, kwargs))
        return self.add(job.name, "NotStarted", dict(job.outputs or {}))

    def begin_cancel(self, name: str, **kwargs: Any) -> Poller:
        if self.cancel_error is not None:
            raise self.cancel_error
        if name not in self.store:
            raise not_found(f"job {name}")
        self.cancelled.append(name)
        return Poller()


class FakeModels:
    """ModelOperations on a workspace: `list()` lists containers, `list(name=)` active versions,
    `archive` hides a version from `list` (ListViewType.ACTIVE_ONLY) but not from `get`."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str], Model] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.created: list[Model] = []
        self.archived: set[tuple[str, str]] = set()

    def add(self, model: Model) -> Model:
        self.store[(str(model.name), str(model.version))] = model
        return model

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Model:
        self.calls.append(("get", {"name": name, "version": version, "label": label}))
        versions = sorted((v for (n, v) in self.store if n == name), key=int)
        if label == "latest" and versions:
            return self.store[(name, versions[-1])]
        if version is not None and (name, version) in self.store:
            return self.store[(name, version)]
        raise not_found(f"model {name}")

    def list(self, name: str | None = None, stage: str | None = None, **kwargs: Any) -> list[Model]:
        self.calls.append(("list", {"name": name}))
        if name is None:  # containers, as Model._from_container_rest_object builds them
            names = sorted({n for (n, _) in self.store})
            return [Model(name=n, version=None) for n in names]
        found = [m for (n, v), m in self.store.items() if n == name and (n, v) not in self.archived]
        if not any(n == name for (n, _) in self.store):
            raise not_found(f"model container {name}")
        return found

    def create_or_update(self, model: Model) -> Model:
        self.calls.append(("create_or_update", {"name": model.name, "version": model.version}))
        self.created.append(model)
        if model.version is None:
            versions = [int(v) for (n, v) in self.store if n == model.name]
            model.version = str(max(versions, default=0) + 1)
        self.archived.discard((str(model.name), str(model.version)))  # the PUT sends is_archived=False
        return self.add(model)

    def archive(self, name: str, version: str | None = None, label: str | None = None, **kwargs: Any) -> None:
        self.calls.append(("archive", {"name": name, "version": version, "label": label}))
        if (name, str(version)) not in self.store:
            raise not_found(f"model {name}:{version}")
        self.archived.add((name, str(version)))


class FakeEndpoints:
    """OnlineEndpointOperations. `get`/`list` hand out copies, like entities parsed from a response,
    so a test sees the "service" state only change through `begin_create_or_update`/`begin_delete`."""

    def __init__(self) -> None:
        self.store: dict[str, ManagedOnlineEndpoint] = {}
        self.created: list[ManagedOnlineEndpoint] = []
        self.pollers: list[Poller] = []
        self.deleted: list[str] = []
        self.delete_pollers: list[Poller] = []
        self.key_reads = 0

    def add(
        self,
        name: str,
        *,
        traffic: dict[str, int] | None = None,
        state: str = "Succeeded",
        tags: dict[str, str] | None = None,
    ) -> ManagedOnlineEndpoint:
        self.store[name] = ManagedOnlineEndpoint(
            name=name,
            auth_mode="key",
            traffic=traffic,
            scoring_uri=SCORING_URI,
            provisioning_state=state,
            tags=tags,
        )
        return self.store[name]

    def get(self, name: str, **kwargs: Any) -> ManagedOnlineEndpoint:
        if name not in self.store:
            raise not_found(f"endpoint {name}")
        return copy.deepcopy(self.store[name])

    def list(self, **kwargs: Any) -> list[ManagedOnlineEndpoint]:
        return [copy.deepcopy(e) for e in self.store.values()]

    def begin_delete(self, name: str | None = None, **kwargs: Any) -> Poller:
        if name not in self.store:
            raise not_found(f"endpoint {name}")
        self.deleted.append(name)
        self.store[name]._provisioning_state = "Deleting"  # the poller is not awaited
        poller = Poller()
        self.delete_pollers.append(poller)
        return poller

    def get_keys(self, name: str) -> EndpointAuthKeys:
        self.get(name)
        self.key_reads += 1
        return EndpointAuthKeys(primary_key=KEY, secondary_key=SECONDARY)

    def begin_create_or_update(self, endpoint: ManagedOnlineEndpoint, **kwargs: Any) -> Poller:
        self.created.append(endpoint)
        if endpoint.name in self.store:  # an update: the service now holds what was sent
            self.store[str(endpoint.name)] = copy.deepcopy(endpoint)
        poller = Poller(endpoint)
        self.pollers.append(poller)
        return poller


class FakeDeployments:
    def __init__(self, endpoints: FakeEndpoints | None = None) -> None:
        self.store: dict[tuple[str, str], ManagedOnlineDeployment] = {}
        self.created: list[ManagedOnlineDeployment] = []
        self.deleted: list[dict[str, str]] = []
        # When set, `list` answers 404 for an endpoint that is not there, as the REST list does.
        self.endpoints = endpoints

    def add(
        self,
        endpoint: str,
        name: str,
        state: str = "Succeeded",
        *,
        instance_type: str | None = None,
        instance_count: int | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.store[(endpoint, name)] = ManagedOnlineDeployment(
            name=name,
            endpoint_name=endpoint,
            provisioning_state=state,
            instance_type=instance_type,
            instance_count=instance_count,
            tags=tags,
        )

    def get(self, name: str, endpoint_name: str, **kwargs: Any) -> ManagedOnlineDeployment:
        if (endpoint_name, name) not in self.store:
            raise not_found(f"deployment {endpoint_name}/{name}")
        return self.store[(endpoint_name, name)]

    def list(self, endpoint_name: str, **kwargs: Any) -> list[ManagedOnlineDeployment]:
        if self.endpoints is not None and endpoint_name not in self.endpoints.store:
            raise not_found(f"endpoint {endpoint_name}")
        return [d for (e, _), d in self.store.items() if e == endpoint_name]

    def begin_create_or_update(self, deployment: ManagedOnlineDeployment, **kwargs: Any) -> Poller:
        self.created.append(deployment)
        return Poller(deployment)

    def begin_delete(self, name: str, endpoint_name: str, **kwargs: Any) -> Poller:
        if (endpoint_name, name) not in self.store:
            raise not_found(f"deployment {endpoint_name}/{name}")
        self.deleted.append({"name": name, "endpoint_name": endpoint_name})
        return Poller()


class FakeConnections:
    def __init__(self) -> None:
        self.written: list[WorkspaceConnection] = []
        self.store: dict[str, WorkspaceConnection] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_or_update(self, connection: WorkspaceConnection, **kwargs: Any) -> WorkspaceConnection:
        self.written.append(connection)
        self.store[str(connection.name)] = connection
        return connection

    def get(self, name: str, **kwargs: Any) -> WorkspaceConnection:
        self.calls.append(("get", {"name": name, **kwargs}))
        if name not in self.store:
            raise not_found(f"connection {name}")
        return self.store[name]

    def delete(self, name: str, **kwargs: Any) -> None:
        self.calls.append(("delete", {"name": name, **kwargs}))
        if name not in self.store:
            raise not_found(f"connection {name}")
        del self.store[name]


class FakeWorkspaces:
    def __init__(self) -> None:
        self.calls: list[str | None] = []
        self.mlflow_tracking_uri: str | None = (
            "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/sub-1/resourceGroups/rg-1"
            "/providers/Microsoft.MachineLearningServices/workspaces/ws-1"
        )

    def get(self, name: str | None = None, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(name)
        return SimpleNamespace(name=name, location="westeurope", mlflow_tracking_uri=self.mlflow_tracking_uri)


class FakeMLClient:
    def __init__(self) -> None:
        self.jobs = FakeJobs()
        self.models = FakeModels()
        self.online_endpoints = FakeEndpoints()
        self.online_deployments = FakeDeployments(self.online_endpoints)
        self.connections = FakeConnections()
        self.workspaces = FakeWorkspaces()


# --------------------------------------------------------------------------- fixtures


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "BACKEND": "azureml",
        "AZURE_SUBSCRIPTION_ID": "sub-1",
        "AZURE_RESOURCE_GROUP": "rg-1",
        "AZUREML_WORKSPACE": "ws-1",
        "AI_PROJECT_NAME": None,
        "AZURE_CLIENT_ID": None,
        "AZUREML_DATASTORE": None,
        "MODEL_REGISTRY": "azureml",
    }
    values.update(overrides)
    return Settings(**values)


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
def registry() -> FakeMLClient:
    reg = FakeMLClient()
    for v in ("5", "7", "9"):
        reg.models.add(Model(name="Phi-3-mini-4k-instruct", version=v, type="mlflow_model"))
    return reg


@pytest.fixture
def backend(
    settings: Settings, ml: FakeMLClient, project: FakeMLClient, registry: FakeMLClient
) -> AzureMLBackend:
    return AzureMLBackend(settings, ml_client=ml, project_client=project, registry_client=registry)  # type: ignore[arg-type]


def spec(**overrides: Any) -> FineTuneSpec:
    values: dict[str, Any] = {
        "job_name": JOB,
        "base_model_name": "Phi-3-mini-4k-instruct",
        "base_model_version": "7",
        "model_registry": "azureml",
        "task": "ChatCompletion",
        "training_data": "azureml://datastores/datasets/paths/chat/train.jsonl",
        "validation_data": "azureml://datastores/datasets/paths/chat/validation.jsonl",
        "hyperparameters": Hyperparameters(
            learning_rate=0.0001,
            lr_scheduler_type="cosine",
            num_train_epochs=2,
            per_device_train_batch_size=4,
        ),
        "instance_type": "Standard_NC24ads_A100_v4",
        "output_model_prefix": PREFIX,
        "tags": {"dataset": "datasets/chat.jsonl@0x1", "instance_id": "ft-abc"},
    }
    values.update(overrides)
    return FineTuneSpec(**values)


def with_http(
    settings: Settings, ml: FakeMLClient, handler: Callable[[httpx.Request], httpx.Response]
) -> AzureMLBackend:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return AzureMLBackend(settings, ml_client=ml, project_client=ml, http=http)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- construction


def test_implements_the_three_protocols(backend: AzureMLBackend) -> None:
    assert isinstance(backend, TrainingBackend)
    assert isinstance(backend, ServingBackend)
    assert isinstance(backend, ConnectionStore)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        self.calls.append((args, kwargs))
        return SimpleNamespace(args=args, kwargs=kwargs)


@pytest.fixture
def recorders(monkeypatch: pytest.MonkeyPatch) -> tuple[Recorder, Recorder]:
    import azure.identity

    cred, client = Recorder(), Recorder()
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", cred)
    monkeypatch.setattr(azml, "MLClient", client)
    return cred, client


def test_build_creates_no_client_until_used(recorders: tuple[Recorder, Recorder]) -> None:
    cred, client = recorders
    b = build(make_settings())
    assert isinstance(b, AzureMLBackend)
    assert cred.calls == [] and client.calls == []


def test_lazy_clients_workspace_project_registry(recorders: tuple[Recorder, Recorder]) -> None:
    cred, client = recorders
    b = AzureMLBackend(make_settings(AZURE_CLIENT_ID="mi-client-id", AI_PROJECT_NAME="proj-1"))
    ws = b._ml
    assert b._ml is ws  # built once
    proj = b._project
    reg = b._registry("azureml")
    assert cred.calls == [((), {"managed_identity_client_id": "mi-client-id"})]
    credential = cred.calls[0]
    credential_obj = ws.args[0]
    assert credential_obj.kwargs == credential[1]
    assert client.calls == [
        ((credential_obj, "sub-1", "rg-1", "ws-1"), {}),
        ((credential_obj, "sub-1", "rg-1", "proj-1"), {}),
        ((credential_obj,), {"registry_name": "azureml"}),
    ]
    assert proj is not ws and reg is not ws


def test_project_client_is_the_workspace_client_when_names_match(
    recorders: tuple[Recorder, Recorder],
) -> None:
    cred, client = recorders
    b = AzureMLBackend(make_settings())  # no AI_PROJECT_NAME, no AZURE_CLIENT_ID
    assert b._project is b._ml
    assert len(client.calls) == 1
    assert cred.calls == [((), {})]  # managed_identity_client_id only passed when set


# --------------------------------------------------------------------------- submit_finetune


def test_submit_builds_the_finetuning_job(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    name = backend.submit_finetune(spec())

    assert name == JOB
    assert len(ml.jobs.created) == 1
    job, kwargs = ml.jobs.created[0]
    assert kwargs == {}
    assert isinstance(job, CustomModelFineTuningJob)
    assert job.name == JOB
    assert job.display_name == JOB
    assert job.experiment_name == PREFIX
    assert job.tags == {"dataset": "datasets/chat.jsonl@0x1", "instance_id": "ft-abc"}
    assert job.model.type == "mlflow_model"
    assert job.model.path == "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/7"
    # CustomModelFineTuningJob lower-cases the first letter of the task it is given.
    assert job.task == "chatCompletion"
    assert job.training_data.type == "uri_file"
    assert job.training_data.path == "azureml://datastores/datasets/paths/chat/train.jsonl"
    assert job.validation_data is not None
    assert job.validation_data.path == "azureml://datastores/datasets/paths/chat/validation.jsonl"
    assert job.hyperparameters == {
        "learning_rate": "0.0001",
        "lr_scheduler_type": "cosine",
        "num_train_epochs": "2",
        "per_device_train_batch_size": "4",
    }
    assert job.resources.instance_types == ["Standard_NC24ads_A100_v4"]
    assert job.outputs["registered_model"].type == "mlflow_model"
    assert job.outputs["registered_model"].name == PREFIX

    rest = job._to_rest_object()
    details = rest.properties.fine_tuning_details
    assert rest.name == JOB
    assert details.validation_data.uri == "azureml://datastores/datasets/paths/chat/validation.jsonl"
    assert details.training_data.uri == "azureml://datastores/datasets/paths/chat/train.jsonl"
    assert details.hyper_parameters["lr_scheduler_type"] == "cosine"
    assert rest.properties.resources.instance_types == ["Standard_NC24ads_A100_v4"]


def test_submit_resolves_latest_base_model_in_registry(
    backend: AzureMLBackend, ml: FakeMLClient, registry: FakeMLClient
) -> None:
    backend.submit_finetune(spec(base_model_version=None))

    assert ("get", {"name": "Phi-3-mini-4k-instruct", "version": None, "label": "latest"}) in (
        registry.models.calls
    )
    job, _ = ml.jobs.created[0]
    assert job.model.path == "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/9"


def test_submit_with_pinned_version_does_not_ask_the_registry(
    backend: AzureMLBackend, registry: FakeMLClient
) -> None:
    backend.submit_finetune(spec(base_model_version="5"))
    assert registry.models.calls == []


def test_submit_is_idempotent_by_job_name(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.jobs.add(JOB, "Running")
    assert backend.submit_finetune(spec()) == JOB
    assert ml.jobs.created == []


def test_submit_twice_creates_once(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    assert backend.submit_finetune(spec()) == JOB
    assert backend.submit_finetune(spec()) == JOB
    assert len(ml.jobs.created) == 1


def test_submit_rejects_unknown_task(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    with pytest.raises(ValueError, match="unknown fine-tuning task"):
        backend.submit_finetune(spec(task="Chitchat"))
    assert ml.jobs.created == []


# --------------------------------------------------------------------------- get_job / cancel_job

EXPECTED_STATES = {
    "NotStarted": JobState.QUEUED,
    "Starting": JobState.QUEUED,
    "Provisioning": JobState.QUEUED,
    "Preparing": JobState.QUEUED,
    "Queued": JobState.QUEUED,
    "Running": JobState.RUNNING,
    "Finalizing": JobState.RUNNING,
    "CancelRequested": JobState.RUNNING,
    "Completed": JobState.COMPLETED,
    "Failed": JobState.FAILED,
    "Canceled": JobState.CANCELED,
    "NotResponding": JobState.FAILED,
    "Paused": JobState.QUEUED,
    "Unknown": JobState.QUEUED,
}


def test_mapping_covers_every_sdk_job_status() -> None:
    rest = {s.value for s in RestJobStatus}
    run_history = {v for k, v in vars(RunHistoryJobStatus).items() if k.isupper()}
    assert rest | run_history == set(EXPECTED_STATES)
    assert set(JOB_STATE_BY_STATUS) == set(EXPECTED_STATES)


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_STATES.items()))
def test_get_job_maps_status(backend: AzureMLBackend, ml: FakeMLClient, raw: str, expected: JobState) -> None:
    ml.jobs.add(JOB, raw)
    ml.jobs._runs_operations.details[JOB] = SimpleNamespace(error=None)
    info = backend.get_job(JOB)
    assert info.name == JOB
    assert info.state is expected
    assert info.raw_status == raw
    assert info.studio_url == f"https://ml.azure.com/runs/{JOB}"
    assert (info.error is not None) == (expected is JobState.FAILED)


@pytest.mark.parametrize(("raw", "expected"), [("completed", JobState.COMPLETED), ("Bogus", JobState.QUEUED)])
def test_get_job_unknown_or_other_case(
    backend: AzureMLBackend, ml: FakeMLClient, raw: str, expected: JobState
) -> None:
    ml.jobs.add(JOB, raw)
    assert backend.get_job(JOB).state is expected


def test_failed_job_error_is_short_and_scrubbed(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.jobs.add(JOB, "Failed")
    message = (
        "Training data https://acct.blob.core.windows.net/datasets/train.jsonl?sv=2024&sig=S1GNATURE "
        "could not be read. " + "x" * 1000
    )
    ml.jobs._runs_operations.details[JOB] = SimpleNamespace(
        error=SimpleNamespace(error=SimpleNamespace(code="UserError", message=message))
    )
    info = backend.get_job(JOB)
    assert info.state is JobState.FAILED
    assert info.error is not None
    assert info.error.startswith("UserError: Training data https://acct.blob.core.windows.net/")
    assert "S1GNATURE" not in info.error and "sv=2024" not in info.error
    assert len(info.error) <= azml.MAX_ERROR_CHARS


def test_failed_job_error_falls_back_when_run_details_fail(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.jobs.add(JOB, "NotResponding")
    ml.jobs._runs_operations.details[JOB] = RuntimeError("run history down")
    info = backend.get_job(JOB)
    assert info.state is JobState.FAILED
    assert info.error == f"job {JOB} ended with status NotResponding"


def test_get_job_missing_propagates(backend: AzureMLBackend) -> None:
    with pytest.raises(ResourceNotFoundError):
        backend.get_job("nope")


def test_cancel_running_job(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.jobs.add(JOB, "Running")
    backend.cancel_job(JOB)
    assert ml.jobs.cancelled == [JOB]


@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled", "NotResponding", "CancelRequested"])
def test_cancel_terminal_job_is_a_no_op(backend: AzureMLBackend, ml: FakeMLClient, status: str) -> None:
    ml.jobs.add(JOB, status)
    backend.cancel_job(JOB)
    assert ml.jobs.cancelled == []


def test_cancel_missing_job_is_a_no_op(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    backend.cancel_job("nope")
    assert ml.jobs.cancelled == []


def test_cancel_race_with_completion_is_ignored(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    job = ml.jobs.add(JOB, "Running")
    error = HttpResponseError(message="job already terminal")
    error.status_code = 409

    def cancel(name: str, **kwargs: Any) -> None:
        job.status = "Completed"
        raise error

    ml.jobs.begin_cancel = cancel  # type: ignore[method-assign]
    backend.cancel_job(JOB)  # no exception


def test_cancel_server_error_propagates(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.jobs.add(JOB, "Running")
    error = HttpResponseError(message="boom")
    error.status_code = 503
    ml.jobs.cancel_error = error
    with pytest.raises(HttpResponseError):
        backend.cancel_job(JOB)


# --------------------------------------------------------------------------- register_model

LINEAGE = {"dataset": "datasets/chat.jsonl@0x1", "instance_id": "ft-abc"}


def test_register_reuses_auto_registered_output_and_tags_it(
    backend: AzureMLBackend, ml: FakeMLClient
) -> None:
    ml.jobs.add(JOB, "Completed", {"registered_model": Output(type="mlflow_model", name=PREFIX, version="3")})
    ml.models.add(Model(name=PREFIX, version="3", type="mlflow_model", tags={"origin": "finetune"}))

    ref = backend.register_model(JOB, "phi3-mini-ft-model", LINEAGE)

    assert ref == ModelRef(name=PREFIX, version="3")
    assert len(ml.models.created) == 1
    updated = ml.models.created[0]
    assert (updated.name, updated.version) == (PREFIX, "3")
    assert updated.tags == {"origin": "finetune", **LINEAGE, "job_name": JOB}
    assert ("get", {"name": PREFIX, "version": "3", "label": None}) in ml.models.calls


def test_register_finds_auto_registered_version_by_job_lineage(
    backend: AzureMLBackend, ml: FakeMLClient
) -> None:
    ml.jobs.add(JOB, "Completed", {"registered_model": Output(type="mlflow_model", name=PREFIX)})
    ml.models.add(Model(name=PREFIX, version="1", type="mlflow_model", job_name="other-job"))
    ml.models.add(Model(name=PREFIX, version="2", type="mlflow_model", job_name=JOB))

    ref = backend.register_model(JOB, PREFIX, LINEAGE)

    assert ref == ModelRef(name=PREFIX, version="2")
    assert [(m.name, m.version) for m in ml.models.created] == [(PREFIX, "2")]


def test_register_already_tagged_auto_model_writes_nothing(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.jobs.add(JOB, "Completed", {"registered_model": Output(type="mlflow_model", name=PREFIX, version="3")})
    ml.models.add(Model(name=PREFIX, version="3", type="mlflow_model", tags={**LINEAGE, "job_name": JOB}))
    assert backend.register_model(JOB, PREFIX, LINEAGE) == ModelRef(name=PREFIX, version="3")
    assert ml.models.created == []


def test_register_mlflow_model_from_job_output_when_not_auto_registered(
    backend: AzureMLBackend, ml: FakeMLClient
) -> None:
    ml.jobs.add(JOB, "Completed", {})

    ref = backend.register_model(JOB, "phi3-ft", LINEAGE)

    assert ref == ModelRef(name="phi3-ft", version="1")
    assert len(ml.models.created) == 1
    model = ml.models.created[0]
    assert model.type == "mlflow_model"
    assert model.path == f"azureml://jobs/{JOB}/outputs/registered_model"
    assert model.name == "phi3-ft"
    assert model.tags == {**LINEAGE, "job_name": JOB}


def test_register_retry_finds_the_tagged_version(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.jobs.add(JOB, "Completed", {})
    ml.models.add(Model(name="phi3-ft", version="1", type="mlflow_model", tags={"job_name": "older-job"}))

    first = backend.register_model(JOB, "phi3-ft", LINEAGE)
    second = backend.register_model(JOB, "phi3-ft", LINEAGE)

    assert first == second == ModelRef(name="phi3-ft", version="2")
    assert len(ml.models.created) == 1


def test_register_refuses_unfinished_job(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.jobs.add(JOB, "Running")
    with pytest.raises(RuntimeError, match="not Completed"):
        backend.register_model(JOB, "phi3-ft", LINEAGE)
    assert ml.models.created == []


# --------------------------------------------------------------------------- data_uri

BLOB = BlobRef(
    container="datasets",
    name="chat/2024/train.jsonl",
    etag="0x1",
    url="https://acct.blob.core.windows.net/datasets/chat/2024/train.jsonl",
)


def test_data_uri_uses_the_datastore(ml: FakeMLClient) -> None:
    b = AzureMLBackend(make_settings(AZUREML_DATASTORE="datasets_store"), ml_client=ml)  # type: ignore[arg-type]
    assert b.data_uri(BLOB) == "azureml://datastores/datasets_store/paths/chat/2024/train.jsonl"


def test_data_uri_falls_back_to_https(backend: AzureMLBackend) -> None:
    assert backend.data_uri(BLOB) == BLOB.url


def test_data_uri_without_datastore_or_url(backend: AzureMLBackend) -> None:
    with pytest.raises(ValueError, match="AZUREML_DATASTORE"):
        backend.data_uri(BlobRef(container="datasets", name="x.jsonl"))


# --------------------------------------------------------------------------- endpoints / deployments


def test_get_endpoint_missing(backend: AzureMLBackend) -> None:
    info = backend.get_endpoint("phi3-ft-endpoint")
    assert info.state is ProvisioningState.NOT_FOUND
    assert info.deployments == [] and info.traffic == {} and info.scoring_uri is None


def test_get_endpoint_found(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("phi3-ft-endpoint", traffic={"blue": 100, "green": 0}, state="succeeded")
    ml.online_deployments.add("phi3-ft-endpoint", "blue")
    ml.online_deployments.add("phi3-ft-endpoint", "green", state="Creating")
    ml.online_deployments.add("other-endpoint", "red")

    info = backend.get_endpoint("phi3-ft-endpoint")

    assert info.state is ProvisioningState.SUCCEEDED
    assert info.traffic == {"blue": 100, "green": 0}
    assert info.deployments == ["blue", "green"]
    assert info.scoring_uri == SCORING_URI


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Creating", ProvisioningState.CREATING),
        ("UPDATING", ProvisioningState.UPDATING),
        ("Scaling", ProvisioningState.UPDATING),
        ("succeeded", ProvisioningState.SUCCEEDED),
        ("Failed", ProvisioningState.FAILED),
        ("Deleting", ProvisioningState.DELETING),
        ("Canceled", ProvisioningState.CANCELED),
        ("SomethingNew", ProvisioningState.CREATING),
        (None, ProvisioningState.CREATING),
    ],
)
def test_deployment_state_mapping(
    backend: AzureMLBackend, ml: FakeMLClient, raw: str | None, expected: ProvisioningState
) -> None:
    ml.online_deployments.add("ep", "green", state=raw)  # type: ignore[arg-type]
    assert backend.get_deployment_state("ep", "green") is expected


def test_deployment_state_missing(backend: AzureMLBackend) -> None:
    assert backend.get_deployment_state("ep", "green") is ProvisioningState.NOT_FOUND


def test_begin_create_endpoint_when_missing(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    backend.begin_create_endpoint("phi3-ft-endpoint", {"app": "phi3"})

    assert len(ml.online_endpoints.created) == 1
    endpoint = ml.online_endpoints.created[0]
    assert isinstance(endpoint, ManagedOnlineEndpoint)
    assert endpoint.name == "phi3-ft-endpoint"
    assert endpoint.auth_mode == "key"
    assert endpoint.tags == {"app": "phi3"}
    assert ml.online_endpoints.pollers[0].result_calls == 0  # not awaited


def test_begin_create_endpoint_when_present(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("phi3-ft-endpoint", state="Creating")
    backend.begin_create_endpoint("phi3-ft-endpoint", {"app": "phi3"})
    assert ml.online_endpoints.created == []


DEPLOYMENT = DeploymentSpec(
    endpoint_name="phi3-ft-endpoint",
    deployment_name="green",
    model=ModelRef(name=PREFIX, version="3"),
    instance_type="Standard_NC6s_v3",
    instance_count=1,
    tags={"job_name": JOB},
)


def test_begin_create_deployment(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("phi3-ft-endpoint", traffic={"blue": 100})
    ml.online_deployments.add("phi3-ft-endpoint", "blue")

    backend.begin_create_deployment(DEPLOYMENT)

    assert len(ml.online_deployments.created) == 1
    d = ml.online_deployments.created[0]
    assert isinstance(d, ManagedOnlineDeployment)
    assert d.name == "green"
    assert d.endpoint_name == "phi3-ft-endpoint"
    assert d.model == f"azureml:{PREFIX}:3"
    assert d.instance_type == "Standard_NC6s_v3"
    assert d.instance_count == 1
    assert d.tags == {"job_name": JOB}
    assert d.request_settings.request_timeout_ms == 90_000  # SERVING_REQUEST_TIMEOUT_MS
    # Traffic is not touched by creating a deployment.
    assert ml.online_endpoints.created == []
    assert ml.online_endpoints.store["phi3-ft-endpoint"].traffic == {"blue": 100}


def test_begin_create_deployment_when_present(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_deployments.add("phi3-ft-endpoint", "green", state="Creating")
    backend.begin_create_deployment(DEPLOYMENT)
    assert ml.online_deployments.created == []


def test_set_traffic_sends_the_exact_dict_and_waits(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("phi3-ft-endpoint", traffic={"blue": 100, "green": 0})
    wanted = {"green": 100, "blue": 0}

    backend.set_traffic("phi3-ft-endpoint", wanted)

    assert len(ml.online_endpoints.created) == 1
    sent = ml.online_endpoints.created[0]
    assert sent.name == "phi3-ft-endpoint"
    assert sent.traffic == {"green": 100, "blue": 0}
    assert sent.traffic is not wanted
    assert ml.online_endpoints.pollers[0].result_calls == 1


def test_delete_deployment(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    ml.online_deployments.add("phi3-ft-endpoint", "blue")
    backend.delete_deployment("phi3-ft-endpoint", "blue")
    assert ml.online_deployments.deleted == [{"name": "blue", "endpoint_name": "phi3-ft-endpoint"}]


def test_delete_missing_deployment_is_a_no_op(backend: AzureMLBackend, ml: FakeMLClient) -> None:
    backend.delete_deployment("phi3-ft-endpoint", "blue")
    assert ml.online_deployments.deleted == []


# --------------------------------------------------------------------------- score

PAYLOAD: dict[str, object] = {
    "input_data": {
        "input_string": [{"role": "user", "content": "Say hello"}],
        "parameters": {"temperature": 0.7, "max_new_tokens": 128},
    }
}


def test_score_sends_key_and_deployment_header(settings: Settings, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("phi3-ft-endpoint")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"output": "Hello there!"})

    result = with_http(settings, ml, handler).score("phi3-ft-endpoint", "green", PAYLOAD)

    assert result.ok is True
    assert result.status_code == 200
    assert result.output == "Hello there!"
    assert result.error is None
    assert result.latency_ms >= 0
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == SCORING_URI
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["azureml-model-deployment"] == "green"
    assert json.loads(request.content) == PAYLOAD
    assert ml.online_endpoints.key_reads == 1


def test_score_without_deployment_has_no_pin_and_reads_key_each_time(
    settings: Settings, ml: FakeMLClient
) -> None:
    ml.online_endpoints.add("phi3-ft-endpoint")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="plain text answer")

    b = with_http(settings, ml, handler)
    first = b.score("phi3-ft-endpoint", None, PAYLOAD)
    b.score("phi3-ft-endpoint", None, PAYLOAD)

    assert "azureml-model-deployment" not in seen[0].headers
    assert first.output == "plain text answer"
    assert ml.online_endpoints.key_reads == 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"output": {"text": "hi"}}, json.dumps({"text": "hi"})),
        ([{"0": "hi"}], json.dumps([{"0": "hi"}])),
        ({"result": "hi"}, json.dumps({"result": "hi"})),
    ],
)
def test_score_output_shapes(settings: Settings, ml: FakeMLClient, body: Any, expected: str) -> None:
    ml.online_endpoints.add("ep")
    result = with_http(settings, ml, lambda r: httpx.Response(200, json=body)).score("ep", "green", PAYLOAD)
    assert result.output is not None
    assert json.loads(result.output) == json.loads(expected)


def test_score_output_is_truncated(settings: Settings, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("ep")
    result = with_http(settings, ml, lambda r: httpx.Response(200, json={"output": "a" * 5000})).score(
        "ep", "green", PAYLOAD
    )
    assert result.output is not None
    assert len(result.output) == scoring.MAX_OUTPUT_CHARS  # the shared scoring call truncates
    assert result.output.startswith("aaa")


def test_score_http_500_is_not_ok(settings: Settings, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("ep")
    result = with_http(settings, ml, lambda r: httpx.Response(500, text="upstream model crashed")).score(
        "ep", "green", PAYLOAD
    )
    assert result.ok is False
    assert result.status_code == 500
    assert result.error is not None and "500" in result.error
    assert result.output == "upstream model crashed"


def test_score_key_never_leaks_from_an_echoing_error(settings: Settings, ml: FakeMLClient) -> None:
    ml.online_endpoints.add("ep")

    def handler(request: httpx.Request) -> httpx.Response:
        # A misbehaving server that echoes the request headers back.
        return httpx.Response(401, text=f"denied: {dict(request.headers)} raw={KEY}")

    result = with_http(settings, ml, handler).score("ep", "green", PAYLOAD)

    assert result.ok is False and result.status_code == 401
    assert KEY not in result.model_dump_json()
    assert KEY not in repr(result)


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout])
def test_score_transport_errors_raise_without_the_key(
    settings: Settings, ml: FakeMLClient, error: type[httpx.TransportError]
) -> None:
    ml.online_endpoints.add("ep")

    def handler(request: httpx.Request) -> httpx.Response:
        raise error(f"failed sending {request.headers['Authorization']}", request=request)

    with pytest.raises(ConnectionError) as info:
        with_http(settings, ml, handler).score("ep", "green", PAYLOAD)

    exc = info.value
    assert str(exc) == f"scoring ep/green unreachable: {error.__name__}"
    assert exc.__cause__ is None and exc.__context__ is None
    rendered = "".join(traceback.format_exception(exc))
    assert KEY not in rendered and KEY not in repr(exc)


# --------------------------------------------------------------------------- publish_connection


def promptflow_view(rest: dict[str, Any]) -> tuple[dict[str, str], dict[str, str], str]:
    """How Prompt flow turns a CustomKeys workspace connection into a CustomConnection
    (promptflow-core WorkspaceConnectionProvider.build_connection_dict_from_rest_object)."""
    props = rest["properties"]
    assert props["category"] == "CustomKeys"
    secrets = dict(props["credentials"]["keys"])
    configs = {k: v for k, v in props["metadata"].items() if not k.startswith("azureml.flow.")}
    return configs, secrets, props["metadata"]["azureml.flow.connection_type"]


def test_publish_connection_writes_custom_keys_to_the_project(
    backend: AzureMLBackend, ml: FakeMLClient, project: FakeMLClient
) -> None:
    ml.online_endpoints.add("phi3-ft-endpoint")

    uri = backend.publish_connection("phi3-finetuned", "phi3-ft-endpoint")

    assert uri == SCORING_URI
    assert ml.connections.written == []  # goes to the AI Studio project client
    (conn,) = project.connections.written
    assert isinstance(conn, WorkspaceConnection)
    assert conn.name == "phi3-finetuned"
    assert conn.type == "custom"
    assert conn.target == SCORING_URI
    assert conn.metadata == {
        "endpoint": SCORING_URI,
        "azureml.flow.connection_type": "Custom",
        "azureml.flow.module": "promptflow.connections",
    }
    assert conn.credentials.keys == {"key": KEY}  # type: ignore[union-attr]
    assert KEY not in repr(conn.credentials)

    rest = conn._to_rest_object().as_dict()
    props = rest["properties"]
    assert props["authType"] == "CustomKeys"
    assert props["category"] == "CustomKeys"
    assert props["credentials"] == {"keys": {"key": KEY}}
    assert props["target"] == SCORING_URI
    configs, secrets, conn_type = promptflow_view(rest)
    assert configs == {"endpoint": SCORING_URI}
    assert secrets == {"key": KEY}
    assert conn_type == "Custom"


def test_connection_round_trips_through_the_sdk_response_parser() -> None:
    # connections.create_or_update parses the service's answer with WorkspaceConnection._from_rest_object.
    conn = azml.custom_connection(name="phi3-finetuned", endpoint_uri=SCORING_URI, key=KEY)
    rest = conn._to_rest_object()
    rest.name = "phi3-finetuned"
    back = WorkspaceConnection._from_rest_object(rest)
    assert back.type == "custom"
    assert back.metadata["endpoint"] == SCORING_URI
