"""What the app's functions promise each other: function and event names, and every activity's
typed contract.

An activity's contract is its input model: a subclass of `ActivityInput[Out]` that names the
activity (`activity`) and, by its type argument, what the activity returns. The orchestrators
build the input and get the output back parsed (`FinetuneRun.act`); the activity is registered
from its input model (`activities/wrapper.py`) and receives it parsed. Both sides import only
this module, so a payload's shape is written once, and the durable history holds exactly the
model's JSON.

Adding a step: a member of `Activity`, its input model here, the activity module, one call in the
orchestrator (docs/architecture.md walks through it).
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, Field, TypeAdapter

from core.frozen import Frozen
from core.models import (
    BlobRef,
    DatasetOutcome,
    Delivery,
    DeploymentSpec,
    EndpointInfo,
    ExampleScore,
    JobInfo,
    ModelRef,
    ProvisioningState,
    RunConfig,
    RunSummary,
    ScoreResult,
)
from core.preflight import PreflightReport
from core.turns import TurnAnswer

ORCHESTRATOR = "finetune_orchestrator"
SWEEPER = "endpoint_sweeper"  # deletes expired endpoints this app created (cost guard)
CANCEL_EVENT = "cancel"  # external event: POST /api/runs/{id}/cancel raises it
JOB_EVENT = "job_status_changed"  # external event: on_job_status_changed raises it ({"job", "status"})


class Activity(StrEnum):
    VALIDATE_DATASET = "validate_dataset"
    PREFLIGHT = "preflight"
    SUBMIT_FINETUNE = "submit_finetune"
    GET_JOB_STATUS = "get_job_status"
    CANCEL_JOB = "cancel_job"
    REGISTER_MODEL = "register_model"
    ENSURE_ENDPOINT = "ensure_endpoint"
    GET_ENDPOINT = "get_endpoint"
    CREATE_DEPLOYMENT = "create_deployment"
    GET_DEPLOYMENT_STATE = "get_deployment_state"
    SMOKE_TEST = "smoke_test"
    SET_TRAFFIC = "set_traffic"
    DELETE_DEPLOYMENT = "delete_deployment"
    UPDATE_CONNECTION = "update_connection"
    EVALUATE_BATCH = "evaluate_batch"
    TAG_MODEL = "tag_model"
    UPDATE_ENDPOINT_TAGS = "update_endpoint_tags"
    WRITE_REPORT = "write_report"
    NOTIFY = "notify"
    LIST_EXPIRED_ENDPOINTS = "list_expired_endpoints"
    DELETE_ENDPOINT = "delete_endpoint"
    TAKE_ENDPOINT_TURN = "take_endpoint_turn"
    GIVE_BACK_ENDPOINT_TURN = "give_back_endpoint_turn"
    LIST_ORPHAN_DEPLOYMENTS = "list_orphan_deployments"
    PREPARE_ENDPOINT = "prepare_endpoint"
    REMOVE_UNUSED_ENDPOINT = "remove_unused_endpoint"


Out = TypeVar("Out")

CONTRACTS: dict[Activity, type[ActivityInput[Any]]] = {}
"""Each activity's input model, filled as the models below are defined (one per activity)."""


class ActivityInput(BaseModel, Generic[Out]):
    """The input of one activity; `Out` is what the activity returns (parsed by `parse_output`)."""

    model_config = Frozen.model_config
    activity: ClassVar[Activity]
    output_type: ClassVar[Any]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "activity" not in cls.__dict__:  # a parametrized base (ActivityInput[X]), not a contract
            return
        for base in cls.__mro__:
            meta = getattr(base, "__pydantic_generic_metadata__", None)
            if meta and meta["origin"] is ActivityInput and meta["args"]:
                cls.output_type = meta["args"][0]
                break
        else:
            raise TypeError(f"{cls.__name__}: subclass ActivityInput[<output type>]")
        if cls.activity in CONTRACTS:
            raise TypeError(f"{cls.activity} has two input models: {CONTRACTS[cls.activity].__name__}, {cls}")
        CONTRACTS[cls.activity] = cls

    @classmethod
    def parse_output(cls, raw: Any) -> Any:
        """The activity's JSON result as its declared output type."""
        return _adapter(cls.output_type).validate_python(raw)


