"""Defects found by driving backends/azureml.py with the real azure-ai-ml SDK over HTTP, each pinned
by a test against the Azure ML emulator (testing/azureml_fixtures.py): the SDK is never patched, the
service's behaviour comes from the emulator's World, and every request body the SDK sends is
checked against the official REST definitions.

Each test here failed on the code before the fix (the reason is in its docstring).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from azureml_emulator.world import (
    JOB_STATUSES,
    PHI3,
    PHI3_INFERENCE_SKUS,
    DeploymentScript,
    JobScript,
    World,
)
from backends.azureml import AzureMLBackend, ModelNotRegisteredYet
from core.models import DeploymentSpec, FineTuneSpec, Hyperparameters, JobState, ModelRef, ProvisioningState
from core.settings import (
    HOST_JSON,
    Settings,
    default_endpoint_name,
    evaluation_batch_seconds,
    function_timeout_seconds,
)

EXPECTED_STATE = {
    "NotStarted": JobState.QUEUED,
    "Starting": JobState.QUEUED,
    "Provisioning": JobState.QUEUED,
    "Preparing": JobState.QUEUED,
    "Queued": JobState.QUEUED,
    "Paused": JobState.QUEUED,
    "Unknown": JobState.QUEUED,
    "Running": JobState.RUNNING,
    "Finalizing": JobState.RUNNING,
    "CancelRequested": JobState.RUNNING,
    "Completed": JobState.COMPLETED,
    "Failed": JobState.FAILED,
    "NotResponding": JobState.FAILED,
    "Canceled": JobState.CANCELED,
}
JOB = "ft-0123456789abcdef"
PREFIX = "phi3-mini-ft"


def spec(job: str = JOB) -> FineTuneSpec:
    return FineTuneSpec(
        job_name=job,
        base_model_name=PHI3,
        base_model_version=None,
        model_registry="azureml",
        task="ChatCompletion",
        training_data="azureml://datastores/datasets/paths/chats/train.jsonl",
        validation_data="azureml://datastores/datasets/paths/chats/validation.jsonl",
        hyperparameters=Hyperparameters(),
        instance_type="Standard_NC24ads_A100_v4",
        output_model_prefix=PREFIX,
        tags={"created-by": "phi3-finetune-pipeline"},
    )


def run_job(backend: AzureMLBackend, world: World, script: JobScript, job: str = JOB) -> None:
    """Submit the job and read it until the emulator's script has played out."""
    world.script_job(job, script)
    backend.training.submit_finetune(spec(job))
    for _ in script.statuses:
        backend.training.get_job(job)


def test_the_emulator_knows_every_job_status_of_the_service():
    assert set(JOB_STATUSES) == set(EXPECTED_STATE)


@pytest.mark.parametrize("status", JOB_STATUSES)
def test_every_job_status_maps_through_the_real_sdk(
    aml_world: World, aml_backend: AzureMLBackend, status: str
):
    """Was: `str(job.status)` of the SDK's JobStatus enum is "JobStatus.COMPLETED" on Python 3.11,
    which mapped to Queued: no run could ever finish."""
    aml_world.script_job(JOB, JobScript(statuses=(status,), error=("UserError", "bad data")))
    aml_backend.training.submit_finetune(spec())
    info = aml_backend.training.get_job(JOB)
    assert info.raw_status == status
    assert info.state is EXPECTED_STATE[status]
    if status == "Failed":
        assert info.error == "UserError: bad data"


def test_cancel_of_a_completed_job_is_a_no_op(aml_world: World, aml_backend: AzureMLBackend):
    """Was: the Completed enum read as Queued, so cancel was sent to a finished job, the service's
    400 re-read it as still Queued, and the error surfaced."""
    run_job(aml_backend, aml_world, JobScript(statuses=("Running", "Completed")))
    aml_backend.training.cancel_job(JOB)
    assert not [r for r in aml_world.requests if r[1].split("?")[0].endswith("/cancel")]


def test_cancel_of_a_running_job_reaches_canceled(aml_world: World, aml_backend: AzureMLBackend):
    run_job(aml_backend, aml_world, JobScript(statuses=("Queued", "Running")))
    aml_backend.training.cancel_job(JOB)
    assert aml_backend.training.get_job(JOB).raw_status == "Canceled"
    aml_backend.training.cancel_job(JOB)  # terminal now: nothing sent
    assert len([r for r in aml_world.requests if r[1].split("?")[0].endswith("/cancel")]) == 1


def test_register_adopts_the_model_the_job_registered(aml_world: World, aml_backend: AzureMLBackend):
    """Was: register_model raised 'job is JobStatus.COMPLETED, not Completed'."""
    run_job(aml_backend, aml_world, JobScript(statuses=("Running", "Completed")))
    ref = aml_backend.training.register_model(JOB, PREFIX, {"run": "r1"})
    assert ref == ModelRef(name=PREFIX, version="1")
    versions = aml_world.list_model_versions(aml_world.workspaces[0], PREFIX, "All", None)
    assert len(versions) == 1
    assert versions[0]["properties"]["tags"] == {"run": "r1", "job_name": JOB}


