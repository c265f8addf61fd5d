"""The Azure ML workspace the backend talks to, and what every concern of the backend shares.

`AzureWorkspace` holds the credential and the `MLClient`s (the workspace, the AI project, model
registries), all created on first use, and what is read once per backend (the workspace region,
its MLflow tracking URI). Next to it: the mappings of SDK states to ours (`enum_value`,
`job_state`, `provisioning_state`), `client_fault` (is a failed read permanent?), `str_tags` and
`arm_scope`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from azure.ai.ml import MLClient
from azure.ai.ml.exceptions import ValidationErrorType, ValidationException
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from core import redact
from core.models import JobState, ProvisioningState
from core.settings import Settings

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

MAX_ERROR_CHARS = 300
# 4xx answers that are worth retrying (the activity retry policy does it): not check failures.
_RETRYABLE_4XX = frozenset({408, 429})


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


def str_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (tags or {}).items() if v is not None}


def arm_scope() -> str:
    """The ARM token scope of the current cloud: its resource manager + "/.default", resolved as
    azure-ai-ml resolves it for its own ARM calls (AZUREML_CURRENT_CLOUD, or the cloud ARM's
    metadata names; AzureCloud: https://management.azure.com/), not AzureCloud's hard-coded."""
    from azure.ai.ml._azure_environments import _get_base_url_from_metadata, _resource_to_scopes

    return _resource_to_scopes(_get_base_url_from_metadata())[0]


def client_fault(exc: BaseException) -> str | None:
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


class AzureWorkspace:
    """One Azure ML workspace as the backend's concerns share it: settings, the credential, the
    clients (created on first use; tests pass their own) and the values read once."""

    def __init__(
        self,
        settings: Settings,
        *,
        ml_client: MLClient | None = None,
        project_client: MLClient | None = None,
        registry_client: MLClient | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self._ml_client = ml_client
        self._project_client = project_client
        self._registry_clients: dict[str, MLClient] = {}
        if registry_client is not None:
            self._registry_clients[settings.MODEL_REGISTRY] = registry_client
        self._credential: Any = None
        self._mlflow_tracking_uri: str | None = None
        self._region: str | None = None

    def credential(self) -> Any:
        """`DefaultAzureCredential`, pinned to `AZURE_CLIENT_ID` (a user-assigned identity) if set."""
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            kwargs: dict[str, str] = {}
            if self.settings.AZURE_CLIENT_ID:
                kwargs["managed_identity_client_id"] = self.settings.AZURE_CLIENT_ID
            self._credential = DefaultAzureCredential(**kwargs)
        return self._credential

    def _workspace_client(self, workspace: str | None) -> MLClient:
        s = self.settings
        return MLClient(self.credential(), s.AZURE_SUBSCRIPTION_ID, s.AZURE_RESOURCE_GROUP, workspace)

    @property
    def ml(self) -> MLClient:
        """The client of the Azure ML workspace (`AZUREML_WORKSPACE`)."""
        if self._ml_client is None:
            self._ml_client = self._workspace_client(self.settings.AZUREML_WORKSPACE)
        return self._ml_client

    @property
    def project(self) -> MLClient:
        """The client of the AI project that holds the Prompt flow connection (the workspace
        itself unless AI_PROJECT_NAME names another)."""
        if self._project_client is None:
            if self.settings.project_name == self.settings.AZUREML_WORKSPACE:
                self._project_client = self.ml
            else:
                self._project_client = self._workspace_client(self.settings.project_name)
        return self._project_client

    def registry(self, name: str) -> MLClient:
        """The client of model registry `name`, one per registry."""
        # A registry client needs only the registry name: MLClient discovers its subscription and
        # resource group (and makes a network call to do so) when constructed (_ml_client.py:219-262).
        client = self._registry_clients.get(name)
        if client is None:
            client = MLClient(self.credential(), registry_name=name)
            self._registry_clients[name] = client
        return client

    def region(self) -> str:
        """The workspace's region (read once)."""
        if self._region is None:
            self._region = str(self.ml.workspaces.get(self.settings.AZUREML_WORKSPACE).location or "")
        return self._region

    def remember_region(self, region: str) -> None:
        """Keep a region read elsewhere (preflight reads the workspace itself); "" is not kept."""
        self._region = region or None

    def tracking_uri(self) -> str:
        """The workspace's MLflow tracking URI (`azureml://<region>.api.azureml.ms/mlflow/...`),
        read once per backend from `workspaces.get(...).mlflow_tracking_uri`
        (entities/_workspace/workspace.py:231, filled from the REST `mlFlowTrackingUri` at :345-358)."""
        if self._mlflow_tracking_uri is None:
            workspace = self.settings.AZUREML_WORKSPACE
            uri = getattr(self.ml.workspaces.get(workspace), "mlflow_tracking_uri", None)
            if not uri:
                raise RuntimeError(f"workspace {workspace} reports no MLflow tracking URI")
            self._mlflow_tracking_uri = str(uri)
        return self._mlflow_tracking_uri