@cache
def _adapter(output_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(output_type)


# -- outputs that are not domain models ----------------------------------------------------------


class ExpiredEndpoint(Frozen):
    name: str
    expires_at: str
    tags: dict[str, str]
    deployments: list[str]


class OrphanDeployment(Frozen):
    endpoint: str
    deployment: str
    run: str | None  # the run that created it (instance-id tag), if tagged


# -- the fine-tune run's activities --------------------------------------------------------------


class ValidateDataset(ActivityInput[DatasetOutcome]):
    """Check the dataset (and the validation file, if given); write the split next to it."""

    activity = Activity.VALIDATE_DATASET
    instance_id: str
    dataset: BlobRef
    validation: BlobRef | None = None
    config: RunConfig
    dry_run: bool = False


class Preflight(ActivityInput[PreflightReport]):
    """Can this run start? Creates nothing."""

    activity = Activity.PREFLIGHT
    dataset: BlobRef
    validation: BlobRef | None = None
    config: RunConfig


class SubmitFinetune(ActivityInput[str]):
    """Start the fine-tuning job named after the run; returns the job's name."""

    activity = Activity.SUBMIT_FINETUNE
    instance_id: str
    dataset: BlobRef
    train: BlobRef | None
    validation: BlobRef | None
    config: RunConfig


class GetJobStatus(ActivityInput[JobInfo]):
    activity = Activity.GET_JOB_STATUS
    job: str


class CancelJob(ActivityInput[None]):
    activity = Activity.CANCEL_JOB
    job: str


class RegisterModel(ActivityInput[ModelRef]):
    """Register (or find) the job's MLflow model with lineage tags."""

    activity = Activity.REGISTER_MODEL
    job: str
    model_name: str
    tags: dict[str, str]


class EnsureEndpoint(ActivityInput[EndpointInfo]):
    """Begin creating the endpoint if it is missing; its state, without waiting."""

    activity = Activity.ENSURE_ENDPOINT
    name: str
    tags: dict[str, str]


class PrepareEndpoint(ActivityInput[bool]):
    """Begin creating the endpoint if it does not exist, while the job trains (an endpoint with no
    deployment runs no compute); True if this call created it. An existing one is only read."""

    activity = Activity.PREPARE_ENDPOINT
    name: str
    tags: dict[str, str]


class RemoveUnusedEndpoint(ActivityInput[bool]):
    """Delete the endpoint `run` created early, if no run is releasing onto it and it has no
    deployment; True if it was deleted."""

    activity = Activity.REMOVE_UNUSED_ENDPOINT
    name: str
    run: str


class GetEndpoint(ActivityInput[EndpointInfo]):
    activity = Activity.GET_ENDPOINT
    name: str


class CreateDeployment(DeploymentSpec, ActivityInput[None]):
    """Begin creating the deployment at 0 % traffic (its spec is the input)."""

    activity = Activity.CREATE_DEPLOYMENT


class GetDeploymentState(ActivityInput[ProvisioningState]):
    activity = Activity.GET_DEPLOYMENT_STATE
    endpoint: str
    deployment: str


class SmokeTest(ActivityInput[ScoreResult]):
    """Ask the deployment one question with the Prompt flow tool's payload."""

    activity = Activity.SMOKE_TEST
    endpoint: str
    deployment: str
    prompt: str


class SetTraffic(ActivityInput[None]):
    activity = Activity.SET_TRAFFIC
    endpoint: str
    traffic: dict[str, int]


class DeleteDeployment(ActivityInput[None]):
    activity = Activity.DELETE_DEPLOYMENT
    endpoint: str
    deployment: str


class UpdateConnection(ActivityInput[str]):
    """Point the Prompt flow connection at the endpoint; returns the scoring URI written."""

    activity = Activity.UPDATE_CONNECTION
    name: str
    endpoint: str


class EvaluateBatch(ActivityInput[list[ExampleScore]]):
    """Score batch `batch` of the seeded held-out sample against one deployment."""

    activity = Activity.EVALUATE_BATCH
    validation: BlobRef
    endpoint: str
    deployment: str
    sample_size: int = Field(ge=1)
    seed: int
    batch: int = Field(ge=0)
    batch_size: int = Field(ge=1)


class TagModel(ActivityInput[None]):
    activity = Activity.TAG_MODEL
    model: ModelRef
    tags: dict[str, str]


class UpdateEndpointTags(ActivityInput[None]):
    activity = Activity.UPDATE_ENDPOINT_TAGS
    name: str
    tags: dict[str, str]


class WriteReport(ActivityInput[str]):
    """Render and upload the run report; returns its folder as `container/path/`."""

    activity = Activity.WRITE_REPORT
    summary: RunSummary
    config: RunConfig | None = None
    examples: dict[str, list[ExampleScore]] = Field(default_factory=dict)


class Notify(ActivityInput[Delivery]):
    """Announce an outcome as a signed CloudEvent; failures come back as data."""

    activity = Activity.NOTIFY
    outcome: str
    subject: str
    data: dict[str, Any]
    time: str


class TakeEndpointTurn(ActivityInput[TurnAnswer]):
    """Take (or renew) the endpoint's release turn for `run`."""

    activity = Activity.TAKE_ENDPOINT_TURN
    endpoint: str
    run: str
    ttl_s: int = Field(ge=1)


class GiveBackEndpointTurn(ActivityInput[bool]):
    activity = Activity.GIVE_BACK_ENDPOINT_TURN
    endpoint: str
    run: str


# -- the cost guard's sweep ------------------------------------------------------------------------


class ListExpiredEndpoints(ActivityInput[list[ExpiredEndpoint]]):
    """Endpoints this app created whose expiry is at or before `now` (the orchestration's clock)."""

    activity = Activity.LIST_EXPIRED_ENDPOINTS
    now: str


class DeleteEndpoint(ActivityInput[None]):
    activity = Activity.DELETE_ENDPOINT
    name: str


class ListOrphanDeployments(ActivityInput[list[OrphanDeployment]]):
    activity = Activity.LIST_ORPHAN_DEPLOYMENTS


def payload_of(model: BaseModel) -> dict[str, Any]:
    """The JSON object an input model travels as in the durable history."""
    return model.model_dump(mode="json")
