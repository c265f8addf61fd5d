"""The job's end by event: the run waits for `job_status_changed` or the fallback timer, whichever
comes first, and reads the job before it acts, so a lost, early, repeated or forged event changes
when the job is read, never what the run does."""

from __future__ import annotations

from typing import Any

from backends import registry
from core.contracts import CANCEL_EVENT, JOB_EVENT, ORCHESTRATOR
from core.models import RunRequest
from core.settings import Settings
from orchestrators.run_input import RunInput
from testing.fakes import FakeAzure, ultrachat_lines
from testing.replay import Replayer, RunResult

RUN_ID = "ft-0123456789abcdef"
JOB = f"{RUN_ID}-finetune"
FALLBACK_S = 1200


def waiting(status: Any) -> bool:
    return bool(status) and status.get("step") == "training" and status.get("waiting_for_event") is True


def at_step(step: str):
    return lambda status: bool(status) and status.get("step") == step


def run(handler: Any, activities: Any, fake: FakeAzure, events: Any = (), **settings: Any) -> RunResult:
    dataset = fake.put_blob("datasets", "chats/support.jsonl", ultrachat_lines(50))
    config = Settings(
        BACKEND="local", JOB_STATUS_EVENTS=True, JOB_EVENT_FALLBACK_S=FALLBACK_S, **settings
    ).run_config()
    request = RunRequest(dataset=dataset, config=config, source="blob")
    return Replayer(
        handler,
        activities,
        name=ORCHESTRATOR,
        instance_id=RUN_ID,
        input_=RunInput(request=request).model_dump(mode="json"),
        events=list(events),
    ).run()


def reads(result: RunResult) -> int:
    return result.activity_names.count("get_job_status")


def completion(job: str = JOB, status: str = "Completed") -> dict[str, str]:
    return {"job": job, "status": status}


def test_the_event_before_the_timer_wakes_the_run_at_once(orchestrator_handler, activity_functions, azure):
    azure.job_states = ["Running", "Completed"]
    result = run(orchestrator_handler, activity_functions, azure, [(waiting, JOB_EVENT, completion())])

    assert result.output["status"] == "completed", result.output
    assert reads(result) == 2
    assert result.output["durations_s"]["train"] < 60, "woken by the event, not by the 1200 s timer"
    names = result.activity_names
    assert names.index("register_model") == names.index("get_job_status") + 2  # read, read, register


def test_with_every_event_lost_the_fallback_timer_finds_the_job(
    orchestrator_handler, activity_functions, azure
):
    azure.job_states = ["Running", "Running", "Completed"]
    result = run(orchestrator_handler, activity_functions, azure)

    assert result.output["status"] == "completed"
    assert reads(result) == 3
    train = result.output["durations_s"]["train"]
    assert 2 * FALLBACK_S <= train < 2 * FALLBACK_S + 60, "two fallback waits, no more"
    statuses = [s for s in result.custom_statuses if waiting(s)]
    assert statuses and all(s["next_poll_at"] for s in statuses)


def test_a_duplicated_event_costs_one_read_and_changes_nothing(orchestrator_handler, activity_functions):
    outcomes = []
    for copies in (1, 3):
        fake = FakeAzure(job_states=["Running", "Running", "Running", "Completed"])
        with registry.use(fake.backends()):
            events = [(waiting, JOB_EVENT, completion()) for _ in range(copies)]
            result = run(orchestrator_handler, activity_functions, fake, events)
        outcomes.append((result, fake))
    (one, fake_one), (three, fake_three) = outcomes
    assert one.output["status"] == three.output["status"] == "completed"
    assert [n for n in one.activity_names if n != "get_job_status"] == [
        n for n in three.activity_names if n != "get_job_status"
    ], "the same steps, once each"
    assert three.activity_names.count("submit_finetune") == three.activity_names.count("register_model") == 1
    assert reads(three) == 4 and three.output["durations_s"]["train"] < reads(one) * FALLBACK_S
    assert fake_three.canceled == fake_one.canceled == []


def test_a_forged_completion_is_checked_and_the_run_keeps_waiting(
    orchestrator_handler, activity_functions, azure
):
    azure.job_states = ["Running", "Running", "Completed"]
    forged = (waiting, JOB_EVENT, completion(status="Completed"))  # the job is still Running
    result = run(orchestrator_handler, activity_functions, azure, [forged])

    assert result.output["status"] == "completed"
    assert reads(result) == 3, "the forged event bought one read, not a step"
    assert result.output["durations_s"]["train"] >= FALLBACK_S, "completion came from the job, later"
    assert result.activity_names.count("register_model") == 1


def test_an_event_raised_before_the_run_waits_is_kept_for_the_wait(
    orchestrator_handler, activity_functions, azure
):
    azure.job_states = ["Running", "Completed"]
    result = run(
        orchestrator_handler, activity_functions, azure, [(at_step("submitting"), JOB_EVENT, completion())]
    )

    assert result.output["status"] == "completed"
    assert reads(result) == 2 and result.output["durations_s"]["train"] < 60


def test_a_failed_job_event_ends_the_run_after_the_read_confirms(orchestrator_handler, activity_functions):
    fake = FakeAzure(job_states=["Running", "Failed"], job_error="CUDA out of memory")
    with registry.use(fake.backends()):
        result = run(
            orchestrator_handler,
            activity_functions,
            fake,
            [(waiting, JOB_EVENT, completion(status="Failed"))],
        )
    assert result.output["status"] == "failed"
    assert "ended Failed" in result.output["reason"] and "CUDA out of memory" in result.output["reason"]
    assert "register_model" not in result.activity_names


def test_cancel_while_waiting_for_the_event_cancels_the_job(orchestrator_handler, activity_functions, azure):
    azure.job_states = ["Running"] * 10
    result = run(
        orchestrator_handler, activity_functions, azure, [(waiting, CANCEL_EVENT, {"reason": "stop"})]
    )

    assert result.output["status"] == "canceled" and "stop" in result.output["reason"]
    assert azure.canceled == [JOB]
    assert "register_model" not in result.activity_names


def test_long_training_continues_as_new_and_an_event_still_wakes_the_next_generation(
    orchestrator_handler, activity_functions, azure
):
    azure.job_states = ["Running"] * 6 + ["Completed"]
    late = (lambda s: waiting(s) and s.get("elapsed_s", 0) >= 4 * FALLBACK_S, JOB_EVENT, completion())
    result = run(orchestrator_handler, activity_functions, azure, [late], MONITOR_POLLS_PER_GENERATION=2)

    assert result.output["status"] == "completed"
    assert result.generations >= 3
    assert result.activity_names.count("submit_finetune") == 1
