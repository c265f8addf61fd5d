"""Contract tests of AzureMLBackend through the real azure-ai-ml MLClient against the Azure ML emulator.

Nothing in the SDK is replaced: the backend is `aml_backend` (DefaultAzureCredential, real MLClients,
HTTPS to the emulator) and the only test double is the emulator's `World`, scripted per test
(JobScript, Fault, quota, direct seeding of endpoints and deployments). Every request body the SDK
sends is checked against the official REST definitions by the `aml_world` fixture's teardown.

The defects the real SDK exposed are pinned in test_azureml_defects.py beside this file (every job
status, a completed job's cancel and model, deployment probes, the serving SKU and endpoint name
checks); pure helpers (status maps, tracking URI parsing, quota rows the emulator does not serve)
are unit tested in test_azureml_helpers.py.

Timing note, so that the file stays fast without any sleep: the pollers the backend does not wait
on (endpoint/deployment create and delete) keep polling from a background thread, one poll at once
and the next 30 s later (azure-core reads the emulator's `Retry-After: 0` as "not given"). So a state
that this one early poll may or may not have advanced is asserted as either of its two values.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import traceback
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Model
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from mlflow.exceptions import MlflowException

from azureml_emulator.server import EmulatorServer
from azureml_emulator.world import PHI3, DeploymentScript, Fault, JobScript, Json, World
from backends.azureml import MAX_ERROR_CHARS, AzureMLBackend, arm_scope, build
from core.models import (
    BlobRef,
    DeploymentInfo,
    DeploymentSpec,
    FineTuneSpec,
    Hyperparameters,
    JobInfo,
    JobState,
    LossHistory,
    MetricPoint,
    ModelRef,
    ProvisioningState,
    RunConfig,
    ScoreResult,
)
from core.naming import APP_TAG, CREATED_BY_TAG
from core.payload import promptflow_payload
from core.preflight import PreflightCheck, PreflightReport
from core.scoring import MAX_OUTPUT_CHARS
from core.settings import Settings

JOB = "ft-0123456789abcdef-finetune"
PREFIX = "phi3-mini-ft"
TRAIN_URI = "azureml://datastores/datasets/paths/chats/_splits/ft-0123456789abcdef/train.jsonl"
VALIDATION_URI = "azureml://datastores/datasets/paths/chats/_splits/ft-0123456789abcdef/validation.jsonl"
OURS = {CREATED_BY_TAG: APP_TAG}
SECRETS_API = "2024-04-01-preview"
USER_CLIENT_ID = "66666666-6666-6666-6666-666666666666"


# --------------------------------------------------------------------------- helpers


def ws(world: World) -> str:
    return world.workspaces[0]


def requests_to(world: World, method: str, path_suffix: str) -> list[str]:
    """Paths (no query) of the requests with `method` whose path ends with `path_suffix`."""
    paths = [urlsplit(p).path for m, p in list(world.requests) if m == method]
    return [p for p in paths if p.endswith(path_suffix)]


def spec(
    *,
    job_name: str = JOB,
    base_model_name: str = PHI3,
    base_model_version: str | None = None,
    training_data: str = TRAIN_URI,
    validation_data: str = VALIDATION_URI,
    tags: dict[str, str] | None = None,
) -> FineTuneSpec:
    return FineTuneSpec(
        job_name=job_name,
        base_model_name=base_model_name,
        base_model_version=base_model_version,
        model_registry="azureml",
        task="ChatCompletion",
        training_data=training_data,
        validation_data=validation_data,
        hyperparameters=Hyperparameters(learning_rate=0.0001, num_train_epochs=2),
        instance_type="Standard_NC24ads_A100_v4",
        output_model_prefix=PREFIX,
        tags={**OURS, "run_id": "ft-0123456789abcdef"} if tags is None else tags,
    )


def job_properties(world: World, name: str = JOB) -> Json:
    return world.jobs[(ws(world), name)].body["properties"]


def complete_job(world: World, backend: AzureMLBackend, name: str = JOB) -> None:
    """Read the job through the SDK until the World says Completed (each read moves it on)."""
    for _ in range(10):
        if world.jobs[(ws(world), name)].status == "Completed":
            return
        backend.workspace.ml.jobs.get(name)
    raise AssertionError(f"job {name} never completed: {world.jobs[(ws(world), name)].status}")


def create_model(
    backend: AzureMLBackend, name: str, version: str, tags: dict[str, str] | None = None
) -> None:
    backend.workspace.ml.models.create_or_update(
        Model(
            name=name,
            version=version,
            path=f"azureml://jobs/job-{name}-{version}/outputs/registered_model",
            type=AssetTypes.MLFLOW_MODEL,
            tags=dict(tags or {}),
        )
    )


def world_model(world: World, name: str, version: str) -> Json:
    return world.models[(ws(world), name)][version]["properties"]


def settle_endpoint(world: World, name: str) -> None:
    for _ in range(10):
        world.get_endpoint(ws(world), name)
        if world.endpoints[(ws(world), name)].state == "Succeeded":
            return
    raise AssertionError(f"endpoint {name} never settled")


def seed_deployment(
    world: World,
    endpoint: str,
    name: str,
    *,
    instance_type: str = "Standard_DS3_v2",
    capacity: int = 1,
    tags: dict[str, str] | None = None,
    settle: bool = True,
) -> None:
    """A deployment (and its model) made directly in the World, read until it settles unless told not to."""
    w = ws(world)
    model = f"model-{name}"
    world.put_model_version(w, model, "1", {"properties": {"modelUri": f"azureml://jobs/j-{name}/outputs/m"}})
    world.put_deployment(
        w,
        endpoint,
        name,
        {
            "location": world.region,
            "tags": dict(tags or {}),
            "sku": {"name": "Default", "capacity": capacity},
            "properties": {
                "endpointComputeType": "Managed",
                "model": f"{world.ws_id(w)}/models/{model}/versions/1",
                "instanceType": instance_type,
            },
        },
    )
    for _ in range(5 if settle else 0):
        if world.deployments[(w, endpoint, name)].state != "Creating":
            break
        world.get_deployment(w, endpoint, name)


def seed_endpoint(
    world: World,
    name: str,
    *,
    tags: dict[str, str],
    deployments: tuple[str, ...] = (),
    traffic: dict[str, int] | None = None,
) -> None:
    """An endpoint (and deployments, and a traffic map) made directly in the World, all Succeeded."""
    w = ws(world)
    body: Json = {"location": world.region, "tags": tags, "properties": {"authMode": "Key"}}
    world.put_endpoint(w, name, body)
    settle_endpoint(world, name)
    for deployment in deployments:
        seed_deployment(world, name, deployment)
        assert world.deployments[(w, name, deployment)].state == "Succeeded"
    if traffic:
        world.put_endpoint(w, name, {**body, "properties": {"authMode": "Key", "traffic": traffic}})
        settle_endpoint(world, name)


def endpoint_props(world: World, name: str) -> Json:
    return world.endpoints[(ws(world), name)].body["properties"]


def check(report: PreflightReport, name: str) -> PreflightCheck:
    return next(c for c in report.checks if c.name == name)


def quota_config(settings: Settings, **update: object) -> RunConfig:
    base = settings.run_config().model_copy(
        update={
            "training_instance_type": "Standard_NC24ads_A100_v4",
            "serving_instance_type": "Standard_NC24ads_A100_v4",
            "serving_instance_count": 1,
        }
    )
    return base.model_copy(update=update)


# --------------------------------------------------------------------------- construction


def test_building_the_backend_sends_nothing_and_azure_client_id_picks_the_identity(
    aml_world: World, aml_settings: Settings
) -> None:
    backend = build(aml_settings)
    assert not aml_world.requests, "no credential, client or token before a method needs the service"

    backend.serving.get_endpoint("phi3-ft-missing")
    AzureMLBackend(aml_settings.model_copy(update={"AZURE_CLIENT_ID": USER_CLIENT_ID})).serving.get_endpoint(
        "phi3-ft-missing"
    )

    token_queries = [
        parse_qs(urlsplit(p).query) for m, p in aml_world.requests if urlsplit(p).path == "/msi/token"
    ]
    # The App Service managed identity: system-assigned unless AZURE_CLIENT_ID names a user-assigned one.
    assert [q.get("client_id") for q in token_queries] == [None, [USER_CLIENT_ID]]


# --------------------------------------------------------------------------- submit_finetune


def test_submit_puts_a_finetuning_job_on_the_latest_base_model(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    assert aml_backend.training.submit_finetune(spec()) == JOB

    assert requests_to(aml_world, "PUT", f"/jobs/{JOB}") == [f"{aml_world.ws_id(ws(aml_world))}/jobs/{JOB}"]
    props = job_properties(aml_world)
    assert props["jobType"] == "FineTuning"
    assert props["displayName"] == JOB
    assert props["experimentName"] == PREFIX
    details = props["fineTuningDetails"]
    # The registry holds versions 14 and 15: None means the latest, resolved before the PUT.
    assert details["model"]["uri"] == f"azureml://registries/azureml/models/{PHI3}/versions/15"
    assert details["taskType"].lower() == "chatcompletion"
    assert details["trainingData"]["uri"] == TRAIN_URI
    assert details["validationData"]["uri"] == VALIDATION_URI
    assert details["hyperParameters"] == {
        "learning_rate": "0.0001",
        "lr_scheduler_type": "linear",
        "num_train_epochs": "2",
        "per_device_train_batch_size": "1",
    }
    assert props["resources"]["instanceTypes"] == ["Standard_NC24ads_A100_v4"]
    assert props["tags"] == {**OURS, "run_id": "ft-0123456789abcdef"}
    assert props["outputs"]["registered_model"]["assetName"] == PREFIX


def test_submit_uses_a_pinned_base_model_version_as_is(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_backend.training.submit_finetune(spec(base_model_version="14"))

    uri = job_properties(aml_world)["fineTuningDetails"]["model"]["uri"]
    assert uri == f"azureml://registries/azureml/models/{PHI3}/versions/14"
    assert not requests_to(aml_world, "GET", f"/models/{PHI3}/versions"), "no 'latest' lookup"


def test_submitting_the_same_spec_twice_creates_one_job(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    first = aml_backend.training.submit_finetune(spec())
    again = aml_backend.training.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    after_completion = aml_backend.training.submit_finetune(spec())

    assert first == again == after_completion == JOB
    assert len(requests_to(aml_world, "PUT", f"/jobs/{JOB}")) == 1
    assert list(aml_world.jobs) == [(ws(aml_world), JOB)]


def test_submit_of_an_unknown_base_model_raises_and_creates_nothing(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    with pytest.raises(HttpResponseError) as raised:
        aml_backend.training.submit_finetune(spec(base_model_name="Phi-3-nonexistent-instruct"))

    assert raised.value.status_code == 404
    assert "Phi-3-nonexistent-instruct" in str(raised.value)
    assert not requests_to(aml_world, "PUT", f"/jobs/{JOB}")
    assert not aml_world.jobs


def test_submit_of_an_unknown_task_raises_before_any_put(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    with pytest.raises(ValueError, match="unknown fine-tuning task"):
        aml_backend.training.submit_finetune(spec().model_copy(update={"task": "Summarization-ish"}))
    assert not aml_world.jobs


# --------------------------------------------------------------------------- get_job / cancel_job


def submit(
    world: World, backend: AzureMLBackend, name: str, *statuses: str, error: tuple[str, str] | None = None
) -> None:
    """Job `name` scripted to go through `statuses`, submitted on a pinned base model. The World moves a
    job one status per GET, and azure-ai-ml's `jobs.get` of a fine-tuning job is two GETs."""
    world.script_job(name, JobScript(statuses=statuses, error=error))
    backend.training.submit_finetune(spec(job_name=name, base_model_version="15"))


