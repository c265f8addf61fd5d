"""Azure ML backend: fine-tuning, model registry, managed online endpoints, Prompt flow connection.

The ONLY module in the project that imports `azure.ai.ml`. It implements `TrainingBackend`,
`ServingBackend`, `ConnectionStore` and `PreflightBackend` (backends/base.py) against azure-ai-ml 1.35.

Rules kept here:
- Every call that starts long work (job submit, endpoint/deployment create, deployment delete,
  job cancel) returns without waiting on the poller; the orchestrator polls with durable timers.
- Idempotent by name: submit by job name, create-if-missing, delete-if-present, register once per job.
- Transient azure-core errors (HttpResponseError 5xx, ServiceRequestError, ...) propagate: the
  orchestrator retries activities.
- Endpoint keys are read inside `score` and `publish_connection`, registered with `core.redact`,
  never logged, returned or put in an exception message.
- Loss curves come from the workspace's MLflow service (`loss_history`) through mlflow-skinny's own
  RestStore and an AAD token from the backend's credential, not the azureml-mlflow plugin (whose
  pins clash with requirements.txt); `mlflow` is imported there and only there.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from azure.ai.ml import MLClient
from azure.ai.ml._restclient.arm_ml_service.models import (
    CustomKeys as RestCustomKeys,
)
from azure.ai.ml._restclient.arm_ml_service.models import (
    CustomKeysWorkspaceConnectionProperties as RestCustomKeysConnectionProperties,
)
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import (
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    OnlineDeployment,
    OnlineEndpoint,
    OnlineRequestSettings,
    ProbeSettings,
    WorkspaceConnection,
)
from azure.ai.ml.exceptions import ValidationErrorType, ValidationException
from azure.ai.ml.finetuning import FineTuningTaskType, create_finetuning_job
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from core import redact
from core.models import (
    BlobRef,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    FineTuneSpec,
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
from core.preflight import PreflightCheck, PreflightReport, endpoint_name_check
from core.scoring import Scorer, post_score
from core.settings import Settings

log = logging.getLogger(__name__)

# Azure ML job status (azure/ai/ml/_restclient/arm_ml_service/models/_enums.py `JobStatus`, and
# azure/ai/ml/operations/_run_history_constants.py `JobStatus`) -> our JobState.
# CancelRequested is not terminal yet: the job still holds compute until it reaches Canceled.
# NotResponding is in the SDK's TERMINAL_STATUSES and is treated as a failure.
JOB_STATE_BY_STATUS: dict[str, JobState] = {
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
_JOB_STATE_CI = {k.lower(): v for k, v in JOB_STATE_BY_STATUS.items()}

# Endpoint (EndpointProvisioningState) and deployment (DeploymentProvisioningState) states,
# compared case-insensitively; anything unknown counts as still creating.
PROVISIONING_STATE_BY_STATUS: dict[str, ProvisioningState] = {
    "creating": ProvisioningState.CREATING,
    "updating": ProvisioningState.UPDATING,
    "scaling": ProvisioningState.UPDATING,
    "succeeded": ProvisioningState.SUCCEEDED,
    "failed": ProvisioningState.FAILED,
    "deleting": ProvisioningState.DELETING,
    "canceled": ProvisioningState.CANCELED,
    "cancelled": ProvisioningState.CANCELED,
}

# The fine-tuning job's auto-registered model output (azure/ai/ml/finetuning/_create_job.py:45).
REGISTERED_MODEL_OUTPUT = "registered_model"
# Lineage tag put on every model this backend registers or adopts; also how a retry finds it.
JOB_TAG = "job_name"
SCORE_TIMEOUT_S = 90.0
ENDPOINT_PROBE_TIMEOUT_S = 10.0
MAX_ERROR_CHARS = 300
# Metadata that makes Prompt flow read a CustomKeys workspace connection as a `CustomConnection`.
PROMPTFLOW_CONNECTION_TYPE = {
    "azureml.flow.connection_type": "Custom",
    "azureml.flow.module": "promptflow.connections",
}

# ---------------------------------------------------------------------------- loss history (MLflow)

# Metric names, first present wins (per run): Hugging Face Trainer logs `loss` every logging step and
# `train_loss` once at the end; the offline trainer logs `train_loss` per step; eval is `eval_loss`.
TRAIN_LOSS_METRICS = ("train_loss", "loss")
VALIDATION_LOSS_METRICS = ("eval_loss", "validation_loss", "val_loss")
# Azure ML tags every run of a pipeline job (steps, and steps of nested sub-pipelines) with
# `mlflow.rootRunId` = the top-level job name (the job's own MLflow run id); `mlflow.parentRunId`
# only names the direct parent, which for a step inside a sub-pipeline is not the job.
ROOT_RUN_TAG = "mlflow.rootRunId"
MLFLOW_PAGE_SIZE = 1000  # MlflowClient.search_runs default (SEARCH_MAX_RESULTS_DEFAULT)
# MLflow's error code for a run (or experiment) that does not exist (databricks_pb2.ErrorCode).
_MLFLOW_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
# Azure ML job names: letters, digits, '-' and '_' (safe to quote in an MLflow filter string).
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class MlflowTrackingClient(Protocol):
    """The part of `mlflow.tracking.MlflowClient` (mlflow 2.x/3.x) that `loss_history` uses."""

    def get_run(self, run_id: str) -> Any: ...

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        *,
        max_results: int = MLFLOW_PAGE_SIZE,
        page_token: str | None = None,
    ) -> Any: ...

    def get_metric_history(self, run_id: str, key: str) -> Any: ...


def _mlflow_not_found(exc: BaseException) -> bool:
    """An `MlflowException` saying the run does not exist (duck-typed: mlflow is imported lazily)."""
    return getattr(exc, "error_code", None) == _MLFLOW_NOT_FOUND


# The workspace's MLflow REST service, as azureml-mlflow 1.62 reaches it
# (AzureMLAbstractRestStore.get_host_credentials, azureml/mlflow/_store/azureml_reststore.py:45-78):
# "https://" + the tracking URI's host + "/mlflow/v2.0" (its choice for MLflow 2.x and 3.x clients; the
# "/mlflow/v1.0" the workspace reports is the MLflow 1.x API) + the workspace's ARM id, under which
# RestStore appends "/api/2.0/mlflow/<endpoint>". The bearer token is an ARM token: the plugin asks for
# the cloud's resource manager + "/.default" (_common/_cloud/cloud.py:63-64; AzureCloud:
# https://management.azure.com/), the scope of Azure/azureml-examples' using_mlflow_rest_api notebook.
AZUREML_MLFLOW_API = "/mlflow/v2.0"
_MLFLOW_REST_BASE = re.compile(r"https?://\S*?/api/2\.0/mlflow/")
_AZUREML_TRACKING_PATH = re.compile(
    r"^/mlflow/v[0-9.]+/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)/?$",
    re.IGNORECASE,
)
_T = TypeVar("_T")


def azureml_tracking_base(tracking_uri: str) -> str:
    """The https REST base of a workspace's `azureml://` MLflow tracking URI; any other URI unchanged.

    `azureml://<host>/mlflow/v1.0/subscriptions/<sub>/resourceGroups/<rg>/providers/
    Microsoft.MachineLearningServices/workspaces/<ws>[?...]` becomes `https://<host>` +
    AZUREML_MLFLOW_API + `/subscriptions/<sub>/.../workspaces/<ws>` (the query, e.g. a bare "?", is
    dropped). ValueError for an `azureml://` URI that names no workspace (an artifact or registry URI).
    """
    parts = urlsplit(tracking_uri)
    if parts.scheme.lower() != "azureml":
        return tracking_uri
    match = _AZUREML_TRACKING_PATH.match(parts.path)
    if not parts.hostname or match is None:
        raise ValueError(f"not an Azure ML workspace tracking URI: azureml://{parts.netloc}{parts.path}")
    return (
        f"https://{parts.netloc}{AZUREML_MLFLOW_API}/subscriptions/{match['sub']}"
        f"/resourceGroups/{match['rg']}/providers/Microsoft.MachineLearningServices/workspaces/{match['ws']}"
    )


def arm_scope() -> str:
    """The ARM token scope of the current cloud: its resource manager + "/.default", resolved as
    azure-ai-ml resolves it for its own ARM calls (AZUREML_CURRENT_CLOUD, or the cloud ARM's
    metadata names; AzureCloud: https://management.azure.com/), not AzureCloud's hard-coded."""
    from azure.ai.ml._azure_environments import _get_base_url_from_metadata, _resource_to_scopes

    return _resource_to_scopes(_get_base_url_from_metadata())[0]


class AzureMLHostCreds:
    """RestStore's `get_host_creds` for the workspace: the REST base and a fresh AAD token.

    RestStore calls it once per request, so an expired token is never reused (azure-identity
    credentials cache the token and renew it shortly before it expires). The token is registered
    with core.redact and kept nowhere here: not in an attribute, a log line or the repr.
    """

    def __init__(self, host: str, credential: Any) -> None:
        self.host = host
        self._credential = credential

    def __call__(self) -> Any:
        from mlflow.utils.rest_utils import MlflowHostCreds

        token = self._credential.get_token(arm_scope()).token
        redact.remember(token)
        return MlflowHostCreds(host=self.host, token=token)

    def __repr__(self) -> str:
        return f"AzureMLHostCreds(host={self.host!r})"


def _rest_store_client(base: str, get_host_creds: Callable[[], Any]) -> MlflowTrackingClient:
    """An `MlflowClient` whose tracking store is mlflow's own RestStore on `get_host_creds`.

    MlflowClient resolves its store from the URI scheme on every call (TrackingServiceClient.store
    -> the tracking-store registry); no store for "azureml" exists without the plugin, and the
    "https" one reads a static token from the environment. So the client is built for the https
    base (no request is made) and its TrackingServiceClient is swapped for one whose `store` is ours:
    per client, with no global registry entry (that one would be cached per URI for the process and
    would shadow an installed azureml-mlflow). Pinned by the local-server test.
    """
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    store = RestStore(get_host_creds)

    class _RestTrackingService(TrackingServiceClient):
        @property
        def store(self) -> Any:
            return store

    client = MlflowClient(tracking_uri=base)
    client._tracking_client = _RestTrackingService(base)
    return _ScrubbedMlflowClient(client)


def _scrubbed_error(exc: Exception) -> Exception:
    """A fresh exception saying what `exc` says, scrubbed (core.redact) and capped; an
    MlflowException keeps its error code, so "run not found" still reads as such."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    # mlflow's message opens with the ~200-character workspace REST URL and ends with why: the URL
    # is cut to its MLflow route, and a message still too long loses its middle, not its cause.
    message = redact.shorten(
        _MLFLOW_REST_BASE.sub("workspace MLflow /", str(exc)), MAX_ERROR_CHARS, keep_end=True
    )
    if isinstance(exc, MlflowException):
        try:
            code = ErrorCode.Value(exc.error_code)
        except ValueError:
            code = ErrorCode.Value("INTERNAL_ERROR")
        return MlflowException(message, error_code=code)
    if isinstance(exc, OSError):  # requests' RequestException, socket errors
        return ConnectionError(f"MLflow tracking server unreachable: {message}")
    return RuntimeError(f"{type(exc).__name__}: {message}")


def _scrubbed_call(call: Callable[[], _T]) -> _T:
    """`call()`, re-raising a failure as `_scrubbed_error` outside the `except` block: mlflow raises
    a failed request's MlflowException inside its own `except` (rest_utils.http_request), so that
    exception's context is the `requests` error whose PreparedRequest holds the Authorization header."""
    try:
        return call()
    except Exception as e:
        error = _scrubbed_error(e)
    raise error


class _ScrubbedMlflowClient:
    """The MlflowTrackingClient reads of an MlflowClient, failures scrubbed (`_scrubbed_call`)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def get_run(self, run_id: str) -> Any:
        return _scrubbed_call(lambda: self._client.get_run(run_id))

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        *,
        max_results: int = MLFLOW_PAGE_SIZE,
        page_token: str | None = None,
    ) -> Any:
        return _scrubbed_call(
            lambda: self._client.search_runs(
                experiment_ids, filter_string, max_results=max_results, page_token=page_token
            )
        )

    def get_metric_history(self, run_id: str, key: str) -> Any:
        return _scrubbed_call(lambda: self._client.get_metric_history(run_id, key))


def _points(history: Iterable[Any]) -> list[MetricPoint]:
    """MLflow `Metric`s as points sorted by step (then logging time). Non-finite values are dropped:
    a NaN/inf loss would serialise as JSON null and no longer validate as a float."""
    rows = [
        (int(m.step or 0), int(getattr(m, "timestamp", 0) or 0), float(m.value))
        for m in history
        if m.value is not None and math.isfinite(float(m.value))
    ]
    rows.sort(key=lambda r: (r[0], r[1]))
    return [MetricPoint(step=step, value=value) for step, _, value in rows]


def _str_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (tags or {}).items() if v is not None}


def _version_key(version: str) -> tuple[int, int, str]:
    """Sort model versions numerically when they are numbers ("2" before "10"), else by text."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def enum_value(raw: Any) -> str:
    """The wire value of an SDK field that may be an enum: azure-ai-ml returns `JobStatus`,
    provisioning states and the like as `(str, Enum)` members, whose `str()` on Python 3.11 is
    "JobStatus.COMPLETED", not "Completed". None -> ""."""
    if raw is None:
        return ""
    return str(getattr(raw, "value", raw))


def job_state(raw_status: Any) -> JobState:
    """Map an Azure ML job status (string or SDK enum) to our JobState; unknown or missing -> QUEUED."""
    return _JOB_STATE_CI.get(enum_value(raw_status).lower(), JobState.QUEUED)


def provisioning_state(raw: Any) -> ProvisioningState:
    """Map an endpoint/deployment provisioning state (any case, string or enum) to ours;
    unknown -> CREATING."""
    return PROVISIONING_STATE_BY_STATUS.get(enum_value(raw).lower(), ProvisioningState.CREATING)


def _task_type(task: str) -> str:
    """Canonical FineTuningTaskType value for `task` (case-insensitive), else ValueError."""
    values = {
        v.lower(): v
        for k, v in vars(FineTuningTaskType).items()
        if not k.startswith("_") and isinstance(v, str)
    }
    try:
        return values[task.lower()]
    except KeyError:
        raise ValueError(
            f"unknown fine-tuning task {task!r}; expected one of {sorted(values.values())}"
        ) from None


# ---------------------------------------------------------------------------- preflight helpers

# How a person raises a VM-family quota: the seed tutorial's steps (Azure ML studio → Quota → the
# "<family> Cluster Dedicated vCPUs" row → Request quota → New cores limit → Submit).
QUOTA_HOWTO = (
    "request more in Azure ML studio (https://ml.azure.com) → Quota → select '{usage}' → "
    "Request quota with a new cores limit of at least {limit}, then start the run again"
)
# Managed online deployments draw on the same Azure ML dedicated VM-family quota as training and
# hold 20 % extra for upgrades: ceil(1.2 × instances) × vCPUs of the size must be free (Azure ML
# docs, how-to-manage-quotas: "Virtual machine quota allocation for deployment"), except for the
# sizes the "Managed online endpoints SKU list" marks "Skip 20% Reservation" (listed here).
RESERVE_EXEMPT_SIZES = frozenset(
    {
        "standard_nc24ads_a100_v4",
        "standard_nc48ads_a100_v4",
        "standard_nc96ads_a100_v4",
        "standard_nc40ads_h100_v5",
        "standard_nc80adis_h100_v5",
        "standard_nd96amsr_a100_v4",
        "standard_nd96asr_v4",
        "standard_nd40rs_v2",
        "standard_nd96is_h100_v5",
        "standard_nd96isr_h100_v5",
    }
)
# Model tag by which the azureml registry lists the VM sizes fine-tuning of a foundation model
# supports (a Python-literal list of size names; the Phi-3 cookbook reads it the same way).
FINETUNE_ALLOW_LIST_TAG = "finetune_compute_allow_list"
# ... and the sizes it can be served on (the same tag family; Azure/azureml-assets spec.yaml).
INFERENCE_ALLOW_LIST_TAG = "inference_compute_allow_list"
# 4xx answers that are worth retrying (the activity retry policy does it): not check failures.
_RETRYABLE_4XX = frozenset({408, 429})
_DEDICATED_SUFFIX = "clusterdedicatedvcpus"
_TOTAL_DEDICATED = "totalclusterdedicatedregionalvcpus"
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_VM_SIZE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _field(obj: Any, *names: str) -> Any:
    """The first of `names` that `obj` has (attribute or mapping key) with a value, else None.

    azure-ai-ml 1.35 builds `VmSize` and `Usage` with `__dict__.update(rest.as_dict())`
    (entities/_compute/_vm_size.py:72, entities/_compute/_usage.py:70), and the REST models'
    `as_dict()` uses the wire names: the documented snake_case attributes stay None while the
    values sit under `vCPUs`, `currentValue`, `supportedComputeTypes`, and `name` is a plain dict
    `{"value", "localizedValue"}`. Reading both spellings stays right if a later SDK fixes this.
    """
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _flat(text: str) -> str:
    return _NON_ALNUM.sub("", text.lower())


def family_key(text: str) -> str:
    """The VM family a size family or a quota (usage) name refers to, normalised for comparison.

    Rule: lower-case and keep only letters and digits; then drop a trailing
    "clusterdedicatedvcpus" (usage names), a trailing "family" and a leading "standard".
    The size family "standardNCADSA100v4Family" (`list_sizes`), the usage name "Standard
    NCADSA100v4 Family Cluster Dedicated vCPUs" (`list_usage`) and the tutorial's "Standard
    NCADSA100v4 Family" all become "ncadsa100v4"; "standard NCASv3_T4 Family" and "Standard
    NCASv3_T4 Family Cluster Dedicated vCPUs" become "ncasv3t4". Keys are compared whole, so
    related families stay apart ("nc", "ncv3", "ncsv3").
    """
    key = _flat(text).removesuffix(_DEDICATED_SUFFIX).removesuffix("family")
    return key.removeprefix("standard")


def _usage_names(usage: Any) -> list[str]:
    """The usage's name and localised name (`name` is a dict or a `UsageName`)."""
    name = _field(usage, "name")
    if name is None:
        return []
    if isinstance(name, str):
        return [name]
    values = (_field(name, "value"), _field(name, "localized_value", "localizedValue"))
    return [str(v) for v in values if v]


def _usage_label(usage: Any) -> str:
    names = _usage_names(usage)
    return names[-1] if names else "?"


def _usage_in_scope(usage: Any, workspace: str) -> bool:
    """Subscription-wide rows and this workspace's rows count; per-compute rows (a breakdown of the
    same usage) and other workspaces' rows do not (see the REST example Usage/list.json)."""
    kind = str(_field(usage, "type") or "").lower()
    rid = str(_field(usage, "id") or "").lower()
    if "/computes" in kind or "/computes/" in rid:
        return False
    if "/workspaces/" in rid:
        return f"/workspaces/{workspace.lower()}/" in rid
    return True


def _dedicated(usage: Any) -> bool:
    return not any("lowpriority" in _flat(n) or "spot" in _flat(n) for n in _usage_names(usage))


def family_usages(usages: Iterable[Any], family: str, workspace: str) -> list[Any]:
    """The dedicated-vCPU quota rows of `family` that bind this workspace (see `family_key`)."""
    want = family_key(family)
    if not want:
        return []
    return [
        u
        for u in usages
        if _dedicated(u)
        and _usage_in_scope(u, workspace)
        and any(family_key(n) == want for n in _usage_names(u))
    ]


def total_usages(usages: Iterable[Any], workspace: str) -> list[Any]:
    """The "Total Cluster Dedicated Regional vCPUs" rows: the regional cap across all families."""
    return [
        u
        for u in usages
        if _usage_in_scope(u, workspace) and any(_flat(n) == _TOTAL_DEDICATED for n in _usage_names(u))
    ]


def quota_check(
    name: str,
    *,
    instance_type: str,
    size: Any,
    instances: int,
    serving: bool,
    usages: list[Any],
    region: str,
    workspace: str,
) -> PreflightCheck:
    """Does the dedicated vCPU quota (usage vs limit) of the size's family, and the regional total,
    leave room for `instances` of `instance_type`? A negative limit means "no limit"."""
    vcpus = _as_int(_field(size, "v_cp_us", "vCPUs"))
    family = str(_field(size, "family") or "")
    if not vcpus or not family:
        return PreflightCheck(
            name=name,
            ok=False,
            detail=f"Azure ML reports no vCPU count or VM family for {instance_type} in {region}: "
            "quota cannot be checked; pick another instance type",
        )
    counted = instances
    basis = f"{instances} × {instance_type} at {vcpus} vCPUs"
    if serving and instance_type.lower() not in RESERVE_EXEMPT_SIZES:
        counted = -(-instances * 6 // 5)  # ceil(1.2 × instances), in integers
        basis = (
            f"{instances} instance(s) of {instance_type} at {vcpus} vCPUs plus the 20 % upgrade reserve of "
            f"managed online deployments ({counted} × {vcpus})"
        )
    needed = counted * vcpus

    rows = family_usages(usages, family, workspace)
    if not rows:
        core = re.sub(r"(?i)^\s*standard|family\s*$", "", family).strip(" _")
        usage = f"Standard {core} Family Cluster Dedicated vCPUs"  # as Azure ML studio's Quota page names it
        return PreflightCheck(
            name=name,
            ok=False,
            detail=f"no dedicated vCPU quota for the {family} family (of {instance_type}) in {region}; "
            f"{needed} vCPUs needed for {basis}: " + QUOTA_HOWTO.format(usage=usage, limit=needed),
        )

    short: list[str] = []
    tightest: tuple[int, int, int, str] | None = None  # (free, current, limit, label)
    for row in [*rows, *total_usages(usages, workspace)]:
        limit = _as_int(_field(row, "limit"))
        current = _as_int(_field(row, "current_value", "currentValue")) or 0
        if limit is None or limit < 0:
            continue
        free = limit - current
        label = _usage_label(row)
        if tightest is None or free < tightest[0]:
            tightest = (free, current, limit, label)
        if free < needed:
            short.append(
                f"{label} in {region}: {current} of {limit} in use, {max(free, 0)} free, {needed} needed "
                f"for {basis}; " + QUOTA_HOWTO.format(usage=label, limit=current + needed)
            )
    if short:
        return PreflightCheck(name=name, ok=False, detail="; also ".join(dict.fromkeys(short)))
    if tightest is None:
        return PreflightCheck(
            name=name, ok=True, detail=f"no vCPU limit on the {family} family in {region} ({basis})"
        )
    free, current, limit, label = tightest
    return PreflightCheck(
        name=name,
        ok=True,
        detail=f"{label} in {region}: {free} of {limit} vCPUs free, {needed} needed for {basis}",
    )


def allow_list(model: Any, tag: str) -> list[str] | None:
    """The VM sizes a registry model's `tag` (FINETUNE_ALLOW_LIST_TAG or INFERENCE_ALLOW_LIST_TAG)
    allows, or None if it does not say. The service returns the list as a Python-literal string
    ("['Standard_NC24ads_A100_v4', ...]", read with ast.literal_eval as the Phi-3 cookbook does);
    the bare form of the asset's spec.yaml ("[Standard_NC24ads_A100_v4, ...]") is read too."""
    raw = (getattr(model, "tags", None) or {}).get(tag)
    if not raw:
        return None
    items: Any = raw
    if isinstance(raw, str):
        try:
            items = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            bare = raw.strip()
            if not (bare.startswith("[") and bare.endswith("]")):
                return None
            items = [part.strip(" '\"") for part in bare[1:-1].split(",")]
            if not all(_VM_SIZE.match(i) for i in items):
                return None
    if not isinstance(items, list | tuple):
        return None
    names = [i for i in items if isinstance(i, str) and i]
    return None if not names or "*" in names else names


def finetune_allow_list(model: Any) -> list[str] | None:
    """The VM sizes the registry says fine-tuning of `model` supports, or None if it does not say."""
    return allow_list(model, FINETUNE_ALLOW_LIST_TAG)


def _instance_check(
    name: str,
    *,
    instance_type: str,
    size: Any,
    region: str,
    workspace: str,
    setting: str,
    allow: list[str] | None = None,
) -> PreflightCheck:
    """Is `instance_type` among the VM sizes Azure ML offers in `region` (and, for training, among
    the sizes the base model supports fine-tuning on, when the registry says)?"""
    problems: list[str] = []
    if size is None:
        problems.append(
            f"{instance_type} is not offered by Azure ML in {region} (the region of workspace {workspace}): "
            f"check {setting} and the size's availability in {region} "
            f"(`az ml compute list-sizes --location {region}`), or use another instance type or a "
            "workspace in another region"
        )
    if allow is not None and instance_type.lower() not in {a.lower() for a in allow}:
        tag, purpose = (
            (INFERENCE_ALLOW_LIST_TAG, "serving")
            if setting == "SERVING_INSTANCE_TYPE"
            else (FINETUNE_ALLOW_LIST_TAG, "fine-tuning")
        )
        problems.append(
            f"{instance_type} is not supported by the base model for {purpose}; it supports "
            f"{', '.join(allow)} (its {tag} tag): set {setting} to one of them"
        )
    if problems:
        return PreflightCheck(name=name, ok=False, detail="; ".join(problems))
    vcpus = _field(size, "v_cp_us", "vCPUs")
    gpus = _field(size, "gpus")
    family = _field(size, "family")
    return PreflightCheck(
        name=name,
        ok=True,
        detail=f"{instance_type} is available in {region} ({vcpus} vCPUs, {gpus} GPU(s), family {family})",
    )


def _client_fault(exc: BaseException) -> str | None:
    """Why a read failed, if the failure is permanent (not found, another 4xx, a client-side
    validation error such as "Asset X does not exist in registry Y"): a failed check.
    None for everything else (5xx, 408, 429, ServiceRequestError, credential errors ...): those
    propagate and the orchestrator retries the activity."""
    # The registry's "latest" lookup raises a bare HttpResponseError for a 404 (azure-ai-ml
    # list_registry_assets: send_request + raise_for_status), not ResourceNotFoundError.
    if isinstance(exc, ResourceNotFoundError) or (
        isinstance(exc, HttpResponseError) and exc.status_code == 404
    ):
        return "not found"
    if isinstance(exc, ValidationException):
        if exc.error_type is ValidationErrorType.RESOURCE_NOT_FOUND:
            return "not found"
        return redact.shorten(str(exc), MAX_ERROR_CHARS)
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
            return redact.shorten(f"HTTP {status}: {exc.reason or exc.message}", MAX_ERROR_CHARS)
    return None


class ModelNotRegisteredYet(RuntimeError):
    """The job completed and registers its model itself, which has not appeared yet (transient)."""


def job_output_uri(job_name: str, output: str) -> str:
    return f"azureml://jobs/{job_name}/outputs/{output}"


def _auto_registered_name(job: Any) -> str | None:
    """The model name the job registers its `registered_model` output under (the fine-tuning
    job's output_model_name_prefix, REST `assetName`), or None if it registers nothing."""
    output = (getattr(job, "outputs", None) or {}).get(REGISTERED_MODEL_OUTPUT)
    name = getattr(output, "name", None)
    return str(name) if name else None


class _CustomKeysCredentials:
    """`credentials` for a `WorkspaceConnection` of type "custom" that serialises as CustomKeys.

    azure-ai-ml 1.35 maps type "custom" to the REST category "CustomKeys"
    (entities/_workspace/connections/workspace_connection.py:491-492) but has no credential class
    for the CustomKeys auth type: `ApiKeyConfiguration` serialises as authType "ApiKey" with
    `credentials.key` (entities/_credentials.py:1008-1027). Prompt flow builds a CustomConnection
    from a CustomKeys connection as `secrets = properties.credentials.keys` and
    `configs = properties.metadata` minus the `azureml.flow.*` entries, and needs
    `azureml.flow.connection_type = Custom` to know the class (promptflow-core
    `WorkspaceConnectionProvider.build_connection_dict_from_rest_object`). With ApiKey auth,
    `credentials.keys` does not exist and the flow fails to load the connection.
    `WorkspaceConnection._to_rest_object` (workspace_connection.py:485-525) only calls these two
    methods on its credentials, so this object yields
    `{"authType": "CustomKeys", "category": "CustomKeys", "credentials": {"keys": {...}}}`.
    """

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.type = "custom_keys"
        self.keys = dict(keys)

    def _get_rest_properties_class(self) -> type[RestCustomKeysConnectionProperties]:
        return RestCustomKeysConnectionProperties

    def _to_workspace_connection_rest_object(self) -> RestCustomKeys:
        return RestCustomKeys(keys_property=dict(self.keys))

    def __repr__(self) -> str:  # names only, never the values
        return f"_CustomKeysCredentials(keys={sorted(self.keys)})"


class AzureMLBackend:
    """TrainingBackend + ServingBackend + ConnectionStore + PreflightBackend on one Azure ML workspace."""

    def __init__(
        self,
        settings: Settings,
        *,
        ml_client: MLClient | None = None,
        project_client: MLClient | None = None,
        registry_client: MLClient | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self._settings = settings
        self._ml_client = ml_client
        self._project_client = project_client
        self._registry_clients: dict[str, MLClient] = {}
        if registry_client is not None:
            self._registry_clients[settings.MODEL_REGISTRY] = registry_client
        self._http = http
        self._credential: Any = None
        self._mlflow_tracking_uri: str | None = None
        self._workspace_region: str | None = None

    # ------------------------------------------------------------------ clients (lazy)

    def _cred(self) -> Any:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            kwargs: dict[str, str] = {}
            if self._settings.AZURE_CLIENT_ID:
                kwargs["managed_identity_client_id"] = self._settings.AZURE_CLIENT_ID
            self._credential = DefaultAzureCredential(**kwargs)
        return self._credential

    def _workspace_client(self, workspace: str | None) -> MLClient:
        s = self._settings
        return MLClient(self._cred(), s.AZURE_SUBSCRIPTION_ID, s.AZURE_RESOURCE_GROUP, workspace)

    @property
    def _ml(self) -> MLClient:
        if self._ml_client is None:
            self._ml_client = self._workspace_client(self._settings.AZUREML_WORKSPACE)
        return self._ml_client

    @property
    def _project(self) -> MLClient:
        if self._project_client is None:
            if self._settings.project_name == self._settings.AZUREML_WORKSPACE:
                self._project_client = self._ml
            else:
                self._project_client = self._workspace_client(self._settings.project_name)
        return self._project_client

    def _registry(self, name: str) -> MLClient:
        # A registry client needs only the registry name: MLClient discovers its subscription and
        # resource group (and makes a network call to do so) when constructed (_ml_client.py:219-262).
        client = self._registry_clients.get(name)
        if client is None:
            client = MLClient(self._cred(), registry_name=name)
            self._registry_clients[name] = client
        return client

    # ------------------------------------------------------------------ training

    def submit_finetune(self, spec: FineTuneSpec) -> str:
        try:
            existing = self._ml.jobs.get(spec.job_name)
        except ResourceNotFoundError:
            existing = None
        if existing is not None:
            log.info("fine-tuning job %s already exists (%s)", spec.job_name, enum_value(existing.status))
            return str(existing.name or spec.job_name)

        job = create_finetuning_job(
            model=self._base_model_uri(spec),
            task=_task_type(spec.task),
            training_data=spec.training_data,
            # Always passed: create_finetuning_job raises UnboundLocalError without it
            # (finetuning/_create_job.py:53-71).
            validation_data=spec.validation_data,
            hyperparameters=spec.hyperparameters.as_strings(),
            output_model_name_prefix=spec.output_model_prefix,
            instance_types=[spec.instance_type],
            # Forwarded through CustomModelFineTuningJob -> FineTuningJob -> Job(**kwargs).
            name=spec.job_name,
            display_name=spec.job_name,
            experiment_name=spec.output_model_prefix,
            tags=dict(spec.tags),
        )
        created = self._ml.jobs.create_or_update(job)
        log.info("submitted fine-tuning job %s", created.name)
        return str(created.name or spec.job_name)

    def _base_model_uri(self, spec: FineTuneSpec) -> str:
        registry = spec.model_registry
        version = spec.base_model_version
        if not version:
            # ModelOperations.get(label="latest") resolves through _managed_label_resolver and, for a
            # registry, re-reads that version (operations/_model_operations.py:417-421).
            latest = self._registry(registry).models.get(name=spec.base_model_name, label="latest")
            version = str(latest.version)
            log.info("resolved %s latest -> version %s in %s", spec.base_model_name, version, registry)
        return f"azureml://registries/{registry}/models/{spec.base_model_name}/versions/{version}"

    def get_job(self, job_name: str) -> JobInfo:
        job = self._ml.jobs.get(job_name)
        raw = enum_value(job.status) or "Unknown"
        state = job_state(raw)
        error = self._job_error(job_name, raw) if state is JobState.FAILED else None
        return JobInfo(
            name=str(job.name or job_name),
            state=state,
            raw_status=raw,
            error=error,
            studio_url=getattr(job, "studio_url", None),
        )

    def _job_error(self, job_name: str, raw_status: str) -> str:
        """A short, scrubbed reason for a failed job.

        The Job entity carries no error; run history does (RunDetails.error.error, see
        operations/_job_ops_helper.py:320-325). That is reached through the JobOperations'
        private `_runs_operations` (operations/_job_operations.py:257), so it is best effort:
        any failure falls back to a generic message.
        """
        fallback = f"job {job_name} ended with status {raw_status}"
        try:
            details = self._ml.jobs._runs_operations.get_run_details(job_name)
            root = getattr(getattr(details, "error", None), "error", None)
            if root is None:
                return fallback
            code = getattr(root, "code", None) or "Error"
            message = getattr(root, "message", None) or raw_status
            return redact.shorten(f"{code}: {message}", MAX_ERROR_CHARS, hide_queries=True)
        except Exception as e:  # best effort: the status itself is already known
            log.warning("could not read the error of job %s: %s", job_name, type(e).__name__)
            return fallback

    def cancel_job(self, job_name: str) -> None:
        try:
            job = self._ml.jobs.get(job_name)
        except ResourceNotFoundError:
            return
        raw = enum_value(job.status)
        if job_state(raw).terminal or raw.lower() == "cancelrequested":
            return
        try:
            self._ml.jobs.begin_cancel(job_name)  # poller not awaited
        except ResourceNotFoundError:
            return
        except HttpResponseError as e:
            # The job may have reached a terminal state between get and cancel (service answers 4xx).
            if e.status_code is not None and 400 <= e.status_code < 500:
                again = enum_value(self._ml.jobs.get(job_name).status)
                if job_state(again).terminal or again.lower() == "cancelrequested":
                    return
            raise

    def register_model(self, job_name: str, model_name: str, tags: dict[str, str]) -> ModelRef:
        wanted = {**tags, JOB_TAG: job_name}
        job = self._ml.jobs.get(job_name)
        status = enum_value(job.status)
        if job_state(status) is not JobState.COMPLETED:
            raise RuntimeError(
                f"job {job_name} is {status or 'unknown'}, not Completed: no model to register"
            )

        auto_name = _auto_registered_name(job)
        found = self._find_auto_registered(job, job_name)
        if found is None and auto_name:
            # The job registers its model itself, a little after it completes: registering it here
            # too would make a second version of the same weights. Raised for the activity retry.
            raise ModelNotRegisteredYet(
                f"job {job_name} completed but its model {auto_name} is not registered yet; retrying"
            )
        if found is None:
            found = self._find_tagged(model_name, job_name)
        if found is not None:
            found = self._merge_model_tags(found, wanted)
            ref = ModelRef(name=str(found.name), version=str(found.version))
            log.info("model %s:%s of job %s tagged", ref.name, ref.version, job_name)
            return ref

        model = Model(
            # The whole named output (the MLflow model is its root): azureml://jobs/<job>/outputs/<output>,
            # the form Microsoft's fine-tuning samples register from (e.g. the Phi-3 cookbook's
            # "azureml://jobs/{0}/outputs/{1}"). The docs' azureml://jobs/<job>/outputs/<output>/paths/<p>
            # (the SDK's JOB_URI_FORMAT) addresses a path inside the output and needs a non-empty <p>.
            path=job_output_uri(job_name, REGISTERED_MODEL_OUTPUT),
            type=AssetTypes.MLFLOW_MODEL,
            name=model_name,
            tags=wanted,
            description=f"Fine-tuned by Azure ML job {job_name}",
        )
        created = self._ml.models.create_or_update(model)
        ref = ModelRef(name=str(created.name), version=str(created.version))
        log.info("registered model %s:%s from job %s", ref.name, ref.version, job_name)
        return ref

    def _find_auto_registered(self, job: Any, job_name: str) -> Model | None:
        name = _auto_registered_name(job)
        if not name:
            return None
        output = (getattr(job, "outputs", None) or {}).get(REGISTERED_MODEL_OUTPUT)
        version = getattr(output, "version", None)
        if version:
            try:
                return self._ml.models.get(name=name, version=str(version))
            except ResourceNotFoundError:
                pass
        for m in self._list_models(name):
            if getattr(m, "job_name", None) == job_name or (m.tags or {}).get(JOB_TAG) == job_name:
                return m
        return None

    def _find_tagged(self, model_name: str, job_name: str) -> Model | None:
        for m in self._list_models(model_name):
            if (m.tags or {}).get(JOB_TAG) == job_name:
                return m
        return None

    def _list_models(self, name: str) -> Iterable[Model]:
        """The active (not archived) versions of model `name`; [] if there is no such model."""
        try:
            return list(self._ml.models.list(name=name))
        except ResourceNotFoundError:
            return []

    def _merge_model_tags(self, model: Model, tags: Mapping[str, str]) -> Model:
        """Write `tags` over the version's tags (others kept); no call when nothing changes.

        azure-ai-ml has no tag-only update for model versions: `ModelOperations.create_or_update`
        (operations/_model_operations.py:139-311) PUTs the whole version, and for an existing name +
        version with an unchanged remote path the service updates its mutable fields (tags,
        description) in place; `_check_and_upload_path` uploads nothing for a URI path
        (_artifacts/_artifact_utilities.py:499-507). The version is sent back as `get`/`list` read it.
        The PUT always carries `is_archived=False` (entities/_assets/_artifacts/model.py:259), so
        tagging an archived version restores it.
        """
        current = dict(model.tags or {})
        merged = {**current, **tags}
        if merged == current:
            return model
        model.tags = merged
        return self._ml.models.create_or_update(model)

    def set_model_tags(self, model: ModelRef, tags: dict[str, str]) -> None:
        """Merge `tags` into the workspace model version's tags (ResourceNotFoundError if it is missing)."""
        found = self._ml.models.get(name=model.name, version=model.version)
        self._merge_model_tags(found, tags)
        log.info("model %s:%s tagged %s", model.name, model.version, sorted(tags))

    def list_models(self, created_by: str) -> list[tuple[ModelRef, dict[str, str]]]:
        """Active versions of every workspace model whose `created-by` tag is `created_by`.

        `models.list()` lists the model containers (names); `models.list(name=...)` their versions
        (operations/_model_operations.py:601-670), both `ListViewType.ACTIVE_ONLY` by default, so
        versions removed by `delete_model` (archived) are not listed again. A model deleted between
        the two calls is skipped.
        """
        found: list[tuple[ModelRef, dict[str, str]]] = []
        for container in self._ml.models.list():
            name = getattr(container, "name", None)
            if not name:
                continue
            for version in self._list_models(str(name)):
                tags = _str_tags(version.tags)
                if tags.get(CREATED_BY_TAG) == created_by:
                    found.append((ModelRef(name=str(version.name), version=str(version.version)), tags))
        found.sort(key=lambda item: (item[0].name, _version_key(item[0].version)))
        return found

    def delete_model(self, model: ModelRef) -> None:
        """Archive the version: the v2 SDK cannot hard-delete a workspace model version.

        `ModelOperations` has `archive`/`restore` but no delete (operations/_model_operations.py:523-599);
        archiving sets `is_archived` on the version (GET then PUT, _utils/_asset_utils.py:1062-1076),
        which hides it from `models.list` and from new deployments while keeping its files and
        lineage. Archiving an archived version is a no-op PUT; a missing version is not an error.
        """
        try:
            self._ml.models.archive(name=model.name, version=model.version)
        except ResourceNotFoundError:
            log.info("model %s:%s is already gone", model.name, model.version)
            return
        log.info("model %s:%s archived", model.name, model.version)

    # ------------------------------------------------------------------ loss history (MLflow)

    def loss_history(self, job_name: str) -> LossHistory:
        """Training and validation loss per step of the job, from the workspace's MLflow store.

        Runs read: the job's own MLflow run (run id = job name) and every run whose
        `mlflow.rootRunId` tag is the job name: the steps of the pipeline Azure ML runs a fine-tuning
        job as, at any depth. Per run, the train curve is the first of TRAIN_LOSS_METRICS it logged
        and the validation curve the first of VALIDATION_LOSS_METRICS, except that a name logged
        once (an end-of-training summary, like Hugging Face's `train_loss`) yields to a later name
        with a longer history. Each curve then comes from the one run that logged it at most steps
        (the training step; a parent mirroring it or a retried step does not double the points),
        sorted by step. Empty lists when the job has no MLflow run or logged no loss; transient
        faults propagate.
        """
        if not _JOB_NAME.match(job_name):
            raise ValueError(f"not an Azure ML job name: {job_name!r}")
        client = self._mlflow_client(self._tracking_uri())
        runs = self._job_runs(client, job_name)
        history = LossHistory(
            train=self._loss_curve(client, runs, TRAIN_LOSS_METRICS),
            validation=self._loss_curve(client, runs, VALIDATION_LOSS_METRICS),
        )
        log.info(
            "job %s: %d run(s), %d train / %d validation loss points",
            job_name,
            len(runs),
            len(history.train),
            len(history.validation),
        )
        return history

    def _tracking_uri(self) -> str:
        """The workspace's MLflow tracking URI (`azureml://<region>.api.azureml.ms/mlflow/...`),
        read once per backend from `workspaces.get(...).mlflow_tracking_uri`
        (entities/_workspace/workspace.py:231, filled from the REST `mlFlowTrackingUri` at :345-358)."""
        if self._mlflow_tracking_uri is None:
            workspace = self._settings.AZUREML_WORKSPACE
            uri = getattr(self._ml.workspaces.get(workspace), "mlflow_tracking_uri", None)
            if not uri:
                raise RuntimeError(f"workspace {workspace} reports no MLflow tracking URI")
            self._mlflow_tracking_uri = str(uri)
        return self._mlflow_tracking_uri

    def _mlflow_client(self, tracking_uri: str) -> MlflowTrackingClient:
        """An MLflow client for `tracking_uri` (tests replace this method with a fake).

        The workspace's `azureml://` URI is read without the azureml-mlflow plugin: mlflow's
        RestStore on its https REST base (`azureml_tracking_base`), with an ARM token from the
        backend's credential fetched per request (`AzureMLHostCreds`) and failures scrubbed of it.
        Any other URI (a local store, a plain MLflow server) goes to `MlflowClient` as it is.
        """
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise RuntimeError("loss_history needs the mlflow-skinny package") from e
        if urlsplit(tracking_uri).scheme.lower() != "azureml":
            client: MlflowTrackingClient = MlflowClient(tracking_uri=tracking_uri)
            return client
        base = azureml_tracking_base(tracking_uri)
        return _rest_store_client(base, AzureMLHostCreds(base, self._cred()))

    def _job_runs(self, client: MlflowTrackingClient, job_name: str) -> list[Any]:
        """The job's run, then its descendants (by start time); [] if the job has no MLflow run."""
        try:
            root = client.get_run(job_name)
        except Exception as e:
            if _mlflow_not_found(e):
                return []
            raise
        experiment = str(root.info.experiment_id)
        seen = {root.info.run_id}
        descendants: list[Any] = []
        token: str | None = None
        while True:
            page = client.search_runs(
                [experiment],
                filter_string=f"tags.{ROOT_RUN_TAG} = '{job_name}'",
                max_results=MLFLOW_PAGE_SIZE,
                page_token=token,
            )
            for run in page:
                if run.info.run_id not in seen:
                    seen.add(run.info.run_id)
                    descendants.append(run)
            token = getattr(page, "token", None)
            if not token:
                break
        descendants.sort(key=lambda r: (getattr(r.info, "start_time", None) or 0, str(r.info.run_id)))
        return [root, *descendants]

    @staticmethod
    def _loss_curve(
        client: MlflowTrackingClient, runs: Sequence[Any], names: Sequence[str]
    ) -> list[MetricPoint]:
        best: list[MetricPoint] = []
        for run in runs:
            logged = getattr(run.data, "metrics", None) or {}
            first: list[MetricPoint] = []
            for name in (n for n in names if n in logged):
                points = _points(client.get_metric_history(run.info.run_id, name))
                if not first:
                    first = points
                if len(points) > 1:
                    first = points
                    break
            if len(first) > len(best):
                best = first
        return best

    def data_uri(self, blob: BlobRef) -> str:
        datastore = self._settings.AZUREML_DATASTORE
        if datastore:
            # The datastore points at the datasets container, so the path is the blob name.
            return f"azureml://datastores/{datastore}/paths/{blob.name}"
        if blob.url:
            return blob.url
        raise ValueError(f"no AZUREML_DATASTORE and no URL for blob {blob.path}: the job cannot read it")

    # ------------------------------------------------------------------ serving

    def get_endpoint(self, name: str) -> EndpointInfo:
        try:
            endpoint = self._ml.online_endpoints.get(name)
        except ResourceNotFoundError:
            return EndpointInfo(name=name, state=ProvisioningState.NOT_FOUND)
        return _endpoint_info(endpoint, self._deployments(name))

    def _deployments(self, endpoint: str) -> list[OnlineDeployment]:
        """The endpoint's deployments; [] if the endpoint is gone (the REST list answers 404)."""
        try:
            return list(self._ml.online_deployments.list(endpoint_name=endpoint))
        except ResourceNotFoundError:
            return []

    def list_endpoints(self) -> list[EndpointInfo]:
        """Every online endpoint of the workspace (`online_endpoints.list()`,
        operations/_online_endpoint_operations.py:87-103) with tags, state, traffic and deployments.

        The listing does not fill in zero-traffic deployments as `get` does (:155-162), so the
        deployments of the endpoints this app created are listed (one more call each) and given
        0 % the same way. Other endpoints are never touched: their deployments are those of their
        traffic map, so a foreign endpoint's error or throttling cannot fail the cost guard's sweep.
        """
        infos = []
        for endpoint in self._ml.online_endpoints.list():
            if not endpoint.name:
                continue
            ours = _str_tags(endpoint.tags).get(CREATED_BY_TAG) == APP_TAG
            infos.append(_endpoint_info(endpoint, self._deployments(str(endpoint.name)) if ours else []))
        return sorted(infos, key=lambda info: info.name)

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        return sorted(
            (
                DeploymentInfo(
                    name=str(d.name),
                    instance_type=str(d.instance_type or ""),
                    instance_count=int(d.instance_count or 0),
                    state=provisioning_state(d.provisioning_state),
                    tags=_str_tags(d.tags),
                )
                for d in self._deployments(endpoint)
            ),
            key=lambda info: info.name,
        )

    def update_endpoint_tags(self, name: str, tags: dict[str, str]) -> None:
        """Merge `tags` into the endpoint's tags and wait for the update (ResourceNotFoundError if
        the endpoint does not exist).

        `begin_create_or_update` PUTs the whole endpoint (operations/_online_endpoint_operations.py
        :204-265, body from `_to_rest_online_endpoint`, entities/_endpoint/online_endpoint.py:151-175),
        and a PUT replaces what it does not carry: a fresh `ManagedOnlineEndpoint(name, tags,
        auth_mode)` would send `traffic: null` and, having no identity, a SystemAssigned identity. So
        the entity `get` returned goes back with only its tags changed; its traffic (zero entries
        filled in by `get`, stripped again by `begin_create_or_update` at :230-234), mirror traffic,
        auth mode, identity, description and public network access are sent exactly as read. (The
        ARM PATCH that carries only tags and identity, `OnlineEndpointsOperations.begin_update` in
        _restclient/arm_ml_service/operations/_operations.py, is not exposed by the public
        `OnlineEndpointOperations`.) Waiting, as `set_traffic` does, means the tags are in place when
        the activity returns, and a rejected update (e.g. 409 while another operation runs on the
        endpoint) raises here for the activity retry policy.
        """
        endpoint = self._ml.online_endpoints.get(name)
        current = _str_tags(endpoint.tags)
        merged = {**current, **tags}
        if merged == current:
            return
        endpoint.tags = merged
        self._ml.online_endpoints.begin_create_or_update(endpoint).result()
        log.info("endpoint %s tagged %s", name, sorted(tags))

    def delete_endpoint(self, name: str) -> None:
        """Start deleting the endpoint and its deployments (`online_endpoints.begin_delete`, poller not
        awaited); nothing to do if it is gone or already deleting. The delete's first request is
        sent inside `begin_delete`, so a 404 surfaces there as ResourceNotFoundError."""
        try:
            endpoint = self._ml.online_endpoints.get(name)
        except ResourceNotFoundError:
            return
        if provisioning_state(endpoint.provisioning_state) is ProvisioningState.DELETING:
            log.info("endpoint %s is already being deleted", name)
            return
        try:
            self._ml.online_endpoints.begin_delete(name=name)  # poller not awaited
        except ResourceNotFoundError:
            return
        log.info("endpoint %s deletion started", name)

    def begin_create_endpoint(self, name: str, tags: dict[str, str]) -> None:
        try:
            self._ml.online_endpoints.get(name)
            return
        except ResourceNotFoundError:
            pass
        endpoint = ManagedOnlineEndpoint(name=name, auth_mode="key", tags=dict(tags))
        self._ml.online_endpoints.begin_create_or_update(endpoint)  # poller not awaited
        log.info("endpoint %s creation started", name)

    def begin_create_deployment(self, spec: DeploymentSpec) -> None:
        try:
            self._ml.online_deployments.get(name=spec.deployment_name, endpoint_name=spec.endpoint_name)
            return
        except ResourceNotFoundError:
            pass
        deployment = ManagedOnlineDeployment(
            name=spec.deployment_name,
            endpoint_name=spec.endpoint_name,
            model=f"azureml:{spec.model.name}:{spec.model.version}",
            instance_type=spec.instance_type,
            instance_count=spec.instance_count,
            request_settings=OnlineRequestSettings(
                request_timeout_ms=self._settings.SERVING_REQUEST_TIMEOUT_MS
            ),
            liveness_probe=self._probe(),
            readiness_probe=self._probe(),
            tags=dict(spec.tags),
        )
        # A new deployment gets no traffic until set_traffic is called.
        self._ml.online_deployments.begin_create_or_update(deployment)  # poller not awaited
        log.info("deployment %s/%s creation started", spec.endpoint_name, spec.deployment_name)

    def _probe(self) -> ProbeSettings:
        """Liveness/readiness probe for the fine-tuned model (SERVING_PROBE_* settings)."""
        s = self._settings
        return ProbeSettings(
            initial_delay=s.SERVING_PROBE_INITIAL_DELAY_S,
            period=s.SERVING_PROBE_PERIOD_S,
            failure_threshold=s.SERVING_PROBE_FAILURE_THRESHOLD,
        )

    def get_deployment_state(self, endpoint: str, deployment: str) -> ProvisioningState:
        try:
            d = self._ml.online_deployments.get(name=deployment, endpoint_name=endpoint)
        except ResourceNotFoundError:
            return ProvisioningState.NOT_FOUND
        return provisioning_state(d.provisioning_state)

    def _endpoint_secret(self, endpoint: str) -> tuple[str, str]:
        """(scoring URI, primary key), read fresh. The key is registered with core.redact."""
        keys = self._ml.online_endpoints.get_keys(endpoint)
        key = getattr(keys, "primary_key", None)
        if not key:
            raise ValueError(f"endpoint {endpoint} has no primary key (is auth_mode 'key'?)")
        redact.remember(key)
        uri = self._ml.online_endpoints.get(endpoint).scoring_uri
        if not uri:
            raise ValueError(f"endpoint {endpoint} has no scoring URI yet")
        return uri, key

    def score(self, endpoint: str, deployment: str | None, payload: dict[str, object]) -> ScoreResult:
        return self.scorer(endpoint, timeout_s=SCORE_TIMEOUT_S)(deployment, payload)

    def scorer(self, endpoint: str, *, timeout_s: float) -> Scorer:
        """Read the scoring URI and key once (three ARM calls), then score many times with them."""
        uri, key = self._endpoint_secret(endpoint)

        def score(deployment: str | None, payload: dict[str, object]) -> ScoreResult:
            label = f"{endpoint}/{deployment}"
            return post_score(
                uri, key, deployment, payload, timeout_s=timeout_s, label=label, http=self._http
            )

        return score

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> None:
        ep = self._ml.online_endpoints.get(endpoint)
        ep.traffic = dict(traffic)
        self._ml.online_endpoints.begin_create_or_update(ep).result()
        log.info("traffic on %s set to %s", endpoint, traffic)

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        try:
            self._ml.online_deployments.begin_delete(name=deployment, endpoint_name=endpoint)
        except ResourceNotFoundError:
            return
        log.info("deployment %s/%s deletion started", endpoint, deployment)

    # ------------------------------------------------------------------ Prompt flow connection

    def publish_connection(self, name: str, endpoint: str) -> str:
        uri, key = self._endpoint_secret(endpoint)
        connection = custom_connection(name=name, endpoint_uri=uri, key=key)
        self._project.connections.create_or_update(connection)
        log.info("connection %s now points at %s", name, uri)
        return uri

    def connection_exists(self, name: str) -> bool:
        """`connections.get` without `populate_secrets` (operations/_workspace_connections_operations.py
        :74-100): no credential is read; a 404 means no such connection."""
        try:
            self._project.connections.get(name=name)
        except ResourceNotFoundError:
            return False
        return True

    def delete_connection(self, name: str) -> None:
        """`connections.delete` (operations/_workspace_connections_operations.py:132-145; the service
        answers 200/204, 404 -> ResourceNotFoundError): no error if the connection is already gone."""
        try:
            self._project.connections.delete(name=name)
        except ResourceNotFoundError:
            return
        log.info("connection %s deleted", name)

    # ------------------------------------------------------------------ preflight

    def preflight(self, config: RunConfig) -> PreflightReport:
        """Read-only checks that a run with `config` can start (backends/base.py PreflightBackend).

        Checks, in order: base_model, training_instance, training_quota, serving_instance,
        serving_quota, endpoint_name, endpoint_owner. Every check runs whatever the others found;
        a permanent failure of a read (not found, other 4xx) is a failed check, anything
        transient propagates (see `_client_fault`). Nothing is created.
        """
        base, model = self._preflight_base_model(config)
        version = None if model is None or model.version is None else str(model.version)
        model_id = (
            f"azureml://registries/{config.model_registry}/models/{config.base_model_name}/versions/{version}"
            if version
            else None
        )
        allows = {
            "training": allow_list(model, FINETUNE_ALLOW_LIST_TAG),
            "serving": allow_list(model, INFERENCE_ALLOW_LIST_TAG),
        }
        checks = [
            base,
            *self._preflight_compute(config, allows),
            endpoint_name_check(config.endpoint_name),
            self._preflight_endpoint_owner(config.endpoint_name),
        ]
        report = PreflightReport(checks=checks, model_id=model_id, model_version=version)
        log.info("preflight: %s", "ok" if report.ok else "; ".join(report.reasons))
        return report

    def _preflight_base_model(self, config: RunConfig) -> tuple[PreflightCheck, Model | None]:
        registry, name, version = config.model_registry, config.base_model_name, config.base_model_version
        wanted = f"model {name} version {version}" if version else f"model {name} (label latest)"
        try:
            models = self._registry(registry).models
            model = (
                models.get(name=name, version=version) if version else models.get(name=name, label="latest")
            )
        except Exception as e:
            reason = _client_fault(e)
            if reason is None:
                raise
            found = "was not found" if reason == "not found" else f"could not be read ({reason})"
            hint = (
                "or unset BASE_MODEL_VERSION to use the latest version"
                if version
                else "or set BASE_MODEL_VERSION to a version listed in the model catalog"
            )
            detail = (
                f"{wanted} {found} in registry {registry}: check BASE_MODEL_NAME (exact, case-sensitive, "
                f"e.g. Phi-3-mini-4k-instruct) and MODEL_REGISTRY (or the run's overrides.model), {hint}"
            )
            return PreflightCheck(name="base_model", ok=False, detail=detail), None
        detail = f"{name} version {model.version} found in registry {registry}"
        return PreflightCheck(name="base_model", ok=True, detail=detail), model

    def _preflight_compute(
        self, config: RunConfig, allows: dict[str, list[str] | None]
    ) -> list[PreflightCheck]:
        """training_instance, training_quota, serving_instance, serving_quota in the workspace region."""
        s = self._settings
        workspace = s.AZUREML_WORKSPACE or ""
        names = ("training_instance", "training_quota", "serving_instance", "serving_quota")
        try:
            region = str(self._ml.workspaces.get(workspace).location or "")
            reason = "" if region else "it reports no region"
            self._workspace_region = region or None
        except Exception as e:
            reason = _client_fault(e) or ""
            if not reason:
                raise
        if reason:
            detail = (
                f"not checked: workspace {workspace} in resource group {s.AZURE_RESOURCE_GROUP} could not "
                f"be read ({reason}); check AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE "
                "and the app identity's role on the workspace"
            )
            return [PreflightCheck(name=n, ok=False, detail=detail) for n in names]

        sizes: dict[str, Any] | None = None
        usages: list[Any] | None = None
        sizes_fault = usage_fault = ""
        try:
            listed = self._ml.compute.list_sizes(location=region)
            sizes = {str(_field(v, "name")).lower(): v for v in listed if _field(v, "name")}
        except Exception as e:
            sizes_fault = _client_fault(e) or ""
            if not sizes_fault:
                raise
        try:
            usages = list(self._ml.compute.list_usage(location=region))
        except Exception as e:
            usage_fault = _client_fault(e) or ""
            if not usage_fault:
                raise

        checks: list[PreflightCheck] = []
        for role, instance_type, count, setting in (
            ("training", config.training_instance_type, 1, "TRAINING_INSTANCE_TYPE"),
            ("serving", config.serving_instance_type, config.serving_instance_count, "SERVING_INSTANCE_TYPE"),
        ):
            instance, quota = f"{role}_instance", f"{role}_quota"
            if sizes is None:
                detail = f"could not list the VM sizes of {region} ({sizes_fault})"
                checks.append(PreflightCheck(name=instance, ok=False, detail=detail))
                checks.append(PreflightCheck(name=quota, ok=False, detail=f"not checked: {detail}"))
                continue
            size = sizes.get(instance_type.lower())
            checks.append(
                _instance_check(
                    instance,
                    instance_type=instance_type,
                    size=size,
                    region=region,
                    workspace=workspace,
                    setting=setting,
                    allow=allows.get(role),
                )
            )
            if size is None:
                detail = f"not checked: {instance_type} is not available in {region} (see {instance})"
                checks.append(PreflightCheck(name=quota, ok=False, detail=detail))
            elif usages is None:
                detail = f"could not read the Azure ML quota usage of {region} ({usage_fault})"
                checks.append(PreflightCheck(name=quota, ok=False, detail=detail))
            else:
                checks.append(
                    quota_check(
                        quota,
                        instance_type=instance_type,
                        size=size,
                        instances=count,
                        serving=role == "serving",
                        usages=usages,
                        region=region,
                        workspace=workspace,
                    )
                )
        return checks

    def _preflight_endpoint_owner(self, name: str) -> PreflightCheck:
        if not endpoint_name_check(name).ok:
            detail = "not checked: ENDPOINT_NAME is not a valid endpoint name (see endpoint_name)"
            return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)
        workspace = self._settings.AZUREML_WORKSPACE
        try:
            endpoint = self._ml.online_endpoints.get(name)
        except ResourceNotFoundError:
            return self._preflight_name_free(name)
        except Exception as e:
            reason = _client_fault(e)
            if reason is None:
                raise
            detail = f"could not read endpoint {name} in workspace {workspace} ({reason})"
            return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)
        owner = (endpoint.tags or {}).get("created-by")
        if owner == APP_TAG:
            detail = (
                f"endpoint {name} exists and was created by this app ({APP_TAG}): a new deployment joins it"
            )
            return PreflightCheck(name="endpoint_owner", ok=True, detail=detail)
        detail = (
            f"endpoint {name} exists and was not created by this app; choose another ENDPOINT_NAME or tag it "
            f"created-by={APP_TAG} if it is yours (its created-by tag: {owner if owner else 'none'})"
        )
        return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)

    def _preflight_name_free(self, name: str) -> PreflightCheck:
        """Not in this workspace: is the name taken by another workspace of the region? Online
        endpoint names are unique per region, and an existing endpoint's public host answers HTTP
        (AZUREML_INFERENCE_URL_TEMPLATE); a free name does not resolve (or answers 404)."""
        workspace = self._settings.AZUREML_WORKSPACE
        try:
            region = self._region()
        except Exception as e:
            reason = _client_fault(e)
            if reason is None:
                raise
            detail = f"not checked: the region of workspace {workspace} could not be read ({reason})"
            return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)
        url = (
            self._settings.AZUREML_INFERENCE_URL_TEMPLATE.format(endpoint=name, region=region).rstrip("/")
            + "/"
        )
        try:
            client = self._http or httpx.Client(timeout=ENDPOINT_PROBE_TIMEOUT_S)
            status = client.get(url, timeout=ENDPOINT_PROBE_TIMEOUT_S).status_code
        except httpx.ConnectError:  # name resolution failed (or nothing listens): no such endpoint
            status = None
        if status is None or status == 404:
            detail = f"endpoint name {name} is free in {region} (in {workspace} too): the run creates it"
            return PreflightCheck(name="endpoint_owner", ok=True, detail=detail)
        detail = (
            f"endpoint name {name} is already taken in {region} by another workspace (endpoint names are "
            f"unique per Azure region; its host answered HTTP {status}): set ENDPOINT_NAME to another name, "
            "or leave it unset for a name derived from this deployment"
        )
        return PreflightCheck(name="endpoint_owner", ok=False, detail=detail)

    def _region(self) -> str:
        """The workspace's region (read once)."""
        if self._workspace_region is None:
            self._workspace_region = str(
                self._ml.workspaces.get(self._settings.AZUREML_WORKSPACE).location or ""
            )
        return self._workspace_region


