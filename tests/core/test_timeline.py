"""The run timeline (core/timeline.py) fed with what the REAL orchestrator writes.

Each scenario replays the registered orchestrator with the real activities against the in-memory
Azure (testing/replay.py, testing/fakes.py). Every custom status the run showed while it ran is
read as the dashboard reads a running instance (no summary): the active row must only ever move
forward through the stages. The last custom status is read with the run's output, as the
dashboard reads an ended instance: the rows must say where the run stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.contracts import ORCHESTRATOR
from core.models import EvaluationPolicy, RunStatus
from core.steps import Step
from core.timeline import STAGES, StageState, TimelineRow, timeline
from testing.fakes import FakeAzure
from testing.replay import Replayer, RunResult
from tests.orchestrators.test_preflight_dry_run_cancel import ENDPOINT, RUN_ID, when

DRY_ID = "dry-0123456789abcdef"
OTHER = "ft-ffffffffffffffff"  # another run holding the endpoint's release turn
ORDER = [stage.key for stage in STAGES]
DONE, ACTIVE, FAILED, SKIPPED, PENDING = (
    StageState.DONE,
    StageState.ACTIVE,
    StageState.FAILED,
    StageState.SKIPPED,
    StageState.PENDING,
)
# The stage each step's custom status text belongs to (the spec the page is drawn from).
STAGE_OF = {
    "validating": "validate",
    "preflight": "preflight",
    "planning": "plan",
    "submitting": "submit",
    "training": "train",
    "registering": "register",
    "waiting_for_endpoint": "wait",
    "deploying": "deploy",
    "creating endpoint": "deploy",
    "creating deployment": "deploy",
    "smoke_testing": "smoke_test",
    "evaluating": "evaluate",
    "evaluated": "evaluate",
    "shifting_traffic": "traffic",
    "rolling_back": "traffic",
    "updating_connection": "connection",
    "writing_report": "report",
    "notifying": "notify",
}
RUN_STATUSES = {s.value for s in RunStatus}
INVALID_LINES = (
    b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    b'{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n'
)


def replay(
    handler: Any, activities: Any, input_: dict[str, Any], events: Any = None, instance: str = RUN_ID
) -> RunResult:
    return Replayer(
        handler, activities, name=ORCHESTRATOR, instance_id=instance, input_=input_, events=events
    ).run()


def dry_input(make_input: Any) -> dict[str, Any]:
    input_ = make_input()
    input_["request"].update(dry_run=True, real_run_id=RUN_ID)
    return input_


def live(result: RunResult) -> Iterator[tuple[dict[str, Any] | None, str]]:
    """Every custom status the run showed while it still ran (the last one ends the run), with
    its step text."""
    for status in result.custom_statuses[:-1]:
        yield status, str((status or {}).get("step") or "")


def final_rows(result: RunResult, *, dry_run: bool = False) -> list[TimelineRow]:
    return timeline(result.custom_statuses[-1], result.output, dry_run=dry_run)


def row_of(rows: list[TimelineRow], key: str) -> TimelineRow:
    (row,) = [r for r in rows if r.key == key]
    return row


def states(rows: list[TimelineRow]) -> dict[str, StageState]:
    return {row.key: row.state for row in rows}


def after_run_state(output: dict[str, Any], key: str) -> StageState:
    """What the report and notify rows of an ended run must say: done only if it happened."""
    if key == "report":
        return DONE if output.get("report") else SKIPPED
    return DONE if (output.get("notification") or {}).get("delivered") else SKIPPED


def assert_moves_forward(result: RunResult, *, dry_run: bool = False) -> list[str]:
    """Read every step status of the run as the page does while it runs; return the stages it
    showed active, in order. Statuses showing the run's own status (set before the report and the
    notification) are left to `test_wrap_up_statuses_never_move_the_timeline_back`."""
    shown: list[str] = []
    last = -1
    for status, step in live(result):
        if step in RUN_STATUSES or (status or {}).get("outcome"):
            continue
        rows = timeline(status, None, dry_run=dry_run)
        active = [i for i, row in enumerate(rows) if row.state is ACTIVE]
        assert len(active) == 1, (step, rows)
        i = active[0]
        row = rows[i]
        assert all(r.state is DONE for r in rows[:i]), (step, rows)
        assert all(r.state is PENDING for r in rows[i + 1 :]), (step, rows)
        assert not {r.state for r in rows} & {FAILED, SKIPPED}, "a running run fails or skips nothing"
        if step:
            assert row.key == STAGE_OF[step], (step, row)
        position = ORDER.index(row.key)
        assert position >= last, f"{step!r} moved the timeline back from {ORDER[last]} to {row.key}"
        last = position
        assert row.started_at == (status or {}).get("step_started_at")
        durations = (status or {}).get("durations_s") or {}
        for r in rows[:i]:  # the done rows carry what the status recorded
            key = next(s.duration_key for s in STAGES if s.key == r.key)
            assert r.duration_s == (durations.get(key) if key else None), r
        if not shown or shown[-1] != row.key:
            shown.append(row.key)
    return shown


# -- one scenario each ------------------------------------------------------------------------------


def test_a_completed_run(orchestrator_handler, activity_functions, azure, make_input):
    result = replay(orchestrator_handler, activity_functions, make_input())
    out = result.output
    assert out["status"] == "completed", out

    shown = assert_moves_forward(result)
    # The report and the notification come after the outcome is decided (the wrap-up statuses).
    assert [k for k in shown if k != "wait"] == [
        k for k in ORDER if k not in ("plan", "wait", "report", "notify")
    ]

    rows = final_rows(result)
    assert all(row.state is DONE for row in rows if row.key not in ("report", "notify")), rows
    assert [row_of(rows, k).state for k in ("report", "notify")] == [
        after_run_state(out, k) for k in ("report", "notify")
    ]
    assert {"validate", "submit", "train", "deploy", "connection", "report", "notify"} <= set(states(rows))
    assert "plan" not in states(rows)
    for row in rows:  # each row shows the duration the summary recorded for its stage
        key = next(s.duration_key for s in STAGES if s.key == row.key)
        assert row.duration_s == (out["durations_s"].get(key) if key else None), row
        assert row.started_at is None and row.detail == ""
    assert row_of(rows, "train").duration_s > 0  # timed from the submit to the last read


def test_an_invalid_dataset(orchestrator_handler, activity_functions, azure, make_input):
    result = replay(orchestrator_handler, activity_functions, make_input(INVALID_LINES))
    out = result.output
    assert out["status"] == "invalid_dataset", out

    assert assert_moves_forward(result) == ["validate"]
    rows = final_rows(result)
    assert rows[0].key == "validate" and rows[0].state is FAILED
    assert out["report"] is None and not out["notification"]["delivered"]
    assert [row.state for row in rows[1:]] == [SKIPPED] * (len(rows) - 1), rows


def test_a_failed_preflight(orchestrator_handler, activity_functions, azure: FakeAzure, make_input):
    azure.preflight_failures = {"training_quota": "0 of 0 vCPUs free, 24 needed"}
    result = replay(orchestrator_handler, activity_functions, make_input())
    out = result.output
    assert out["status"] == "preflight_failed", out

    assert assert_moves_forward(result) == ["validate", "preflight"]
    rows = final_rows(result)
    assert [(r.key, r.state) for r in rows[:2]] == [("validate", DONE), ("preflight", FAILED)]
    assert all(r.state is SKIPPED for r in rows[2:]), rows  # no job: no report either


@pytest.mark.parametrize("ending", ["job failed", "canceled in training"])
def test_a_run_that_stopped_in_training(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input, ending
):
    events = None
    if ending == "job failed":
        azure.job_states, azure.job_error = ["Queued", "Running", "Failed"], "CUDA out of memory"
    else:
        azure.job_states = ["Queued"] + ["Running"] * 50
        events = [(when("training", job_status="Running"), "cancel", {"reason": "wrong data"})]
    result = replay(orchestrator_handler, activity_functions, make_input(), events)
    out = result.output
    assert out["status"] == ("failed" if ending == "job failed" else "canceled"), out

    shown = assert_moves_forward(result)
    assert shown == ["validate", "preflight", "submit", "train"]
    rows = final_rows(result)
    by_key = states(rows)
    assert [by_key[k] for k in ("validate", "preflight", "submit")] == [DONE] * 3
    assert by_key["train"] is (FAILED if ending == "job failed" else StageState.CANCELED)
    between = [k for k in ORDER[ORDER.index("train") + 1 : ORDER.index("report")] if k in by_key]
    assert between and all(by_key[k] is SKIPPED for k in between), by_key
    assert "wait" not in by_key  # the run never got to the endpoint's turn
    assert by_key["report"] is after_run_state(out, "report") is DONE  # a job ran: it has a report
    assert by_key["notify"] is after_run_state(out, "notify")


def test_a_run_the_evaluation_rejected(orchestrator_handler, activity_functions, azure, make_input):
    result = replay(
        orchestrator_handler, activity_functions, make_input(evaluation=EvaluationPolicy(floor=0.9))
    )
    out = result.output
    assert out["status"] == "rejected_by_evaluation", out

    shown = assert_moves_forward(result)
    assert shown.index("smoke_test") < shown.index("evaluate") < shown.index("traffic")  # the rollback
    by_key = states(final_rows(result))
    for key in ("validate", "preflight", "submit", "train", "register", "deploy", "smoke_test"):
        assert by_key[key] is DONE, (key, by_key)
    assert by_key["evaluate"] is FAILED
    assert (by_key["traffic"], by_key["connection"]) == (SKIPPED, SKIPPED)
    assert by_key["report"] is DONE and by_key["notify"] is after_run_state(out, "notify")


def test_a_dry_run(orchestrator_handler, activity_functions, azure, make_input):
    result = replay(orchestrator_handler, activity_functions, dry_input(make_input), instance=DRY_ID)
    assert result.output["status"] == "planned", result.output

    assert assert_moves_forward(result, dry_run=True) == ["validate", "preflight", "plan"]
    rows = final_rows(result, dry_run=True)
    assert [(r.key, r.state) for r in rows] == [("validate", DONE), ("preflight", DONE), ("plan", DONE)]
    assert row_of(rows, "plan").duration_s == result.output["durations_s"]["plan"]


def test_a_run_that_waited_for_the_endpoint(orchestrator_handler, activity_functions, azure, make_input):
    azure.turn_hold[ENDPOINT] = (OTHER, 3)  # another run releases onto the endpoint first
    result = replay(orchestrator_handler, activity_functions, make_input())
    out = result.output
    assert out["status"] == "completed", out

    shown = assert_moves_forward(result)
    assert shown[shown.index("register") + 1 : shown.index("deploy")] == ["wait"]
    for status, step in live(result):
        keys = [row.key for row in timeline(status, None, dry_run=False)]
        if step == "registering":
            assert "wait" not in keys  # not (yet) known to wait
        if step == "waiting_for_endpoint":
            assert keys.index("register") < keys.index("wait") < keys.index("deploy")
    rows = final_rows(result)
    by_key = states(rows)
    assert by_key["wait"] is DONE
    assert all(state is DONE for key, state in by_key.items() if key not in ("report", "notify")), by_key
    assert row_of(rows, "wait").duration_s == out["durations_s"]["wait_for_endpoint"] > 0


# -- the statuses themselves ------------------------------------------------------------------------


def test_every_step_has_its_row():
    assert set(STAGE_OF) == {step.status for step in Step}, "a new step needs a row (core/timeline.py)"
    for step in Step:
        dry = step is Step.PLAN
        rows = timeline({"step": step.status, "durations_s": {}}, None, dry_run=dry)
        active = [row for row in rows if row.state is ACTIVE]
        assert [row.key for row in active] == [STAGE_OF[step.status]], step
        first_of_stage = next(s for s in STAGES if s.key == active[0].key).steps[0] is step
        assert active[0].detail == ("" if first_of_stage else step.status), step  # "creating deployment"


def test_a_step_text_unknown_to_the_timeline_does_not_break_it():
    status = {"step": "reticulating splines", "durations_s": {"validate": 2.5, "preflight": 1.0}}
    rows = timeline(status, None, dry_run=False)
    assert [row.key for row in rows] == [s.key for s in STAGES if not s.optional]
    assert [row.state for row in rows[:3]] == [DONE, DONE, ACTIVE]  # the first stage not yet timed
    assert rows[0].duration_s == 2.5 and rows[2].detail == ""
    # before the first status (a run just started) the first row is the active one
    assert [row.state for row in timeline(None, None, dry_run=False)][:2] == [ACTIVE, PENDING]


def test_the_active_row_keeps_the_step_start_the_status_gives():
    start = "2026-11-01T08:00:05+00:00"
    rows = timeline(
        {"step": "creating deployment", "step_started_at": start, "durations_s": {}}, None, dry_run=False
    )
    (active,) = [row for row in rows if row.state is ACTIVE]
    assert (active.key, active.started_at, active.detail) == ("deploy", start, "creating deployment")
    assert active.as_json()["state"] == "active" and active.as_json()["started_at"] == start


# -- defects found while writing these (strict: they pass once fixed, then drop the mark) ----------


def test_wrap_up_statuses_never_move_the_timeline_back(
    orchestrator_handler, activity_functions, azure, make_input
):
    result = replay(orchestrator_handler, activity_functions, make_input())
    wrap_up = [(s, step) for s, step in live(result) if step in RUN_STATUSES]
    assert wrap_up, "the run showed its status while it still ran"
    last = -1
    for status, _step in live(result):
        rows = timeline(status, None, dry_run=False)
        position = max(ORDER.index(r.key) for r in rows if r.state is not PENDING)
        assert position >= last, (status["step"], rows)
        last = position


def test_a_run_that_never_waited_shows_no_wait_row(
    orchestrator_handler, activity_functions, azure, make_input
):
    result = replay(orchestrator_handler, activity_functions, make_input())
    assert result.output["status"] == "completed"
    assert "wait" not in states(final_rows(result))


def test_a_failed_registration_fails_the_register_row(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.failures = {"register_model": 99}
    result = replay(orchestrator_handler, activity_functions, make_input())
    assert result.output["status"] == "failed" and result.output["job_state"] == "Completed"
    by_key = states(final_rows(result))
    assert (by_key["train"], by_key["register"]) == (DONE, FAILED)


def test_with_the_gate_off_a_failed_connection_fails_the_connection_row(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.failures = {"publish_connection": 99}
    result = replay(
        orchestrator_handler, activity_functions, make_input(evaluation=EvaluationPolicy(sample_size=0))
    )
    assert result.output["status"] == "failed" and "connection" in result.output["reason"]
    by_key = states(final_rows(result))
    assert (by_key["traffic"], by_key["connection"]) == (DONE, FAILED), by_key


def test_a_cancel_while_waiting_fails_the_wait_row(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.turn_hold[ENDPOINT] = (OTHER, 1000)
    events = [(when("waiting_for_endpoint"), "cancel", {"reason": "not now"})]
    result = replay(orchestrator_handler, activity_functions, make_input(), events)
    assert result.output["status"] == "canceled"
    by_key = states(final_rows(result))
    assert (by_key.get("wait"), by_key["deploy"]) == (StageState.CANCELED, SKIPPED), by_key


def test_a_failed_smoke_test_fails_its_row_not_the_rollbacks(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    """The rollback after it shows in the custom status, but the run stopped at the smoke test."""
    azure.smoke_status = 500
    result = replay(orchestrator_handler, activity_functions, make_input())
    assert result.output["status"] == "failed" and "smoke test" in result.output["reason"]
    assert any((s or {}).get("step") == Step.ROLL_BACK.status for s in result.custom_statuses)
    by_key = states(final_rows(result))
    assert (by_key["deploy"], by_key["smoke_test"]) == (DONE, FAILED), by_key
    assert by_key["evaluate"] is SKIPPED and by_key["traffic"] is SKIPPED, by_key


def test_a_failed_release_turn_fails_the_wait_row_not_register(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.failures = {"take_turn": 99}
    result = replay(orchestrator_handler, activity_functions, make_input())
    assert result.output["status"] == "failed", result.output
    by_key = states(final_rows(result))
    assert (by_key["register"], by_key.get("wait"), by_key["deploy"]) == (DONE, FAILED, SKIPPED), by_key


def test_with_the_gate_off_a_completed_run_shows_the_evaluation_skipped(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    result = replay(
        orchestrator_handler, activity_functions, make_input(evaluation=EvaluationPolicy(sample_size=0))
    )
    assert result.output["status"] == "completed" and result.output["evaluation"] is None
    by_key = states(final_rows(result))
    assert by_key["evaluate"] is SKIPPED and by_key["traffic"] is DONE and by_key["connection"] is DONE, (
        by_key
    )
