"""Training on Azure ML: fine-tuning jobs, model registration and tags, listing and archiving
the registered versions, the data URI a job reads and (through mlflow_history) its loss curves.

Idempotent by name: a job is submitted once per job name, a job's model is registered once (found
again by its `job_name` tag, or adopted when the job registered it itself), a missing job or
version is no error to cancel or archive. Transient azure-core errors propagate for the retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Model
from azure.ai.ml.finetuning import FineTuningTaskType, create_finetuning_job
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from backends.azureml.mlflow_history import MlflowLossHistory
from backends.azureml.workspace import MAX_ERROR_CHARS, AzureWorkspace, enum_value, job_state, str_tags
from core import redact
from core.models import BlobRef, FineTuneSpec, JobInfo, JobState, LossHistory, ModelRef
from core.naming import CREATED_BY_TAG

log = logging.getLogger(__name__)

# The fine-tuning job's auto-registered model output (azure/ai/ml/finetuning/_create_job.py:45).
REGISTERED_MODEL_OUTPUT = "registered_model"
# Lineage tag put on every model this backend registers or adopts; also how a retry finds it.
JOB_TAG = "job_name"


def _version_key(version: str) -> tuple[int, int, str]:
    """Sort model versions numerically when they are numbers ("2" before "10"), else by text."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


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


class AzureTraining:
    """`TrainingBackend` on one Azure ML workspace."""

    def __init__(self, workspace: AzureWorkspace) -> None:
        self._ws = workspace
        self.history = MlflowLossHistory(workspace)

    def submit_finetune(self, spec: FineTuneSpec) -> str:
        try:
            existing = self._ws.ml.jobs.get(spec.job_name)
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
        created = self._ws.ml.jobs.create_or_update(job)
        log.info("submitted fine-tuning job %s", created.name)
        return str(created.name or spec.job_name)

    def _base_model_uri(self, spec: FineTuneSpec) -> str:
        registry = spec.model_registry
        version = spec.base_model_version
        if not version:
            # ModelOperations.get(label="latest") resolves through _managed_label_resolver and, for a
            # registry, re-reads that version (operations/_model_operations.py:417-421).
            latest = self._ws.registry(registry).models.get(name=spec.base_model_name, label="latest")
            version = str(latest.version)
            log.info("resolved %s latest -> version %s in %s", spec.base_model_name, version, registry)
        return f"azureml://registries/{registry}/models/{spec.base_model_name}/versions/{version}"

    def get_job(self, job_name: str) -> JobInfo:
        job = self._ws.ml.jobs.get(job_name)
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
            details = self._ws.ml.jobs._runs_operations.get_run_details(job_name)
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
            job = self._ws.ml.jobs.get(job_name)
        except ResourceNotFoundError:
            return
        raw = enum_value(job.status)
        if job_state(raw).terminal or raw.lower() == "cancelrequested":
            return
        try:
            self._ws.ml.jobs.begin_cancel(job_name)  # poller not awaited
        except ResourceNotFoundError:
            return
        except HttpResponseError as e:
            # The job may have reached a terminal state between get and cancel (service answers 4xx).
            if e.status_code is not None and 400 <= e.status_code < 500:
                again = enum_value(self._ws.ml.jobs.get(job_name).status)
                if job_state(again).terminal or again.lower() == "cancelrequested":
                    return
            raise

    def register_model(self, job_name: str, model_name: str, tags: dict[str, str]) -> ModelRef:
        wanted = {**tags, JOB_TAG: job_name}
        job = self._ws.ml.jobs.get(job_name)
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
        created = self._ws.ml.models.create_or_update(model)
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
                found: Model = self._ws.ml.models.get(name=name, version=str(version))
                return found
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
            return list(self._ws.ml.models.list(name=name))
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
        updated: Model = self._ws.ml.models.create_or_update(model)
        return updated

    def set_model_tags(self, model: ModelRef, tags: dict[str, str]) -> None:
        """Merge `tags` into the workspace model version's tags (ResourceNotFoundError if it is missing)."""
        found = self._ws.ml.models.get(name=model.name, version=model.version)
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
        for container in self._ws.ml.models.list():
            name = getattr(container, "name", None)
            if not name:
                continue
            for version in self._list_models(str(name)):
                tags = str_tags(version.tags)
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
            self._ws.ml.models.archive(name=model.name, version=model.version)
        except ResourceNotFoundError:
            log.info("model %s:%s is already gone", model.name, model.version)
            return
        log.info("model %s:%s archived", model.name, model.version)

    def loss_history(self, job_name: str) -> LossHistory:
        """The job's loss curves from the workspace's MLflow service (see `MlflowLossHistory`)."""
        return self.history.loss_history(job_name)

    def data_uri(self, blob: BlobRef) -> str:
        datastore = self._ws.settings.AZUREML_DATASTORE
        if datastore:
            # The datastore points at the datasets container, so the path is the blob name.
            return f"azureml://datastores/{datastore}/paths/{blob.name}"
        if blob.url:
            return blob.url
        raise ValueError(f"no AZUREML_DATASTORE and no URL for blob {blob.path}: the job cannot read it")
