"""One typed view of the app settings (environment / local.settings.json "Values").

Read by starters and activities only (`get_settings()`); orchestrators receive the resolved
`RunConfig` in their input and never read the environment.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.models import EvaluationPolicy, Hyperparameters, Overrides, PollPolicy, RunConfig
from core.naming import unique_string

HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"
# Downloading the validation split and drawing the sample, before the first scoring call.
EVAL_BATCH_MARGIN_S = 60.0
# Waits before the retries of a busy (408/429/503) scoring answer (activities/evaluation.py).
EVAL_BUSY_BACKOFF_S = (2.0, 4.0, 8.0, 16.0)
LOCAL_ENDPOINT_NAME = "phi3-ft-endpoint"
# A blob container name: 3-63 lowercase letters, digits and single hyphens, no hyphen at either end.
_CONTAINER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def evaluation_batch_seconds(batch_size: int, timeout_s: float, attempts: int) -> float:
    """The longest an evaluation batch can take: every call times out on every attempt."""
    backoff = sum(EVAL_BUSY_BACKOFF_S[: attempts - 1])
    return batch_size * (attempts * timeout_s + backoff) + EVAL_BATCH_MARGIN_S


def function_timeout_seconds(host_json: Path = HOST_JSON) -> float:
    """host.json's `functionTimeout` ("hh:mm:ss") in seconds; -1 or absent (Premium/Dedicated
    unbounded) counts as 30 minutes, the default guaranteed on Flex Consumption."""
    try:
        raw = str(json.loads(host_json.read_text(encoding="utf-8")).get("functionTimeout", ""))
    except (OSError, ValueError):
        raw = ""
    parts = raw.split(":")
    if len(parts) != 3 or raw.startswith("-"):
        return 1800.0
    hours, minutes, seconds = (float(p) for p in parts)
    return hours * 3600 + minutes * 60 + seconds


def default_endpoint_name(subscription: str, resource_group: str, workspace: str) -> str:
    """`phi3-ft-` + 13 characters derived like Bicep's uniqueString(subscription, rg, workspace):
    stable for one deployment of the app, different for another (endpoint names are unique per region)."""
    return f"phi3-ft-{unique_string(subscription.lower(), resource_group.lower(), workspace.lower())}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True, env_ignore_empty=True)

    # Which backend the activities use: Azure ML, or the offline stack (devhost).
    BACKEND: Literal["azureml", "local"] = "azureml"

    # Durable task hub (host.json reads %TASK_HUB_NAME%).
    TASK_HUB_NAME: str = "phi3finetune"

    # Datasets storage: the blob trigger's `connection` is the prefix "DatasetsStorage"; the app
    # reads the same setting(s): a connection string (Azurite / local) or identity-based
    # `DatasetsStorage__blobServiceUri` (+ `__clientId` for a user-assigned identity).
    DATASETS_CONTAINER: str = "datasets"
    # Containers `POST /api/runs` may read datasets and validation files from (comma-separated);
    # unset, only DATASETS_CONTAINER (the one the blob trigger watches).
    DATASET_CONTAINERS: str | None = None
    DatasetsStorage: str | None = Field(default=None, repr=False)
    DatasetsStorage__blobServiceUri: str | None = None
    DatasetsStorage__accountName: str | None = None
    DatasetsStorage__clientId: str | None = None
    DatasetsStorage__credential: str | None = None  # "managedidentity" in Azure (read by the host too)

    # Azure ML workspace used for fine-tuning and serving, and the AI Studio project holding the
    # Prompt flow connection (defaults to the same workspace).
    AZURE_SUBSCRIPTION_ID: str | None = None
    AZURE_RESOURCE_GROUP: str | None = None
    AZUREML_WORKSPACE: str | None = None
    AI_PROJECT_NAME: str | None = None
    # Client id of the user-assigned managed identity (DefaultAzureCredential uses it).
    AZURE_CLIENT_ID: str | None = None
    # Optional workspace datastore that points at the datasets container; without it the job
    # reads the blobs by their https URL.
    AZUREML_DATASTORE: str | None = None

    # What to fine-tune and how (the seed's choices are the defaults).
    BASE_MODEL_NAME: str = "Phi-3-mini-4k-instruct"
    BASE_MODEL_VERSION: str | None = None  # None = latest in the registry
    MODEL_REGISTRY: str = "azureml"
    TRAINING_INSTANCE_TYPE: str = "Standard_NC24ads_A100_v4"
    OUTPUT_MODEL_PREFIX: str = "phi3-mini-ft"
    LEARNING_RATE: float = 0.00002
    LR_SCHEDULER_TYPE: str = "linear"
    NUM_TRAIN_EPOCHS: int = 1
    BATCH_SIZE: int = 1

    # Where it is served and how Prompt flow finds it. Online endpoint names are unique per Azure
    # region, not per workspace: unset, the name is derived from the subscription, resource group
    # and workspace (`default_endpoint_name`), so two deployments of this app never collide.
    ENDPOINT_NAME: str | None = None
    # The tutorial's Standard_NC6s_v3 was retired on 2025-09-30; the A100 size is in the base model's
    # inference allow list and in the training size's quota family.
    SERVING_INSTANCE_TYPE: str = "Standard_NC24ads_A100_v4"
    SERVING_INSTANCE_COUNT: int = 1
    # Probes and request timeout of the fine-tuned model's deployment: a 3.8 B-parameter model loads
    # slower than the default 10 s + 30 x 10 s liveness window (Azure's own Phi-3 fine-tuning sample
    # sets initial_delay=600). Requests: Azure allows at most 180 000 ms.
    SERVING_PROBE_INITIAL_DELAY_S: int = Field(default=600, ge=0, le=3600)
    SERVING_PROBE_PERIOD_S: int = Field(default=10, ge=1, le=300)
    SERVING_PROBE_FAILURE_THRESHOLD: int = Field(default=30, ge=1, le=100)
    SERVING_REQUEST_TIMEOUT_MS: int = Field(default=90_000, ge=1_000, le=180_000)
    # Where a region's online endpoints answer ({endpoint}, {region}); preflight asks whether an
    # endpoint name is already taken there. Sovereign clouds use their own domain.
    AZUREML_INFERENCE_URL_TEMPLATE: str = "https://{endpoint}.{region}.inference.ml.azure.com"
    CONNECTION_NAME: str = "phi3-finetuned"
    SMOKE_TEST_PROMPT: str = "Say hello in one short sentence."

    # Polling and deadlines.
    JOB_POLL_FIRST_S: int = 60
    JOB_POLL_MAX_S: int = 600
    JOB_POLL_BACKOFF: float = 1.5
    JOB_DEADLINE_HOURS: float = 24.0
    # The job's end by event: Azure ML's RunStatusChanged (Event Grid system topic on the workspace,
    # subscribed to the `on_job_status_changed` function) wakes the run at once; the job is then
    # read to confirm. Polling stays as the safety net, every JOB_EVENT_FALLBACK_S. Off (the
    # default where nothing publishes the events): backoff polling as above (JOB_POLL_*). The
    # Bicep turns it on together with the subscription.
    JOB_STATUS_EVENTS: bool = False
    JOB_EVENT_FALLBACK_S: int = Field(default=1200, ge=60)
    MONITOR_POLLS_PER_GENERATION: int = 20
    DEPLOY_POLL_FIRST_S: int = 30
    DEPLOY_POLL_MAX_S: int = 120
    DEPLOY_TIMEOUT_MINUTES: float = 90.0
    ACTIVITY_RETRY_ATTEMPTS: int = 4
    ACTIVITY_RETRY_FIRST_INTERVAL_MS: int = 5000

    # Offline stack (BACKEND=local, devhost): where state lives and how hard the tiny model trains.
    LOCAL_RUN_DIR: str = ".run"
    LOCAL_MAX_STEPS: int = 300
    LOCAL_LEARNING_RATE: float = 0.003
    # Where a local job's end is published as Azure ML's RunStatusChanged (an Event Grid webhook:
    # the dev host sets its own); None publishes nothing (the run then polls). May carry a key.
    LOCAL_JOB_EVENTS_URL: str | None = Field(default=None, repr=False)

    # Evaluation gate: before traffic moves, the new deployment and the live one answer the same
    # seeded sample of held-out validation prompts; promote only if new >= live - tolerance and
    # new >= floor. EVAL_SAMPLE_SIZE=0 turns the gate off.
    EVAL_SAMPLE_SIZE: int = Field(default=50, ge=0)
    EVAL_BATCH_SIZE: int = Field(default=10, ge=1)
    EVAL_MAX_PARALLEL: int = Field(default=2, ge=1)
    EVAL_TOLERANCE: float = Field(default=0.02, ge=0)
    EVAL_FLOOR: float = Field(default=0.0, ge=0, le=1)
    # One evaluation call: its timeout and how many attempts a busy (408/429/503) answer gets. A batch
    # must finish inside the host's functionTimeout by construction (`_evaluation_fits_timeout`).
    EVAL_SCORE_TIMEOUT_S: float = Field(default=20.0, gt=0, le=180)
    EVAL_SCORE_ATTEMPTS: int = Field(default=2, ge=1, le=5)

    # Cost guard: endpoints this app creates carry an expires_at tag (deploy time + TTL; unset =
    # never), and a timer deletes expired ones on this NCRONTAB schedule.
    ENDPOINT_TTL_HOURS: float | None = Field(default=None, gt=0)
    ENDPOINT_SWEEP_SCHEDULE: str = "0 */30 * * * *"

    # Completion events: a CloudEvents 1.0 POST per terminal outcome, HMAC-SHA256 signed with the
    # secret (read by the notify activity only; in Azure a Key Vault reference).
    NOTIFY_WEBHOOK_URL: str | None = Field(default=None, repr=False)  # may carry a token
    NOTIFY_WEBHOOK_SECRET: str | None = Field(default=None, repr=False)
    NOTIFY_ATTEMPTS: int = Field(default=5, ge=1)
    NOTIFY_FIRST_BACKOFF_S: float = Field(default=2.0, ge=0)

    # Dataset rules.
    VALIDATION_FRACTION: float = 0.2
    SPLIT_SEED: int = 42
    MAX_TOKENS: int = 4096
    VALIDATION_MAX_ERRORS: int = 50

    @model_validator(mode="after")
    def _azure_needs_workspace(self) -> Settings:
        if self.BACKEND == "azureml":
            missing = [
                n
                for n in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE")
                if not getattr(self, n)
            ]
            if missing:
                raise ValueError(f"BACKEND=azureml needs these app settings: {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _known_dataset_containers(self) -> Settings:
        bad = [c for c in self.dataset_containers if not _CONTAINER_NAME.fullmatch(c) or "--" in c]
        if bad:
            names = ", ".join(repr(c[:63]) for c in bad)
            raise ValueError(f"DATASET_CONTAINERS: not container names: {names}")
        others = [c for c in self.dataset_containers if c != self.DATASETS_CONTAINER]
        if others and self.BACKEND == "azureml" and self.AZUREML_DATASTORE:
            # The job reads `azureml://datastores/<datastore>/paths/<blob>`: the datastore is over
            # DATASETS_CONTAINER, so a blob of another container would be read from the wrong place.
            raise ValueError(
                f"DATASET_CONTAINERS lists {', '.join(others)} besides DATASETS_CONTAINER, but "
                "AZUREML_DATASTORE is set and covers DATASETS_CONTAINER only: unset AZUREML_DATASTORE "
                "(jobs then read blobs by URL) or list only DATASETS_CONTAINER"
            )
        return self

    @model_validator(mode="after")
    def _evaluation_fits_timeout(self) -> Settings:
        budget = evaluation_batch_seconds(
            self.EVAL_BATCH_SIZE, self.EVAL_SCORE_TIMEOUT_S, self.EVAL_SCORE_ATTEMPTS
        )
        limit = function_timeout_seconds()
        if budget > limit:
            raise ValueError(
                f"an evaluation batch could run {budget:.0f} s, longer than the host's functionTimeout of "
                f"{limit:.0f} s (host.json): EVAL_BATCH_SIZE {self.EVAL_BATCH_SIZE} x (EVAL_SCORE_ATTEMPTS "
                f"{self.EVAL_SCORE_ATTEMPTS} x EVAL_SCORE_TIMEOUT_S {self.EVAL_SCORE_TIMEOUT_S:g} + backoff) "
                f"+ {EVAL_BATCH_MARGIN_S:.0f} s margin; lower one of them"
            )
        return self

    @property
    def endpoint_name(self) -> str:
        """ENDPOINT_NAME, or the name derived for this subscription, resource group and workspace."""
        if self.ENDPOINT_NAME:
            return self.ENDPOINT_NAME
        if self.BACKEND == "azureml":
            return default_endpoint_name(
                self.AZURE_SUBSCRIPTION_ID or "",
                self.AZURE_RESOURCE_GROUP or "",
                self.AZUREML_WORKSPACE or "",
            )
        return LOCAL_ENDPOINT_NAME

    @property
    def dataset_containers(self) -> tuple[str, ...]:
        """DATASET_CONTAINERS as a tuple (blanks dropped), or (DATASETS_CONTAINER,) when unset."""
        listed = [c.strip() for c in (self.DATASET_CONTAINERS or "").split(",") if c.strip()]
        return tuple(dict.fromkeys(listed)) or (self.DATASETS_CONTAINER,)

    @property
    def project_name(self) -> str | None:
        return self.AI_PROJECT_NAME or self.AZUREML_WORKSPACE

    def run_config(self, overrides: Overrides | None = None) -> RunConfig:
        """Resolve settings + per-run overrides into the frozen config an orchestration carries."""
        o = overrides or Overrides()
        base = Hyperparameters(
            learning_rate=self.LEARNING_RATE,
            lr_scheduler_type=self.LR_SCHEDULER_TYPE,  # type: ignore[arg-type]
            num_train_epochs=self.NUM_TRAIN_EPOCHS,
            per_device_train_batch_size=self.BATCH_SIZE,
        )
        hyper = Hyperparameters.model_validate(base.model_dump() | o.hyperparameters)
        return RunConfig(
            base_model_name=o.model.name or self.BASE_MODEL_NAME,
            base_model_version=o.model.version or self.BASE_MODEL_VERSION,
            model_registry=o.model.registry or self.MODEL_REGISTRY,
            hyperparameters=hyper,
            training_instance_type=o.training_instance_type or self.TRAINING_INSTANCE_TYPE,
            output_model_prefix=self.OUTPUT_MODEL_PREFIX,
            endpoint_name=o.endpoint.name or self.endpoint_name,
            serving_instance_type=o.endpoint.instance_type or self.SERVING_INSTANCE_TYPE,
            serving_instance_count=o.endpoint.instance_count or self.SERVING_INSTANCE_COUNT,
            connection_name=o.endpoint.connection_name or self.CONNECTION_NAME,
            job_poll=PollPolicy(
                first_interval_s=self.JOB_POLL_FIRST_S,
                max_interval_s=self.JOB_POLL_MAX_S,
                backoff=self.JOB_POLL_BACKOFF,
                deadline_s=round(self.JOB_DEADLINE_HOURS * 3600),
            ),
            deploy_poll=PollPolicy(
                first_interval_s=self.DEPLOY_POLL_FIRST_S,
                max_interval_s=self.DEPLOY_POLL_MAX_S,
                backoff=1.5,
                deadline_s=round(self.DEPLOY_TIMEOUT_MINUTES * 60),
            ),
            job_event_fallback_s=self.JOB_EVENT_FALLBACK_S if self.JOB_STATUS_EVENTS else None,
            monitor_polls_per_generation=self.MONITOR_POLLS_PER_GENERATION,
            validation_fraction=self.VALIDATION_FRACTION,
            split_seed=self.SPLIT_SEED,
            max_tokens=self.MAX_TOKENS,
            max_errors=self.VALIDATION_MAX_ERRORS,
            smoke_test_prompt=self.SMOKE_TEST_PROMPT,
            activity_retry_attempts=self.ACTIVITY_RETRY_ATTEMPTS,
            activity_retry_first_interval_ms=self.ACTIVITY_RETRY_FIRST_INTERVAL_MS,
            evaluation=EvaluationPolicy(
                sample_size=self.EVAL_SAMPLE_SIZE,
                batch_size=self.EVAL_BATCH_SIZE,
                max_parallel=self.EVAL_MAX_PARALLEL,
                tolerance=self.EVAL_TOLERANCE,
                floor=self.EVAL_FLOOR,
            ),
            endpoint_ttl_hours=self.ENDPOINT_TTL_HOURS,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
