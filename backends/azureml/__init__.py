"""Azure ML backend: fine-tuning, model registry, managed online endpoints, Prompt flow connection.

The ONLY package in the project that imports `azure.ai.ml`. It implements `TrainingBackend`,
`ServingBackend`, `ConnectionStore` and `PreflightBackend` (backends/base.py) against azure-ai-ml
1.35, one module per concern over one shared workspace:

- `workspace`: the credential and `MLClient`s (`AzureWorkspace`), SDK state mappings, `client_fault`;
- `training`: jobs, model registration and tags, listing and archiving models (`AzureTraining`);
- `mlflow_history`: loss curves from the workspace's MLflow REST service (`MlflowLossHistory`);
- `serving`: endpoints, deployments, traffic and scoring (`AzureServing`);
- `connection`: the Prompt flow custom connection (`AzureConnections`);
- `preflight`: registry lookup, allow-lists, VM sizes and quota, endpoint owner (`AzurePreflight`);
- `backend`: `AzureMLBackend`, the four concerns over one workspace (`training`, `serving`,
  `connections`, `checks`).

Rules kept throughout:
- Every call that starts long work (job submit, endpoint/deployment create, deployment delete,
  job cancel) returns without waiting on the poller; the orchestrator polls with durable timers.
- Idempotent by name: submit by job name, create-if-missing, delete-if-present, register once per job.
- Transient azure-core errors (HttpResponseError 5xx, ServiceRequestError, ...) propagate: the
  orchestrator retries activities.
- Endpoint keys are read inside `score`, `scorer` and `publish_connection`, registered with
  `core.redact`, never logged, returned or put in an exception message.
"""

from __future__ import annotations

from backends.azureml.backend import AzureMLBackend
from backends.azureml.connection import PROMPTFLOW_CONNECTION_TYPE, AzureConnections, custom_connection
from backends.azureml.mlflow_history import (
    AzureMLHostCreds,
    MlflowLossHistory,
    MlflowTrackingClient,
    azureml_tracking_base,
    metric_points,
)
from backends.azureml.preflight import (
    FINETUNE_ALLOW_LIST_TAG,
    INFERENCE_ALLOW_LIST_TAG,
    AzurePreflight,
    allow_list,
    family_key,
    family_usages,
    finetune_allow_list,
    quota_check,
    total_usages,
)
from backends.azureml.serving import SCORE_TIMEOUT_S, AzureServing
from backends.azureml.training import (
    JOB_TAG,
    REGISTERED_MODEL_OUTPUT,
    AzureTraining,
    ModelNotRegisteredYet,
    job_output_uri,
)
from backends.azureml.workspace import (
    JOB_STATE_BY_STATUS,
    MAX_ERROR_CHARS,
    PROVISIONING_STATE_BY_STATUS,
    AzureWorkspace,
    arm_scope,
    client_fault,
    enum_value,
    job_state,
    provisioning_state,
)
from core.settings import Settings

# Under the private names the helper tests read them by.
_points = metric_points
_client_fault = client_fault

__all__ = [
    "FINETUNE_ALLOW_LIST_TAG",
    "INFERENCE_ALLOW_LIST_TAG",
    "JOB_STATE_BY_STATUS",
    "JOB_TAG",
    "MAX_ERROR_CHARS",
    "PROMPTFLOW_CONNECTION_TYPE",
    "PROVISIONING_STATE_BY_STATUS",
    "REGISTERED_MODEL_OUTPUT",
    "SCORE_TIMEOUT_S",
    "AzureConnections",
    "AzureMLBackend",
    "AzureMLHostCreds",
    "AzurePreflight",
    "AzureServing",
    "AzureTraining",
    "AzureWorkspace",
    "MlflowLossHistory",
    "MlflowTrackingClient",
    "ModelNotRegisteredYet",
    "_client_fault",
    "_points",
    "allow_list",
    "arm_scope",
    "azureml_tracking_base",
    "build",
    "client_fault",
    "custom_connection",
    "enum_value",
    "family_key",
    "family_usages",
    "finetune_allow_list",
    "job_output_uri",
    "job_state",
    "metric_points",
    "provisioning_state",
    "quota_check",
    "total_usages",
]


def build(settings: Settings) -> AzureMLBackend:
    """The Azure ML backend for these settings; clients are created on first use."""
    return AzureMLBackend(settings)