def _endpoint_info(endpoint: OnlineEndpoint, deployments: Sequence[OnlineDeployment]) -> EndpointInfo:
    """EndpointInfo from an endpoint entity and its deployments (nothing secret: no keys, no identity).

    Deployments missing from the traffic map get 0 %, as `OnlineEndpointOperations.get` does
    (operations/_online_endpoint_operations.py:155-162), unless they receive mirrored traffic.
    """
    traffic = {str(k): int(v) for k, v in (endpoint.traffic or {}).items()}
    mirrored = set(endpoint.mirror_traffic or {})
    names = [str(d.name) for d in deployments if d.name]
    for name in names:
        if name not in traffic and name not in mirrored:
            traffic[name] = 0
    return EndpointInfo(
        name=str(endpoint.name),
        state=provisioning_state(endpoint.provisioning_state),
        traffic=traffic,
        deployments=names,
        scoring_uri=endpoint.scoring_uri,
        tags=_str_tags(endpoint.tags),
    )


def custom_connection(*, name: str, endpoint_uri: str, key: str) -> WorkspaceConnection:
    """The Prompt flow `CustomConnection` as a workspace connection.

    Prompt flow reads it as configs = {"endpoint": endpoint_uri} and secrets = {"key": key}
    (see `_CustomKeysCredentials`).
    """
    return WorkspaceConnection(
        name=name,
        type="custom",  # REST category CustomKeys
        target=endpoint_uri,  # required by the SDK; Prompt flow ignores target for CustomKeys
        credentials=_CustomKeysCredentials({"key": key}),  # type: ignore[arg-type]
        metadata={"endpoint": endpoint_uri, **PROMPTFLOW_CONNECTION_TYPE},
        is_shared=False,
    )


def build(settings: Settings) -> AzureMLBackend:
    """The Azure ML backend for these settings; clients are created on first use."""
    return AzureMLBackend(settings)
