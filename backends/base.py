"""The seam between activities and vendors.

Activities call these protocols; the `azureml` package implements them with azure-ai-ml, `local.py`
with the offline stack, and storage/ the datasets container. Every method is idempotent where the
orchestrator may re-run it after a crash or a retry (submit by deterministic job name,
create-if-missing, delete-if-present).

Secrets never cross this seam upward: `score` and `publish_connection` fetch the endpoint key
themselves, and nothing returned here carries a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

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
from core.turns import Turn, TurnAnswer
from storage.errors import BlobChangedError, BlobStoreError

__all__ = [
    "BlobChangedError",
    "BlobStoreError",
    "ConnectionStore",
    "DatasetStore",
    "PreflightBackend",
    "ServingBackend",
    "TrainingBackend",
    "TurnStore",
]


@runtime_checkable
class TrainingBackend(Protocol):
    def submit_finetune(self, spec: FineTuneSpec) -> str:
        """Start the fine-tuning job named `spec.job_name`, or return it if it already exists."""
        ...

    def get_job(self, job_name: str) -> JobInfo: ...

    def cancel_job(self, job_name: str) -> None: ...

    def register_model(self, job_name: str, model_name: str, tags: dict[str, str]) -> ModelRef:
        """Register (or find) the MLflow model the job produced, with lineage tags."""
        ...

    def data_uri(self, blob: BlobRef) -> str:
        """The URI the training service reads `blob` from."""
        ...

    def set_model_tags(self, model: ModelRef, tags: dict[str, str]) -> None:
        """Add/overwrite `tags` on the registered model version (other tags are kept)."""
        ...

    def loss_history(self, job_name: str) -> LossHistory:
        """Training and validation loss per step from the job's MLflow metrics (the workspace's
        MLflow tracking URI in Azure, the local MLflow store offline). Empty lists when the job
        logged none; raises only on transient faults."""
        ...

    def list_models(self, created_by: str) -> list[tuple[ModelRef, dict[str, str]]]:
        """Registered model versions whose `created-by` tag is `created_by`, with their tags."""
        ...

    def delete_model(self, model: ModelRef) -> None:
        """Remove the registered version (Azure ML: archive it); no error if already gone."""
        ...


@runtime_checkable
class ServingBackend(Protocol):
    def get_endpoint(self, name: str) -> EndpointInfo: ...

    def begin_create_endpoint(self, name: str, tags: dict[str, str]) -> None:
        """Start creating a key-auth endpoint if it does not exist; return at once."""
        ...

    def begin_create_deployment(self, spec: DeploymentSpec) -> None:
        """Start creating the deployment (0 % traffic) if it does not exist; return at once."""
        ...

    def get_deployment_state(self, endpoint: str, deployment: str) -> ProvisioningState: ...

    def score(self, endpoint: str, deployment: str | None, payload: dict[str, object]) -> ScoreResult:
        """POST `payload` to the endpoint (pinned to `deployment` if given). Reads the key itself."""
        ...

    def scorer(self, endpoint: str, *, timeout_s: float) -> Scorer:
        """A scorer for many calls to `endpoint`: the key and scoring URI are read once, here, and
        each call waits at most `timeout_s` (the evaluation gate scores a batch with one)."""
        ...

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> None: ...

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        """Delete the deployment; no error if it is already gone."""
        ...

    def list_endpoints(self) -> list[EndpointInfo]:
        """Every online endpoint in the workspace, with its tags (the cost guard filters them)."""
        ...

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        """The endpoint's deployments with instance type/count and tags ([] if it is gone)."""
        ...

    def update_endpoint_tags(self, name: str, tags: dict[str, str]) -> None:
        """Add/overwrite `tags` on the endpoint (other tags are kept)."""
        ...

    def delete_endpoint(self, name: str) -> None:
        """Begin deleting the endpoint and its deployments; no error if it is already gone."""
        ...


