"""Preflight: what must hold before any GPU money is spent, as data a person can act on.

A backend runs the checks it can (model in the registry, instance types and quota in the region,
endpoint name free or ours); the preflight activity adds the dataset-readable check. Any failed
check ends the run as `preflight_failed` with every reason listed, and nothing is submitted.
"""

from __future__ import annotations

import re

from pydantic import Field

from core.frozen import Frozen

# Azure ML online endpoint names: 3–32 characters, start with a letter, then letters, digits and
# '-', not ending with '-' (the service rejects the rest; names are also unique per region).
ENDPOINT_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")

# Throughput assumption for the GPU-hours estimate of a dry run: LoRA fine-tuning of
# Phi-3-mini-4k (3.8 B parameters) on one A100 80 GB processes on the order of 2,000 training
# tokens per second including the backward pass. This is an estimate for budgeting, not a
# measurement: real jobs add queueing, node start-up (~10–15 min), evaluation and model
# registration, which `JOB_OVERHEAD_HOURS` approximates.
TRAIN_TOKENS_PER_SECOND = 2000.0
JOB_OVERHEAD_HOURS = 0.25


class PreflightCheck(Frozen):
    name: str  # "base_model", "training_instance", "serving_instance", "training_quota", ...
    ok: bool
    detail: str  # what was found, or what to do about it


class PreflightReport(Frozen):
    checks: list[PreflightCheck] = Field(default_factory=list)
    model_id: str | None = None  # e.g. azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15
    model_version: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]

    def plus(self, *checks: PreflightCheck) -> PreflightReport:
        return self.model_copy(update={"checks": [*self.checks, *checks]})


class Plan(Frozen):
    """What a run would do and roughly cost: the answer to a dry run. Nothing was created."""

    model_id: str | None
    model_version: str | None
    training_instance_type: str
    serving_instance_type: str
    serving_instance_count: int
    train_examples: int
    validation_examples: int
    train_tokens: int  # estimated (or exact, with a tokenizer) tokens in the training split
    epochs: int
    estimated_gpu_hours: float
    gpu_hours_basis: str
    endpoint: str
    deployment: str
    replaces_deployment: str | None
    checks: list[PreflightCheck] = Field(default_factory=list)


def endpoint_name_check(name: str) -> PreflightCheck:
    if ENDPOINT_NAME.fullmatch(name):
        return PreflightCheck(name="endpoint_name", ok=True, detail=f"{name} is a valid endpoint name")
    return PreflightCheck(
        name="endpoint_name",
        ok=False,
        detail=(
            f"{name!r} is not a valid online endpoint name: use 3-32 characters, start with a letter, "
            "then letters, digits or '-', and do not end with '-'"
        ),
    )


GPU_HOURS_BASIS = (
    f"estimate: tokens × epochs at ~{TRAIN_TOKENS_PER_SECOND:.0f} training tokens/s on one A100 "
    f"plus {JOB_OVERHEAD_HOURS} h of job overhead"
)


def estimate_gpu_hours(total_tokens: int, epochs: int) -> float:
    """Training GPU-hours for `total_tokens` per epoch (see TRAIN_TOKENS_PER_SECOND): an estimate."""
    return round(total_tokens * epochs / TRAIN_TOKENS_PER_SECOND / 3600 + JOB_OVERHEAD_HOURS, 2)
