"""Plain unit tests of backends/azureml.py's pure helpers: no service, no MLClient, no emulator.

Everything that talks to Azure ML is tested through the real SDK against the emulator
(test_azureml_contract.py, test_azureml_defects.py, beside this file). What is here either computes
something from a value (a status, a URI, a quota row) or needs what the emulator cannot produce;
each test of the second kind says why in its first comment line.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from azure.ai.ml._restclient.arm_ml_service.models import JobStatus as RestJobStatus
from azure.ai.ml._restclient.arm_ml_service.models import Usage as RestUsage
from azure.ai.ml._restclient.arm_ml_service.models import VirtualMachineSize
from azure.ai.ml.entities import Model, Usage, VmSize
from azure.ai.ml.entities._compute._usage import UsageName
from azure.ai.ml.exceptions import ValidationErrorType, ValidationException
from azure.ai.ml.operations._run_history_constants import JobStatus as RunHistoryJobStatus
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

import backends.azureml as azml
from backends.azureml import (
    JOB_STATE_BY_STATUS,
    AzureMLBackend,
    AzureWorkspace,
    build,
    family_key,
    family_usages,
    finetune_allow_list,
    job_state,
    provisioning_state,
    quota_check,
)
from backends.base import ConnectionStore, PreflightBackend, ServingBackend, TrainingBackend
from core.models import JobState, LossHistory, MetricPoint, ProvisioningState
from core.settings import Settings

REGION = "westeurope"
WS = "ws-1"
SUB = "/subscriptions/00000000-0000-0000-0000-000000000000"
WS_PATH = (
    "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.MachineLearningServices/workspaces/ws-1"
)
NCSV3_ROW = "Standard NCSv3 Family Cluster Dedicated vCPUs"
SERVE = "Standard_NC6s_v3"


def settings() -> Settings:
    return Settings(
        BACKEND="azureml", AZURE_SUBSCRIPTION_ID="sub-1", AZURE_RESOURCE_GROUP="rg-1", AZUREML_WORKSPACE=WS
    )


def test_each_concern_implements_its_protocol() -> None:
    backend = build(settings())
    assert isinstance(backend.training, TrainingBackend)
    assert isinstance(backend.serving, ServingBackend)
    assert isinstance(backend.connections, ConnectionStore)
    assert isinstance(backend.checks, PreflightBackend)


# --------------------------------------------------------------------------- status mapping


def test_the_job_state_mapping_covers_every_status_the_sdk_declares() -> None:
    # The installed SDK's two JobStatus enums: a status added to either must be mapped on purpose.
    rest = {s.value for s in RestJobStatus}
    run_history = {v for k, v in vars(RunHistoryJobStatus).items() if k.isupper()}
    assert rest | run_history == set(JOB_STATE_BY_STATUS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("completed", JobState.COMPLETED),
        ("FAILED", JobState.FAILED),
        ("Bogus", JobState.QUEUED),
        (None, JobState.QUEUED),
    ],
)
def test_job_state_reads_any_case_and_an_unknown_status_as_queued(
    raw: str | None, expected: JobState
) -> None:
    assert job_state(raw) is expected


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
def test_provisioning_state_mapping(raw: str | None, expected: ProvisioningState) -> None:
    assert provisioning_state(raw) is expected


# --------------------------------------------------------------------------- MLflow tracking URI


@pytest.mark.parametrize(
    ("uri", "base"),
    [
        (
            f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{WS_PATH}",
            f"https://westeurope.api.azureml.ms/mlflow/v2.0{WS_PATH}",
        ),
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


def test_mlflow_client_for_another_uri_is_a_plain_mlflow_client() -> None:
    from mlflow.tracking import MlflowClient

    client = AzureMLBackend(settings()).training.history.client("http://127.0.0.1:5000")  # no request is made
    assert isinstance(client, MlflowClient)


def test_loss_points_drop_non_finite_values() -> None:
    # The emulator's MLflow routes answer plain JSON: a NaN/inf metric goes out as a bare NaN, which
    # mlflow's protobuf parser refuses (MLflow's protobuf JSON quotes it: "NaN", "Infinity").
    from mlflow.entities import Metric

    logged = [
        Metric("loss", v, timestamp=s, step=s) for s, v in [(1, 2.0), (2, math.nan), (3, math.inf), (4, 1.0)]
    ]
    points = azml._points(logged)
    assert points == [MetricPoint(step=1, value=2.0), MetricPoint(step=4, value=1.0)]
    history = LossHistory(train=points)
    assert LossHistory.model_validate_json(history.model_dump_json()) == history


def test_loss_history_of_a_workspace_without_a_tracking_uri_fails_clearly() -> None:
    # The emulator's workspace always reports mlFlowTrackingUri: a one-call stand-in for workspaces.get.
    workspace = SimpleNamespace(mlflow_tracking_uri=None)
    ml = SimpleNamespace(workspaces=SimpleNamespace(get=lambda name: workspace))
    backend = AzureMLBackend(AzureWorkspace(settings(), ml_client=ml))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="ws-1 reports no MLflow tracking URI"):
        backend.training.loss_history("ft-0123456789abcdef")


# --------------------------------------------------------------------------- preflight: failure classes


def http_error(status: int, reason: str) -> HttpResponseError:
    error = HttpResponseError(message=f"({status}) {reason}")
    error.status_code = status
    error.reason = reason
    return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ResourceNotFoundError(message="model not found"), "not found"),
        (
            ValidationException(
                message="Asset Phi-3-x does not exist in registry azureml.",
                no_personal_data_message="Asset does not exist",
                error_type=ValidationErrorType.RESOURCE_NOT_FOUND,
            ),
            "not found",
        ),
        (http_error(403, "Forbidden"), "HTTP 403: Forbidden"),
        (http_error(503, "Service Unavailable"), None),
        (http_error(429, "Too Many Requests"), None),
        (http_error(408, "Request Timeout"), None),
        (ServiceRequestError("dns"), None),
    ],
    ids=["404", "validation-not-found", "403", "503", "429", "408", "ServiceRequestError"],
)
def test_preflight_fails_a_check_on_a_permanent_fault_and_propagates_a_transient_one(
    error: Exception, reason: str | None
) -> None:
    # The emulator serves a persistent 5xx/429 on one read (test_preflight_persistent_503_on_usages_
    # propagates), but each costs the SDK's 3 s of retries, and it cannot fail a connection.
    assert azml._client_fault(error) == reason


# --------------------------------------------------------------------------- preflight: quota rows


def vm_size(name: str, family: str, vcpus: int, gpus: int = 1) -> VmSize:
    rest = VirtualMachineSize({"name": name, "family": family, "vCPUs": vcpus, "gpus": gpus})
    return VmSize._from_rest_object(rest)


def usage(
    label: str, current: int, limit: int, *, kind: str = "vmFamily/usages", rid: str | None = None
) -> Usage:
    """A `Usage` as azure-ai-ml 1.35 builds it from the REST row (see REST example Usage/list.json)."""
    rest = RestUsage(
        {
            "id": rid or f"{SUB}/usages/{label.replace(' ', '_')}",
            "type": f"Microsoft.MachineLearningServices/{kind}",
            "unit": "Count",
            "currentValue": current,
            "limit": limit,
            "name": {"value": label, "localizedValue": label},
        }
    )
    return Usage._from_rest_object(rest)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("standardNCADSA100v4Family", "ncadsa100v4"),  # VmSize.family (list_sizes)
        ("Standard NCADSA100v4 Family Cluster Dedicated vCPUs", "ncadsa100v4"),  # usage name
        ("Standard NCADSA100v4 Family", "ncadsa100v4"),  # the tutorial's wording
        ("Standard_NCADSA100v4_Family_Cluster_Dedicated_vCPUs", "ncadsa100v4"),  # usage id segment
        ("standard NCASv3_T4 Family", "ncasv3t4"),  # managed endpoints SKU list spelling
        ("Standard NCASv3_T4 Family Cluster Dedicated vCPUs", "ncasv3t4"),
        ("standard NDAMSv4_A100Family", "ndamsv4a100"),
        ("standardNCSv3Family", "ncsv3"),
        ("Standard NC Family Cluster Dedicated vCPUs", "nc"),
        ("Standard NCv3 Family Cluster Dedicated vCPUs", "ncv3"),
    ],
)
def test_family_key(text: str, key: str) -> None:
    assert family_key(text) == key


WS_ROWS = f"{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces"


def test_family_usages_keep_only_this_workspaces_dedicated_rows() -> None:
    # The emulator's usages list has subscription rows only: no workspace, per-compute or low-priority rows.
    rows = [
        usage(NCSV3_ROW, 2, 24),  # subscription-wide: counts
        usage("Standard NC Family Cluster Dedicated vCPUs", 0, 24),  # another family
        usage("Standard NCSv3 Family Cluster LowPriority vCPUs", 0, -1),  # low priority
        usage(NCSV3_ROW, 2, 12, kind="workspaces/usages", rid=f"{WS_ROWS}/{WS}/usages/x"),  # ours: counts
        usage(NCSV3_ROW, 6, 24, kind="workspaces/usages", rid=f"{WS_ROWS}/other-ws/usages/x"),  # not ours
        usage(
            NCSV3_ROW, 2, 24, kind="workspaces/computes/usages", rid=f"{WS_ROWS}/{WS}/computes/c1/usages/x"
        ),
    ]
    found = family_usages(rows, "standardNCSv3Family", WS)
    assert [(u.limit, str(u.type).rsplit("/", 2)[-2]) for u in found] == [
        (24, "vmFamily"),
        (12, "workspaces"),
    ]


def serving_quota(size: VmSize, rows: list[Usage]) -> tuple[bool, str]:
    check = quota_check(
        "serving_quota",
        instance_type=SERVE,
        size=size,
        instances=1,
        serving=True,
        usages=rows,
        region=REGION,
        workspace=WS,
    )
    return check.ok, check.detail


def test_the_tightest_row_binds() -> None:
    # A workspace-level quota row below the subscription's: the emulator serves no workspace rows.
    rows = [
        usage(NCSV3_ROW, 0, 24),
        usage(NCSV3_ROW, 0, 6, kind="workspaces/usages", rid=f"{WS_ROWS}/{WS}/usages/x"),
    ]
    ok, detail = serving_quota(vm_size(SERVE, "standardNCSv3Family", 6), rows)
    assert not ok
    assert "0 of 6 in use, 6 free, 12 needed" in detail


def test_quota_reads_the_documented_attribute_spelling_too() -> None:
    # A later SDK that fills the documented snake_case attributes (1.35 leaves them None and sets the
    # wire names, which the emulator tests exercise): the same answer.
    size = VmSize(name=SERVE, family="standardNCSv3Family", v_cp_us=6, gpus=1)
    row = Usage(current_value=3, limit=24, name=UsageName(value=NCSV3_ROW, localized_value=NCSV3_ROW))
    assert serving_quota(size, [row]) == (
        True,
        f"{NCSV3_ROW} in {REGION}: 21 of 24 vCPUs free, 12 needed for 1 instance(s) of {SERVE} at "
        "6 vCPUs plus the 20 % upgrade reserve of managed online deployments (2 × 6)",
    )


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, None),
        ({"finetune_compute_allow_list": "['Standard_NC24ads_A100_v4']"}, ["Standard_NC24ads_A100_v4"]),
        ({"finetune_compute_allow_list": "not a list"}, None),
        ({"finetune_compute_allow_list": "['*']"}, None),
    ],
)
def test_finetune_allow_list(tags: dict[str, str], expected: list[str] | None) -> None:
    assert finetune_allow_list(Model(name="Phi-3-mini-4k-instruct", version="1", tags=tags)) == expected
    assert finetune_allow_list(None) is None
