"""Replay tests: the real orchestrator handler, driven through the durable protocol by testing/replay.py,
with the real activities running against the in-memory Azure of testing/fakes.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from core.contracts import ORCHESTRATOR
from core.models import ModelRef, PollPolicy, ProvisioningState
from testing.fakes import SCORING_URI, SECRET_KEY, FakeAzure
from testing.replay import (
    CALL_ACTIVITY_WITH_RETRY,
    CREATE_TIMER,
    T0,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_SCHEDULED,
    WAIT_FOR_EVENT,
    History,
    Replayer,
    RunResult,
    flatten,
    run_episode,
)

RUN_ID = "ft-0123456789abcdef"
ENDPOINT = "phi3-ft-endpoint"


def replay(handler: Any, activities: dict[str, Any], input_: dict[str, Any]) -> RunResult:
    return Replayer(handler, activities, name=ORCHESTRATOR, instance_id=RUN_ID, input_=input_).run()


def step_names(result: RunResult) -> list[str]:
    return [s.custom_status["step"] for s in result.steps if s.custom_status]


def test_happy_path_first_deployment(orchestrator_handler, activity_functions, azure: FakeAzure, make_input):
    result = replay(orchestrator_handler, activity_functions, make_input())

    out = result.output
    assert result.error is None
    assert out["status"] == "completed", out
    assert out["instance_id"] == RUN_ID
    assert (out["train_examples"], out["validation_examples"]) == (40, 10)
    assert out["job"] == f"{RUN_ID}-finetune" and out["job_state"] == "Completed"
    assert out["model"] == {"name": "phi3-mini-ft", "version": "1"}
    assert out["endpoint"] == ENDPOINT and out["deployment"] == "blue-0123456789ab"
    assert out["previous_deployment"] is None
    assert out["scoring_uri"] == SCORING_URI and out["connection"] == "phi3-finetuned"
    assert set(out["durations_s"]) >= {
        "validate",
        "preflight",
        "submit",
        "train",
        "register",
        "deploy",
        "smoke_test",
    }

    # The order of side effects, as activity calls.
    names = result.activity_names
    assert names[:5] == [
        "validate_dataset",
        "preflight",
        "submit_finetune",
        "prepare_endpoint",
        "get_job_status",
    ]
    assert names.count("submit_finetune") == 1 and names.count("get_job_status") == 4
    tail = [n for n in names if n not in ("get_job_status", "get_endpoint", "get_deployment_state")]
    assert tail == [
        "validate_dataset",
        "preflight",
        "submit_finetune",
        "prepare_endpoint",  # provisioning overlaps training
        "register_model",
        "take_endpoint_turn",
        "ensure_endpoint",
        "update_endpoint_tags",
        "create_deployment",
        "smoke_test",
        "take_endpoint_turn",  # renewed before each long step
        "evaluate_batch",
        "tag_model",
        "take_endpoint_turn",
        "set_traffic",
        "update_endpoint_tags",
        "update_connection",
        "give_back_endpoint_turn",
        "write_report",
        "notify",
    ]
    assert azure.turns == {}, "the turn is given back"
    # Every activity is scheduled with retry options; timers between polls.
    scheduled = [a for s in result.steps for a in flatten(s.new_actions)]
    assert {a["actionType"] for a in scheduled} == {CALL_ACTIVITY_WITH_RETRY, CREATE_TIMER, WAIT_FOR_EVENT}
    first = flatten(result.steps[1].new_actions)  # steps[0] registers the cancel event
    assert [(a["actionType"], a["functionName"]) for a in first] == [
        (CALL_ACTIVITY_WITH_RETRY, "validate_dataset")
    ]

    # The world after the run: split written next to the dataset, one job with validation data,
    # the model tagged with lineage, the new deployment live, the connection pointing at it.
    assert ("datasets", f"chats/_splits/{RUN_ID}/train.jsonl") in azure.blobs
    assert ("datasets", f"chats/_splits/{RUN_ID}/validation.jsonl") in azure.blobs
    spec = azure.jobs[f"{RUN_ID}-finetune"]
    assert spec.validation_data.endswith(f"_splits/{RUN_ID}/validation.jsonl")
    assert spec.instance_type == "Standard_NC24ads_A100_v4"
    _, _, tags = azure.models[0]
    assert tags["dataset-blob"] == "datasets/chats/support.jsonl" and tags["instance-id"] == RUN_ID
    assert tags["job-name"] == f"{RUN_ID}-finetune" and tags["dataset-etag"].startswith('"0x')
    assert azure.endpoints[ENDPOINT].traffic == {"blue-0123456789ab": 100}
    assert azure.connections["phi3-finetuned"]["endpoint"] == SCORING_URI
    # The smoke test used the Prompt flow tool's exact payload, pinned to the new deployment.
    _, deployment, payload = azure.scored[0]
    assert deployment == "blue-0123456789ab"
    assert payload == {
        "input_data": {
            "input_string": [{"role": "user", "content": "Say hello in one short sentence."}],
            "parameters": {"temperature": 0.7, "max_new_tokens": 128},
        }
    }
    # Custom status at every step, in order.
    steps = step_names(result)
    for expected in [
        "validating",
        "submitting",
        "training",
        "registering",
        "deploying",
        "smoke_testing",
        "shifting_traffic",
        "updating_connection",
        "completed",
    ]:
        assert expected in steps
    assert steps.index("training") < steps.index("registering") < steps.index("completed")
    training = next(
        s.custom_status for s in result.steps if s.custom_status and s.custom_status["step"] == "training"
    )
    assert {"job", "job_status", "elapsed_s", "dataset"} <= set(training)


def test_blue_green_replaces_live_deployment(orchestrator_handler, activity_functions, azure, make_input):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="7"))
    result = replay(orchestrator_handler, activity_functions, make_input())

    out = result.output
    assert out["status"] == "completed"
    assert out["deployment"] == "green-0123456789ab"
    assert out["previous_deployment"] == "blue-aaaaaaaaaaaa"
    assert azure.count("begin_create_endpoint") == 0
    # Traffic moved in one step, then the old deployment was deleted.
    assert azure.traffic_history == [{"blue-aaaaaaaaaaaa": 0, "green-0123456789ab": 100}]
    assert azure.deleted == ["blue-aaaaaaaaaaaa"]
    assert azure.endpoints[ENDPOINT].traffic == {"green-0123456789ab": 100}


def test_invalid_dataset_submits_nothing(orchestrator_handler, activity_functions, azure, make_input):
    lines = (
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
        b'{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n'
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}\n'
    )
    result = replay(orchestrator_handler, activity_functions, make_input(lines))

    out = result.output
    assert out["status"] == "invalid_dataset"
    assert result.activity_names == ["validate_dataset", "notify"]  # the outcome is announced; no report
    assert azure.jobs == {} and azure.count("submit_finetune") == 0
    errors = {(e["line"], e["field"]) for e in out["validation_errors"]}
    assert (2, "messages[0].role") in errors
    assert any(line == 3 for line, _ in errors)
    assert "datasets/chats/support.jsonl:2" in out["reason"]
    assert result.steps[-1].custom_status["step"] == "invalid_dataset"
    # Nothing was written next to the dataset either.
    assert not any("_splits" in name for _, name in azure.blobs)


def test_invalid_dataset_single_episode_from_hand_built_history(orchestrator_handler, make_input, azure):
    """The lowest level: a history built by hand, one call to the handler per episode, the actions
    it returns. Episode 1 registers the cancel event (an immediate timer raced against it),
    episode 2 schedules validation, episode 3 sees the invalid report and ends: no submit ever."""
    input_ = make_input()
    history = History(ORCHESTRATOR, RUN_ID, input_)
    first = run_episode(orchestrator_handler, history)
    assert not first.is_done
    assert [(a["actionType"], a.get("externalEventName")) for a in flatten(first.actions)] == [
        (CREATE_TIMER, None),
        (WAIT_FOR_EVENT, "cancel"),
    ]
    history.timer_created(T0, 0, T0)
    history.orchestrator_completed(T0)
    history.orchestrator_started(T0)
    history.timer_fired(T0, 0, T0)

    second = run_episode(orchestrator_handler, history)
    new = flatten(second.actions[len(first.actions) :])
    assert [a["functionName"] for a in new] == ["validate_dataset"]
    assert second.custom_status["step"] == "validating"
    history.task_scheduled(T0, 1, "validate_dataset", new[0]["input"])
    history.orchestrator_completed(T0)
    history.orchestrator_started(T0 + timedelta(seconds=3))
    report = {
        "file": "datasets/chats/support.jsonl",
        "ok": False,
        "examples": 0,
        "lines": 1,
        "error_count": 1,
        "errors": [{"line": 1, "field": "messages", "message": "missing", "file": "x"}],
    }
    history.task_completed(T0 + timedelta(seconds=3), 1, {"ok": False, "reports": [report]})

    third = run_episode(orchestrator_handler, history)
    assert not third.is_done  # the outcome is decided; the completion event is sent next
    scheduled = flatten(third.actions[len(second.actions) :])
    assert [a.get("functionName") for a in scheduled] == ["notify"]  # no submit, no report
    event = json.loads(scheduled[0]["input"])
    assert (event["outcome"], event["subject"]) == ("invalid_dataset", RUN_ID)
    assert event["data"]["validation_errors"][0]["field"] == "messages"
    assert third.custom_status["step"] == "notifying"
    history.task_scheduled(T0 + timedelta(seconds=3), 2, "notify", scheduled[0]["input"])
    history.orchestrator_completed(T0 + timedelta(seconds=3))
    history.orchestrator_started(T0 + timedelta(seconds=4))
    delivery = {"event_type": "run.invalid_dataset", "event_id": "x", "delivered": False, "skipped": True}
    history.task_completed(T0 + timedelta(seconds=4), 2, delivery)

    fourth = run_episode(orchestrator_handler, history)
    assert fourth.is_done
    assert fourth.output["status"] == "invalid_dataset"
    assert fourth.output["validation_errors"][0]["field"] == "messages"
    assert fourth.output["notification"]["skipped"] is True
    assert fourth.custom_status["step"] == "invalid_dataset"


def test_job_failed_ends_run_without_deploying(orchestrator_handler, activity_functions, make_input, azure):
    azure.job_states = ["Queued", "Running", "Failed"]
    azure.job_error = "CUDA out of memory"
    result = replay(orchestrator_handler, activity_functions, make_input())

    out = result.output
    assert out["status"] == "failed"
    assert "Failed" in out["reason"] and "CUDA out of memory" in out["reason"]
    assert "register_model" not in result.activity_names
    assert azure.endpoints == {}


def test_deadline_cancels_the_job(orchestrator_handler, activity_functions, make_input, azure):
    azure.job_states = ["Running"]  # never finishes
    policy = PollPolicy(first_interval_s=60, max_interval_s=600, backoff=1.5, deadline_s=2 * 3600)
    result = replay(orchestrator_handler, activity_functions, make_input(job_poll=policy))

    out = result.output
    assert out["status"] == "failed" and "deadline of 2 h passed" in out["reason"]
    assert azure.canceled == [f"{RUN_ID}-finetune"]
    assert "register_model" not in result.activity_names
    # The last poll happened at (not long after) the deadline: timers were capped by it.
    assert out["durations_s"]["train"] == pytest.approx(2 * 3600, abs=120)


def test_smoke_test_failure_rolls_back(orchestrator_handler, activity_functions, make_input, azure):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="7"))
    azure.smoke_status = 500
    result = replay(orchestrator_handler, activity_functions, make_input())

    out = result.output
    assert out["status"] == "failed" and "smoke test" in out["reason"] and "rolled back" in out["reason"]
    assert azure.deleted == ["green-0123456789ab"]
    assert azure.count("set_traffic") == 0
    assert azure.endpoints[ENDPOINT].traffic == {"blue-aaaaaaaaaaaa": 100}
    assert "update_connection" not in result.activity_names


def test_failed_provisioning_rolls_back(orchestrator_handler, activity_functions, make_input, azure):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="7"))
    azure.deployment_final = ProvisioningState.FAILED
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "failed" and "ended Failed" in result.output["reason"]
    assert "smoke_test" not in result.activity_names
    assert azure.deleted == ["green-0123456789ab"]
    assert azure.endpoints[ENDPOINT].traffic == {"blue-aaaaaaaaaaaa": 100}


def test_traffic_shift_failure_restores_traffic(orchestrator_handler, activity_functions, make_input, azure):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="7"))
    azure.failures["set_traffic"] = 4  # every retry of the shift fails; the restore succeeds
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "failed" and "rolled back" in result.output["reason"]
    assert azure.endpoints[ENDPOINT].traffic == {"blue-aaaaaaaaaaaa": 100}
    assert azure.deleted == ["green-0123456789ab"]


def test_transient_failures_are_retried(orchestrator_handler, activity_functions, make_input, azure):
    azure.failures = {"get_job": 2, "submit_finetune": 1}
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "completed"
    assert result.activity_names.count("submit_finetune") == 2  # one failure, one retry
    assert len(azure.jobs) == 1  # ...and still exactly one job
    failed = [e for h in result.histories for e in h if e["EventType"] == TASK_FAILED]
    assert len(failed) == 3
    # Each failure was followed by a retry timer 5 s later (RetryOptions first interval).
    timers = [e for h in result.histories for e in h if e["EventType"] == 10]
    assert len(timers) >= 3


def test_retries_exhausted_on_submit_fail_the_run(
    orchestrator_handler, activity_functions, make_input, azure
):
    azure.failures = {"submit_finetune": 4}
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.error is None
    assert result.output["status"] == "failed"
    assert result.activity_names.count("submit_finetune") == 4
    assert azure.jobs == {}
    assert "submitting the fine-tuning job failed" in result.output["reason"]
    assert azure.canceled == [f"{RUN_ID}-finetune"]  # in case the lost call did create it


def test_monitoring_failure_cancels_job(orchestrator_handler, activity_functions, make_input, azure):
    azure.failures = {"get_job": 4}
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "failed"
    assert azure.canceled == [f"{RUN_ID}-finetune"]


def _polls_for(hours: float, policy: PollPolicy) -> int:
    t, interval, n = 0, policy.first_interval_s, 0
    while t < hours * 3600:
        t += interval
        interval = policy.next_interval(interval)
        n += 1
    return n


@pytest.mark.parametrize("hours", [1, 72])
def test_history_stays_bounded(orchestrator_handler, activity_functions, make_input, azure, settings, hours):
    policy = settings.run_config().job_poll.model_copy(update={"deadline_s": 100 * 3600})
    azure.job_states = ["Running"] * _polls_for(hours, policy) + ["Completed"]
    result = replay(orchestrator_handler, activity_functions, make_input(job_poll=policy))

    assert result.output["status"] == "completed"
    assert result.output["durations_s"]["train"] >= hours * 3600 - 1
    # Bound per generation: MONITOR_POLLS_PER_GENERATION polls plus the fixed steps either side
    # (the last generation also deploys, evaluates, reports and notifies).
    assert result.max_history_len <= 250, result.max_history_len
    if hours == 72:
        assert result.generations > 10


def test_continue_as_new_carries_progress(orchestrator_handler, activity_functions, make_input, azure):
    azure.job_states = ["Running"] * 45 + ["Completed"]
    result = replay(orchestrator_handler, activity_functions, make_input(monitor_polls_per_generation=20))

    assert result.generations == 3
    assert result.output["status"] == "completed"
    assert result.activity_names.count("validate_dataset") == 1
    assert result.activity_names.count("submit_finetune") == 1
    assert result.output["train_examples"] == 40
    # Each generation starts with the progress in its input, not from scratch.
    first_events = [h[1] for h in result.histories]
    inputs = [json.loads(e["Input"]) for e in first_events]
    assert inputs[0]["progress"] is None
    assert inputs[1]["progress"]["job"] == f"{RUN_ID}-finetune" and inputs[1]["progress"]["generation"] == 1
    assert inputs[2]["progress"]["polls"] == 40


@pytest.mark.parametrize("failures", [{}, {"get_job": 1, "publish_connection": 2, "score": 1}])
def test_no_secret_reaches_history_status_or_output(
    orchestrator_handler, activity_functions, make_input, azure, failures
):
    azure.failures = failures
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="7"))
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "completed"
    assert azure.connections["phi3-finetuned"]["key"] == SECRET_KEY  # the key did reach the connection...
    everything = json.dumps([result.histories, result.custom_statuses, result.output])
    assert SECRET_KEY not in everything  # ...and nowhere else
    if failures:
        reasons = [e["Reason"] for h in result.histories for e in h if e["EventType"] == TASK_FAILED]
        assert reasons and all("Bearer ***" in r for r in reasons)


def test_every_scheduled_task_completes_once(orchestrator_handler, activity_functions, make_input):
    """Protocol sanity: each TaskScheduled id completes or fails exactly once per generation."""
    result = replay(orchestrator_handler, activity_functions, make_input())
    for history in result.histories:
        scheduled = [e["EventId"] for e in history if e["EventType"] == TASK_SCHEDULED]
        done = [e["TaskScheduledId"] for e in history if e["EventType"] in (TASK_COMPLETED, TASK_FAILED)]
        assert sorted(scheduled) == sorted(done)


def test_replay_is_deterministic(orchestrator_handler, activity_functions, settings):
    """Two runs of the same scenario produce byte-identical histories, statuses and output."""
    from backends import registry
    from core.models import RunRequest
    from orchestrators.run_input import RunInput
    from testing.fakes import ultrachat_lines

    def once() -> str:
        fake = FakeAzure(job_states=["Queued"] + ["Running"] * 25 + ["Completed"], failures={"get_job": 1})
        with registry.use(fake.backends()):
            dataset = fake.put_blob("datasets", "chats/support.jsonl", ultrachat_lines(30))
            request = RunRequest(dataset=dataset, config=settings.run_config(), source="blob")
            result = replay(
                orchestrator_handler, activity_functions, RunInput(request=request).model_dump(mode="json")
            )
        return json.dumps([result.histories, result.custom_statuses, result.output])

    assert once() == once()


def test_given_validation_file_is_used_as_validated(
    orchestrator_handler, activity_functions, azure, settings
):
    from core.models import RunRequest
    from orchestrators.run_input import RunInput
    from testing.fakes import ultrachat_lines

    train = azure.put_blob("datasets", "chats/train.jsonl", ultrachat_lines(12))
    holdout = azure.put_blob("datasets", "chats/holdout.jsonl", ultrachat_lines(1))
    request = RunRequest(dataset=train, validation=holdout, config=settings.run_config(), source="http")
    result = replay(
        orchestrator_handler, activity_functions, RunInput(request=request).model_dump(mode="json")
    )

    assert result.output["status"] == "completed"
    assert (result.output["train_examples"], result.output["validation_examples"]) == (12, 1)
    # Both files were copied, unsplit, to the run's own place: what was validated is what trains
    # and what the gate scores, whatever the user uploads meanwhile.
    spec = next(iter(azure.jobs.values()))
    prefix = f"chats/_splits/{RUN_ID}"
    assert spec.training_data.endswith(f"{prefix}/train.jsonl")
    assert spec.validation_data.endswith(f"{prefix}/validation.jsonl")
    assert azure.blobs[("datasets", f"{prefix}/train.jsonl")] == ultrachat_lines(12)
    assert azure.blobs[("datasets", f"{prefix}/validation.jsonl")] == ultrachat_lines(1)


def test_blob_replaced_after_the_event_is_invalid(
    orchestrator_handler, activity_functions, azure, make_input
):
    input_ = make_input()
    azure.put_blob("datasets", "chats/support.jsonl", b"replaced\n")  # new ETag: a new run will handle it
    result = replay(orchestrator_handler, activity_functions, input_)

    assert result.output["status"] == "invalid_dataset"
    assert "overwritten after this run started" in result.output["reason"]
    assert azure.jobs == {}


def test_steps_that_end_without_a_summary_fail_the_run_loudly(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input, monkeypatch: pytest.MonkeyPatch
):
    """Only the explicit CONTINUED sentinel ends a generation without a summary: a branch that
    forgets to return its result fails the orchestration instead of completing it silently."""
    from orchestrators import finetune

    def forgetful(self: Any) -> Any:
        yield from self.listen_for_cancel()  # a step that runs, then returns nothing

    monkeypatch.setattr(finetune.FinetuneRun, "steps", forgetful)
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output is None and result.error is not None
    assert "ended without a summary" in result.error
