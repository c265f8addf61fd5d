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
    CANCELED = "canceled"  # the run was canceled during it
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
_OUTCOMES = {s.value for s in RunStatus if s is not RunStatus.RUNNING}

# Where a run that ended with this status stopped, whatever step it showed last (runs from before
# the custom status carried `stopped_at` have nothing else to say it).
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
    """The rows of a run from its custom status and (once it ended) its summary.

    Once the run's outcome is decided the custom status carries it (`outcome`) and the last step
    it showed before (`stopped_at`), while the report and the notification still run."""
    custom = custom or {}
    durations: dict[str, float] = dict(custom.get("durations_s") or {})
    if summary is not None:
        durations.update(summary.get("durations_s") or {})
    stages = [s for s in STAGES if _shown(s, durations, dry_run)]
    outcome = (summary or {}).get("status") or custom.get("outcome")
    if outcome is None and str(custom.get("step")) in _OUTCOMES:  # set by `summary`, no outcome key
        outcome = custom.get("step")
    if outcome is None:
        return _live(stages, custom, durations)
    finishing = None if summary is not None else _BY_STATUS.get(str(custom.get("step") or ""))
    stopped = _BY_STATUS.get(str(custom.get("stopped_at") or ""))
    return _ended(
        stages, summary or {}, str(outcome), durations, dry_run, stopped=stopped, finishing=finishing
    )


def _shown(stage: Stage, durations: dict[str, float], dry_run: bool) -> bool:
    if stage.key == "plan":
        return dry_run
    if dry_run:  # a dry run stops at its plan
        return stage.key in ("validate", "preflight")
    return not stage.optional or (stage.duration_key or "") in durations


def _with(stages: list[Stage], extra: Stage | None) -> list[Stage]:
    """`stages` plus `extra` (an optional stage the run is in, or stopped in), in order."""
    if extra is None or extra in stages:
        return stages
    return [s for s in STAGES if s in stages or s is extra]


def _row(stage: Stage, state: StageState, durations: dict[str, float], **extra: Any) -> TimelineRow:
    duration = durations.get(stage.duration_key) if stage.duration_key else None
    return TimelineRow(stage.key, stage.label, state, duration, **extra)


def _live(stages: list[Stage], custom: dict[str, Any], durations: dict[str, float]) -> list[TimelineRow]:
    """A run still going: rows before the current one done, the current one active, the rest to come."""
    current = _BY_STATUS.get(str(custom.get("step") or ""))
    stages = _with(stages, current)
    index = stages.index(current) if current is not None else _first_untimed(stages, durations)
    rows = []
    for i, stage in enumerate(stages):
        if i < index:
            rows.append(_row(stage, StageState.DONE, durations))
        elif i == index:
            step = str(custom.get("step") or "") if current is not None else ""
            detail = "" if current is None or step == current.steps[0].status else step
            started = custom.get("step_started_at")
            rows.append(_row(stage, StageState.ACTIVE, durations, started_at=started, detail=detail))
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
    stages: list[Stage],
    summary: dict[str, Any],
    outcome: str,
    durations: dict[str, float],
    dry_run: bool,
    *,
    stopped: Stage | None,
    finishing: Stage | None,
) -> list[TimelineRow]:
    """A run whose outcome is decided: what it did, where it stopped, and the report and the
    notification (done, skipped, or still under way while `finishing`)."""
    stages = _with(stages, stopped)
    if outcome in (RunStatus.COMPLETED, RunStatus.PLANNED):
        stop_key = None
    elif outcome in _STOPPED_AT:
        stop_key = _STOPPED_AT[RunStatus(outcome)]
    elif stopped is not None and stopped.key not in _AFTER_RUN:
        stop_key = stopped.key
    else:  # an older run without `stopped_at`: after the last stage that recorded a duration
        stop_key = _after_last_timed(stages, durations, summary)
    rows = []
    past = False
    for stage in stages:
        if stage.key in _AFTER_RUN and not dry_run:
            rows.append(_row(stage, _after_run_state(stage, summary, finishing), durations))
        elif past:
            rows.append(_row(stage, StageState.SKIPPED, durations))
        elif stage.key == stop_key:
            stopped_by = StageState.CANCELED if outcome == RunStatus.CANCELED else StageState.FAILED
            rows.append(_row(stage, stopped_by, durations))
            past = True
        elif stage.duration_key is not None and stage.duration_key not in durations:
            rows.append(_row(stage, StageState.SKIPPED, durations))  # passed over (the gate off)
        else:
            rows.append(_row(stage, StageState.DONE, durations))
    return rows


def _after_run_state(stage: Stage, summary: dict[str, Any], finishing: Stage | None) -> StageState:
    if finishing is not None or not summary:  # the run is writing its report or notifying
        order = [s.key for s in STAGES]
        if finishing is None or order.index(stage.key) > order.index(finishing.key):
            return StageState.PENDING
        return StageState.ACTIVE if stage is finishing else StageState.DONE
    if stage.key == "report":
        return StageState.DONE if summary.get("report") else StageState.SKIPPED
    notification = summary.get("notification") or {}
    return StageState.DONE if notification.get("delivered") else StageState.SKIPPED


def _after_last_timed(
    stages: list[Stage], durations: dict[str, float], summary: dict[str, Any]
) -> str | None:
    """The stage after the last one that recorded a duration; training when its job did not
    complete (training records its duration at every read of the job)."""
    before = [s for s in stages if s.key not in _AFTER_RUN]
    timed = [i for i, s in enumerate(before) if s.duration_key in durations]
    if not timed:
        return before[0].key if before else None
    last = before[timed[-1]]
    if last.key == "train" and summary.get("job_state") != "Completed":
        return "train"
    return before[timed[-1] + 1].key if timed[-1] + 1 < len(before) else last.key
