"""`LocalTraining`: the offline `TrainingBackend`, fine-tuning a tiny Phi-3 in a background process.

One folder per job under `RunPaths.jobs_dir` (`<run dir>/jobs/<job name>/`):

- `spec.json`   what to train: `{"spec": FineTuneSpec, "run_dir", "max_steps", "learning_rate", "seed"}`
                (no secrets: the storage connection reaches the job through its environment);
- `status.json` `{"state": "Queued"|"Running"|"Completed"|"Failed"|"Canceled", "updated_at", ...}`,
                always replaced atomically (temp file + `os.replace`) by whoever writes it: the
                backend (Queued, Canceled, Failed when the process vanished) and the job process
                (Running with `progress`, Completed with `run_id`/`model_uri`, Failed with `error`);
- `process.json` the job process's pid and kernel start time (so a recycled pid is not mistaken
                for the job);
- `log.txt`     the job process's stdout/stderr;
- `data/`, `tokenizer/` the downloaded splits and the trained tokenizer.

The job process is `python -m localml.train_job <job dir>` (see `localml/train_job.py`), started,
recognised and stopped with `localml.processes` (its own session, so `cancel_job` signals its
whole process group).

When a job ends (Completed, Failed, Canceled) and `LOCAL_JOB_EVENTS_URL` is set, whoever wrote the
final status (the job process, or `cancel_job` / `get_job` here) POSTs one Azure ML
`Microsoft.MachineLearningServices.RunStatusChanged` event to it, in the Event Grid schema and
the way Event Grid delivers (`aeg-event-type: Notification`, a JSON array): the dev host sets it
to its own Event Grid webhook, so a waiting run is woken as on Azure (`publish_status_event`).
Best effort: a failed POST is logged and changes nothing (the run's fallback poll finds the job).

The loss history (`train_loss` / `eval_loss` of the job's MLflow run) and the model housekeeping
(`set_model_tags`, `list_models`, `delete_model`) use the local MLflow store; before a job has
created it they find nothing and create nothing.

Besides the backend, two helpers for the scoring side (importable without side effects; torch,
transformers and mlflow are imported only when they are called):

- `load_model(model_ref, settings)` -> `(model, tokenizer)` of a registered model version;
- `generate(model, tokenizer, messages, temperature, max_new_tokens)` -> the assistant's reply.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.models import BlobRef, FineTuneSpec, JobInfo, JobState, LossHistory, MetricPoint, ModelRef
from core.settings import Settings
from localml import processes, state_files
from localml.paths import RunPaths

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "JOB_TAG",
    "JobNotFoundError",
    "LocalTraining",
    "generate",
    "job_env",
    "load_model",
    "publish_status_event",
    "read_status",
    "status_event",
    "write_status",
]

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
PROCESS_FILE = "process.json"
LOG_FILE = "log.txt"
LOCK_FILE = ".lock"
# Model-version tag naming the job, as the Azure ML backend writes it; lineage tags may also carry
# "job-name" (core.naming.lineage_tags). Either one identifies "the version of this job".
JOB_TAG = "job_name"
JOB_TAGS = (JOB_TAG, "job-name")
SEED = 1234
# The MLflow metrics `localml.train_job` logs: training loss and validation (eval) loss per step.
TRAIN_LOSS_METRIC = "train_loss"
VALIDATION_LOSS_METRIC = "eval_loss"
# Model-version tag naming who created the version (core.naming.lineage_tags).
CREATED_BY_TAG = "created-by"
# Names that can go into an MLflow filter string as a quoted literal as they are.
_FILTER_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
# A Queued job whose process file is still missing after this long will never start.
START_GRACE_S = 60.0
# SIGTERM, then SIGKILL after this long.
CANCEL_GRACE_S = 5.0
JOB_MODULE = "localml.train_job"
# Settings the job process needs to read the datasets storage (it builds `Settings()` itself).
_STORAGE_SETTINGS = (
    "DatasetsStorage",
    "DatasetsStorage__blobServiceUri",
    "DatasetsStorage__accountName",
    "DatasetsStorage__clientId",
    "DATASETS_CONTAINER",
)

# Settings the job process needs to publish its end (`publish_status_event`).
_EVENT_SETTINGS = ("LOCAL_JOB_EVENTS_URL", "AI_PROJECT_NAME", "AZUREML_WORKSPACE")
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
EVENT_TIMEOUT_S = 5.0
LOCAL_WORKSPACE = "local"  # the workspace name in the topic when no project name is set
_WORKSPACE_TOPIC = (
    "/subscriptions/local/resourceGroups/local/providers/Microsoft.MachineLearningServices/workspaces/{}"
)


class JobNotFoundError(LookupError):
    """No job of that name in this run directory."""


# ------------------------------------------------------------------------------ status files


def _read_json(path: Path) -> dict[str, Any] | None:
    """A job's state file, None if missing or unreadable (the job then reads as not started)."""
    return state_files.read_json(path, unreadable_is_missing=True)