def test_register_never_makes_a_second_version_while_the_job_registers_its_own(
    aml_world: World, aml_backend: AzureMLBackend
):
    """The job registers its model a little after it completes. Was: register_model created a version
    of its own in that window, and the job's registration then made a second one."""
    run_job(aml_backend, aml_world, JobScript(statuses=("Running", "Completed"), register_model=False))
    with pytest.raises(ModelNotRegisteredYet):
        aml_backend.training.register_model(JOB, PREFIX, {"run": "r1"})
    assert aml_world.list_model_versions(aml_world.workspaces[0], PREFIX, "All", None) == []
    assert not [r for r in aml_world.requests if r[0] == "PUT" and "/models/" in r[1]]


def test_register_from_the_job_output_when_the_job_registers_nothing(
    aml_world: World, aml_backend: AzureMLBackend
):
    """A job without an auto-registered output (no assetName): the model is registered from the whole
    named output, once; a retry finds it by its job tag."""
    aml_world.script_job(JOB, JobScript(statuses=("Completed",)))
    aml_backend.training.submit_finetune(spec())
    job = aml_world.jobs[(aml_world.workspaces[0], JOB)]
    job.body["properties"]["outputs"]["registered_model"].pop("assetName")
    aml_backend.training.get_job(JOB)
    first = aml_backend.training.register_model(JOB, "phi3-manual", {"run": "r1"})
    again = aml_backend.training.register_model(JOB, "phi3-manual", {"run": "r1"})
    assert first == again
    (version,) = aml_world.list_model_versions(aml_world.workspaces[0], "phi3-manual", "All", None)
    assert version["properties"]["modelUri"] == f"azureml://jobs/{JOB}/outputs/registered_model"


def deploy(backend: AzureMLBackend, world: World, name: str = "green-0001") -> ProvisioningState:
    run_job(backend, world, JobScript(statuses=("Completed",)))
    model = backend.training.register_model(JOB, PREFIX, {})
    backend.serving.begin_create_endpoint("phi3-ft-test", {"created-by": "phi3-finetune-pipeline"})
    backend.serving.begin_create_deployment(
        DeploymentSpec(
            endpoint_name="phi3-ft-test",
            deployment_name=name,
            model=model,
            instance_type="Standard_NC24ads_A100_v4",
            instance_count=1,
            tags={},
        )
    )
    state = ProvisioningState.CREATING
    for _ in range(5):
        state = backend.serving.get_deployment_state("phi3-ft-test", name)
    return state


def test_deployment_probes_wait_for_a_slow_loading_model(aml_world: World, aml_backend: AzureMLBackend):
    """A 3.8 B model takes minutes to load. Was: default probes (10 s + 30 x 10 s), so a deployment
    of a model that loads in 7 minutes failed with ResourceNotReady."""
    aml_world.script_deployment("green-0001", DeploymentScript(load_seconds=420))
    assert deploy(aml_backend, aml_world) is ProvisioningState.SUCCEEDED
    props = aml_world.deployments[(aml_world.workspaces[0], "phi3-ft-test", "green-0001")].body["properties"]
    assert props["livenessProbe"]["initialDelay"] == "PT10M"
    assert props["readinessProbe"]["initialDelay"] == "PT10M"
    assert props["requestSettings"]["requestTimeout"] == "PT1M30S"


