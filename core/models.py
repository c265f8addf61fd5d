"""Data that crosses function boundaries (orchestrator input, activity inputs/outputs, status).

Everything here is plain, JSON-serialisable and free of secrets: these objects end up in the
durable history, the custom status and the run output.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator

from core.frozen import Frozen
from core.preflight import Plan


class BlobRef(Frozen):
    """A specific version of a blob in the datasets storage account."""

    container: str
    name: str
    etag: str | None = None
    url: str | None = None

    @property
    def path(self) -> str:
        return f"{self.container}/{self.name}"


class Hyperparameters(Frozen):
    """Fine-tuning hyperparameters (the seed's "Advanced settings")."""

    learning_rate: float = Field(default=0.00002, gt=0, le=1)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "linear"
    num_train_epochs: int = Field(default=1, ge=1, le=100)
    per_device_train_batch_size: int = Field(default=1, ge=1, le=256)

    def as_strings(self) -> dict[str, str]:
        """Azure ML's fine-tuning API takes every hyperparameter as a string (floats written out
        positionally: "0.00002", not Python's "2e-05")."""

        def text(value: object) -> str:
            if isinstance(value, float):
                return f"{value:.12f}".rstrip("0").rstrip(".")
            return str(value)

        return {k: text(v) for k, v in self.model_dump().items()}


# Names a caller may send in `overrides`: each ends up in an Azure resource path or URI
# (`azureml://registries/<registry>/models/<name>/versions/<version>`, `.../connections/<name>`),
# so nothing with `/`, `..`, spaces or control characters gets through.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$"  # registry models have dots: Phi-3.5-mini-instruct
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
REGISTRY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$"
INSTANCE_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # Standard_NC24ads_A100_v4
ENDPOINT_NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$"
# Azure ML's own rule for workspace connection names (REST spec parameter ConnectionName).
CONNECTION_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$"


class ModelOverrides(Frozen):
    name: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)
    version: str | None = Field(default=None, pattern=MODEL_VERSION_PATTERN)
    registry: str | None = Field(default=None, pattern=REGISTRY_PATTERN)


class EndpointOverrides(Frozen):
    name: str | None = Field(default=None, pattern=ENDPOINT_NAME_PATTERN)
    instance_type: str | None = Field(default=None, pattern=INSTANCE_TYPE_PATTERN)
    instance_count: int | None = Field(default=None, ge=1, le=20)
    connection_name: str | None = Field(default=None, pattern=CONNECTION_NAME_PATTERN)


class Overrides(Frozen):
    """What a caller may change for one run (`POST /api/runs` body field `overrides`).

    The starter validates it in strict mode (no "2" for 2, no "yes" for true)."""

    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    model: ModelOverrides = Field(default_factory=ModelOverrides)
    endpoint: EndpointOverrides = Field(default_factory=EndpointOverrides)
    training_instance_type: str | None = Field(default=None, pattern=INSTANCE_TYPE_PATTERN)

    @field_validator("hyperparameters")
    @classmethod
    def _known_hyperparameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Validate eagerly (and strictly: the values are hashed into the run id as given) so the
        # caller gets a 400 naming the field, not a failed run.
        Hyperparameters.model_validate(value, strict=True)
        return value


class PollPolicy(Frozen):
    """Durable-timer polling with exponential backoff, bounded by a deadline."""

    first_interval_s: int = Field(ge=1)
    max_interval_s: int = Field(ge=1)
    backoff: float = Field(ge=1.0)
    deadline_s: int = Field(ge=1)

    def next_interval(self, current_s: int) -> int:
        return min(self.max_interval_s, max(1, round(current_s * self.backoff)))


class EvaluationPolicy(Frozen):
    """The evaluation gate's settings (EVAL_*); sample_size 0 turns the gate off."""

    sample_size: int = Field(default=50, ge=0)
    batch_size: int = Field(default=10, ge=1)
    max_parallel: int = Field(default=2, ge=1)
    tolerance: float = Field(default=0.02, ge=0)
    floor: float = Field(default=0.0, ge=0, le=1)


