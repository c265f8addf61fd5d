"""A run's step timeline, as the dashboard draws it: one row per stage, each done, active, failed,
skipped or still to come, with its duration.

Built from what the durable status already holds, no history: the custom status the orchestrator
sets at every step (`step`, `durations_s` of the steps done so far, `step_started_at`) and, once
the run ended, its summary (status, durations, report, notification). The rows follow
`core.steps.Step`, so a new step shows up here by being added to `STAGES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from core.models import RunStatus
from core.steps import Step


class StageState(StrEnum):
    DONE = "done"
    ACTIVE = "active"
    FAILED = "failed"
    SKIPPED = "skipped"  # the run ended before it
    PENDING = "pending"  # still to come


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    steps: tuple[Step, ...]  # the steps (custom status texts) during which this stage is active
    duration_key: str | None
    optional: bool = False  # shown only when the run went through it


STAGES: tuple[Stage, ...] = (
    Stage("validate", "Validate dataset", (Step.VALIDATE,), "validate"),
    Stage("preflight", "Preflight checks", (Step.PREFLIGHT,), "preflight"),
    Stage("plan", "Dry-run plan", (Step.PLAN,), "plan", optional=True),
    Stage("submit", "Submit fine-tune job", (Step.SUBMIT,), "submit"),
    Stage("train", "Training", (Step.TRAIN,), "train"),
    Stage("register", "Register model", (Step.REGISTER,), "register"),
    Stage("wait", "Wait for the endpoint", (Step.WAIT_FOR_ENDPOINT,), "wait_for_endpoint", optional=True),
    Stage(
        "deploy",
        "Endpoint + deployment",
        (Step.DEPLOY, Step.CREATE_ENDPOINT, Step.CREATE_DEPLOYMENT),
        "deploy",
    ),
    Stage("smoke_test", "Smoke test", (Step.SMOKE_TEST,), "smoke_test"),
    Stage("evaluate", "Evaluation", (Step.EVALUATE, Step.EVALUATED), "evaluate"),
    Stage("traffic", "Shift traffic", (Step.SHIFT_TRAFFIC, Step.ROLL_BACK), "traffic"),
    Stage("connection", "Prompt flow connection", (Step.UPDATE_CONNECTION,), "connection"),
    Stage("report", "Run report", (Step.WRITE_REPORT,), None),
    Stage("notify", "Notify", (Step.NOTIFY,), None),
)
_BY_STATUS = {step.status: stage for stage in STAGES for step in stage.steps}
_AFTER_RUN = ("report", "notify")  # stages every finished run (but a dry run) goes through

# Where a run that ended with this status stopped, when the stage cannot be told from durations.
_STOPPED_AT = {
    RunStatus.INVALID_DATASET: "validate",
    RunStatus.PREFLIGHT_FAILED: "preflight",
    RunStatus.REJECTED_BY_EVALUATION: "evaluate",
}


@dataclass(frozen=True)
class TimelineRow:
    key: str
    label: str
    state: StageState
    duration_s: float | None = None
    started_at: str | None = None  # the active row: when it began (the page counts from it)
    detail: str = ""  # the active row: the sub-step shown ("creating deployment")

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "state": self.state.value,
            "duration_s": self.duration_s,
            "started_at": self.started_at,
            "detail": self.detail,
        }


def timeline(
    custom: dict[str, Any] | None, summary: dict[str, Any] | None, *, dry_run: bool
) -> list[TimelineRow]:
    """The rows of a run from its custom status and (once it ended) its summary."""
    custom = custom or {}
    durations: dict[str, float] = dict(custom.get("durations_s") or {})
    if summary is not None:
        durations.update(summary.get("durations_s") or {})
    stages = [s for s in STAGES if _shown(s, durations, dry_run)]
    if summary is None:
        return _live(stages, custom, durations)
    return _ended(stages, summary, durations, dry_run)


def _shown(stage: Stage, durations: dict[str, float], dry_run: bool) -> bool:
    if stage.key == "plan":
        return dry_run
    if dry_run:  # a dry run stops at its plan
        return stage.key in ("validate", "preflight")
    return not stage.optional or (stage.duration_key or "") in durations


def _row(stage: Stage, state: StageState, durations: dict[str, float], **extra: Any) -> TimelineRow:
    duration = durations.get(stage.duration_key) if stage.duration_key else None
    return TimelineRow(stage.key, stage.label, state, duration, **extra)


def _live(stages: list[Stage], custom: dict[str, Any], durations: dict[str, float]) -> list[TimelineRow]:
    """A run still going: rows before the current one done, the current one active, the rest to come."""
    current = _BY_STATUS.get(str(custom.get("step") or ""))
    if current is not None and current not in stages:  # an optional stage now under way
        stages = [s for s in STAGES if s in stages or s is current]
    index = stages.index(current) if current is not None else _first_untimed(stages, durations)
    rows = []
    for i, stage in enumerate(stages):
        if i < index:
            rows.append(_row(stage, StageState.DONE, durations))
        elif i == index:
            detail = str(custom.get("step") or "") if current is not None else ""
            detail = "" if current is not None and detail == current.steps[0].status else detail
            rows.append(
                _row(
                    stage,
                    StageState.ACTIVE,
                    durations,
                    started_at=custom.get("step_started_at"),
                    detail=detail,
                )
            )
        else:
            rows.append(_row(stage, StageState.PENDING, durations))
    return rows


def _first_untimed(stages: list[Stage], durations: dict[str, float]) -> int:
    """Before the first step shows (a run just started): the first stage not yet timed."""
    for i, stage in enumerate(stages):
        if stage.duration_key is not None and stage.duration_key not in durations:
            return i
    return 0


def _ended(
    stages: list[Stage], summary: dict[str, Any], durations: dict[str, float], dry_run: bool
) -> list[TimelineRow]:
    status = RunStatus(summary.get("status", RunStatus.FAILED.value))
    if status in (RunStatus.COMPLETED, RunStatus.PLANNED):
        return [_row(s, StageState.DONE, durations) for s in stages]
    stop_key = _STOPPED_AT.get(status) or _last_reached(stages, durations)
    reported = bool(summary.get("report"))
    notified = bool((summary.get("notification") or {}).get("delivered"))
    rows = []
    stopped = False
    for stage in stages:
        if stage.key in _AFTER_RUN and not dry_run:
            done = reported if stage.key == "report" else notified
            rows.append(_row(stage, StageState.DONE if done else StageState.SKIPPED, durations))
        elif stopped:
            rows.append(_row(stage, StageState.SKIPPED, durations))
        elif stage.key == stop_key:
            rows.append(_row(stage, StageState.FAILED, durations))
            stopped = True
        else:
            rows.append(_row(stage, StageState.DONE, durations))
    return rows


def _last_reached(stages: list[Stage], durations: dict[str, float]) -> str:
    """The stage a failed or canceled run stopped in: the first one (before the report) with no
    duration, since a stage records its duration only when it ends (training at every read)."""
    for stage in stages:
        if stage.key in _AFTER_RUN:
            break
        if stage.key == "train" and "train" in durations and "register" not in durations:
            return "train"  # timed at every read, so a failed job still shows a duration
        if stage.duration_key is not None and stage.duration_key not in durations:
            return stage.key
    return stages[0].key if stages else ""
