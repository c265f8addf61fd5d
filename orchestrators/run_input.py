"""What the fine-tune orchestration carries across continue-as-new generations."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.models import BlobRef, RunRequest


class Progress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started_at: str  # ISO timestamp from context.current_utc_datetime at the first generation
    train: BlobRef | None = None
    validation: BlobRef | None = None
    train_examples: int = 0
    validation_examples: int = 0
    job: str | None = None
    job_status: str | None = None
    studio_url: str | None = None  # the job's page in Azure ML studio (the dashboard links it)
    submitted_at: str | None = None
    next_poll_s: int = 0
    polls: int = 0
    job_events: int = 0  # status-changed events that woke the run (each followed by a read)
    endpoint_created: bool = False  # this run created the endpoint while its job trained
    generation: int = 0
    durations_s: dict[str, float] = Field(default_factory=dict)


class RunInput(BaseModel):
    """The orchestration input: the request as started, plus progress after continue-as-new."""

    model_config = ConfigDict(extra="forbid")

    request: RunRequest
    progress: Progress | None = None
