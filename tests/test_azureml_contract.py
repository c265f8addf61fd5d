"""Contract tests of AzureMLBackend through the real azure-ai-ml MLClient against the Azure ML emulator.

Nothing in the SDK is replaced: the backend is `aml_backend` (DefaultAzureCredential, real MLClients,
HTTPS to the emulator) and the only test double is the emulator's `World`, scripted per test
(JobScript, Fault, quota, direct seeding of endpoints and deployments). Every request body the SDK
sends is checked against the official REST definitions by the `aml_world` fixture's teardown.

Not covered here (being reworked elsewhere): get_job, cancel_job, register_model,
begin_create_deployment / get_deployment_state (used only as setup steps), score,
publish_connection's key handling, preflight's SKU/allow-list and endpoint name/owner checks.

Timing note, so that the file stays fast without any sleep: the pollers the backend does not wait
on (endpoint/deployment create and delete) keep polling from a background thread, one poll at once
and the next 30 s later (azure-core reads the emulator's `Retry-After: 0` as "not given"). So a state
that this one early poll may or may not have advanced is asserted as either of its two values.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Model
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from mlflow.exceptions import MlflowException

from azureml_emulator.server import EmulatorServer
from azureml_emulator.world import PHI3, Fault, JobScript, Json, World
from backends.azureml import AzureMLBackend
from core.models import (
    BlobRef,
    DeploymentSpec,
    FineTuneSpec,
    Hyperparameters,
    LossHistory,
    MetricPoint,
    ModelRef,
    ProvisioningState,
    RunConfig,
)
from core.naming import APP_TAG, CREATED_BY_TAG
from core.preflight import PreflightCheck, PreflightReport
from core.settings import Settings

JOB = "ft-0123456789abcdef-finetune"
PREFIX = "phi3-mini-ft"
TRAIN_URI = "azureml://datastores/datasets/paths/chats/_splits/ft-0123456789abcdef/train.jsonl"
VALIDATION_URI = "azureml://datastores/datasets/paths/chats/_splits/ft-0123456789abcdef/validation.jsonl"
OURS = {CREATED_BY_TAG: APP_TAG}
SECRETS_API = "2024-04-01-preview"


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
        backend._ml.jobs.get(name)
    raise AssertionError(f"job {name} never completed: {world.jobs[(ws(world), name)].status}")


def create_model(
    backend: AzureMLBackend, name: str, version: str, tags: dict[str, str] | None = None
) -> None:
    backend._ml.models.create_or_update(
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
        model = f"model-{deployment}"
        world.put_model_version(
            w, model, "1", {"properties": {"modelUri": f"azureml://jobs/j-{deployment}/outputs/m"}}
        )
        world.put_deployment(
            w,
            name,
            deployment,
            {
                "location": world.region,
                "sku": {"name": "Default", "capacity": 1},
                "properties": {
                    "endpointComputeType": "Managed",
                    "model": f"{world.ws_id(w)}/models/{model}/versions/1",
                    "instanceType": "Standard_DS3_v2",
                },
            },
        )
        for _ in range(5):
            world.get_deployment(w, name, deployment)
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


# --------------------------------------------------------------------------- submit_finetune


def test_submit_puts_a_finetuning_job_on_the_latest_base_model(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    assert aml_backend.submit_finetune(spec()) == JOB

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
    aml_backend.submit_finetune(spec(base_model_version="14"))

    uri = job_properties(aml_world)["fineTuningDetails"]["model"]["uri"]
    assert uri == f"azureml://registries/azureml/models/{PHI3}/versions/14"
    assert not requests_to(aml_world, "GET", f"/models/{PHI3}/versions"), "no 'latest' lookup"


def test_submitting_the_same_spec_twice_creates_one_job(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    first = aml_backend.submit_finetune(spec())
    again = aml_backend.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    after_completion = aml_backend.submit_finetune(spec())

    assert first == again == after_completion == JOB
    assert len(requests_to(aml_world, "PUT", f"/jobs/{JOB}")) == 1
    assert list(aml_world.jobs) == [(ws(aml_world), JOB)]


def test_submit_of_an_unknown_base_model_raises_and_creates_nothing(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    with pytest.raises(HttpResponseError) as raised:
        aml_backend.submit_finetune(spec(base_model_name="Phi-3-nonexistent-instruct"))

    assert raised.value.status_code == 404
    assert "Phi-3-nonexistent-instruct" in str(raised.value)
    assert not requests_to(aml_world, "PUT", f"/jobs/{JOB}")
    assert not aml_world.jobs


def test_submit_of_an_unknown_task_raises_before_any_put(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    with pytest.raises(ValueError, match="unknown fine-tuning task"):
        aml_backend.submit_finetune(spec().model_copy(update={"task": "Summarization-ish"}))
    assert not aml_world.jobs


# --------------------------------------------------------------------------- data_uri


BLOB = BlobRef(
    container="datasets",
    name="chats/_splits/ft-0123456789abcdef/train.jsonl",
    etag='"0x8DC"',
    url="https://stdatasets.blob.core.windows.net/datasets/chats/_splits/ft-0123456789abcdef/train.jsonl",
)


def test_data_uri_through_the_datastore(aml_world: World, aml_settings: Settings) -> None:
    backend = AzureMLBackend(aml_settings.model_copy(update={"AZUREML_DATASTORE": "datasets"}))

    uri = backend.data_uri(BLOB)

    assert uri == f"azureml://datastores/datasets/paths/{BLOB.name}"
    assert not aml_world.requests, "data_uri reads nothing from the service"
    # ... and the service takes it as the job's training data.
    backend.submit_finetune(spec(training_data=uri))
    assert job_properties(aml_world)["fineTuningDetails"]["trainingData"]["uri"] == uri


def test_data_uri_without_a_datastore_is_the_blob_url(aml_world: World, aml_settings: Settings) -> None:
    backend = AzureMLBackend(aml_settings.model_copy(update={"AZUREML_DATASTORE": None}))

    assert backend.data_uri(BLOB) == BLOB.url
    backend.submit_finetune(spec(validation_data=backend.data_uri(BLOB)))
    assert job_properties(aml_world)["fineTuningDetails"]["validationData"]["uri"] == BLOB.url


def test_data_uri_without_a_datastore_or_url_raises(aml_settings: Settings) -> None:
    backend = AzureMLBackend(aml_settings.model_copy(update={"AZUREML_DATASTORE": None}))
    with pytest.raises(ValueError, match=re.escape("datasets/chats/x.jsonl")):
        backend.data_uri(BlobRef(container="datasets", name="chats/x.jsonl"))


# --------------------------------------------------------------------------- loss_history


def test_loss_history_of_a_completed_job(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_world.script_job(JOB, JobScript(loss=(3.0, 2.5, 2.25, 2.0, 1.75), eval_loss=(3.25, 2.75, 2.5)))
    aml_backend.submit_finetune(spec())
    complete_job(aml_world, aml_backend)

    history = aml_backend.loss_history(JOB)

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
    aml_backend.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    # A pipeline step of the job (any depth) is tagged with the job's run id as root run.
    step = f"{JOB}-train-step"
    aml_world.metrics[step] = {"loss": [(i, 1_700_000_000_000 + i, 2.0 - i / 10) for i in range(1, 9)]}
    aml_world.run_tags[step] = {"mlflow.rootRunId": JOB, "mlflow.parentRunId": "some-sub-pipeline"}
    # Another job's step must not be read.
    aml_world.metrics["other-step"] = {"loss": [(i, i, 9.0) for i in range(1, 20)]}
    aml_world.run_tags["other-step"] = {"mlflow.rootRunId": "another-job"}

    history = aml_backend.loss_history(JOB)

    assert [p.step for p in history.train] == list(range(1, 9))
    assert history.train[0] == MetricPoint(step=1, value=1.9)
    assert [p.value for p in history.validation] == [2.5, 2.0]  # the job's own run (default script)


def test_loss_history_of_a_job_without_an_mlflow_run_is_empty(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_world.script_job(JOB, JobScript(statuses=("Queued",)))
    aml_backend.submit_finetune(spec())
    aml_backend._ml.jobs.get(JOB)
    assert aml_world.jobs[(ws(aml_world), JOB)].status == "Queued"

    assert aml_backend.loss_history(JOB) == LossHistory()
    assert aml_backend.loss_history("ft-never-submitted-finetune") == LossHistory()


def test_loss_history_asks_for_a_token_of_the_clouds_resource_manager(
    aml_server: EmulatorServer, aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_backend.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    aml_backend.loss_history(JOB)

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
        aml_backend.loss_history(name)
    assert not [p for _, p in aml_world.requests if "/mlflow/" in p]


def test_loss_history_transient_fault_propagates_scrubbed(
    aml_server: EmulatorServer, aml_world: World, aml_backend: AzureMLBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mlflow's own HTTP retries (7, exponential backoff) would take minutes: configure them off.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    aml_backend.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    aml_world.inject(Fault(path="/api/2.0/mlflow/metrics/get-history", status=503, times=5))

    with pytest.raises(MlflowException) as raised:
        aml_backend.loss_history(JOB)

    assert "metrics/get-history" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert aml_server.emulator is not None
    text = str(raised.value) + repr(raised.value.args)
    assert not [t for t in aml_server.emulator.tokens if t in text], "a bearer token leaked"


def test_loss_history_transient_fault_says_why(
    aml_world: World, aml_backend: AzureMLBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    aml_backend.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    aml_world.inject(Fault(path="/api/2.0/mlflow/metrics/get-history", status=503, times=5))

    with pytest.raises(MlflowException) as raised:
        aml_backend.loss_history(JOB)

    assert "503" in str(raised.value)


# --------------------------------------------------------------------------- models


def test_set_model_tags_merges_into_the_version(aml_world: World, aml_backend: AzureMLBackend) -> None:
    create_model(aml_backend, PREFIX, "1", {**OURS, "run_id": "r1", "job_name": "j1"})
    uri = world_model(aml_world, PREFIX, "1")["modelUri"]

    aml_backend.set_model_tags(ModelRef(name=PREFIX, version="1"), {"run_id": "r2", "stage": "live"})

    props = world_model(aml_world, PREFIX, "1")
    assert props["tags"] == {**OURS, "run_id": "r2", "job_name": "j1", "stage": "live"}
    assert props["modelUri"] == uri
    assert props["isArchived"] is False


def test_set_model_tags_with_nothing_new_sends_no_put(aml_world: World, aml_backend: AzureMLBackend) -> None:
    create_model(aml_backend, PREFIX, "1", {**OURS, "stage": "live"})
    puts = len(requests_to(aml_world, "PUT", f"/models/{PREFIX}/versions/1"))

    aml_backend.set_model_tags(ModelRef(name=PREFIX, version="1"), {"stage": "live"})

    assert len(requests_to(aml_world, "PUT", f"/models/{PREFIX}/versions/1")) == puts


def test_set_model_tags_of_a_missing_version_raises(aml_world: World, aml_backend: AzureMLBackend) -> None:
    create_model(aml_backend, PREFIX, "1")
    with pytest.raises(ResourceNotFoundError):
        aml_backend.set_model_tags(ModelRef(name=PREFIX, version="7"), {"stage": "live"})
    assert "7" not in aml_world.models[(ws(aml_world), PREFIX)]


def test_list_models_returns_this_apps_active_versions_in_version_order(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    create_model(aml_backend, PREFIX, "10", {**OURS, "run_id": "r10"})
    create_model(aml_backend, PREFIX, "2", {**OURS, "run_id": "r2"})
    create_model(aml_backend, PREFIX, "3", {CREATED_BY_TAG: "someone-else"})
    create_model(aml_backend, "another-model", "1", {**OURS})
    create_model(aml_backend, "untagged-model", "1")

    found = aml_backend.list_models(APP_TAG)

    assert found == [
        (ModelRef(name="another-model", version="1"), OURS),
        (ModelRef(name=PREFIX, version="2"), {**OURS, "run_id": "r2"}),
        (ModelRef(name=PREFIX, version="10"), {**OURS, "run_id": "r10"}),
    ]
    assert aml_backend.list_models("nobody") == []


def test_list_models_of_an_empty_workspace(aml_backend: AzureMLBackend) -> None:
    assert aml_backend.list_models(APP_TAG) == []


def test_delete_model_archives_it_and_list_leaves_it_out(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    create_model(aml_backend, PREFIX, "1", OURS)
    create_model(aml_backend, PREFIX, "2", OURS)
    gone = ModelRef(name=PREFIX, version="1")

    aml_backend.delete_model(gone)

    assert world_model(aml_world, PREFIX, "1")["isArchived"] is True
    assert world_model(aml_world, PREFIX, "2")["isArchived"] is False
    assert [ref for ref, _ in aml_backend.list_models(APP_TAG)] == [ModelRef(name=PREFIX, version="2")]
    # A second delete is a no-op, and so is the delete of a version that never existed.
    aml_backend.delete_model(gone)
    aml_backend.delete_model(ModelRef(name=PREFIX, version="99"))
    aml_backend.delete_model(ModelRef(name="never-registered", version="1"))
    assert world_model(aml_world, PREFIX, "1")["isArchived"] is True
    assert sorted(aml_world.models[(ws(aml_world), PREFIX)]) == ["1", "2"]


def test_the_model_a_completed_job_registered_is_tagged_listed_and_deleted(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_backend.submit_finetune(spec())
    complete_job(aml_world, aml_backend)
    registered = world_model(aml_world, PREFIX, "1")
    assert registered["jobName"] == JOB
    ref = ModelRef(name=PREFIX, version="1")
    assert aml_backend.list_models(APP_TAG) == [], "the service registers it without our tags"

    aml_backend.set_model_tags(ref, {**OURS, "job_name": JOB})

    assert aml_backend.list_models(APP_TAG) == [(ref, {**OURS, "job_name": JOB})]
    assert world_model(aml_world, PREFIX, "1")["modelUri"] == registered["modelUri"]
    aml_backend.delete_model(ref)
    assert aml_backend.list_models(APP_TAG) == []


# --------------------------------------------------------------------------- endpoints


def test_begin_create_endpoint_puts_a_key_auth_endpoint_and_returns_at_once(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    tags = {**OURS, "expires_at": "never"}

    aml_backend.begin_create_endpoint("phi3-ft-one", tags)

    assert len(requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")) == 1
    props = endpoint_props(aml_world, "phi3-ft-one")
    assert props["authMode"] == "Key"
    assert aml_world.endpoints[(ws(aml_world), "phi3-ft-one")].body["tags"] == tags
    assert aml_world.endpoints[(ws(aml_world), "phi3-ft-one")].state == "Creating", "not waited on"


def test_begin_create_endpoint_is_idempotent(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_backend.begin_create_endpoint("phi3-ft-one", OURS)
    aml_backend.begin_create_endpoint("phi3-ft-one", {**OURS, "other": "tags"})
    settle_endpoint(aml_world, "phi3-ft-one")
    aml_backend.begin_create_endpoint("phi3-ft-one", OURS)

    assert len(requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")) == 1
    assert aml_world.endpoints[(ws(aml_world), "phi3-ft-one")].body["tags"] == OURS


def test_begin_create_endpoint_with_a_name_taken_in_the_region_raises(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_world.foreign_endpoints.add("phi3-ft-taken")

    with pytest.raises(HttpResponseError) as raised:
        aml_backend.begin_create_endpoint("phi3-ft-taken", OURS)

    assert raised.value.status_code == 400
    assert "not available" in str(raised.value)
    assert not aml_world.endpoints


def test_get_endpoint_of_a_missing_endpoint_is_not_found(aml_backend: AzureMLBackend) -> None:
    info = aml_backend.get_endpoint("phi3-ft-missing")
    assert info.name == "phi3-ft-missing"
    assert info.state is ProvisioningState.NOT_FOUND
    assert info.deployments == [] and info.traffic == {}


def test_get_endpoint_reports_creating_then_succeeded(aml_world: World, aml_backend: AzureMLBackend) -> None:
    # Three polls in Creating: the backend's first read (plus, at most, the create poller's one
    # background poll) still sees Creating.
    aml_world.endpoint_polls = 2
    aml_backend.begin_create_endpoint("phi3-ft-one", OURS)

    first = aml_backend.get_endpoint("phi3-ft-one")
    states = [first.state]
    for _ in range(4):
        states.append(aml_backend.get_endpoint("phi3-ft-one").state)
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

    info = aml_backend.get_endpoint("phi3-ft-one")

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

    infos = aml_backend.list_endpoints()

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


def test_list_endpoints_of_an_empty_workspace(aml_backend: AzureMLBackend) -> None:
    assert aml_backend.list_endpoints() == []


def test_update_endpoint_tags_merges_and_keeps_traffic(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(
        aml_world,
        "phi3-ft-one",
        tags={**OURS, "expires_at": "2030-01-01T00:00:00Z"},
        deployments=("blue", "green"),
        traffic={"blue": 100},
    )
    before = endpoint_props(aml_world, "phi3-ft-one")

    aml_backend.update_endpoint_tags("phi3-ft-one", {"expires_at": "never", "owner": "team-a"})

    assert len(requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")) == 1
    endpoint = aml_world.endpoints[(ws(aml_world), "phi3-ft-one")]
    assert endpoint.body["tags"] == {**OURS, "expires_at": "never", "owner": "team-a"}
    assert endpoint.body["properties"]["traffic"] == {"blue": 100}
    assert endpoint.body["properties"]["authMode"] == before["authMode"] == "Key"
    assert endpoint.body["identity"]["type"] == "SystemAssigned"
    assert endpoint.state == "Succeeded", "the update was waited on"
    info = aml_backend.get_endpoint("phi3-ft-one")
    assert info.traffic == {"blue": 100, "green": 0}


def test_update_endpoint_tags_with_nothing_new_sends_no_put(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags={**OURS, "expires_at": "never"})

    aml_backend.update_endpoint_tags("phi3-ft-one", {"expires_at": "never"})

    assert not requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-one")


def test_update_endpoint_tags_of_a_missing_endpoint_raises(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    with pytest.raises(ResourceNotFoundError):
        aml_backend.update_endpoint_tags("phi3-ft-missing", {"expires_at": "never"})
    assert not requests_to(aml_world, "PUT", "/onlineEndpoints/phi3-ft-missing")


# --------------------------------------------------------------------------- set_traffic


def test_set_traffic_moves_traffic_between_seeded_deployments(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue", "green"), traffic={"blue": 100})

    aml_backend.set_traffic("phi3-ft-one", {"blue": 0, "green": 100})

    # azure-ai-ml drops the 0 % entries before the PUT; get fills them in again.
    assert endpoint_props(aml_world, "phi3-ft-one")["traffic"] == {"green": 100}
    assert aml_world.endpoints[(ws(aml_world), "phi3-ft-one")].body["tags"] == OURS
    info = aml_backend.get_endpoint("phi3-ft-one")
    assert info.traffic == {"blue": 0, "green": 100}
    assert info.state is ProvisioningState.SUCCEEDED


def test_set_traffic_to_a_deployment_the_backend_created(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    # Setup through the backend itself: endpoint, model, deployment (their details are not asserted).
    aml_backend.begin_create_endpoint("phi3-ft-one", OURS)
    for _ in range(5):
        if aml_backend.get_endpoint("phi3-ft-one").state is ProvisioningState.SUCCEEDED:
            break
    create_model(aml_backend, PREFIX, "1", OURS)
    aml_backend.begin_create_deployment(
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
        if aml_backend.get_deployment_state("phi3-ft-one", "blue") is ProvisioningState.SUCCEEDED:
            break

    aml_backend.set_traffic("phi3-ft-one", {"blue": 100})

    assert endpoint_props(aml_world, "phi3-ft-one")["traffic"] == {"blue": 100}
    assert aml_backend.get_endpoint("phi3-ft-one").traffic == {"blue": 100}


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
        aml_backend.set_traffic("phi3-ft-one", traffic)

    assert raised.value.status_code == 400
    assert message in str(raised.value)
    assert endpoint_props(aml_world, "phi3-ft-one")["traffic"] == {"blue": 100}


def test_set_traffic_while_the_endpoint_is_still_creating_raises(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    aml_world.endpoint_polls = 5
    aml_backend.begin_create_endpoint("phi3-ft-one", OURS)

    with pytest.raises(HttpResponseError) as raised:
        aml_backend.set_traffic("phi3-ft-one", {})

    assert raised.value.status_code == 409


def test_set_traffic_of_a_missing_endpoint_raises(aml_backend: AzureMLBackend) -> None:
    with pytest.raises(ResourceNotFoundError):
        aml_backend.set_traffic("phi3-ft-missing", {"blue": 100})


# --------------------------------------------------------------------------- delete_deployment


def test_delete_deployment_starts_the_delete(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue", "green"), traffic={"green": 100})

    aml_backend.delete_deployment("phi3-ft-one", "blue")

    assert len(requests_to(aml_world, "DELETE", "/onlineEndpoints/phi3-ft-one/deployments/blue")) == 1
    blue = aml_world.deployments.get((ws(aml_world), "phi3-ft-one", "blue"))
    assert blue is None or blue.state == "Deleting"  # the unawaited poller may have finished it
    assert aml_world.deployments[(ws(aml_world), "phi3-ft-one", "green")].state == "Succeeded"


def test_delete_of_a_missing_deployment_is_no_error(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("green",))

    aml_backend.delete_deployment("phi3-ft-one", "blue")
    aml_backend.delete_deployment("phi3-ft-missing", "blue")

    assert requests_to(aml_world, "DELETE", "/onlineEndpoints/phi3-ft-one/deployments/blue")
    assert aml_world.deployments[(ws(aml_world), "phi3-ft-one", "green")].state == "Succeeded"


def test_delete_of_a_deployment_with_traffic_surfaces_the_services_400(
    aml_world: World, aml_backend: AzureMLBackend
) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue",), traffic={"blue": 100})

    with pytest.raises(HttpResponseError) as raised:
        aml_backend.delete_deployment("phi3-ft-one", "blue")

    assert raised.value.status_code == 400
    assert "traffic" in str(raised.value)
    assert aml_world.deployments[(ws(aml_world), "phi3-ft-one", "blue")].state == "Succeeded"


# --------------------------------------------------------------------------- delete_endpoint


def test_delete_endpoint_starts_the_delete_once(aml_world: World, aml_backend: AzureMLBackend) -> None:
    seed_endpoint(aml_world, "phi3-ft-one", tags=OURS, deployments=("blue",), traffic={"blue": 100})

    aml_backend.delete_endpoint("phi3-ft-one")

    endpoint = aml_world.endpoints.get((ws(aml_world), "phi3-ft-one"))
    assert endpoint is None or endpoint.state == "Deleting"  # the unawaited poller may have finished it
    assert aml_backend.get_endpoint("phi3-ft-one").state in {
        ProvisioningState.DELETING,
        ProvisioningState.NOT_FOUND,
    }
    # Deleting (or gone): a second call starts nothing.
    aml_backend.delete_endpoint("phi3-ft-one")
    assert len(requests_to(aml_world, "DELETE", "/onlineEndpoints/phi3-ft-one")) == 1


def test_delete_of_a_missing_endpoint_is_no_error(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_backend.delete_endpoint("phi3-ft-missing")
    assert not requests_to(aml_world, "DELETE", "/onlineEndpoints/phi3-ft-missing")


# --------------------------------------------------------------------------- connections


def test_missing_connection(aml_world: World, aml_backend: AzureMLBackend) -> None:
    assert aml_backend.connection_exists("phi3-finetuned") is False
    aml_backend.delete_connection("phi3-finetuned")
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
    uri = aml_backend.publish_connection("phi3-finetuned", "phi3-ft-one")
    assert aml_backend.connection_exists("phi3-finetuned") is True

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
    aml_backend.publish_connection("phi3-finetuned", "phi3-ft-one")

    aml_backend.delete_connection("phi3-finetuned")

    assert aml_backend.connection_exists("phi3-finetuned") is False
    assert _list_secrets(aml_server, aml_world, "phi3-finetuned").status_code == 404
    aml_backend.delete_connection("phi3-finetuned")
    assert len(requests_to(aml_world, "DELETE", "/connections/phi3-finetuned")) == 2


# --------------------------------------------------------------------------- preflight: quota only


def test_preflight_quota_checks_pass_with_enough_quota(
    aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    report = aml_backend.preflight(quota_config(aml_settings))

    training, serving = check(report, "training_quota"), check(report, "serving_quota")
    assert training.ok, training.detail
    assert serving.ok, serving.detail
    assert "Standard NCADSA100v4 Family Cluster Dedicated vCPUs" in training.detail
    assert "96 of 96 vCPUs free, 24 needed" in training.detail


def test_preflight_training_quota_too_small(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    aml_world.quota["standardNCADSA100v4Family"] = (80, 96)

    report = aml_backend.preflight(quota_config(aml_settings))

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

    report = aml_backend.preflight(config)

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

    report = aml_backend.preflight(quota_config(aml_settings))

    training = check(report, "training_quota")
    assert not training.ok
    assert "Total Cluster Dedicated Regional vCPUs" in training.detail
    assert "290 of 300 in use, 10 free, 24 needed" in training.detail


def test_preflight_forbidden_usage_read_is_a_failed_quota_check(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
) -> None:
    aml_world.inject(Fault(path="/usages", status=403, code="AuthorizationFailed", message="no access"))

    report = aml_backend.preflight(quota_config(aml_settings))

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
        aml_backend.preflight(quota_config(aml_settings))

    assert raised.value.status_code == 503
    assert len(requests_to(aml_world, "GET", "/usages")) > 1, "the SDK retried before giving up"


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

    info = aml_backend.get_endpoint("phi3-ft-one")

    assert info.state is ProvisioningState.SUCCEEDED and info.tags == OURS
    assert not aml_world.faults, "the fault was served"
    assert len(requests_to(aml_world, "GET", "/onlineEndpoints/phi3-ft-one")) == 2


def test_a_429_on_a_job_read_during_submit_is_retried(aml_world: World, aml_backend: AzureMLBackend) -> None:
    aml_world.inject(Fault(path=f"/jobs/{JOB}", status=429, method="GET", retry_after=0))

    assert aml_backend.submit_finetune(spec()) == JOB

    assert not aml_world.faults
    assert len(requests_to(aml_world, "PUT", f"/jobs/{JOB}")) == 1