class RunConfig(Frozen):
    """Everything the orchestrator needs, resolved from Settings + overrides at start time.

    Frozen into the orchestration input so replays never read the environment.
    """

    base_model_name: str
    base_model_version: str | None
    model_registry: str
    task: str = "ChatCompletion"
    hyperparameters: Hyperparameters
    training_instance_type: str
    output_model_prefix: str
    endpoint_name: str
    serving_instance_type: str
    serving_instance_count: int
    connection_name: str
    job_poll: PollPolicy
    deploy_poll: PollPolicy
    # Wait for the job's status-changed event, reading the job at least every this many seconds;
    # None: poll with `job_poll`'s backoff only (no events).
    job_event_fallback_s: int | None = Field(default=None, ge=1)
    monitor_polls_per_generation: int = Field(ge=1)
    validation_fraction: float = Field(gt=0, lt=1)
    split_seed: int
    max_tokens: int = Field(ge=16)
    max_errors: int = Field(ge=1)
    smoke_test_prompt: str
    activity_retry_attempts: int = Field(ge=1)
    activity_retry_first_interval_ms: int = Field(ge=1)
    evaluation: EvaluationPolicy = Field(default_factory=EvaluationPolicy)
    endpoint_ttl_hours: float | None = Field(default=None, gt=0)


class RunRequest(Frozen):
    """The orchestration input as the starter builds it."""

    dataset: BlobRef
    validation: BlobRef | None = None
    config: RunConfig
    source: Literal["blob", "http"]
    dry_run: bool = False  # validate + preflight only; create nothing, return the plan
    real_run_id: str | None = None  # for a dry run: the id the real run would have
    # What the caller asked for (`config` is it resolved): a retrain from the dashboard starts from it.
    overrides: Overrides = Field(default_factory=Overrides)


class ValidationIssue(Frozen):
    line: int  # 1-based; 0 means "the file as a whole"
    field: str  # JSON path-ish: "messages[2].role", "" for the whole line
    message: str
    file: str = ""


class TokenStats(Frozen):
    total: int = 0
    p50: int = 0
    p95: int = 0
    max: int = 0
    max_line: int = 0


class ValidationReport(Frozen):
    """What the validator found in one file. Never raised: travels as data."""

    file: str
    ok: bool
    examples: int
    lines: int
    error_count: int
    errors: list[ValidationIssue] = Field(default_factory=list)  # at most `max_errors`
    warnings: list[ValidationIssue] = Field(default_factory=list)
    tokens: TokenStats = Field(default_factory=TokenStats)
    role_counts: dict[str, int] = Field(default_factory=dict)
    sha256: str = ""
    # Added with duplicate/overlap detection and exact token counts; all optional.
    token_method: str = "estimate"  # "estimate" | "tokenizer:<path>"
    duplicates: int = 0  # examples repeating an earlier example's messages in the same file
    overlap: int = 0  # (validation file) examples whose messages also appear in the training file
    longest_line: int = 0  # line number of the longest non-blank line (0: none)
    longest_line_bytes: int = 0  # its length in bytes, without the line terminator
    turns: dict[int, int] = Field(default_factory=dict)  # user turns per example -> examples


class DatasetOutcome(Frozen):
    """Result of the validate_dataset activity."""

    ok: bool
    reports: list[ValidationReport]
    train: BlobRef | None = None
    validation: BlobRef | None = None
    train_examples: int = 0
    validation_examples: int = 0


class JobState(StrEnum):
    QUEUED = "Queued"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def terminal(self) -> bool:
        return self in {JobState.COMPLETED, JobState.FAILED, JobState.CANCELED}


class FineTuneSpec(Frozen):
    job_name: str  # deterministic: resubmitting the same spec never starts a second job
    base_model_name: str
    base_model_version: str | None
    model_registry: str
    task: str
    training_data: str  # URI the training service can read
    validation_data: str
    hyperparameters: Hyperparameters
    instance_type: str
    output_model_prefix: str
    tags: dict[str, str]


class JobInfo(Frozen):
    name: str
    state: JobState
    raw_status: str
    error: str | None = None
    studio_url: str | None = None
    # Latest progress the service reports, e.g. {"step": 120, "total_steps": 300, "train_loss": 2.31}.
    metrics: dict[str, float] = Field(default_factory=dict)