def test_a_running_job_is_described_not_registered_and_a_failed_cancel_raises(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    submit(aml_world, aml_backend, JOB, "Running")
    cancel = f"/jobs/{JOB}/cancel"
    aml_world.inject(Fault(path=cancel, method="POST", status=403, code="AuthorizationFailed"))
    # azure-core does not retry a POST answered 502, so the server error reaches the backend at once.
    aml_world.inject(Fault(path=cancel, method="POST", status=502, code="BadGateway"))

    info = aml_backend.training.get_job(JOB)
    with pytest.raises(RuntimeError, match="is Running, not Completed"):
        aml_backend.training.register_model(JOB, PREFIX, {"run": "r1"})
    cancels = []
    for _ in range(2):
        with pytest.raises(HttpResponseError) as raised:
            aml_backend.training.cancel_job(JOB)
        cancels.append(raised.value.status_code)

    assert info == JobInfo(
        name=JOB,
        state=JobState.RUNNING,
        raw_status="Running",
        studio_url=f"https://ml.azure.com/runs/{JOB}?wsid={aml_world.ws_id(ws(aml_world))}"
        f"&tid={aml_world.tenant}",
    )
    assert not [p for m, p in aml_world.requests if m == "PUT" and "/models/" in p], "nothing registered"
    assert cancels == [403, 502]
    assert not aml_world.jobs[(ws(aml_world), JOB)].canceled
    with pytest.raises(ResourceNotFoundError):
        aml_backend.training.get_job("ft-never-submitted-finetune")


def test_a_failed_jobs_error_is_short_and_scrubbed_else_a_fallback(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    message = (
        "Training data https://stdatasets.blob.core.windows.net/datasets/train.jsonl"
        "?sv=2024-05-04&sig=S1GNATURE could not be read. " + "x" * 1000
    )
    submit(aml_world, aml_backend, JOB, "Failed", error=("UserError", message))

    info = aml_backend.training.get_job(JOB)
    aml_world.inject(Fault(path=f"/runs/{JOB}/details", status=403, code="AuthorizationFailed"))
    unreadable = aml_backend.training.get_job(JOB)

    assert info.state is JobState.FAILED
    assert info.error is not None
    assert info.error.startswith(
        "UserError: Training data https://stdatasets.blob.core.windows.net/datasets/"
    )
    assert "S1GNATURE" not in info.error and "sv=2024" not in info.error
    assert len(info.error) <= MAX_ERROR_CHARS
    # Run history (where the error is) cannot be read: the status still says enough.
    assert unreadable.state is JobState.FAILED
    assert unreadable.error == f"job {JOB} ended with status Failed"
    assert not aml_world.faults


def test_cancel_sends_nothing_for_a_job_that_is_ending_or_gone(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    # Completed and Canceled: test_azureml_defects (cancel of a completed job, a second cancel);
    # Failed maps to the same terminal state as NotResponding.
    statuses = ("NotResponding", "CancelRequested")
    names = [f"ft-{status.lower()}" for status in statuses]
    for name, status in zip(names, statuses, strict=True):
        submit(aml_world, aml_backend, name, status)

    for name in [*names, "ft-never-submitted-finetune"]:
        aml_backend.training.cancel_job(name)

    assert not requests_to(aml_world, "POST", "/cancel")
    assert tuple(aml_world.jobs[(ws(aml_world), n)].status for n in names) == statuses


def test_cancel_racing_the_jobs_completion_is_no_error(aml_world: World, aml_backend: AzureMLBackend) -> None:
    # One `jobs.get` of a fine-tuning job is two GETs (azure-ai-ml reads it at two api-versions), and
    # the World moves a job one status per GET: Running for the backend's read, Completed after it.
    submit(aml_world, aml_backend, JOB, "Running", "Running", "Completed")
    # The job completes between the backend's read and its cancel: the service's answer.
    aml_world.inject(
        Fault(
            path=f"/jobs/{JOB}/cancel",
            method="POST",
            status=400,
            code="UserError",
            message=f"Job {JOB} is in a terminal state (Completed) and cannot be canceled.",
        )
    )

    aml_backend.training.cancel_job(JOB)

    assert not aml_world.faults
    job = aml_world.jobs[(ws(aml_world), JOB)]
    assert job.status == "Completed" and not job.canceled


# --------------------------------------------------------------------------- register_model


def test_register_adopts_the_version_its_job_registered_among_others(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    older = "ft-older-finetune"
    aml_world.put_model_version(
        ws(aml_world),
        PREFIX,
        "1",
        {
            "properties": {
                "modelUri": f"azureml://jobs/{older}/outputs/registered_model/paths/",
                "modelType": "mlflow_model",
                "jobName": older,
                "tags": {"job_name": older},
            }
        },
    )
    submit(aml_world, aml_backend, JOB, "Completed")
    aml_backend.training.get_job(JOB)  # completed: the job registers its output as version 2

    first = aml_backend.training.register_model(JOB, "a-name-of-our-own", {"run": "r1"})
    again = aml_backend.training.register_model(JOB, "a-name-of-our-own", {"run": "r1"})

    assert first == again == ModelRef(name=PREFIX, version="2")
    assert world_model(aml_world, PREFIX, "2")["tags"] == {"run": "r1", "job_name": JOB}
    assert world_model(aml_world, PREFIX, "1")["tags"] == {"job_name": older}
    assert len(requests_to(aml_world, "PUT", f"/models/{PREFIX}/versions/2")) == 1, "tagged once"
    assert "a-name-of-our-own" not in {name for _, name in aml_world.models}


def test_register_from_the_job_output_finds_its_own_version_on_a_retry(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    older = {"job_name": "ft-older-finetune"}
    aml_world.put_model_version(
        ws(aml_world),
        "phi3-manual",
        "1",
        {
            "properties": {
                "modelUri": "azureml://jobs/ft-older-finetune/outputs/registered_model",
                "modelType": "mlflow_model",
                "tags": older,
            }
        },
    )
    submit(aml_world, aml_backend, JOB, "Completed")
    # A job whose output is not auto-registered (no assetName): the backend registers it itself.
    aml_world.jobs[(ws(aml_world), JOB)].body["properties"]["outputs"]["registered_model"].pop("assetName")
    aml_backend.training.get_job(JOB)
    lineage = {"dataset": "datasets/chat.jsonl@0x1", "instance_id": "ft-0123456789abcdef"}

    first = aml_backend.training.register_model(JOB, "phi3-manual", lineage)
    again = aml_backend.training.register_model(JOB, "phi3-manual", lineage)

    assert first == again == ModelRef(name="phi3-manual", version="2")
    props = world_model(aml_world, "phi3-manual", "2")
    assert props["modelUri"] == f"azureml://jobs/{JOB}/outputs/registered_model"
    assert props["modelType"] == "mlflow_model"
    assert props["tags"] == {**lineage, "job_name": JOB}
    assert world_model(aml_world, "phi3-manual", "1")["tags"] == older
    assert len(requests_to(aml_world, "PUT", "/models/phi3-manual/versions/2")) == 1


# --------------------------------------------------------------------------- data_uri


BLOB = BlobRef(
    container="datasets",
    name="chats/_splits/ft-0123456789abcdef/train.jsonl",
    etag='"0x8DC"',
    url="https://stdatasets.blob.core.windows.net/datasets/chats/_splits/ft-0123456789abcdef/train.jsonl",
)


def test_data_uri_through_the_datastore(aml_world: World, aml_settings: Settings) -> None:
    backend = AzureMLBackend(aml_settings.model_copy(update={"AZUREML_DATASTORE": "datasets"}))

    uri = backend.training.data_uri(BLOB)

    assert uri == f"azureml://datastores/datasets/paths/{BLOB.name}"
    assert not aml_world.requests, "data_uri reads nothing from the service"
    # ... and the service takes it as the job's training data.
    backend.training.submit_finetune(spec(training_data=uri))
    assert job_properties(aml_world)["fineTuningDetails"]["trainingData"]["uri"] == uri


def test_data_uri_without_a_datastore_is_the_blob_url(aml_world: World, aml_settings: Settings) -> None:
    backend = AzureMLBackend(aml_settings.model_copy(update={"AZUREML_DATASTORE": None}))

    assert backend.training.data_uri(BLOB) == BLOB.url
    backend.training.submit_finetune(spec(validation_data=backend.training.data_uri(BLOB)))
    assert job_properties(aml_world)["fineTuningDetails"]["validationData"]["uri"] == BLOB.url


def test_data_uri_without_a_datastore_or_url_raises(aml_settings: Settings) -> None:
    backend = AzureMLBackend(aml_settings.model_copy(update={"AZUREML_DATASTORE": None}))
    with pytest.raises(ValueError, match=re.escape("datasets/chats/x.jsonl")):
        backend.training.data_uri(BlobRef(container="datasets", name="chats/x.jsonl"))


# --------------------------------------------------------------------------- loss_history


def test_loss_history_of_a_completed_job(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_world.script_job(JOB, JobScript(loss=(3.0, 2.5, 2.25, 2.0, 1.75), eval_loss=(3.25, 2.75, 2.5)))
    aml_backend.training.submit_finetune(spec())
    complete_job(aml_world, aml_backend)

    history = aml_backend.training.loss_history(JOB)

    # `train_loss` (logged once, at the end) yields to the per-step `loss` curve.
    assert history.train == [
        MetricPoint(step=1, value=3.0),
        MetricPoint(step=2, value=2.5),
        MetricPoint(step=3, value=2.25),
        MetricPoint(step=4, value=2.0),
        MetricPoint(step=5, value=1.75),
    ]
    assert history.validation == [
        MetricPoint(step=1, value=3.25),
        MetricPoint(step=2, value=2.75),
        MetricPoint(step=3, value=2.5),
    ]
    assert requests_to(aml_world, "GET", "/api/2.0/mlflow/runs/get")


def test_loss_history_takes_the_longest_curve_of_the_pipeline_steps(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_backend.training.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    # A pipeline step of the job (any depth) is tagged with the job's run id as root run.
    step = f"{JOB}-train-step"
    aml_world.metrics[step] = {"loss": [(i, 1_700_000_000_000 + i, 2.0 - i / 10) for i in range(1, 9)]}
    aml_world.run_tags[step] = {"mlflow.rootRunId": JOB, "mlflow.parentRunId": "some-sub-pipeline"}
    # Another job's step must not be read.
    aml_world.metrics["other-step"] = {"loss": [(i, i, 9.0) for i in range(1, 20)]}
    aml_world.run_tags["other-step"] = {"mlflow.rootRunId": "another-job"}

    history = aml_backend.training.loss_history(JOB)

    assert [p.step for p in history.train] == list(range(1, 9))
    assert history.train[0] == MetricPoint(step=1, value=1.9)
    assert [p.value for p in history.validation] == [2.5, 2.0]  # the job's own run (default script)


def test_loss_history_of_a_job_without_an_mlflow_run_is_empty(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_world.script_job(JOB, JobScript(statuses=("Queued",)))
    aml_backend.training.submit_finetune(spec())
    aml_backend.workspace.ml.jobs.get(JOB)
    assert aml_world.jobs[(ws(aml_world), JOB)].status == "Queued"

    assert aml_backend.training.loss_history(JOB) == LossHistory()
    assert aml_backend.training.loss_history("ft-never-submitted-finetune") == LossHistory()


def test_loss_history_asks_for_a_token_of_the_clouds_resource_manager(
    aml_server: EmulatorServer, aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_backend.training.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    aml_backend.training.loss_history(JOB)

    audiences = {
        parse_qs(urlsplit(p).query)["resource"][0].rstrip("/")
        for m, p in list(aml_world.requests)
        if m == "GET" and urlsplit(p).path == "/msi/token"
    }
    assert audiences == {aml_server.url}, "every token is for this cloud's resource manager"


@pytest.mark.parametrize("name", ["", "ft-1' or '1'='1", "../runs/x", "-leading-dash", "ft 1"])
def test_loss_history_rejects_a_malformed_job_name(
    aml_world: World, aml_backend: AzureMLBackend, name: str
) -> None:
    with pytest.raises(ValueError, match="not an Azure ML job name"):
        aml_backend.training.loss_history(name)
    assert not [p for _, p in aml_world.requests if "/mlflow/" in p]


def test_loss_history_transient_fault_propagates_scrubbed(
    aml_server: EmulatorServer, aml_world: World, aml_backend: AzureMLBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mlflow's own HTTP retries (7, exponential backoff) would take minutes: configure them off.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    aml_backend.training.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    aml_world.inject(Fault(path="/api/2.0/mlflow/metrics/get-history", status=503, times=5))

    with pytest.raises(MlflowException) as raised:
        aml_backend.training.loss_history(JOB)

    assert "metrics/get-history" in str(raised.value)
    assert "503" in str(raised.value), "the cause survives the cut (mlflow's message ends with it)"
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert aml_server.emulator is not None
    text = str(raised.value) + repr(raised.value.args)
    assert not [t for t in aml_server.emulator.tokens if t in text], "a bearer token leaked"


def test_loss_history_picks_each_curve_by_its_metric_name_and_sorts_it(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    # MLflow metric points as (step, timestamp, value), logged out of order.
    aml_world.metrics[JOB] = {
        "train_loss": [(30, 40, 1.6)],  # an end-of-training summary: yields to the per-step `loss`
        "loss": [(30, 3, 1.1), (10, 1, 2.2), (20, 2, 1.5)],
        "eval_loss": [(30, 12, 1.3), (15, 10, 1.9), (30, 11, 1.25)],
    }
    aml_world.metrics["ft-per-step-train-loss"] = {
        "train_loss": [(2, 2, 0.9), (1, 1, 1.0)],  # logged per step: preferred to `loss`
        "loss": [(1, 1, 5.0), (2, 2, 4.0), (3, 3, 3.0)],
    }
    others = {"ft-validation-loss": "validation_loss", "ft-val-loss": "val_loss"}
    for run, name in others.items():
        aml_world.metrics[run] = {"loss": [(2, 2, 1.0), (1, 1, 2.0)], name: [(2, 2, 1.2), (1, 1, 2.1)]}
    aml_world.metrics["ft-accuracy-only"] = {"accuracy": [(1, 1, 0.5)]}

    assert aml_backend.training.loss_history(JOB) == LossHistory(
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
    assert aml_backend.training.loss_history("ft-per-step-train-loss") == LossHistory(
        train=[MetricPoint(step=1, value=1.0), MetricPoint(step=2, value=0.9)]
    )
    for run in others:
        assert aml_backend.training.loss_history(run) == LossHistory(
            train=[MetricPoint(step=1, value=2.0), MetricPoint(step=2, value=1.0)],
            validation=[MetricPoint(step=1, value=2.1), MetricPoint(step=2, value=1.2)],
        )
    assert aml_backend.training.loss_history("ft-accuracy-only") == LossHistory()
    workspace = f"/workspaces/{ws(aml_world)}"
    assert len(requests_to(aml_world, "GET", workspace)) == 1, "the tracking URI is read once"


def test_loss_history_error_that_echoes_the_token_is_scrubbed(
    aml_world: World, aml_backend: AzureMLBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    aml_world.metrics[JOB] = {"loss": [(1, 1, 2.0)]}
    aml_backend.training.loss_history(JOB)
    # The token the MLflow requests carry (DefaultAzureCredential's cached one), echoed by a leaky server.
    token = aml_backend.workspace.credential().get_token(arm_scope()).token
    aml_world.inject(
        Fault(
            path="/api/2.0/mlflow/runs/get",
            status=403,
            code="PERMISSION_DENIED",
            message=f"bad token {token}",
        )
    )

    with pytest.raises(MlflowException) as denied:
        aml_backend.training.loss_history(JOB)

    text = str(denied.value) + repr(denied.value.args)
    assert "PERMISSION_DENIED" in text and "bad token" in text, "the service's answer is kept..."
    assert token not in text, "... without the token"
    assert denied.value.__cause__ is None and denied.value.__context__ is None


# --------------------------------------------------------------------------- models


def test_set_model_tags_merges_into_the_version(aml_world: World, aml_backend: AzureMLBackend) -> None:
    create_model(aml_backend, PREFIX, "1", {**OURS, "run_id": "r1", "job_name": "j1"})
    uri = world_model(aml_world, PREFIX, "1")["modelUri"]

    aml_backend.training.set_model_tags(ModelRef(name=PREFIX, version="1"), {"run_id": "r2", "stage": "live"})

    props = world_model(aml_world, PREFIX, "1")
    assert props["tags"] == {**OURS, "run_id": "r2", "job_name": "j1", "stage": "live"}
    assert props["modelUri"] == uri
    assert props["isArchived"] is False


def test_set_model_tags_with_nothing_new_sends_no_put(aml_world: World, aml_backend: AzureMLBackend) -> None:
    create_model(aml_backend, PREFIX, "1", {**OURS, "stage": "live"})
    puts = len(requests_to(aml_world, "PUT", f"/models/{PREFIX}/versions/1"))

    aml_backend.training.set_model_tags(ModelRef(name=PREFIX, version="1"), {"stage": "live"})

    assert len(requests_to(aml_world, "PUT", f"/models/{PREFIX}/versions/1")) == puts


def test_set_model_tags_of_a_missing_version_raises(aml_world: World, aml_backend: AzureMLBackend) -> None:
    create_model(aml_backend, PREFIX, "1")
    with pytest.raises(ResourceNotFoundError):
        aml_backend.training.set_model_tags(ModelRef(name=PREFIX, version="7"), {"stage": "live"})
    assert "7" not in aml_world.models[(ws(aml_world), PREFIX)]


def test_list_models_returns_this_apps_active_versions_in_version_order(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    create_model(aml_backend, PREFIX, "10", {**OURS, "run_id": "r10"})
    create_model(aml_backend, PREFIX, "2", {**OURS, "run_id": "r2"})
    create_model(aml_backend, PREFIX, "3", {CREATED_BY_TAG: "someone-else"})
    create_model(aml_backend, "another-model", "1", {**OURS})
    create_model(aml_backend, "untagged-model", "1")

    found = aml_backend.training.list_models(APP_TAG)

    assert found == [
        (ModelRef(name="another-model", version="1"), OURS),
        (ModelRef(name=PREFIX, version="2"), {**OURS, "run_id": "r2"}),
        (ModelRef(name=PREFIX, version="10"), {**OURS, "run_id": "r10"}),
    ]
    assert aml_backend.training.list_models("nobody") == []


def test_list_models_of_an_empty_workspace(aml_backend: AzureMLBackend) -> None:
    assert aml_backend.training.list_models(APP_TAG) == []


def test_delete_model_archives_it_and_list_leaves_it_out(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    create_model(aml_backend, PREFIX, "1", OURS)
    create_model(aml_backend, PREFIX, "2", OURS)
    gone = ModelRef(name=PREFIX, version="1")

    aml_backend.training.delete_model(gone)

    assert world_model(aml_world, PREFIX, "1")["isArchived"] is True
    assert world_model(aml_world, PREFIX, "2")["isArchived"] is False
    assert [ref for ref, _ in aml_backend.training.list_models(APP_TAG)] == [
        ModelRef(name=PREFIX, version="2")
    ]
    # A second delete is a no-op, and so is the delete of a version that never existed.
    aml_backend.training.delete_model(gone)
    aml_backend.training.delete_model(ModelRef(name=PREFIX, version="99"))
    aml_backend.training.delete_model(ModelRef(name="never-registered", version="1"))
    assert world_model(aml_world, PREFIX, "1")["isArchived"] is True
    assert sorted(aml_world.models[(ws(aml_world), PREFIX)]) == ["1", "2"]


def test_the_model_a_completed_job_registered_is_tagged_listed_and_deleted(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_backend.training.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    registered = world_model(aml_world, PREFIX, "1")
    assert registered["jobName"] == JOB
    ref = ModelRef(name=PREFIX, version="1")
    assert aml_backend.training.list_models(APP_TAG) == [], "the service registers it without our tags"

    aml_backend.training.set_model_tags(ref, {**OURS, "job_name": JOB})

    assert aml_backend.training.list_models(APP_TAG) == [(ref, {**OURS, "job_name": JOB})]
    assert world_model(aml_world, PREFIX, "1")["modelUri"] == registered["modelUri"]
    aml_backend.training.delete_model(ref)
    assert aml_backend.training.list_models(APP_TAG) == []


def test_list_models_skips_a_model_deleted_while_listing(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    create_model(aml_backend, PREFIX, "1", OURS)
    create_model(aml_backend, "phi3-other", "1", OURS)
    # Listed as a container, gone by the time its versions are listed.
    aml_world.inject(
        Fault(path=f"/models/{PREFIX}/versions", method="GET", status=404, code="ResourceNotFound")
    )

    assert aml_backend.training.list_models(APP_TAG) == [(ModelRef(name="phi3-other", version="1"), OURS)]
    assert not aml_world.faults


# --------------------------------------------------------------------------- endpoints


def test_begin_create_endpoint_puts_a_key_auth_endpoint_and_returns_at_once(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    tags = {**OURS, "expires_at": "never"}

    aml_backend.serving.begin_create_endpoint("phi3-ft-one", tags)

    assert len(requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")) == 1
    props = endpoint_props(aml_world, "phi3-ft-one")
    assert props["authMode"] == "Key"
    assert aml_world.endpoints[(ws(aml_world), "phi3-ft-one")].body["tags"] == tags
    assert aml_world.endpoints[(ws(aml_world), "phi3-ft-one")].state == "Creating", "not waited on"


def test_begin_create_endpoint_is_idempotent(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_backend.serving.begin_create_endpoint("phi3-ft-one", OURS)
    aml_backend.serving.begin_create_endpoint("phi3-ft-one", {**OURS, "other": "tags"})
    settle_endpoint(aml_world, "phi3-ft-one")
    aml_backend.serving.begin_create_endpoint("phi3-ft-one", OURS)

    assert len(requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")) == 1
    assert aml_world.endpoints[(ws(aml_world), "phi3-ft-one")].body["tags"] == OURS


def test_begin_create_endpoint_with_a_name_taken_in_the_region_raises(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_world.foreign_endpoints.add("phi3-ft-taken")

    with pytest.raises(HttpResponseError) as raised:
        aml_backend.serving.begin_create_endpoint("phi3-ft-taken", OURS)

    assert raised.value.status_code == 400
    assert "not available" in str(raised.value)
    assert not aml_world.endpoints


def test_get_endpoint_of_a_missing_endpoint_is_not_found(aml_backend: AzureMLBackend) -> None:
    info = aml_backend.serving.get_endpoint("phi3-ft-missing")
    assert info.name == "phi3-ft-missing"
    assert info.state is ProvisioningState.NOT_FOUND
    assert info.deployments == [] and info.traffic == {}


def test_get_endpoint_reports_creating_then_succeeded(aml_world: World, aml_backend: AzureMLBackend) -> None:
    # Three polls in Creating: the backend's first read (plus, at most, the create poller's one
    # background poll) still sees Creating.
    aml_world.endpoint_polls = 2
    aml_backend.serving.begin_create_endpoint("phi3-ft-one", OURS)

    first = aml_backend.serving.get_endpoint("phi3-ft-one")
    states = [first.state]
    for _ in range(4):
        states.append(aml_backend.serving.get_endpoint("phi3-ft-one").state)
        if states[-1] is ProvisioningState.SUCCEEDED:
            break

    assert first.state is ProvisioningState.CREATING
    assert states[-1] is ProvisioningState.SUCCEEDED
    assert set(states) == {ProvisioningState.CREATING, ProvisioningState.SUCCEEDED}
    assert first.tags == OURS
    assert first.scoring_uri == f"{aml_world.inference_url('phi3-ft-one')}/score"
    assert first.traffic == {} and first.deployments == []


def test_get_endpoint_lists_every_deployment_with_zero_for_no_traffic(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue", "green"), traffic={"blue": 100})

    info = aml_backend.serving.get_endpoint("phi3-ft-one")

    assert info.state is ProvisioningState.SUCCEEDED
    assert info.traffic == {"blue": 100, "green": 0}
    assert sorted(info.deployments) == ["blue", "green"]


def test_list_endpoints_lists_deployments_of_this_apps_endpoints_only(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(
        aml_world, "phi3-ft-ours", tags={**OURS, "expires_at": "never"}, deployments=("blue", "green")
    )
    seed_endpoint(
        aml_world, "a-foreign-one", tags={CREATED_BY_TAG: "someone"}, deployments=("x",), traffic={"x": 100}
    )
    seed_endpoint(aml_world, "untagged", tags={})
    # Whatever the foreign endpoint's deployments route answers, the sweep must not depend on it.
    aml_world.inject(Fault(path="/onlineEndpoints/a-foreign-one/deployments", status=500, times=20))

    infos = aml_backend.serving.list_endpoints()

    assert [i.name for i in infos] == ["a-foreign-one", "phi3-ft-ours", "untagged"]
    foreign, ours, untagged = infos
    assert ours.tags == {**OURS, "expires_at": "never"}
    assert ours.state is ProvisioningState.SUCCEEDED
    assert sorted(ours.deployments) == ["blue", "green"]
    assert ours.traffic == {"blue": 0, "green": 0}
    assert foreign.tags == {CREATED_BY_TAG: "someone"}
    assert foreign.traffic == {"x": 100}
    assert foreign.deployments == []
    assert untagged.tags == {} and untagged.deployments == []
    assert not requests_to(aml_world, "GET", "/onlineEndpoints/a-foreign-one/deployments")
    assert not requests_to(aml_world, "GET", "/onlineEndpoints/untagged/deployments")
    assert requests_to(aml_world, "GET", "/onlineEndpoints/phi3-ft-ours/deployments")
    assert not requests_to(aml_world, "POST", "/listKeys"), "no key is read to list endpoints"


def test_list_endpoints_of_an_empty_workspace(aml_backend: AzureMLBackend) -> None:
    assert aml_backend.serving.list_endpoints() == []


def test_update_endpoint_tags_merges_and_keeps_traffic(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(
        aml_world,
        "phi3-ft-one",
        tags={**OURS, "expires_at": "2030-01-01T00:00:00Z"},
        deployments=("blue", "green"),
        traffic={"blue": 100},
    )
    before = endpoint_props(aml_world, "phi3-ft-one")

    aml_backend.serving.update_endpoint_tags("phi3-ft-one", {"expires_at": "never", "owner": "team-a"})

    assert len(requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")) == 1
    endpoint = aml_world.endpoints[(ws(aml_world), "phi3-ft-one")]
    assert endpoint.body["tags"] == {**OURS, "expires_at": "never", "owner": "team-a"}
    assert endpoint.body["properties"]["traffic"] == {"blue": 100}
    assert endpoint.body["properties"]["authMode"] == before["authMode"] == "Key"
    assert endpoint.body["identity"]["type"] == "SystemAssigned"
    assert endpoint.state == "Succeeded", "the update was waited on"
    info = aml_backend.serving.get_endpoint("phi3-ft-one")
    assert info.traffic == {"blue": 100, "green": 0}


def test_update_endpoint_tags_with_nothing_new_sends_no_put(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags={**OURS, "expires_at": "never"})

    aml_backend.serving.update_endpoint_tags("phi3-ft-one", {"expires_at": "never"})

    assert not requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")


def test_update_endpoint_tags_of_a_missing_endpoint_raises(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    with pytest.raises(ResourceNotFoundError):
        aml_backend.serving.update_endpoint_tags("phi3-ft-missing", {"expires_at": "never"})
    assert not requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-missing")


def test_update_endpoint_tags_keeps_a_user_assigned_identity_mirror_traffic_and_description(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    w = ws(aml_world)
    identity = (
        f"/subscriptions/{aml_world.subscription}/resourceGroups/{aml_world.resource_group}"
        "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi-phi3"
    )
    body: Json = {
        "location": aml_world.region,
        "tags": OURS,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {identity: {}}},
        "properties": {"authMode": "Key", "description": "phi-3 fine-tuned"},
    }
    aml_world.put_endpoint(w, "phi3-ft-one", body)
    settle_endpoint(aml_world, "phi3-ft-one")
    seed_deployment(aml_world, "phi3-ft-one", "blue")
    seed_deployment(aml_world, "phi3-ft-one", "green")
    aml_world.put_endpoint(
        w,
        "phi3-ft-one",
        {
            **body,
            "properties": {**body["properties"], "traffic": {"blue": 100}, "mirrorTraffic": {"green": 10}},
        },
    )

    aml_backend.serving.update_endpoint_tags("phi3-ft-one", {"expires_at": "never"})

    # A fresh entity would have sent no traffic and a SystemAssigned identity.
    endpoint = aml_world.endpoints[(w, "phi3-ft-one")].body
    assert endpoint["tags"] == {**OURS, "expires_at": "never"}
    assert endpoint["identity"]["type"] == "UserAssigned"
    assert list(endpoint["identity"]["userAssignedIdentities"]) == [identity]
    assert endpoint["properties"]["traffic"] == {"blue": 100}
    assert endpoint["properties"]["mirrorTraffic"] == {"green": 10}
    assert endpoint["properties"]["description"] == "phi-3 fine-tuned"
    # Mirrored traffic is not "0 %": green is listed, without a traffic entry.
    info = aml_backend.serving.get_endpoint("phi3-ft-one")
    assert info.traffic == {"blue": 100} and sorted(info.deployments) == ["blue", "green"]


def test_list_endpoints_when_an_endpoint_goes_away_mid_listing(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue",), traffic={"blue": 100})
    aml_world.delete_endpoint(ws(aml_world), "phi3-ft-one")  # someone else's delete, under way
    # ... and done by the time its deployments are listed.
    aml_world.inject(
        Fault(
            path="/onlineEndpoints/phi3-ft-one/deployments", method="GET", status=404, code="ResourceNotFound"
        )
    )

    (info,) = aml_backend.serving.list_endpoints()

    assert info.name == "phi3-ft-one" and info.state is ProvisioningState.DELETING
    assert info.deployments == [] and info.traffic == {"blue": 100}
    assert not aml_world.faults


def test_delete_endpoint_racing_another_delete_is_no_error(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS)
    # Read as Succeeded, gone by the time the DELETE arrives.
    aml_world.inject(
        Fault(path="/onlineEndpoints/phi3-ft-one", method="DELETE", status=404, code="ResourceNotFound")
    )

    aml_backend.serving.delete_endpoint("phi3-ft-one")

    assert not aml_world.faults


# --------------------------------------------------------------------------- deployments


def test_begin_create_deployment_puts_the_spec_once_and_leaves_traffic_alone(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    w = ws(aml_world)
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue",), traffic={"blue": 100})
    create_model(aml_backend, PREFIX, "3", OURS)
    green = DeploymentSpec(
        endpoint_name="phi3-ft-one",
        deployment_name="green",
        model=ModelRef(name=PREFIX, version="3"),
        instance_type="Standard_NC24ads_A100_v4",
        instance_count=2,
        tags={"job_name": JOB},
    )

    aml_backend.serving.begin_create_deployment(green)
    aml_backend.serving.begin_create_deployment(green)

    assert len(requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one/deployments/green")) == 1
    deployment = aml_world.deployments[(w, "phi3-ft-one", "green")].body
    assert deployment["tags"] == {"job_name": JOB}
    assert deployment["sku"]["capacity"] == 2
    assert deployment["properties"]["instanceType"] == "Standard_NC24ads_A100_v4"
    assert (
        deployment["properties"]["model"].lower()
        == f"{aml_world.ws_id(w)}/models/{PREFIX}/versions/3".lower()
    )
    # A new deployment gets no traffic until set_traffic.
    assert endpoint_props(aml_world, "phi3-ft-one")["traffic"] == {"blue": 100}
    assert not requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")


def test_deployment_state_and_listing_follow_the_deployments(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    w = ws(aml_world)
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue",), traffic={"blue": 100})
    aml_world.script_deployment("green", DeploymentScript(polls=1))
    aml_world.script_deployment("red", DeploymentScript(polls=0, outcome="Failed"))
    seed_deployment(
        aml_world,
        "phi3-ft-one",
        "green",
        instance_type="Standard_NC24ads_A100_v4",
        capacity=2,
        tags=OURS,
        settle=False,
    )
    seed_deployment(aml_world, "phi3-ft-one", "red", settle=False)

    listed = aml_backend.serving.list_deployments("phi3-ft-one")  # a list reads no deployment along
    green = [aml_backend.serving.get_deployment_state("phi3-ft-one", "green") for _ in range(2)]
    red = aml_backend.serving.get_deployment_state("phi3-ft-one", "red")
    aml_world.delete_deployment(w, "phi3-ft-one", "green")
    deleting = aml_backend.serving.get_deployment_state("phi3-ft-one", "green")

    assert listed == [
        DeploymentInfo(
            name="blue", instance_type="Standard_DS3_v2", instance_count=1, state=ProvisioningState.SUCCEEDED
        ),
        DeploymentInfo(
            name="green",
            instance_type="Standard_NC24ads_A100_v4",
            instance_count=2,
            state=ProvisioningState.CREATING,
            tags=OURS,
        ),
        DeploymentInfo(
            name="red", instance_type="Standard_DS3_v2", instance_count=1, state=ProvisioningState.CREATING
        ),
    ]
    assert green == [ProvisioningState.CREATING, ProvisioningState.SUCCEEDED]
    assert red is ProvisioningState.FAILED
    assert deleting is ProvisioningState.DELETING
    assert aml_backend.serving.get_deployment_state("phi3-ft-one", "purple") is ProvisioningState.NOT_FOUND
    assert aml_backend.serving.get_deployment_state("phi3-ft-missing", "green") is ProvisioningState.NOT_FOUND
    assert aml_backend.serving.list_deployments("phi3-ft-missing") == []


# --------------------------------------------------------------------------- set_traffic


def test_set_traffic_moves_traffic_between_seeded_deployments(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue", "green"), traffic={"blue": 100})

    aml_backend.serving.set_traffic("phi3-ft-one", {"blue": 0, "green": 100})

    # azure-ai-ml drops the 0 % entries before the PUT; get fills them in again.
    assert endpoint_props(aml_world, "phi3-ft-one")["traffic"] == {"green": 100}
    assert aml_world.endpoints[(ws(aml_world), "phi3-ft-one")].body["tags"] == OURS
    info = aml_backend.serving.get_endpoint("phi3-ft-one")
    assert info.traffic == {"blue": 0, "green": 100}
    assert info.state is ProvisioningState.SUCCEEDED


def test_set_traffic_to_a_deployment_the_backend_created(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    # Setup through the backend itself: endpoint, model, deployment (their details are not asserted).
    aml_backend.serving.begin_create_endpoint("phi3-ft-one", OURS)
    for _ in range(5):
        if aml_backend.serving.get_endpoint("phi3-ft-one").state is ProvisioningState.SUCCEEDED:
            break
    create_model(aml_backend, PREFIX, "1", OURS)
    aml_backend.serving.begin_create_deployment(
        DeploymentSpec(
            endpoint_name="phi3-ft-one",
            deployment_name="blue",
            model=ModelRef(name=PREFIX, version="1"),
            instance_type="Standard_NC24ads_A100_v4",
            instance_count=1,
            tags=OURS,
        )
    )
    for _ in range(5):
        if aml_backend.serving.get_deployment_state("phi3-ft-one", "blue") is ProvisioningState.SUCCEEDED:
            break

    aml_backend.serving.set_traffic("phi3-ft-one", {"blue": 100})

    assert endpoint_props(aml_world, "phi3-ft-one")["traffic"] == {"blue": 100}
    assert aml_backend.serving.get_endpoint("phi3-ft-one").traffic == {"blue": 100}


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ({"blue": 50, "purple": 50}, "purple"),
        ({"blue": 50}, "add up to 0 or 100"),
    ],
)
def test_set_traffic_rejected_by_the_service_raises(
    aml_world: World, aml_backend: AzureMLBackend, traffic: dict[str, int], message: str
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue",), traffic={"blue": 100})

    with pytest.raises(HttpResponseError) as raised:
        aml_backend.serving.set_traffic("phi3-ft-one", traffic)

    assert raised.value.status_code == 400
    assert message in str(raised.value)
    assert endpoint_props(aml_world, "phi3-ft-one")["traffic"] == {"blue": 100}


def test_set_traffic_while_the_endpoint_is_still_creating_raises(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_world.endpoint_polls = 5
    aml_backend.serving.begin_create_endpoint("phi3-ft-one", OURS)

    with pytest.raises(HttpResponseError) as raised:
        aml_backend.serving.set_traffic("phi3-ft-one", {})

    assert raised.value.status_code == 409


def test_set_traffic_of_a_missing_endpoint_raises(aml_backend: AzureMLBackend) -> None:
    with pytest.raises(ResourceNotFoundError):
        aml_backend.serving.set_traffic("phi3-ft-missing", {"blue": 100})


# --------------------------------------------------------------------------- delete_deployment


def test_delete_deployment_starts_the_delete(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue", "green"), traffic={"green": 100})

    aml_backend.serving.delete_deployment("phi3-ft-one", "blue")

    assert len(requests_to(aml_world, "DELETE", "/onlineEndpoints/phi3-ft-one/deployments/blue")) == 1
    blue = aml_world.deployments.get((ws(aml_world), "phi3-ft-one", "blue"))
    assert blue is None or blue.state == "Deleting"  # the unawaited poller may have finished it
    assert aml_world.deployments[(ws(aml_world), "phi3-ft-one", "green")].state == "Succeeded"


def test_delete_of_a_missing_deployment_is_no_error(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("green",))

    aml_backend.serving.delete_deployment("phi3-ft-one", "blue")
    aml_backend.serving.delete_deployment("phi3-ft-missing", "blue")

    assert requests_to(aml_world, "DELETE", "/onlineEndpoints/phi3-ft-one/deployments/blue")
    assert aml_world.deployments[(ws(aml_world), "phi3-ft-one", "green")].state == "Succeeded"


def test_delete_of_a_deployment_with_traffic_surfaces_the_services_400(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue",), traffic={"blue": 100})

    with pytest.raises(HttpResponseError) as raised:
        aml_backend.serving.delete_deployment("phi3-ft-one", "blue")

    assert raised.value.status_code == 400
    assert "traffic" in str(raised.value)
    assert aml_world.deployments[(ws(aml_world), "phi3-ft-one", "blue")].state == "Succeeded"


# --------------------------------------------------------------------------- delete_endpoint


def test_delete_endpoint_starts_the_delete_once(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue",), traffic={"blue": 100})

    aml_backend.serving.delete_endpoint("phi3-ft-one")

    endpoint = aml_world.endpoints.get((ws(aml_world), "phi3-ft-one"))
    assert endpoint is None or endpoint.state == "Deleting"  # the unawaited poller may have finished it
    assert aml_backend.serving.get_endpoint("phi3-ft-one").state in {
        ProvisioningState.DELETING,
        ProvisioningState.NOT_FOUND,
    }
    # Deleting (or gone): a second call starts nothing.
    aml_backend.serving.delete_endpoint("phi3-ft-one")
    assert len(requests_to(aml_world, "DELETE", "/onlineEndpoints/phi3-ft-one")) == 1


def test_delete_of_a_missing_endpoint_is_no_error(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_backend.serving.delete_endpoint("phi3-ft-missing")
    assert not requests_to(aml_world, "DELETE", "/onlineEndpoints/phi3-ft-missing")


# --------------------------------------------------------------------------- score


PAYLOAD = promptflow_payload("Say hello")


def test_score_pins_the_deployment_with_the_endpoint_key_read_for_each_call(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue", "green"), traffic={"blue": 100})

    pinned = aml_backend.serving.score("phi3-ft-one", "green", PAYLOAD)
    by_traffic = aml_backend.serving.score("phi3-ft-one", None, PAYLOAD)

    # The emulator answers 401 to any other key, and routes by the azureml-model-deployment header.
    assert pinned.ok and pinned.status_code == 200 and pinned.error is None
    assert pinned.output == "[green] Say hello" and pinned.latency_ms >= 0
    assert by_traffic.ok and by_traffic.output == "[blue] Say hello"
    assert len(requests_to(aml_world, "POST", "/onlineEndpoints/phi3-ft-one/listKeys")) == 2
    assert len(requests_to(aml_world, "POST", "/inference/eastus2/phi3-ft-one/score")) == 2


def test_score_reads_each_answer_shape_and_http_errors_never_carry_the_key(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("green",))
    key = aml_world.endpoint_keys(ws(aml_world), "phi3-ft-one")["primaryKey"]
    scorer = aml_backend.serving.scorer("phi3-ft-one", timeout_s=5)

    def answer(status: int, body: object) -> ScoreResult:
        aml_world.scorers["green"] = lambda endpoint, deployment, payload: (status, body)
        return scorer("green", PAYLOAD)

    for body in ({"output": {"text": "hi"}}, [{"0": "hi"}], {"result": "hi"}):
        output = answer(200, body).output
        expected = body["output"] if isinstance(body, dict) and "output" in body else body
        assert output is not None and json.loads(output) == expected
    long = answer(200, {"output": "a" * 5000}).output
    assert long is not None and len(long) == MAX_OUTPUT_CHARS and long.startswith("aaa")

    crashed = answer(500, {"message": "upstream model crashed"})
    assert not crashed.ok and crashed.status_code == 500
    assert crashed.error is not None and "500" in crashed.error and "upstream model crashed" in crashed.error
    assert crashed.output is not None and "upstream model crashed" in crashed.output
    # A misbehaving server that echoes the request's Authorization header back.
    echoed = answer(401, {"message": f"denied: Bearer {key}"})
    assert not echoed.ok and echoed.status_code == 401
    assert key not in echoed.model_dump_json() and key not in repr(echoed)


def test_score_transport_errors_raise_without_the_key(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("green",))
    key = aml_world.endpoint_keys(ws(aml_world), "phi3-ft-one")["primaryKey"]
    release = threading.Event()
    aml_world.scorers["green"] = lambda endpoint, deployment, payload: (release.wait(10), (200, {}))[1]
    try:
        with pytest.raises(ConnectionError) as timed_out:
            aml_backend.serving.scorer("phi3-ft-one", timeout_s=0.2)("green", PAYLOAD)
    finally:
        release.set()
    # Nothing listens at the scoring URI any more (a host that does not resolve, a closed port).
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    endpoint = aml_world.endpoints[(ws(aml_world), "phi3-ft-one")]
    endpoint.body["properties"]["scoringUri"] = f"https://127.0.0.1:{port}/score"
    with pytest.raises(ConnectionError) as refused:
        aml_backend.serving.score("phi3-ft-one", "green", PAYLOAD)

    assert str(timed_out.value) == "scoring phi3-ft-one/green unreachable: ReadTimeout"
    assert str(refused.value) == "scoring phi3-ft-one/green unreachable: ConnectError"
    for error in (timed_out.value, refused.value):
        assert error.__cause__ is None and error.__context__ is None
        assert key not in "".join(traceback.format_exception(error)) and key not in repr(error)


# --------------------------------------------------------------------------- connections


def test_missing_connection(aml_world: World, aml_backend: AzureMLBackend) -> None:
    assert aml_backend.connections.connection_exists("phi3-finetuned") is False
    aml_backend.connections.delete_connection("phi3-finetuned")
    assert not aml_world.connections


def _list_secrets(server: EmulatorServer, world: World, name: str) -> httpx.Response:
    """What Prompt flow's WorkspaceConnectionProvider POSTs to read a connection, with a token from
    the emulator's managed-identity route, over TLS trusted through the emulator's CA bundle."""
    assert server.emulator is not None and server.tls is not None
    with httpx.Client(verify=str(server.tls.ca_bundle), base_url=server.url) as client:
        token = client.get(
            "/msi/token",
            params={"api-version": "2019-08-01", "resource": server.url},
            headers={"X-IDENTITY-HEADER": server.emulator.identity_header},
        ).json()["access_token"]
        return client.post(
            f"{world.ws_id(ws(world))}/connections/{name}/listsecrets",
            params={"api-version": SECRETS_API},
            headers={"Authorization": f"Bearer {token}"},
        )


def test_a_published_connection_reads_back_through_promptflow(
    aml_server: EmulatorServer,
    aml_world: World,
    aml_backend: AzureMLBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read as a flow deployed on Azure reads it: promptflow-core's workspace connection provider
    (POST listsecrets, msrest model, connection dict), which always calls management.azure.com:
    reached through the emulator's CONNECT proxy, with a token it checks is for the ARM audience."""
    from promptflow.core._connection import CustomConnection
    from promptflow.core._connection_provider._workspace_connection_provider import (
        WorkspaceConnectionProvider,
    )

    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS)
    uri = aml_backend.connections.publish_connection("phi3-finetuned", "phi3-ft-one")
    assert aml_backend.connections.connection_exists("phi3-finetuned") is True

    monkeypatch.setenv("HTTPS_PROXY", str(aml_server.arm_proxy))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    provider = WorkspaceConnectionProvider(aml_world.subscription, aml_world.resource_group, ws(aml_world))
    connection = provider.get("phi3-finetuned")

    assert isinstance(connection, CustomConnection)
    assert uri == f"{aml_world.inference_url('phi3-ft-one')}/score"
    assert connection.configs == {"endpoint": uri}
    assert connection.secrets == {"key": aml_world.endpoint_keys(ws(aml_world), "phi3-ft-one")["primaryKey"]}
    # promptflow spells the path its own way (lowercase resourcegroups) at its own api-version
    [(_, path)] = [(m, p) for m, p in aml_world.requests if p.split("?")[0].endswith("/listsecrets")]
    assert "/resourcegroups/" in path and "api-version=2023-04-01-preview" in path


def test_delete_connection_removes_it_and_a_second_delete_is_no_error(
    aml_server: EmulatorServer, aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS)
    aml_backend.connections.publish_connection("phi3-finetuned", "phi3-ft-one")

    aml_backend.connections.delete_connection("phi3-finetuned")

    assert aml_backend.connections.connection_exists("phi3-finetuned") is False
    assert _list_secrets(aml_server, aml_world, "phi3-finetuned").status_code == 404
    aml_backend.connections.delete_connection("phi3-finetuned")
    assert len(requests_to(aml_world, "DELETE", "/connections/phi3-finetuned")) == 2


def test_the_connection_lives_in_the_ai_project_workspace(aml_world: World, aml_settings: Settings) -> None:
    w = ws(aml_world)
    aml_world.workspaces = (w, "proj-phi3")
    backend = AzureMLBackend(aml_settings.model_copy(update={"AI_PROJECT_NAME": "proj-phi3"}))
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS)
    key = aml_world.endpoint_keys(w, "phi3-ft-one")["primaryKey"]

    uri = backend.connections.publish_connection("phi3-finetuned", "phi3-ft-one")
    exists = backend.connections.connection_exists("phi3-finetuned")

    assert uri == f"{aml_world.inference_url('phi3-ft-one')}/score"
    assert list(aml_world.connections) == [("proj-phi3", "phi3-finetuned")]
    props = aml_world.connections[("proj-phi3", "phi3-finetuned")]["properties"]
    assert props["authType"] == props["category"] == "CustomKeys"
    assert props["credentials"] == {"keys": {"key": key}}
    assert props["target"] == uri
    assert props["metadata"] == {
        "endpoint": uri,
        "azureml.flow.connection_type": "Custom",
        "azureml.flow.module": "promptflow.connections",
    }
    assert exists is True
    assert not requests_to(aml_world, "POST", "/listsecrets"), "the key is never read back"

    backend.connections.delete_connection("phi3-finetuned")
    backend.connections.delete_connection("phi3-finetuned")

    assert backend.connections.connection_exists("phi3-finetuned") is False
    project = "/workspaces/proj-phi3/connections/phi3-finetuned"
    assert len(requests_to(aml_world, "DELETE", project)) == 2
    assert not [p for _, p in aml_world.requests if f"/workspaces/{w}/connections/" in p]


# --------------------------------------------------------------------------- preflight: quota only


def test_preflight_quota_checks_pass_with_enough_quota(
    aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    report = aml_backend.checks.preflight(quota_config(aml_settings))

    training, serving = check(report, "training_quota"), check(report, "serving_quota")
    assert training.ok, training.detail
    assert serving.ok, serving.detail
    assert "Standard NCADSA100v4 Family Cluster Dedicated vCPUs" in training.detail
    assert "96 of 96 vCPUs free, 24 needed" in training.detail
    # Standard_NC24ads_A100_v4 is exempt from the 20 % upgrade reserve of managed online deployments.
    assert "24 needed for 1 × Standard_NC24ads_A100_v4" in serving.detail


def test_preflight_training_quota_too_small(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    aml_world.quota["standardNCADSA100v4Family"] = (80, 96)

    report = aml_backend.checks.preflight(quota_config(aml_settings))

    training = check(report, "training_quota")
    assert not training.ok
    assert "Standard NCADSA100v4 Family Cluster Dedicated vCPUs" in training.detail
    assert "80 of 96 in use, 16 free, 24 needed" in training.detail
    assert "Request quota" in training.detail
    assert not report.ok


def test_preflight_serving_quota_counts_the_upgrade_reserve(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    # 2 × Standard_NC4as_T4_v3 (4 vCPUs) + 20 % reserve = ceil(2.4) = 3 instances = 12 vCPUs.
    aml_world.quota["standardNCASv3_T4Family"] = (54, 64)
    config = quota_config(
        aml_settings, serving_instance_type="Standard_NC4as_T4_v3", serving_instance_count=2
    )

    report = aml_backend.checks.preflight(config)

    serving = check(report, "serving_quota")
    assert not serving.ok
    assert "Standard NCASv3_T4 Family Cluster Dedicated vCPUs" in serving.detail
    assert "54 of 64 in use, 10 free, 12 needed" in serving.detail
    assert "upgrade reserve" in serving.detail
    assert check(report, "training_quota").ok


def test_preflight_regional_total_quota_binds_too(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    aml_world.total_regional_vcpus = (290, 300)

    report = aml_backend.checks.preflight(quota_config(aml_settings))

    training = check(report, "training_quota")
    assert not training.ok
    assert "Total Cluster Dedicated Regional vCPUs" in training.detail
    assert "290 of 300 in use, 10 free, 24 needed" in training.detail


def test_preflight_forbidden_usage_read_is_a_failed_quota_check(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    aml_world.inject(Fault(path="/usages", status=403, code="AuthorizationFailed", message="no access"))

    report = aml_backend.checks.preflight(quota_config(aml_settings))

    for name in ("training_quota", "serving_quota"):
        failed = check(report, name)
        assert not failed.ok
        assert "HTTP 403" in failed.detail and "quota usage" in failed.detail
    assert check(report, "training_instance").ok
    assert not aml_world.faults


def test_preflight_persistent_503_on_usages_propagates(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    # Retry-After: 1 keeps azure-core's retries (3 for a status code) to 1 s each.
    aml_world.inject(Fault(path="/usages", status=503, times=50, retry_after=1))

    with pytest.raises(HttpResponseError) as raised:
        aml_backend.checks.preflight(quota_config(aml_settings))

    assert raised.value.status_code == 503
    assert len(requests_to(aml_world, "GET", "/usages")) > 1, "the SDK retried before giving up"


# --------------------------------------------------------------------------- preflight: the other checks

CHECKS = [
    "base_model",
    "training_instance",
    "training_quota",
    "serving_instance",
    "serving_quota",
    "endpoint_name",
    "endpoint_owner",
]


def failed(report: PreflightReport) -> list[str]:
    return [c.name for c in report.checks if not c.ok]


def test_preflight_report_names_the_model_and_runs_every_check_in_order(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    report = aml_backend.checks.preflight(quota_config(aml_settings, endpoint_name="phi3-ft-free"))
    pinned = aml_backend.checks.preflight(
        quota_config(aml_settings, base_model_version="14", training_instance_type="STANDARD_NC24ADS_A100_V4")
    )

    assert report.ok, report.reasons
    assert [c.name for c in report.checks] == CHECKS
    assert report.model_version == "15"
    assert report.model_id == f"azureml://registries/azureml/models/{PHI3}/versions/15"
    assert check(report, "training_instance").detail == (
        "Standard_NC24ads_A100_v4 is available in eastus2 "
        "(24 vCPUs, 1 GPU(s), family standardNCADSA100v4Family)"
    )
    assert check(report, "endpoint_owner").detail == (
        f"endpoint name phi3-ft-free is free in eastus2 (in {ws(aml_world)} too): the run creates it"
    )
    # The region comes from the workspace and is named in both compute reads.
    assert requests_to(aml_world, "GET", "/locations/eastus2/vmSizes")
    assert requests_to(aml_world, "GET", "/locations/eastus2/usages")
    # A pinned version is read as is; instance types match whatever their case.
    assert pinned.ok, pinned.reasons
    assert (pinned.model_version, pinned.model_id) == (
        "14",
        f"azureml://registries/azureml/models/{PHI3}/versions/14",
    )


def test_preflight_base_model_failures_say_what_was_looked_up(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    typo = aml_backend.checks.preflight(
        quota_config(aml_settings, base_model_name="Phi-3-mini-4k-instruct-typo")
    )
    missing = aml_backend.checks.preflight(quota_config(aml_settings, base_model_version="42"))
    aml_world.inject(Fault(path="/registries/azureml/models/", status=403, code="AuthorizationFailed"))
    forbidden = aml_backend.checks.preflight(quota_config(aml_settings))

    for report in (typo, missing, forbidden):
        assert failed(report) == ["base_model"], report.reasons
        assert report.model_id is None and report.model_version is None
    detail = check(typo, "base_model").detail
    assert "model Phi-3-mini-4k-instruct-typo (label latest)" in detail and "in registry azureml" in detail
    assert "check BASE_MODEL_NAME" in detail and "set BASE_MODEL_VERSION" in detail
    detail = check(missing, "base_model").detail
    assert f"model {PHI3} version 42 was not found in registry azureml" in detail
    assert "unset BASE_MODEL_VERSION" in detail
    assert "could not be read (HTTP 403" in check(forbidden, "base_model").detail
    assert not aml_world.faults


def test_preflight_says_an_unknown_base_model_was_not_found(
    aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    report = aml_backend.checks.preflight(
        quota_config(aml_settings, base_model_name="Phi-3-mini-4k-instruct-typo")
    )

    detail = check(report, "base_model").detail
    assert "model Phi-3-mini-4k-instruct-typo (label latest) was not found in registry azureml" in detail


def test_preflight_of_instance_types_the_region_does_not_offer(
    aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    report = aml_backend.checks.preflight(
        quota_config(
            aml_settings,
            training_instance_type="Standard_ND96isr_H100_v5",
            serving_instance_type="Standard_NC6s_v2",
        )
    )

    assert failed(report) == ["training_instance", "training_quota", "serving_instance", "serving_quota"]
    detail = check(report, "training_instance").detail
    assert "Standard_ND96isr_H100_v5 is not offered by Azure ML in eastus2" in detail
    assert "check TRAINING_INSTANCE_TYPE" in detail
    assert "az ml compute list-sizes --location eastus2" in detail
    assert check(report, "training_quota").detail.startswith("not checked: Standard_ND96isr_H100_v5")
    assert "check SERVING_INSTANCE_TYPE" in check(report, "serving_instance").detail


def test_preflight_quota_of_a_family_with_no_row_or_no_limit(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    del aml_world.quota["standardNCADSA100v4Family"]
    aml_world.quota["standardNCASv3_T4Family"] = (10, -1)
    aml_world.total_regional_vcpus = (10, -1)  # a negative limit: no limit

    report = aml_backend.checks.preflight(
        quota_config(aml_settings, serving_instance_type="Standard_NC4as_T4_v3")
    )

    training = check(report, "training_quota").detail
    assert not check(report, "training_quota").ok
    assert "no dedicated vCPU quota for the standardNCADSA100v4Family family" in training
    assert "(of Standard_NC24ads_A100_v4) in eastus2" in training
    assert (
        "select 'Standard NCADSA100v4 Family Cluster Dedicated vCPUs' → Request quota with a new cores limit "
        "of at least 24" in training
    )
    serving = check(report, "serving_quota")
    assert serving.ok and serving.detail.startswith("no vCPU limit on the standardNCASv3_T4Family family")


def test_preflight_of_a_workspace_that_cannot_be_read(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    backend = AzureMLBackend(aml_settings.model_copy(update={"AZUREML_WORKSPACE": "ws-missing"}))

    report = backend.checks.preflight(quota_config(aml_settings))

    compute = ["training_instance", "training_quota", "serving_instance", "serving_quota"]
    assert failed(report) == [*compute, "endpoint_owner"]  # the endpoint name's region is unknown too
    detail = check(report, "serving_quota").detail
    assert (
        "not checked: workspace ws-missing in resource group rg-emulator could not be read (not found)"
        in detail
    )
    assert "AZUREML_WORKSPACE" in detail
    assert "region of workspace ws-missing could not be read" in check(report, "endpoint_owner").detail
    assert not requests_to(aml_world, "GET", "/vmSizes") and not requests_to(aml_world, "GET", "/usages")


def test_preflight_endpoint_owner(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    seed_endpoint(aml_world, "phi3-ft-ours", tags={**OURS, "instance-id": "ft-1"})
    seed_endpoint(aml_world, "phi3-ft-untagged", tags={"team": "x"})

    ours = aml_backend.checks.preflight(quota_config(aml_settings, endpoint_name="phi3-ft-ours"))
    untagged = aml_backend.checks.preflight(quota_config(aml_settings, endpoint_name="phi3-ft-untagged"))
    invalid = aml_backend.checks.preflight(quota_config(aml_settings, endpoint_name="9-bad_name-"))

    assert ours.ok and "was created by this app" in check(ours, "endpoint_owner").detail
    assert failed(untagged) == ["endpoint_owner"]
    assert check(untagged, "endpoint_owner").detail == (
        "endpoint phi3-ft-untagged exists and was not created by this app; choose another ENDPOINT_NAME or "
        f"tag it created-by={APP_TAG} if it is yours (its created-by tag: none)"
    )
    assert failed(invalid) == ["endpoint_name", "endpoint_owner"]
    assert "is not a valid online endpoint name" in check(invalid, "endpoint_name").detail
    assert check(invalid, "endpoint_owner").detail.startswith("not checked")
    assert not [p for _, p in aml_world.requests if "9-bad_name-" in p], "an invalid name is not looked up"


def test_preflight_runs_every_check_when_the_first_fails(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    aml_world.quota.clear()
    seed_endpoint(aml_world, "phi3-ft-theirs", tags={CREATED_BY_TAG: "someone-else"})

    report = aml_backend.checks.preflight(
        quota_config(
            aml_settings,
            base_model_name="Phi-3-nonexistent-instruct",
            serving_instance_type="Standard_Unknown",
            endpoint_name="phi3-ft-theirs",
        )
    )

    assert [c.name for c in report.checks] == CHECKS
    assert failed(report) == [
        "base_model",
        "training_quota",
        "serving_instance",
        "serving_quota",
        "endpoint_owner",
    ]
    assert len(report.reasons) == 5
    assert check(report, "endpoint_owner").detail.endswith("(its created-by tag: someone-else)")


# --------------------------------------------------------------------------- transient faults


def test_a_429_on_a_get_is_retried_by_the_sdk(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS)
    aml_world.inject(
        Fault(
            path="/onlineEndpoints/phi3-ft-one",
            status=429,
            code="TooManyRequests",
            method="GET",
            retry_after=0,
        )
    )

    info = aml_backend.serving.get_endpoint("phi3-ft-one")

    assert info.state is ProvisioningState.SUCCEEDED and info.tags == OURS
    assert not aml_world.faults, "the fault was served"
    assert len(requests_to(aml_world, "GET", "/onlineEndpoints/phi3-ft-one")) == 2


def test_a_429_on_a_job_read_during_submit_is_retried(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_world.inject(Fault(path=f"/jobs/{JOB}", status=429, method="GET", retry_after=0))

    assert aml_backend.training.submit_finetune(spec()) == JOB

    assert not aml_world.faults
    assert len(requests_to(aml_world, "PUT", f"/jobs/{JOB}")) == 1


def test_a_failure_other_than_not_found_propagates(aml_world: World, aml_backend: AzureMLBackend) -> None:
    # A 403 is not retried by azure-core; a persistent 5xx comes out the same way, after 3 s of the
    # SDK's retries per call (test_preflight_persistent_503_on_usages_propagates).
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS)
    aml_world.put_model_version(
        ws(aml_world), PREFIX, "1", {"properties": {"modelUri": "azureml://jobs/j/outputs/m", "tags": OURS}}
    )
    calls: list[tuple[str, str, Callable[[], object]]] = [
        (
            "GET",
            "/connections/phi3-finetuned",
            lambda: aml_backend.connections.connection_exists("phi3-finetuned"),
        ),
        (
            "DELETE",
            "/connections/phi3-finetuned",
            lambda: aml_backend.connections.delete_connection("phi3-finetuned"),
        ),
        ("GET", "/models", lambda: aml_backend.training.list_models(APP_TAG)),
        (
            "PUT",
            f"/models/{PREFIX}/versions/1",
            lambda: aml_backend.training.delete_model(ModelRef(name=PREFIX, version="1")),
        ),
        (
            "DELETE",
            "/onlineEndpoints/phi3-ft-one",
            lambda: aml_backend.serving.delete_endpoint("phi3-ft-one"),
        ),
    ]

    for method, path, call in calls:
        aml_world.inject(Fault(path=path, method=method, status=403, code="AuthorizationFailed"))
        with pytest.raises(HttpResponseError) as raised:
            call()
        assert raised.value.status_code == 403, path
        assert not aml_world.faults, path