@runtime_checkable
class PreflightBackend(Protocol):
    def preflight(self, config: RunConfig) -> PreflightReport:
        """Check, without creating anything, that a run with `config` can start: the base model
        resolves (record its version), the training and serving instance types exist in the
        region and the VM-family quota covers them, and the endpoint name is valid and either
        free or created by this app. Each problem is a failed check with an actionable detail;
        only transient faults raise."""
        ...


@runtime_checkable
class ConnectionStore(Protocol):
    def publish_connection(self, name: str, endpoint: str) -> str:
        """Create/update the Prompt flow custom connection `name` with configs.endpoint = the
        endpoint's scoring URI and secrets.key = its primary key (read here, never returned).
        Returns the scoring URI written."""
        ...

    def connection_exists(self, name: str) -> bool: ...

    def delete_connection(self, name: str) -> None:
        """Delete the connection; no error if it is already gone."""
        ...


@runtime_checkable
class DatasetStore(Protocol):
    """The datasets container (Azure Storage, or Azurite offline).

    Errors: a missing blob or container is FileNotFoundError; a blob that no longer has the etag
    asked for is `BlobChangedError`; any other storage failure is `BlobStoreError` (both from
    storage/errors.py, re-exported here). Their messages carry no URL, key or SAS token.
    """

    @property
    def account_url(self) -> str:
        """The account's blob endpoint: a dataset URL must be under it (the HTTP API checks)."""
        ...

    def describe(self, blob: BlobRef) -> BlobRef:
        """Return `blob` with its current etag and URL (a URL without its query string).

        Raises FileNotFoundError if the blob or its container is missing, BlobStoreError for any
        other failure."""
        ...

    def download(self, blob: BlobRef, dest: Path) -> None:
        """Stream the blob version `blob.etag` (if set; quoted or not) to `dest`.

        Raises BlobChangedError if the blob no longer has that etag, FileNotFoundError if it is
        missing, BlobStoreError for any other failure; `dest` is not left behind on failure."""
        ...

    def open_stream(self, blob: BlobRef) -> Iterator[bytes]:
        """The bytes of blob version `blob.etag` (if set; quoted or not), chunk by chunk as they
        arrive (non-empty chunks of a few MiB at most), for work that overlaps the download.

        The first request is sent by this call: it raises FileNotFoundError if the blob or its
        container is missing, BlobChangedError if the blob no longer has that etag, BlobStoreError
        for any other failure. Iterating raises the same errors for a later chunk (later chunks
        are pinned to the version the first one came from: an overwrite mid-way is
        BlobChangedError)."""
        ...

    def upload(self, src: Path, blob: BlobRef) -> BlobRef:
        """Upload `src` to `blob` (overwrite); return it with the new etag and URL.

        Raises FileNotFoundError if the container is missing, BlobStoreError for any other failure."""
        ...

    def upload_chunks(self, chunks: Iterable[bytes], blob: BlobRef) -> BlobRef:
        """Upload the concatenation of `chunks` to `blob` (overwrite), reading them as they come
        (staged as blocks: memory stays at a chunk or two); return it with the new etag and URL.
        No chunks is an empty blob.

        Raises FileNotFoundError if the container is missing, BlobStoreError for any other failure;
        an exception raised by `chunks` propagates as it is, and the blob is left as it was (nothing
        is committed unless every chunk was read)."""
        ...


@runtime_checkable
class TurnStore(Protocol):
    """Whose turn it is to release onto an endpoint (core/turns.py), changed atomically."""

    def take(self, endpoint: str, run: str, ttl_s: float) -> TurnAnswer:
        """Grant `run` the turn (or renew it) for `ttl_s` if it is free, expired or its own."""
        ...

    def give_back(self, endpoint: str, run: str) -> bool:
        """End `run`'s turn; False (no error) if it does not hold it."""
        ...

    def current(self, endpoint: str) -> Turn | None: ...