def test_probe_settings_come_from_the_app_settings(
    aml_world: World, aml_settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    settings = aml_settings.model_copy(update={"SERVING_PROBE_INITIAL_DELAY_S": 60})
    aml_world.script_deployment("green-0001", DeploymentScript(load_seconds=420))
    assert deploy(AzureMLBackend(settings), aml_world) is ProvisioningState.FAILED


def test_default_serving_sku_is_current_and_allowed_by_the_base_model():
    """Was: Standard_NC6s_v3, retired on 2025-09-30."""
    default = Settings.model_fields["SERVING_INSTANCE_TYPE"].default
    assert default != "Standard_NC6s_v3"
    assert default in PHI3_INFERENCE_SKUS


def preflight(backend: AzureMLBackend, settings: Settings, **changes: object) -> dict[str, tuple[bool, str]]:
    report = backend.checks.preflight(settings.run_config().model_copy(update=changes))
    return {c.name: (c.ok, c.detail) for c in report.checks}


def test_preflight_passes_with_the_defaults(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
):
    """Was: the retired serving SKU is not offered in the region, so preflight failed by default."""
    checks = preflight(aml_backend, aml_settings)
    assert all(ok for ok, _ in checks.values()), checks


def test_preflight_checks_the_serving_sku_against_the_model(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
):
    """Standard_NC4as_T4_v3 is offered in the region but not in the model's inference_compute_allow_list.
    Was: only the training size was checked against the model."""
    ok, detail = preflight(aml_backend, aml_settings, serving_instance_type="Standard_NC4as_T4_v3")[
        "serving_instance"
    ]
    assert not ok
    assert "Standard_NC4as_T4_v3 is not supported by the base model for serving" in detail
    assert "Standard_NC24ads_A100_v4" in detail and "inference_compute_allow_list" in detail


def test_preflight_checks_the_training_sku_against_the_model(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
):
    ok, detail = preflight(aml_backend, aml_settings, training_instance_type="Standard_NC4as_T4_v3")[
        "training_instance"
    ]
    assert not ok and "finetune_compute_allow_list" in detail


def test_the_bare_list_form_of_an_allow_list_tag_is_read(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
):
    model = aml_world.registry_models[PHI3]["15"]
    model["properties"]["tags"]["inference_compute_allow_list"] = (
        "[Standard_NC48ads_A100_v4, Standard_ND96asr_v4]"
    )
    ok, detail = preflight(aml_backend, aml_settings)["serving_instance"]
    assert not ok and "Standard_NC48ads_A100_v4, Standard_ND96asr_v4" in detail


def test_default_endpoint_name_is_unique_per_deployment_of_the_app():
    """Was: every deployment of the app defaulted to phi3-ft-endpoint, but names are unique per region."""
    env = {
        "BACKEND": "azureml",
        "AZURE_SUBSCRIPTION_ID": "s1",
        "AZURE_RESOURCE_GROUP": "rg",
        "AZUREML_WORKSPACE": "w",
    }
    one = Settings(**env).endpoint_name
    assert one == Settings(**env).endpoint_name == default_endpoint_name("s1", "rg", "w")
    assert one != Settings(**{**env, "AZUREML_WORKSPACE": "w2"}).endpoint_name
    assert one != Settings(**{**env, "AZURE_SUBSCRIPTION_ID": "s2"}).endpoint_name
    assert one.startswith("phi3-ft-") and len(one) == 21 and one.replace("-", "").isalnum()
    assert Settings(**env, ENDPOINT_NAME="mine").run_config().endpoint_name == "mine"


def test_preflight_detects_a_name_taken_outside_the_workspace(
    aml_world: World, aml_backend: AzureMLBackend, aml_settings: Settings
):
    """Was: a name not in this workspace passed ('the run creates it'); the PUT then failed after
    the GPU hours of training were spent."""
    aml_world.foreign_endpoints.add("phi3-ft-taken")
    ok, detail = preflight(aml_backend, aml_settings, endpoint_name="phi3-ft-taken")["endpoint_owner"]
    assert not ok
    assert "already taken in eastus2 by another workspace" in detail and "ENDPOINT_NAME" in detail
    ok, _ = preflight(aml_backend, aml_settings, endpoint_name="phi3-ft-free")["endpoint_owner"]
    assert ok


def test_an_evaluation_batch_fits_the_function_timeout_by_construction():
    """Was: 10 examples x 4 attempts x 90 s could run an hour in a 10-minute function."""
    limit = function_timeout_seconds()
    assert limit == 600 == _host_timeout_seconds()
    s = Settings(BACKEND="local")
    assert evaluation_batch_seconds(s.EVAL_BATCH_SIZE, s.EVAL_SCORE_TIMEOUT_S, s.EVAL_SCORE_ATTEMPTS) <= limit
    with pytest.raises(ValidationError, match="longer than the host's functionTimeout"):
        Settings(BACKEND="local", EVAL_BATCH_SIZE=50)
    with pytest.raises(ValidationError, match="EVAL_SCORE_TIMEOUT_S 90"):
        Settings(BACKEND="local", EVAL_SCORE_TIMEOUT_S=90)


def _host_timeout_seconds() -> int:
    hours, minutes, seconds = json.loads(Path(HOST_JSON).read_text())["functionTimeout"].split(":")
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds)


def test_one_scorer_reads_the_key_and_uri_once(aml_world: World, aml_backend: AzureMLBackend):
    """Was: every scored example read the key and the scoring URI again (three ARM calls each)."""
    assert deploy(aml_backend, aml_world) is ProvisioningState.SUCCEEDED
    before = len(aml_world.requests)
    scorer = aml_backend.serving.scorer("phi3-ft-test", timeout_s=5)
    endpoint = f"{aml_world.ws_id(aml_world.workspaces[0])}/onlineEndpoints/phi3-ft-test"
    # The key and URI reads: get_keys GETs the endpoint (auth mode) then listKeys; the URI: GET
    # endpoint + its deployments. (A create poller the SDK left running may GET the deployment
    # meanwhile, when the machine is slow: not a key or URI read, so not counted.)
    key_and_uri = (endpoint, f"{endpoint}/listKeys", f"{endpoint}/deployments")
    reads = [urlsplit(p).path for _, p in aml_world.requests[before:]]
    reads = [p for p in reads if p in key_and_uri]
    assert 0 < len(reads) <= 4, reads
    payload = {"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {}}}
    made = len(aml_world.requests)
    results = [scorer("green-0001", payload) for _ in range(10)]
    assert all(r.ok and r.output == "[green-0001] hi" for r in results)
    after = [urlsplit(path).path for _, path in aml_world.requests[made:]]
    # (the SDK's own create poller may GET the deployment meanwhile: not a key or URI read)
    assert [p for p in after if p in (endpoint, f"{endpoint}/listKeys")] == []
    assert after.count("/inference/eastus2/phi3-ft-test/score") == 10
