"""Loss curves of an Azure ML job from the workspace's MLflow service, over MLflow's REST API.

mlflow-skinny's own RestStore with an ARM token from the backend's credential is used, not the
azureml-mlflow plugin (whose pins clash with requirements.txt); `mlflow` is imported here and only
here, lazily. Every failure is re-raised scrubbed of the token and of the workspace REST URL.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from backends.azureml.workspace import MAX_ERROR_CHARS, AzureWorkspace, arm_scope
from core import redact
from core.models import LossHistory, MetricPoint

log = logging.getLogger(__name__)

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


def metric_points(history: Iterable[Any]) -> list[MetricPoint]:
    """MLflow `Metric`s as points sorted by step (then logging time). Non-finite values are dropped:
    a NaN/inf loss would serialise as JSON null and no longer validate as a float."""
    rows = [
        (int(m.step or 0), int(getattr(m, "timestamp", 0) or 0), float(m.value))
        for m in history
        if m.value is not None and math.isfinite(float(m.value))
    ]
    rows.sort(key=lambda r: (r[0], r[1]))
    return [MetricPoint(step=step, value=value) for step, _, value in rows]


class MlflowLossHistory:
    """`TrainingBackend.loss_history` for jobs of one Azure ML workspace."""

    def __init__(self, workspace: AzureWorkspace) -> None:
        self._ws = workspace

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
        client = self.client(self._ws.tracking_uri())
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

    def client(self, tracking_uri: str) -> MlflowTrackingClient:
        """An MLflow client for `tracking_uri`.

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
        return _rest_store_client(base, AzureMLHostCreds(base, self._ws.credential()))

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
                points = metric_points(client.get_metric_history(run.info.run_id, name))
                if not first:
                    first = points
                if len(points) > 1:
                    first = points
                    break
            if len(first) > len(best):
                best = first
        return best