def read_status(job_dir: Path) -> dict[str, Any] | None:
    """The job's `status.json`, or None if it has none yet."""
    return _read_json(job_dir / STATUS_FILE)


def write_status(job_dir: Path, state: JobState, **fields: Any) -> dict[str, Any]:
    """Replace the job's status with `state` (+ `fields`), atomically. Returns what was written."""
    status = {"state": state.value, "updated_at": state_files.now(), **fields}
    state_files.write_json(job_dir / STATUS_FILE, status)
    return status


def _update_status(job_dir: Path, state: JobState, **fields: Any) -> dict[str, Any]:
    """`write_status` keeping what the job recorded so far (run id, progress...)."""
    current = read_status(job_dir) or {}
    kept = {k: v for k, v in current.items() if k not in ("state", "updated_at", "error")}
    return write_status(job_dir, state, **{**kept, **fields})


def job_env(settings: Settings) -> dict[str, str]:
    """The job process's environment: a child's (`processes.child_env`) + the storage settings and
    where to publish its end."""
    names = (*_STORAGE_SETTINGS, *_EVENT_SETTINGS)
    passed = {name: str(value) for name in names if (value := getattr(settings, name, None))}
    return processes.child_env({"BACKEND": "local", **passed})


# ------------------------------------------------------------------------------ status events