class ModelRef(Frozen):
    name: str
    version: str


class ProvisioningState(StrEnum):
    NOT_FOUND = "NotFound"
    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"
    CANCELED = "Canceled"

    @property
    def settled(self) -> bool:
        return self in {
            ProvisioningState.SUCCEEDED,
            ProvisioningState.FAILED,
            ProvisioningState.CANCELED,
            ProvisioningState.NOT_FOUND,
        }


class EndpointInfo(Frozen):
    name: str
    state: ProvisioningState
    traffic: dict[str, int] = Field(default_factory=dict)
    deployments: list[str] = Field(default_factory=list)
    scoring_uri: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class DeploymentInfo(Frozen):
    """One deployment of an endpoint, as the cost guard and teardown see it."""

    name: str
    instance_type: str
    instance_count: int
    state: ProvisioningState
    tags: dict[str, str] = Field(default_factory=dict)


class MetricPoint(Frozen):
    step: int
    value: float


class LossHistory(Frozen):
    """A training job's loss per step, from its MLflow run(s): training and validation (eval)."""

    train: list[MetricPoint] = Field(default_factory=list)
    validation: list[MetricPoint] = Field(default_factory=list)


class DeploymentSpec(Frozen):
    endpoint_name: str
    deployment_name: str
    model: ModelRef
    instance_type: str
    instance_count: int
    tags: dict[str, str]


class ScoreResult(Frozen):
    """Outcome of one scoring call. Holds no request headers and no key."""

    ok: bool
    status_code: int | None = None
    output: str | None = None
    error: str | None = None
    latency_ms: int = 0


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    INVALID_DATASET = "invalid_dataset"
    PREFLIGHT_FAILED = "preflight_failed"
    PLANNED = "planned"  # a dry run ended after validation + preflight with a plan
    REJECTED_BY_EVALUATION = "rejected_by_evaluation"  # new model scored too low; traffic unchanged
    CANCELED = "canceled"
    FAILED = "failed"


class ExampleScore(Frozen):
    """One evaluation example answered by one deployment (texts shortened for the history)."""

    index: int  # 0-based example number in the validation split
    score: float  # mean of rouge_l and token_f1; 0 when the call failed
    rouge_l: float
    token_f1: float
    ok: bool = True
    error: str | None = None
    prompt: str = ""  # the last user turn, shortened
    reference: str = ""
    answer: str = ""


class EvaluationSide(Frozen):
    deployment: str
    score: float  # mean example score
    examples: int
    failures: int  # scoring calls that failed (scored 0)


class Evaluation(Frozen):
    """The evaluation gate's verdict: promote only if new >= live - tolerance and new >= floor."""

    metric: str
    sample_size: int
    new: EvaluationSide
    live: EvaluationSide | None = None
    tolerance: float
    floor: float
    passed: bool
    reason: str


class Delivery(Frozen):
    """What became of one completion event (CloudEvents webhook)."""

    event_type: str
    event_id: str
    delivered: bool
    attempts: int = 0
    status_code: int | None = None
    error: str | None = None
    skipped: bool = False  # no NOTIFY_WEBHOOK_URL configured


class RunSummary(Frozen):
    """The orchestration output. No secrets."""

    status: RunStatus
    reason: str = ""
    instance_id: str
    dataset: BlobRef
    train_examples: int = 0
    validation_examples: int = 0
    job: str | None = None
    job_state: str | None = None
    model: ModelRef | None = None
    endpoint: str | None = None
    deployment: str | None = None
    previous_deployment: str | None = None
    scoring_uri: str | None = None
    connection: str | None = None
    validation_errors: list[ValidationIssue] = Field(default_factory=list)
    preflight: list[str] = Field(default_factory=list)  # failed preflight checks, actionable
    plan: Plan | None = None  # dry runs
    durations_s: dict[str, float] = Field(default_factory=dict)
    evaluation: Evaluation | None = None
    expires_at: str | None = None  # when the cost guard deletes the endpoint (ENDPOINT_TTL_HOURS)
    report: str | None = None  # blob path of the run report's folder (reports/<instance_id>/)
    notification: Delivery | None = None
