"""`AzureMLBackend`: the four Azure ML concerns behind one object, as the protocols see them.

Each method hands over to the concern that owns it (training, serving, the Prompt flow connection,
preflight); all four share one `AzureWorkspace`, so the credential, the clients and what is read
once (region, tracking URI) are shared too.
"""

from __future__ import annotations

from typing import Any

import httpx
from azure.ai.ml import MLClient

from backends.azureml.connection import AzureConnections
from backends.azureml.mlflow_history import MlflowTrackingClient
from backends.azureml.preflight import AzurePreflight
from backends.azureml.serving import AzureServing
from backends.azureml.training import AzureTraining
from backends.azureml.workspace import AzureWorkspace
from core.models import (
    BlobRef,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    FineTuneSpec,
    JobInfo,
    LossHistory,
    ModelRef,
    ProvisioningState,
    RunConfig,
    ScoreResult,
)
from core.preflight import PreflightReport
from core.scoring import Scorer
from core.settings import Settings


class AzureMLBackend:
    """TrainingBackend + ServingBackend + ConnectionStore + PreflightBackend on one Azure ML workspace.

    `training`, `serving`, `connections` and `checks` are the concerns themselves (the registry
    hands them out one by one); the methods here forward to them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        ml_client: MLClient | None = None,
        project_client: MLClient | None = None,
        registry_client: MLClient | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.workspace = AzureWorkspace(
            settings,
            ml_client=ml_client,
            project_client=project_client,
            registry_client=registry_client,
            http=http,
        )
        self.training = AzureTraining(self.workspace)
        self.serving = AzureServing(self.workspace)
        self.connections = AzureConnections(self.workspace, self.serving)
        self.checks = AzurePreflight(self.workspace)

    # ------------------------------------------------------------------ the shared workspace

    @property
    def _ml(self) -> MLClient:
        return self.workspace.ml

    def _cred(self) -> Any:
        return self.workspace.credential()

    def _mlflow_client(self, tracking_uri: str) -> MlflowTrackingClient:
        return self.training.history.client(tracking_uri)

    # ------------------------------------------------------------------ TrainingBackend

    def submit_finetune(self, spec: FineTuneSpec) -> str:
        return self.training.submit_finetune(spec)

    def get_job(self, job_name: str) -> JobInfo:
        return self.training.get_job(job_name)

    def cancel_job(self, job_name: str) -> None:
        self.training.cancel_job(job_name)

    def register_model(self, job_name: str, model_name: str, tags: dict[str, str]) -> ModelRef:
        return self.training.register_model(job_name, model_name, tags)

    def data_uri(self, blob: BlobRef) -> str:
        return self.training.data_uri(blob)

    def set_model_tags(self, model: ModelRef, tags: dict[str, str]) -> None:
        self.training.set_model_tags(model, tags)

    def loss_history(self, job_name: str) -> LossHistory:
        return self.training.loss_history(job_name)

    def list_models(self, created_by: str) -> list[tuple[ModelRef, dict[str, str]]]:
        return self.training.list_models(created_by)

    def delete_model(self, model: ModelRef) -> None:
        self.training.delete_model(model)

    # ------------------------------------------------------------------ ServingBackend

    def get_endpoint(self, name: str) -> EndpointInfo:
        return self.serving.get_endpoint(name)

    def begin_create_endpoint(self, name: str, tags: dict[str, str]) -> None:
        self.serving.begin_create_endpoint(name, tags)

    def begin_create_deployment(self, spec: DeploymentSpec) -> None:
        self.serving.begin_create_deployment(spec)

    def get_deployment_state(self, endpoint: str, deployment: str) -> ProvisioningState:
        return self.serving.get_deployment_state(endpoint, deployment)

    def score(self, endpoint: str, deployment: str | None, payload: dict[str, object]) -> ScoreResult:
        return self.serving.score(endpoint, deployment, payload)

    def scorer(self, endpoint: str, *, timeout_s: float) -> Scorer:
        return self.serving.scorer(endpoint, timeout_s=timeout_s)

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> None:
        self.serving.set_traffic(endpoint, traffic)

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        self.serving.delete_deployment(endpoint, deployment)

    def list_endpoints(self) -> list[EndpointInfo]:
        return self.serving.list_endpoints()

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        return self.serving.list_deployments(endpoint)

    def update_endpoint_tags(self, name: str, tags: dict[str, str]) -> None:
        self.serving.update_endpoint_tags(name, tags)

    def delete_endpoint(self, name: str) -> None:
        self.serving.delete_endpoint(name)

    # ------------------------------------------------------------------ ConnectionStore

    def publish_connection(self, name: str, endpoint: str) -> str:
        return self.connections.publish_connection(name, endpoint)

    def connection_exists(self, name: str) -> bool:
        return self.connections.connection_exists(name)

    def delete_connection(self, name: str) -> None:
        self.connections.delete_connection(name)

    # ------------------------------------------------------------------ PreflightBackend

    def preflight(self, config: RunConfig) -> PreflightReport:
        return self.checks.preflight(config)