def status_event(job_dir: Path, state: JobState, workspace: str) -> dict[str, Any]:
    """The `RunStatusChanged` event Azure ML would publish for the job in `job_dir` ending in
    `state`, in the Event Grid schema (`data.runId` = the job name)."""
    spec = (_read_json(job_dir / SPEC_FILE) or {}).get("spec") or {}
    status = read_status(job_dir) or {}
    experiment = str(spec.get("output_model_prefix") or "")
    experiment_id = str(status.get("experiment_id") or experiment or "local")
    tags = spec.get("tags") if isinstance(spec.get("tags"), dict) else {}
    return {
        "id": str(uuid.uuid4()),
        "topic": _WORKSPACE_TOPIC.format(workspace),
        "subject": f"experiments/{experiment_id}/runs/{job_dir.name}",
        "eventType": RUN_STATUS_CHANGED,
        "eventTime": state_files.now(),
        "data": {
            "experimentId": experiment_id,
            "experimentName": experiment,
            "runId": job_dir.name,
            "runType": "azureml.scriptrun",
            "runTags": {**tags, JOB_TAG: job_dir.name},
            "runProperties": {},
            "runStatus": state.value,
        },
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def publish_status_event(settings: Settings, job_dir: Path, state: JobState) -> bool:
    """POST the job's `RunStatusChanged` event to `settings.LOCAL_JOB_EVENTS_URL`, as Event Grid
    delivers it; True if it was accepted. Best effort: no URL publishes nothing, and a failure is
    logged (never the URL: it may carry a key) and never raised. Proxies are bypassed: the
    receiver is the offline stack's own host."""
    url = settings.LOCAL_JOB_EVENTS_URL
    if not url or not state.terminal:
        return False
    try:
        event = status_event(job_dir, state, settings.project_name or LOCAL_WORKSPACE)
        request = urllib.request.Request(
            url,
            data=json.dumps([event]).encode(),
            headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
            method="POST",
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=EVENT_TIMEOUT_S) as resp:
            code = resp.status
    except urllib.error.HTTPError as exc:
        log.warning("job %s: the %s event was refused (HTTP %s)", job_dir.name, state.value, exc.code)
        return False
    except Exception as exc:  # unreachable, timed out, a bad URL...: the run's fallback poll finds it
        reason = getattr(exc, "reason", None) or type(exc).__name__
        log.warning("job %s: publishing the %s event failed: %s", job_dir.name, state.value, reason)
        return False
    log.info("job %s: published %s (HTTP %s)", job_dir.name, state.value, code)
    return True


def _job_process(job_dir: Path) -> processes.Process | None:
    """(pid, start time) of the job's process from `process.json`; None before it was started."""
    record = _read_json(job_dir / PROCESS_FILE)
    return None if record is None else (int(record["pid"]), record.get("start_time"))


# ------------------------------------------------------------------------------ the backend


class LocalTraining:
    """`TrainingBackend` over background `localml.train_job` processes and a local MLflow store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = RunPaths.at(settings.LOCAL_RUN_DIR)

    # -- helpers ---------------------------------------------------------------------------

    def job_dir(self, job_name: str) -> Path:
        if not job_name or "/" in job_name or job_name.startswith(".") or job_name != job_name.strip():
            raise ValueError(f"invalid job name: {job_name!r}")
        return self.paths.jobs_dir / job_name

    def log_path(self, job_name: str) -> Path:
        return self.job_dir(job_name) / LOG_FILE

    def status(self, job_name: str) -> dict[str, Any]:
        """The raw `status.json` (progress, run id, model URI...) after `get_job`'s liveness check."""
        self.get_job(job_name)
        return read_status(self.job_dir(job_name)) or {"state": JobState.QUEUED.value}

    # -- TrainingBackend -------------------------------------------------------------------

    def submit_finetune(self, spec: FineTuneSpec) -> str:
        """Create the job folder and start its process; if the folder exists, just return the name.

        The folder appears atomically (staged under a temporary name, then renamed), so two
        concurrent submits of the same spec create one job; the process is started under a
        lock, so they start one process. Never waits for training.
        """
        processes.reap()
        job_dir = self.job_dir(spec.job_name)
        if not job_dir.exists():
            self.paths.jobs_dir.mkdir(parents=True, exist_ok=True)
            staging = self.paths.jobs_dir / f".{spec.job_name}.{uuid.uuid4().hex[:8]}.staging"
            staging.mkdir()
            state_files.write_json(
                staging / SPEC_FILE,
                {
                    "spec": spec.model_dump(mode="json"),
                    "run_dir": str(self.paths.root),
                    "max_steps": self.settings.LOCAL_MAX_STEPS,
                    "learning_rate": self.settings.LOCAL_LEARNING_RATE,
                    "seed": SEED,
                },
            )
            write_status(staging, JobState.QUEUED)
            try:
                staging.rename(job_dir)
            except OSError:
                if not job_dir.exists():
                    raise
                # another submit of the same job won the race
                for leftover in staging.iterdir():
                    leftover.unlink()
                staging.rmdir()
        self._ensure_started(spec.job_name)
        return spec.job_name

    def _ensure_started(self, job_name: str) -> None:
        job_dir = self.job_dir(job_name)
        with state_files.locked(job_dir / LOCK_FILE):
            if (job_dir / PROCESS_FILE).exists():
                return
            status = read_status(job_dir)
            if status is not None and status.get("state") != JobState.QUEUED.value:
                return
            started = processes.spawn(JOB_MODULE, [str(job_dir)], job_dir / LOG_FILE, job_env(self.settings))
            state_files.write_json(job_dir / PROCESS_FILE, started)

    def get_job(self, job_name: str) -> JobInfo:
        processes.reap()
        job_dir = self.job_dir(job_name)
        if not job_dir.is_dir():
            raise JobNotFoundError(f"no fine-tuning job named {job_name!r} in {self.paths.jobs_dir}")
        log = job_dir / LOG_FILE
        status = read_status(job_dir) or {"state": JobState.QUEUED.value}
        state = JobState(status["state"])
        if not state.terminal:
            process = _job_process(job_dir)
            gone = False
            if process is None:
                age = time.time() - job_dir.stat().st_mtime
                gone = age > START_GRACE_S
                reason = f"training process never started; see {log}"
            else:
                gone = not processes.alive(*process)
                reason = f"training process exited unexpectedly; see {log}"
            if gone:
                # It may have written its final status just before exiting: read again.
                status = read_status(job_dir) or status
                state = JobState(status["state"])
                if not state.terminal:
                    status = _update_status(job_dir, JobState.FAILED, error=reason)
                    state = JobState.FAILED
                    publish_status_event(self.settings, job_dir, state)
        error = status.get("error") if state is JobState.FAILED else None
        progress = status.get("progress") or {}
        metrics = {
            k: float(v) for k, v in progress.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return JobInfo(
            name=job_name,
            state=state,
            raw_status=state.value,
            error=str(error) if error else None,
            studio_url=log.resolve().as_uri() if log.exists() else None,
            metrics=metrics,
        )

    def cancel_job(self, job_name: str) -> None:
        """Stop the job's process group (SIGTERM, SIGKILL after a grace) and mark it Canceled.

        No-op for an unknown or finished job. A job that finishes while being canceled keeps its
        final status (Completed / Failed), as in Azure ML.
        """
        try:
            info = self.get_job(job_name)
        except JobNotFoundError:
            return
        if info.state.terminal:
            return
        job_dir = self.job_dir(job_name)
        with state_files.locked(job_dir / LOCK_FILE):  # no process starts while we cancel
            process = _job_process(job_dir)
            if process is not None:
                processes.stop([process], CANCEL_GRACE_S)
            status = read_status(job_dir) or {}
            canceled = not JobState(status.get("state", JobState.QUEUED.value)).terminal
            if canceled:
                _update_status(job_dir, JobState.CANCELED)
        if canceled:
            publish_status_event(self.settings, job_dir, JobState.CANCELED)

    def stop_all(self) -> list[str]:
        """Cancel every job of this run directory that is still queued or running (`make down`)."""
        stopped = []
        if self.paths.jobs_dir.exists():
            for job_dir in sorted(p for p in self.paths.jobs_dir.iterdir() if p.is_dir()):
                status = read_status(job_dir) or {}
                if not JobState(status.get("state", JobState.QUEUED.value)).terminal:
                    self.cancel_job(job_dir.name)
                    stopped.append(job_dir.name)
        return stopped

    def register_model(self, job_name: str, model_name: str, tags: dict[str, str]) -> ModelRef:
        """Register the job's MLflow model as a version of `model_name`, once.

        A version of `model_name` tagged with this job (`job_name` or `job-name`) is reused (its
        tags completed); otherwise a new version is created from the job's logged model, tagged
        with `tags` + `job_name`. Raises RuntimeError unless the job is Completed.
        """
        info = self.get_job(job_name)
        if info.state is not JobState.COMPLETED:
            raise RuntimeError(f"job {job_name} is {info.raw_status}, not Completed: no model to register")
        job_dir = self.job_dir(job_name)
        model_uri = (read_status(job_dir) or {}).get("model_uri")
        if not model_uri:
            raise RuntimeError(f"job {job_name} is Completed but recorded no model URI ({job_dir})")
        wanted = {**tags, JOB_TAG: job_name}

        client = self._mlflow_client()
        import mlflow

        with state_files.locked(job_dir / LOCK_FILE):
            found = self._find_version(client, model_name, job_name)
            if found is None:
                version = mlflow.register_model(model_uri, model_name, tags=wanted).version
                current: dict[str, str] = {}
            else:
                version, current = found
            for key, value in wanted.items():
                if current.get(key) != value:
                    client.set_model_version_tag(model_name, str(version), key, value)
        return ModelRef(name=model_name, version=str(version))

    def data_uri(self, blob: BlobRef) -> str:
        """The blob's URL: the job process downloads it with the datasets storage settings."""
        if not blob.url:
            raise ValueError(f"blob {blob.path} has no URL: the local training job cannot read it")
        return blob.url

    def set_model_tags(self, model: ModelRef, tags: dict[str, str]) -> None:
        """Add/overwrite `tags` on the registered version (its other tags are kept).

        Raises LookupError if there is no such version (none registered in this run dir yet, or
        MLflow's RESOURCE_DOES_NOT_EXIST)."""
        if not tags:
            return
        if not self._store_exists():
            raise LookupError(f"model {model.name} version {model.version} not found (no MLflow store yet)")
        from mlflow.exceptions import MlflowException

        client = self._mlflow_client()
        missing: str | None = None
        try:
            for key, value in tags.items():
                client.set_model_version_tag(model.name, str(model.version), str(key), str(value))
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            missing = f"model {model.name} version {model.version} not found"
        if missing is not None:
            raise LookupError(missing)

    def loss_history(self, job_name: str) -> LossHistory:
        """`train_loss` / `eval_loss` per step from the job's MLflow run(s), sorted by step.

        The runs are the one the job recorded in `status.json` and any run tagged `job_name` with
        it (in every experiment); a step logged by several runs keeps the latest value. Empty
        lists for an unknown job, a job that has not logged yet, or a run dir without an MLflow
        store (nothing is created then).
        """
        if not self._store_exists():
            return LossHistory()
        run_ids: list[str] = []
        with contextlib.suppress(ValueError):  # an invalid job name: no folder, maybe no runs
            recorded = (read_status(self.job_dir(job_name)) or {}).get("run_id")
            if recorded:
                run_ids.append(str(recorded))
        client = self._mlflow_client()
        if _FILTER_SAFE.match(job_name):
            experiments = [
                e.experiment_id for e in _all_pages(lambda token: client.search_experiments(page_token=token))
            ]
            if experiments:
                for run in _all_pages(
                    lambda token: client.search_runs(
                        experiments, filter_string=f"tags.{JOB_TAG} = '{job_name}'", page_token=token
                    )
                ):
                    if run.info.run_id not in run_ids:
                        run_ids.append(run.info.run_id)
        return LossHistory(
            train=self._metric_series(client, run_ids, TRAIN_LOSS_METRIC),
            validation=self._metric_series(client, run_ids, VALIDATION_LOSS_METRIC),
        )

    def list_models(self, created_by: str) -> list[tuple[ModelRef, dict[str, str]]]:
        """Registered versions (not deleted) whose `created-by` tag is `created_by`, with their
        tags, by name then version number. [] without an MLflow store."""
        if not self._store_exists():
            return []
        client = self._mlflow_client()
        found = []
        for version in _all_pages(lambda token: client.search_model_versions(page_token=token)):
            tags = {str(k): str(v) for k, v in (version.tags or {}).items()}
            if tags.get(CREATED_BY_TAG) == created_by:
                found.append((ModelRef(name=version.name, version=str(version.version)), tags))
        return sorted(found, key=lambda item: (item[0].name, _version_key(item[0].version)))

    def delete_model(self, model: ModelRef) -> None:
        """Delete the registered version (MLflow keeps the number: the next one is not reused).
        No error if it (or its model, or the whole store) is already gone."""
        if not self._store_exists():
            return
        from mlflow.exceptions import MlflowException

        client = self._mlflow_client()
        try:
            client.delete_model_version(model.name, str(model.version))
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return
        log.info("model %s version %s deleted", model.name, model.version)

    # -- scoring helpers -------------------------------------------------------------------

    def load_model(self, model: ModelRef) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """`load_model(model, self.settings)`."""
        return load_model(model, self.settings)

    # -- internals -------------------------------------------------------------------------

    def _mlflow_client(self) -> Any:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient, set_registry_uri, set_tracking_uri

        set_tracking_uri(self.paths.mlflow_uri)
        set_registry_uri(self.paths.mlflow_uri)
        return MlflowClient(tracking_uri=self.paths.mlflow_uri, registry_uri=self.paths.mlflow_uri)

    def _store_exists(self) -> bool:
        """Has any job created the MLflow store yet? (Reading never creates it: the first job
        creates its schema under a lock, see `localml.train_job._experiment_id`.)"""
        return Path(self.paths.mlflow_uri.removeprefix("sqlite:///")).is_file()

    @staticmethod
    def _metric_series(client: Any, run_ids: list[str], key: str) -> list[MetricPoint]:
        from mlflow.exceptions import MlflowException

        latest: dict[int, tuple[int, float]] = {}  # step -> (timestamp, value)
        for run_id in run_ids:
            try:
                history = client.get_metric_history(run_id, key)
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                continue  # a run recorded in status.json but deleted from the store since
            for metric in history:
                step, stamp = int(metric.step), int(metric.timestamp)
                if step not in latest or stamp >= latest[step][0]:
                    latest[step] = (stamp, float(metric.value))
        return [MetricPoint(step=step, value=value) for step, (_, value) in sorted(latest.items())]

    @staticmethod
    def _find_version(client: Any, model_name: str, job_name: str) -> tuple[int, dict[str, str]] | None:
        from mlflow.exceptions import MlflowException

        escaped = model_name.replace("'", "\\'")
        try:
            versions = client.search_model_versions(f"name = '{escaped}'")
        except MlflowException:
            return None
        mine = [v for v in versions if any((v.tags or {}).get(t) == job_name for t in JOB_TAGS)]
        if not mine:
            return None
        first = min(mine, key=lambda v: int(v.version))
        return int(first.version), dict(first.tags or {})


def _all_pages(search: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every item of a paged MLflow search (`search(page_token)` -> PagedList)."""
    token: str | None = None
    while True:
        page = search(token)
        yield from page
        token = page.token
        if not token:
            return


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


# ------------------------------------------------------------------------------ scoring helpers


def load_model(
    model: ModelRef, settings: Settings | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a registered model version (`models:/<name>/<version>`) as `(model, tokenizer)`.

    `settings.LOCAL_RUN_DIR` says where the MLflow registry lives (default: `Settings(BACKEND=
    "local")`, i.e. the environment). The version's artifacts are read in place from the local
    artifact store with transformers (no copy, no pipeline): the model weights from `model/`,
    the tokenizer from `components/tokenizer/` - the layout `mlflow.transformers` writes. The
    model is returned in eval mode on CPU.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    paths = RunPaths.at((settings or Settings(BACKEND="local")).LOCAL_RUN_DIR)
    client = MlflowClient(tracking_uri=paths.mlflow_uri, registry_uri=paths.mlflow_uri)
    source = client.get_model_version_download_uri(model.name, model.version)
    # A file: URI for the local store -> its path, no copy; anything else is downloaded.
    local = Path(download_artifacts(artifact_uri=source, tracking_uri=paths.mlflow_uri))
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in a server's log
    try:
        loaded = AutoModelForCausalLM.from_pretrained(local / "model")
        tokenizer = AutoTokenizer.from_pretrained(local / "components" / "tokenizer")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    loaded.eval()
    return loaded, tokenizer


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    temperature: float,
    max_new_tokens: int,
) -> str:
    """The assistant's reply to `messages` (`[{"role", "content"}, ...]`), as plain text.

    The prompt is the chat template with the generation prompt (`...<|assistant|>\\n`), cut from
    the left if needed so prompt + reply fit the model's positions. Greedy when `temperature`
    <= 0, else sampling at that temperature (top-p 0.95). Generation stops at `<|end|>` or
    `<|endoftext|>`; special tokens are removed and the text stripped.
    """
    import torch

    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids: list[int] = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    max_new_tokens = max(1, int(max_new_tokens))
    limit = int(getattr(model.config, "max_position_embeddings", 512))
    max_new_tokens = min(max_new_tokens, limit // 2)
    ids = ids[-(limit - max_new_tokens) :]
    end_ids = [
        i for i in (tokenizer.convert_tokens_to_ids("<|end|>"), tokenizer.eos_token_id) if i is not None
    ]
    input_ids = torch.tensor([ids], dtype=torch.long)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": end_ids,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_ids[-1],
    }
    if temperature > 0:
        options.update(do_sample=True, temperature=float(temperature), top_p=0.95, top_k=0)
    else:
        options.update(do_sample=False)
    with torch.inference_mode():
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **options)
    new = output[0, input_ids.shape[1] :].tolist()
    for stop in end_ids:
        if stop in new:
            new = new[: new.index(stop)]
    return str(tokenizer.decode(new, skip_special_tokens=True)).strip()
