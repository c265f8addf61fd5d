"""AzureMLBackend.preflight against recording fakes of the MLClient operations it reads.

What the fakes hand back is built the way azure-ai-ml 1.35 builds it: `VmSize` and `Usage` come
from the REST models through `_from_rest_object` (so they carry the SDK's wire-named attributes,
see `backends.azureml._field`), workspaces, endpoints and models are the real entities. Usage rows
follow the shapes of the REST example `Usage/list.json` (2024-04-01).
"""

from __future__ import annotations

from typing import Any

import pytest
from azure.ai.ml._restclient.arm_ml_service.models import Usage as RestUsage
from azure.ai.ml._restclient.arm_ml_service.models import VirtualMachineSize
from azure.ai.ml.entities import ManagedOnlineEndpoint, Model, Usage, VmSize, Workspace
from azure.ai.ml.exceptions import ValidationErrorType, ValidationException
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

from backends.azureml import (
    AzureMLBackend,
    family_key,
    family_usages,
    finetune_allow_list,
    quota_check,
)
from backends.base import PreflightBackend
from core.models import RunConfig
from core.naming import APP_TAG
from core.settings import Settings

REGION = "westeurope"
WS = "ws-1"
MODEL = "Phi-3-mini-4k-instruct"
ENDPOINT = "phi3-ft-endpoint"
TRAIN = "Standard_NC24ads_A100_v4"
SERVE = "Standard_NC6s_v3"
CHECKS = [
    "base_model",
    "training_instance",
    "training_quota",
    "serving_instance",
    "serving_quota",
    "endpoint_name",
    "endpoint_owner",
]
SUB = "/subscriptions/00000000-0000-0000-0000-000000000000"


# --------------------------------------------------------------------------- fakes


