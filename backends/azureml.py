"""Azure ML backend: fine-tuning, model registry, managed online endpoints, Prompt flow connection.

The ONLY module in the project that imports `azure.ai.ml`. It implements `TrainingBackend`,
`ServingBackend` and `ConnectionStore` (backends/base.py) against azure-ai-ml 1.35.

Rules kept here:
- Every call that starts long work (job submit, endpoint/deployment create, deployment delete,
  job cancel) returns without waiting on the poller; the orchestrator polls with durable timers.
- Idempotent by name: submit by job name, create-if-missing, delete-if-present, register once per job.
- Transient azure-core errors (HttpResponseError 5xx, ServiceRequestError, ...) propagate: the
  orchestrator retries activities.
- Endpoint keys are read inside `score` and `publish_connection`, registered with `core.redact`,
  never logged, returned or put in an exception message.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

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
    OnlineRequestSettings,
    WorkspaceConnection,
)
from azure.ai.ml.finetuning import FineTuningTaskType, create_finetuning_job
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from core import redact
from core.models import (
    BlobRef,
    DeploymentSpec,
    EndpointInfo,
    FineTuneSpec,
    JobInfo,
    JobState,
    ModelRef,
    ProvisioningState,
    ScoreResult,
)
from core.payload import output_of
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
# Managed online deployments time a request out after 5 s by default; a 128-token generation can
# take longer, so allow as long as our client waits.
DEPLOYMENT_REQUEST_TIMEOUT_MS = 90_000
MAX_OUTPUT_CHARS = 500
MAX_ERROR_CHARS = 300
# Metadata that makes Prompt flow read a CustomKeys workspace connection as a `CustomConnection`.
PROMPTFLOW_CONNECTION_TYPE = {
    "azureml.flow.connection_type": "Custom",
    "azureml.flow.module": "promptflow.connections",
}

_URL_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")


def _short(text: str, limit: int, *, hide_queries: bool = False) -> str:
    """Scrub secrets (known keys, credential-shaped strings; URL query strings if asked), cap length."""
    if hide_queries:
        text = _URL_QUERY.sub(r"\1?***", text)
    return redact.shorten(text, limit)


def job_state(raw_status: str | None) -> JobState:
    """Map an Azure ML job status string to our JobState; unknown or missing -> QUEUED."""
    return _JOB_STATE_CI.get((raw_status or "").lower(), JobState.QUEUED)


def provisioning_state(raw: str | None) -> ProvisioningState:
    """Map an endpoint/deployment provisioning state (any case) to ours; unknown -> CREATING."""
    return PROVISIONING_STATE_BY_STATUS.get((raw or "").lower(), ProvisioningState.CREATING)


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
    """TrainingBackend + ServingBackend + ConnectionStore on one Azure ML workspace."""

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
            log.info("fine-tuning job %s already exists (%s)", spec.job_name, existing.status)
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
        raw = str(job.status or "Unknown")
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
            return _short(f"{code}: {message}", MAX_ERROR_CHARS, hide_queries=True)
        except Exception as e:  # best effort: the status itself is already known
            log.warning("could not read the error of job %s: %s", job_name, type(e).__name__)
            return fallback

    def cancel_job(self, job_name: str) -> None:
        try:
            job = self._ml.jobs.get(job_name)
        except ResourceNotFoundError:
            return
        raw = str(job.status or "")
        if job_state(raw).terminal or raw.lower() == "cancelrequested":
            return
        try:
            self._ml.jobs.begin_cancel(job_name)  # poller not awaited
        except ResourceNotFoundError:
            return
        except HttpResponseError as e:
            # The job may have reached a terminal state between get and cancel (service answers 4xx).
            if e.status_code is not None and 400 <= e.status_code < 500:
                again = str(self._ml.jobs.get(job_name).status or "")
                if job_state(again).terminal or again.lower() == "cancelrequested":
                    return
            raise

    def register_model(self, job_name: str, model_name: str, tags: dict[str, str]) -> ModelRef:
        wanted = {**tags, JOB_TAG: job_name}
        job = self._ml.jobs.get(job_name)
        status = str(job.status or "")
        if job_state(status) is not JobState.COMPLETED:
            raise RuntimeError(
                f"job {job_name} is {status or 'unknown'}, not Completed: no model to register"
            )

        found = self._find_auto_registered(job, job_name)
        if found is None:
            found = self._find_tagged(model_name, job_name)
        if found is not None:
            current = dict(found.tags or {})
            merged = {**current, **wanted}
            if merged != current:
                # Only description and tags of a model version are mutable; create_or_update on the
                # same name+version updates them.
                found.tags = merged
                found = self._ml.models.create_or_update(found)
            ref = ModelRef(name=str(found.name), version=str(found.version))
            log.info("model %s:%s of job %s tagged", ref.name, ref.version, job_name)
            return ref

        model = Model(
            # Named job output form: azureml://jobs/<job>/outputs/<output> (Azure ML docs,
            # "Register a model from a job output"); the SDK's JOB_URI_FORMAT adds /paths/<p>.
            path=f"azureml://jobs/{job_name}/outputs/{REGISTERED_MODEL_OUTPUT}",
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
        outputs = getattr(job, "outputs", None) or {}
        output = outputs.get(REGISTERED_MODEL_OUTPUT)
        name = getattr(output, "name", None)
        if not name:
            return None
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
        try:
            return list(self._ml.models.list(name=name))
        except ResourceNotFoundError:
            return []

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
        deployments = [d.name for d in self._ml.online_deployments.list(endpoint_name=name)]
        return EndpointInfo(
            name=name,
            state=provisioning_state(endpoint.provisioning_state),
            traffic={str(k): int(v) for k, v in (endpoint.traffic or {}).items()},
            deployments=deployments,
            scoring_uri=endpoint.scoring_uri,
        )

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
            request_settings=OnlineRequestSettings(request_timeout_ms=DEPLOYMENT_REQUEST_TIMEOUT_MS),
            tags=dict(spec.tags),
        )
        # A new deployment gets no traffic until set_traffic is called.
        self._ml.online_deployments.begin_create_or_update(deployment)  # poller not awaited
        log.info("deployment %s/%s creation started", spec.endpoint_name, spec.deployment_name)

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
        uri, key = self._endpoint_secret(endpoint)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if deployment:
            headers["azureml-model-deployment"] = deployment
        body = json.dumps(payload)

        failure: str | None = None
        started = time.perf_counter()
        try:
            if self._http is not None:
                response = self._http.post(uri, content=body, headers=headers, timeout=SCORE_TIMEOUT_S)
            else:
                with httpx.Client(timeout=SCORE_TIMEOUT_S) as client:
                    response = client.post(uri, content=body, headers=headers)
            text = response.text
        except httpx.HTTPError as e:
            failure = type(e).__name__
        latency_ms = round((time.perf_counter() - started) * 1000)
        if failure is not None:
            # Raised outside the except block so the httpx exception (whose request carries the
            # Authorization header) is neither the cause nor the context of what propagates.
            raise ConnectionError(f"scoring {endpoint}/{deployment} unreachable: {failure}")

        if response.is_success:
            return ScoreResult(
                ok=True,
                status_code=response.status_code,
                output=_short(output_of(text), MAX_OUTPUT_CHARS),
                latency_ms=latency_ms,
            )
        reason = response.reason_phrase or "error"
        return ScoreResult(
            ok=False,
            status_code=response.status_code,
            output=_short(text, MAX_OUTPUT_CHARS) if text else None,
            error=_short(f"HTTP {response.status_code} {reason}", MAX_ERROR_CHARS, hide_queries=True),
            latency_ms=latency_ms,
        )

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