def not_found(what: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(message=f"{what} not found")


def http_error(status: int, reason: str = "Error") -> HttpResponseError:
    error = HttpResponseError(message=f"({status}) {reason}")
    error.status_code = status
    error.reason = reason
    return error


def vm_size(name: str, family: str, vcpus: int, gpus: int = 1) -> VmSize:
    rest = VirtualMachineSize(
        {
            "name": name,
            "family": family,
            "vCPUs": vcpus,
            "gpus": gpus,
            "supportedComputeTypes": ["AmlCompute", "MIR"],
        }
    )
    return VmSize._from_rest_object(rest)


def usage(
    label: str, current: int, limit: int, *, kind: str = "vmFamily/usages", rid: str | None = None
) -> Usage:
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


A100_ROW = "Standard NCADSA100v4 Family Cluster Dedicated vCPUs"
NCSV3_ROW = "Standard NCSv3 Family Cluster Dedicated vCPUs"
TOTAL_ROW = "Total Cluster Dedicated Regional vCPUs"


def default_sizes() -> list[VmSize]:
    return [
        vm_size("Standard_DS3_v2", "standardDSv2Family", 4, gpus=0),
        vm_size(TRAIN, "standardNCADSA100v4Family", 24),
        vm_size(SERVE, "standardNCSv3Family", 6),
        vm_size("Standard_NC4as_T4_v3", "standard NCASv3_T4 Family", 4),
    ]


def default_usages() -> list[Usage]:
    return [
        usage("Clusters", 1, 200, kind="totalCores/usages", rid=f"{SUB}/usages"),
        usage(TOTAL_ROW, 0, 100, kind="dedicatedCores/usages", rid=f"{SUB}/usages"),
        usage(A100_ROW, 0, 24),
        usage(NCSV3_ROW, 0, 24),
        usage("Standard NCSv3 Family Cluster LowPriority vCPUs", 0, -1),
        usage("Total Cluster LowPriority Regional vCPUs", 0, 0, kind="lowPriorityCores/usages"),
    ]


class FakeWorkspaces:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.error: Exception | None = None
        self.location: str | None = REGION

    def get(self, name: str | None = None, **kwargs: Any) -> Workspace:
        assert kwargs == {}
        self.calls.append(str(name))
        if self.error is not None:
            raise self.error
        return Workspace(name=str(name), location=self.location)


class FakeCompute:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.sizes = default_sizes()
        self.usages = default_usages()
        self.sizes_error: Exception | None = None
        self.usage_error: Exception | None = None

    def list_sizes(self, **kwargs: Any) -> list[VmSize]:
        self.calls.append(("list_sizes", kwargs))
        if self.sizes_error is not None:
            raise self.sizes_error
        return list(self.sizes)

    def list_usage(self, **kwargs: Any) -> list[Usage]:
        self.calls.append(("list_usage", kwargs))
        if self.usage_error is not None:
            raise self.usage_error
        return list(self.usages)


class FakeEndpoints:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.store: dict[str, ManagedOnlineEndpoint] = {}
        self.error: Exception | None = None

    def add(self, name: str, tags: dict[str, str] | None) -> None:
        self.store[name] = ManagedOnlineEndpoint(name=name, auth_mode="key", tags=tags)

    def get(self, name: str, **kwargs: Any) -> ManagedOnlineEndpoint:
        assert kwargs == {}
        self.calls.append(name)
        if self.error is not None:
            raise self.error
        if name not in self.store:
            raise not_found(f"endpoint {name}")
        return self.store[name]


class FakeModels:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.store: dict[str, Model] = {}
        self.error: Exception | None = None

    def add(self, version: str, tags: dict[str, str] | None = None) -> None:
        self.store[version] = Model(name=MODEL, version=version, type="mlflow_model", tags=tags or {})

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Model:
        self.calls.append({"name": name, "version": version, "label": label})
        if self.error is not None:
            raise self.error
        if name != MODEL or not self.store:
            raise not_found(f"model {name}")
        if label == "latest":
            return self.store[max(self.store, key=int)]
        if version in self.store:
            return self.store[version]
        raise not_found(f"model {name}:{version}")


class FakeWorkspaceClient:
    def __init__(self) -> None:
        self.workspaces = FakeWorkspaces()
        self.compute = FakeCompute()
        self.online_endpoints = FakeEndpoints()


class FakeRegistryClient:
    def __init__(self) -> None:
        self.models = FakeModels()
        for v in ("5", "7", "9"):
            self.models.add(v)


# --------------------------------------------------------------------------- fixtures


def make_settings() -> Settings:
    return Settings(
        BACKEND="azureml",
        AZURE_SUBSCRIPTION_ID="sub-1",
        AZURE_RESOURCE_GROUP="rg-1",
        AZUREML_WORKSPACE=WS,
        AI_PROJECT_NAME=None,
        AZURE_CLIENT_ID=None,
        AZUREML_DATASTORE=None,
        MODEL_REGISTRY="azureml",
    )


def config(**overrides: Any) -> RunConfig:
    values: dict[str, Any] = {
        "base_model_name": MODEL,
        "base_model_version": None,
        "model_registry": "azureml",
        "training_instance_type": TRAIN,
        "serving_instance_type": SERVE,
        "serving_instance_count": 1,
        "endpoint_name": ENDPOINT,
    }
    values.update(overrides)
    return make_settings().run_config().model_copy(update=values)


@pytest.fixture
def ml() -> FakeWorkspaceClient:
    return FakeWorkspaceClient()


@pytest.fixture
def registry() -> FakeRegistryClient:
    return FakeRegistryClient()


@pytest.fixture
def backend(ml: FakeWorkspaceClient, registry: FakeRegistryClient) -> AzureMLBackend:
    return AzureMLBackend(make_settings(), ml_client=ml, registry_client=registry)  # type: ignore[arg-type]


def check(report: Any, name: str) -> Any:
    (found,) = [c for c in report.checks if c.name == name]
    return found


def failed(report: Any) -> list[str]:
    return [c.name for c in report.checks if not c.ok]


# --------------------------------------------------------------------------- all pass, exact calls


def test_implements_the_preflight_protocol(backend: AzureMLBackend) -> None:
    assert isinstance(backend, PreflightBackend)


def test_all_pass_reads_exactly_what_it_needs(
    backend: AzureMLBackend, ml: FakeWorkspaceClient, registry: FakeRegistryClient
) -> None:
    report = backend.preflight(config())

    assert report.ok, report.reasons
    assert [c.name for c in report.checks] == CHECKS
    assert report.model_version == "9"
    assert report.model_id == f"azureml://registries/azureml/models/{MODEL}/versions/9"
    # Latest is resolved through the registry's label, exactly as submit_finetune does.
    assert registry.models.calls == [{"name": MODEL, "version": None, "label": "latest"}]
    # The region comes from the workspace and is passed explicitly to both compute reads.
    assert ml.workspaces.calls == [WS]
    assert ml.compute.calls == [("list_sizes", {"location": REGION}), ("list_usage", {"location": REGION})]
    assert ml.online_endpoints.calls == [ENDPOINT]
    assert check(report, "training_instance").detail == (
        f"{TRAIN} is available in {REGION} (24 vCPUs, 1 GPU(s), family standardNCADSA100v4Family)"
    )
    assert check(report, "training_quota").detail == (
        f"{A100_ROW} in {REGION}: 24 of 24 vCPUs free, 24 needed for 1 × {TRAIN} at 24 vCPUs"
    )
    assert "12 needed" in check(report, "serving_quota").detail  # 6 vCPUs + the 20 % reserve
    assert check(report, "endpoint_owner").detail == (
        f"endpoint name {ENDPOINT} is free in {REGION} (in {WS} too): the run creates it"
    )


def test_pinned_version_is_read_as_is(backend: AzureMLBackend, registry: FakeRegistryClient) -> None:
    report = backend.preflight(config(base_model_version="7"))
    assert report.ok
    assert registry.models.calls == [{"name": MODEL, "version": "7", "label": None}]
    assert report.model_version == "7"
    assert report.model_id == f"azureml://registries/azureml/models/{MODEL}/versions/7"


def test_instance_types_match_case_insensitively(backend: AzureMLBackend) -> None:
    report = backend.preflight(config(training_instance_type="STANDARD_NC24ADS_A100_V4"))
    assert report.ok, report.reasons


def test_endpoint_created_by_this_app_passes(backend: AzureMLBackend, ml: FakeWorkspaceClient) -> None:
    ml.online_endpoints.add(ENDPOINT, {"created-by": APP_TAG, "instance-id": "ft-1"})
    report = backend.preflight(config())
    assert report.ok
    assert "was created by this app" in check(report, "endpoint_owner").detail


# --------------------------------------------------------------------------- one test per failure reason


def test_base_model_not_found_says_what_was_looked_up(
    backend: AzureMLBackend, registry: FakeRegistryClient
) -> None:
    report = backend.preflight(config(base_model_name="Phi-3-mini-4k-instruct-typo"))
    assert failed(report) == ["base_model"]
    detail = check(report, "base_model").detail
    assert "model Phi-3-mini-4k-instruct-typo (label latest) was not found in registry azureml" in detail
    assert "check BASE_MODEL_NAME" in detail and "set BASE_MODEL_VERSION" in detail
    assert report.model_id is None and report.model_version is None


def test_pinned_version_not_found(backend: AzureMLBackend) -> None:
    report = backend.preflight(config(base_model_version="42"))
    assert failed(report) == ["base_model"]
    detail = check(report, "base_model").detail
    assert f"model {MODEL} version 42 was not found in registry azureml" in detail
    assert "unset BASE_MODEL_VERSION" in detail


def test_latest_label_not_found_as_the_sdk_raises_it(
    backend: AzureMLBackend, registry: FakeRegistryClient
) -> None:
    # ModelOperations.get(label="latest") on a registry raises ValidationException(RESOURCE_NOT_FOUND)
    # from _get_latest (azure/ai/ml/_utils/_asset_utils.py), not ResourceNotFoundError.
    registry.models.error = ValidationException(
        message=f"Asset {MODEL} does not exist in registry azureml.",
        no_personal_data_message="Asset does not exist",
        error_type=ValidationErrorType.RESOURCE_NOT_FOUND,
    )
    report = backend.preflight(config())
    assert failed(report) == ["base_model"]
    assert "was not found in registry azureml" in check(report, "base_model").detail


def test_registry_forbidden_is_a_failed_check(backend: AzureMLBackend, registry: FakeRegistryClient) -> None:
    registry.models.error = http_error(403, "Forbidden")
    report = backend.preflight(config())
    assert failed(report) == ["base_model"]
    assert "could not be read (HTTP 403: Forbidden)" in check(report, "base_model").detail


def test_training_instance_not_in_region(backend: AzureMLBackend) -> None:
    report = backend.preflight(config(training_instance_type="Standard_ND96isr_H100_v5"))
    assert failed(report) == ["training_instance", "training_quota"]
    detail = check(report, "training_instance").detail
    assert f"Standard_ND96isr_H100_v5 is not offered by Azure ML in {REGION}" in detail
    assert "check TRAINING_INSTANCE_TYPE" in detail
    assert f"az ml compute list-sizes --location {REGION}" in detail
    assert "workspace in another region" in detail
    assert check(report, "training_quota").detail.startswith("not checked: Standard_ND96isr_H100_v5")


def test_serving_instance_not_in_region(backend: AzureMLBackend) -> None:
    report = backend.preflight(config(serving_instance_type="Standard_NC6s_v2"))
    assert failed(report) == ["serving_instance", "serving_quota"]
    assert "check SERVING_INSTANCE_TYPE" in check(report, "serving_instance").detail


def test_training_quota_too_small(backend: AzureMLBackend, ml: FakeWorkspaceClient) -> None:
    ml.compute.usages = [u for u in default_usages() if A100_ROW not in str(u.name)]
    ml.compute.usages.append(usage(A100_ROW, 0, 0))
    report = backend.preflight(config())
    assert failed(report) == ["training_quota"]
    detail = check(report, "training_quota").detail
    assert f"{A100_ROW} in {REGION}: 0 of 0 in use, 0 free, 24 needed for 1 × {TRAIN} at 24 vCPUs" in detail
    assert "Azure ML studio" in detail and "Quota" in detail
    assert f"select '{A100_ROW}' → Request quota with a new cores limit of at least 24" in detail


def test_training_quota_partly_used(backend: AzureMLBackend, ml: FakeWorkspaceClient) -> None:
    ml.compute.usages = [u for u in default_usages() if A100_ROW not in str(u.name)]
    ml.compute.usages.append(usage(A100_ROW, 24, 48))
    assert backend.preflight(config()).ok
    ml.compute.usages[-1] = usage(A100_ROW, 25, 48)
    detail = check(backend.preflight(config()), "training_quota").detail
    assert "25 of 48 in use, 23 free, 24 needed" in detail and "at least 49" in detail


def test_serving_quota_counts_instances_and_the_upgrade_reserve(
    backend: AzureMLBackend, ml: FakeWorkspaceClient
) -> None:
    ml.compute.usages = [u for u in default_usages() if NCSV3_ROW not in str(u.name)]
    ml.compute.usages.append(usage(NCSV3_ROW, 0, 12))
    assert backend.preflight(config()).ok  # 1 instance: ceil(1.2) = 2 × 6 = 12

    report = backend.preflight(config(serving_instance_count=2))  # ceil(2.4) = 3 × 6 = 18
    assert failed(report) == ["serving_quota"]
    detail = check(report, "serving_quota").detail
    assert "0 of 12 in use, 12 free, 18 needed" in detail
    assert "2 instance(s) of Standard_NC6s_v3 at 6 vCPUs plus the 20 % upgrade reserve" in detail
    assert f"select '{NCSV3_ROW}' → Request quota with a new cores limit of at least 18" in detail


def test_serving_on_a_reserve_exempt_size_needs_no_extra(
    backend: AzureMLBackend, ml: FakeWorkspaceClient
) -> None:
    # Standard_NC24ads_A100_v4 is marked "Skip 20% Reservation" in the managed endpoints SKU list.
    report = backend.preflight(config(serving_instance_type=TRAIN))
    assert report.ok
    assert "24 needed for 1 × Standard_NC24ads_A100_v4" in check(report, "serving_quota").detail


def test_regional_total_also_binds(backend: AzureMLBackend, ml: FakeWorkspaceClient) -> None:
    ml.compute.usages = [u for u in default_usages() if TOTAL_ROW not in str(u.name)]
    ml.compute.usages.append(usage(TOTAL_ROW, 90, 100, kind="dedicatedCores/usages", rid=f"{SUB}/usages"))
    report = backend.preflight(config())
    assert failed(report) == ["training_quota", "serving_quota"]
    detail = check(report, "training_quota").detail
    assert f"{TOTAL_ROW} in {REGION}: 90 of 100 in use, 10 free, 24 needed" in detail
    assert "at least 114" in detail


def test_family_without_quota_row(backend: AzureMLBackend, ml: FakeWorkspaceClient) -> None:
    ml.compute.usages = [u for u in default_usages() if A100_ROW not in str(u.name)]
    report = backend.preflight(config())
    assert failed(report) == ["training_quota"]
    detail = check(report, "training_quota").detail
    assert (
        f"no dedicated vCPU quota for the standardNCADSA100v4Family family (of {TRAIN}) in {REGION}" in detail
    )
    assert f"select '{A100_ROW}' → Request quota with a new cores limit of at least 24" in detail


def test_finetune_allow_list_of_the_base_model(backend: AzureMLBackend, registry: FakeRegistryClient) -> None:
    registry.models.add(
        "10", {"finetune_compute_allow_list": "['Standard_NC24ads_A100_v4', 'Standard_ND96asr_v4']"}
    )
    assert backend.preflight(config()).ok
    report = backend.preflight(config(training_instance_type="Standard_DS3_v2"))
    assert "training_instance" in failed(report)
    detail = check(report, "training_instance").detail
    assert "for fine-tuning; it supports Standard_NC24ads_A100_v4, Standard_ND96asr_v4" in detail
    assert "set TRAINING_INSTANCE_TYPE to one of them" in detail


def test_invalid_endpoint_name_is_not_looked_up(backend: AzureMLBackend, ml: FakeWorkspaceClient) -> None:
    report = backend.preflight(config(endpoint_name="9-bad_name-"))
    assert failed(report) == ["endpoint_name", "endpoint_owner"]
    assert "is not a valid online endpoint name" in check(report, "endpoint_name").detail
    assert check(report, "endpoint_owner").detail.startswith("not checked")
    assert ml.online_endpoints.calls == []


@pytest.mark.parametrize(
    ("tags", "owner"),
    [(None, "none"), ({"created-by": "someone-else"}, "someone-else"), ({"team": "x"}, "none")],
)
def test_endpoint_not_created_by_this_app(
    backend: AzureMLBackend, ml: FakeWorkspaceClient, tags: dict[str, str] | None, owner: str
) -> None:
    ml.online_endpoints.add(ENDPOINT, tags)
    report = backend.preflight(config())
    assert failed(report) == ["endpoint_owner"]
    assert check(report, "endpoint_owner").detail == (
        f"endpoint {ENDPOINT} exists and was not created by this app; choose another ENDPOINT_NAME or tag it "
        f"created-by={APP_TAG} if it is yours (its created-by tag: {owner})"
    )


def test_unreadable_workspace_fails_the_compute_checks_only(
    backend: AzureMLBackend, ml: FakeWorkspaceClient
) -> None:
    ml.workspaces.error = not_found(f"workspace {WS}")
    report = backend.preflight(config())
    compute = ["training_instance", "training_quota", "serving_instance", "serving_quota"]
    assert failed(report) == [*compute, "endpoint_owner"]  # the name's region is unknown too
    detail = check(report, "serving_quota").detail
    assert f"not checked: workspace {WS} in resource group rg-1 could not be read (not found)" in detail
    assert "AZUREML_WORKSPACE" in detail
    assert ml.compute.calls == []
    assert ml.online_endpoints.calls == [ENDPOINT]  # the remaining checks still ran


def test_forbidden_usage_fails_the_quota_checks_only(
    backend: AzureMLBackend, ml: FakeWorkspaceClient
) -> None:
    ml.compute.usage_error = http_error(403, "Forbidden")
    report = backend.preflight(config())
    assert failed(report) == ["training_quota", "serving_quota"]
    assert check(report, "training_quota").detail == (
        f"could not read the Azure ML quota usage of {REGION} (HTTP 403: Forbidden)"
    )


def test_all_checks_run_when_the_first_fails(
    backend: AzureMLBackend, ml: FakeWorkspaceClient, registry: FakeRegistryClient
) -> None:
    registry.models.store.clear()
    ml.compute.usages = []
    ml.online_endpoints.add(ENDPOINT, {"created-by": "someone-else"})
    report = backend.preflight(config(serving_instance_type="Standard_Unknown"))

    assert [c.name for c in report.checks] == CHECKS
    assert failed(report) == [
        "base_model",
        "training_quota",
        "serving_instance",
        "serving_quota",
        "endpoint_owner",
    ]
    assert len(report.reasons) == 5
    assert ml.workspaces.calls == [WS]
    assert [c for c, _ in ml.compute.calls] == ["list_sizes", "list_usage"]
    assert ml.online_endpoints.calls == [ENDPOINT]


# --------------------------------------------------------------------------- transient faults propagate


@pytest.mark.parametrize(
    "error",
    [
        http_error(503, "Service Unavailable"),
        http_error(429, "Too Many Requests"),
        ServiceRequestError("dns"),
    ],
    ids=["503", "429", "ServiceRequestError"],
)
@pytest.mark.parametrize("where", ["registry", "workspace", "sizes", "usage", "endpoint"])
def test_transient_faults_propagate(
    backend: AzureMLBackend,
    ml: FakeWorkspaceClient,
    registry: FakeRegistryClient,
    where: str,
    error: Exception,
) -> None:
    if where == "registry":
        registry.models.error = error
    elif where == "workspace":
        ml.workspaces.error = error
    elif where == "sizes":
        ml.compute.sizes_error = error
    elif where == "usage":
        ml.compute.usage_error = error
    else:
        ml.online_endpoints.error = error
    with pytest.raises(type(error)):
        backend.preflight(config())


# --------------------------------------------------------------------------- family matching


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


def test_family_usages_keep_only_this_workspaces_dedicated_rows() -> None:
    ws_row = f"{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces"
    rows = [
        usage(NCSV3_ROW, 2, 24),  # subscription-wide: counts
        usage("Standard NC Family Cluster Dedicated vCPUs", 0, 24),  # another family
        usage("Standard NCSv3 Family Cluster LowPriority vCPUs", 0, -1),  # low priority
        usage(NCSV3_ROW, 2, 12, kind="workspaces/usages", rid=f"{ws_row}/{WS}/usages/x"),  # ours: counts
        usage(NCSV3_ROW, 6, 24, kind="workspaces/usages", rid=f"{ws_row}/other-ws/usages/x"),  # not ours
        usage(NCSV3_ROW, 2, 24, kind="workspaces/computes/usages", rid=f"{ws_row}/{WS}/computes/c1/usages/x"),
    ]
    found = family_usages(rows, "standardNCSv3Family", WS)
    assert [(u.limit, str(u.type).rsplit("/", 2)[-2]) for u in found] == [
        (24, "vmFamily"),
        (12, "workspaces"),
    ]


def test_the_tightest_row_binds() -> None:
    ws_row = f"{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{WS}/usages/x"
    rows = [usage(NCSV3_ROW, 0, 24), usage(NCSV3_ROW, 0, 6, kind="workspaces/usages", rid=ws_row)]
    result = quota_check(
        "serving_quota",
        instance_type=SERVE,
        size=vm_size(SERVE, "standardNCSv3Family", 6),
        instances=1,
        serving=True,
        usages=rows,
        region=REGION,
        workspace=WS,
    )
    assert not result.ok
    assert "0 of 6 in use, 6 free, 12 needed" in result.detail


def test_negative_limit_means_no_limit() -> None:
    result = quota_check(
        "training_quota",
        instance_type=TRAIN,
        size=vm_size(TRAIN, "standardNCADSA100v4Family", 24),
        instances=1,
        serving=False,
        usages=[usage(A100_ROW, 48, -1)],
        region=REGION,
        workspace=WS,
    )
    assert result.ok
    assert result.detail.startswith("no vCPU limit on the standardNCADSA100v4Family family")


def test_reads_the_sdk_shapes_either_way() -> None:
    # azure-ai-ml 1.35: `_from_rest_object` leaves v_cp_us/current_value None and sets the wire names.
    sdk_size = vm_size(SERVE, "standardNCSv3Family", 6)
    sdk_usage = usage(NCSV3_ROW, 3, 24)
    assert sdk_size.v_cp_us is None and sdk_size.__dict__["vCPUs"] == 6
    assert sdk_usage.current_value is None and sdk_usage.__dict__["currentValue"] == 3
    # The documented attribute spelling (a fixed SDK) gives the same answer.
    from azure.ai.ml.entities._compute._usage import UsageName

    fixed_size = VmSize(name=SERVE, family="standardNCSv3Family", v_cp_us=6, gpus=1)
    fixed_usage = Usage(current_value=3, limit=24, name=UsageName(value=NCSV3_ROW, localized_value=NCSV3_ROW))
    for size, row in ((sdk_size, sdk_usage), (fixed_size, fixed_usage)):
        result = quota_check(
            "serving_quota",
            instance_type=SERVE,
            size=size,
            instances=1,
            serving=True,
            usages=[row],
            region=REGION,
            workspace=WS,
        )
        assert result.ok
        assert result.detail == (
            f"{NCSV3_ROW} in {REGION}: 21 of 24 vCPUs free, 12 needed for 1 instance(s) of {SERVE} at "
            "6 vCPUs plus the 20 % upgrade reserve of managed online deployments (2 × 6)"
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
    assert finetune_allow_list(Model(name=MODEL, version="1", tags=tags)) == expected
    assert finetune_allow_list(None) is None
