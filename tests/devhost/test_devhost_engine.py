"""The dev host's durable engine on a small app: activities with retry, timers, sub-orchestrations,
fan-out, external events, continue-as-new, terminate, purge — and restart from SQLite."""

from __future__ import annotations

import json

import pytest

from devhost.engine import Conflict, Engine, Gone, NotFound
from devhost.functions import FunctionIndex
from devhost.store import Store
from testing.apps import mini_app
from testing.devhost_in_process import Clock, drain


@pytest.fixture
def engine(tmp_path):
    mini_app.FAILURES.clear()
    mini_app.CALLS.clear()
    clock = Clock()
    eng = Engine(Store(tmp_path / "host.sqlite"), FunctionIndex.from_app(mini_app.app), clock)
    eng.clock_ref = clock  # type: ignore[attr-defined]
    return eng


def events(engine: Engine, instance_id: str) -> list[dict]:
    return engine.status(instance_id, show_history=True)["historyEvents"]


def test_full_feature_run(engine):
    mini_app.FAILURES["5"] = 2  # the retried activity fails twice, then succeeds
    engine.start("mini", "i1", json.dumps({"generations": 2}))
    drain(engine, engine.clock_ref)

    st = engine.status("i1", show_history=True)
    assert st["runtimeStatus"] == "Completed"
    assert st["output"] == {"a": 10, "b": 21, "fan": [0, 2, 4], "approved": None, "generation": 2}
    assert st["customStatus"] == {"a": 10, "generation": 2}
    # Three generations; the retries happened only in the first one.
    assert mini_app.CALLS.count(5) == 5  # 3 attempts in generation 0, then 1 each in 1 and 2
    hist = st["historyEvents"]
    assert hist[1]["EventType"] == "ExecutionStarted" and json.loads(hist[1]["Input"])["generation"] == 2
    # The child ran as its own instance (a fresh id per generation) and completed.
    child = next(e["InstanceId"] for e in hist if e["EventType"] == "SubOrchestrationInstanceCreated")
    assert child == "i1:2:0002"
    assert engine.status(child)["runtimeStatus"] == "Completed"


def test_retry_history_matches_durable_task_semantics(engine):
    mini_app.FAILURES["5"] = 1
    engine.start("mini", "i2", None)
    drain(engine, engine.clock_ref)
    kinds = [
        (e["EventType"], e["EventId"], e.get("TaskScheduledId"), e.get("TimerId"))
        for e in events(engine, "i2")
    ]
    body = [k for k in kinds if k[0] not in ("OrchestratorStarted", "OrchestratorCompleted")]
    assert body[:6] == [
        ("ExecutionStarted", -1, None, None),
        ("TaskScheduled", 0, None, None),
        ("TaskFailed", -1, 0, None),
        ("TimerCreated", 1, None, None),  # retry timer
        ("TimerFired", -1, None, 1),
        ("TaskScheduled", 2, None, None),  # the retry
    ]
    assert body[6] == ("TaskCompleted", -1, 2, None)


def test_retries_exhausted_fail_the_orchestration(engine):
    mini_app.FAILURES["13"] = 10
    engine.start("fails", "f1", None)
    drain(engine, engine.clock_ref)
    st = engine.status("f1", show_history=True)
    assert st["runtimeStatus"] == "Failed"
    assert "flaky on 13" in st["output"]
    assert mini_app.CALLS.count(13) == 2
    assert st["historyEvents"][-1]["EventType"] == "ExecutionFailed"


def test_external_event_is_awaited(engine):
    engine.start("mini", "e1", json.dumps({"wait_for_event": True}))
    drain(engine, engine.clock_ref)
    assert engine.status("e1")["runtimeStatus"] == "Running"
    engine.raise_event("e1", "approve", json.dumps({"by": "alice"}))
    drain(engine, engine.clock_ref)
    assert engine.status("e1")["output"]["approved"] == {"by": "alice"}
    with pytest.raises(Gone):
        engine.raise_event("e1", "approve", None)


def test_terminate_stops_work_and_purge_removes(engine):
    engine.start("mini", "t1", json.dumps({"wait_for_event": True}))
    drain(engine, engine.clock_ref)
    engine.terminate("t1", "user asked")
    st = engine.status("t1", show_history=True)
    assert st["runtimeStatus"] == "Terminated" and st["output"] == "user asked"
    assert st["historyEvents"][-1]["EventType"] == "ExecutionTerminated"
    with pytest.raises(Gone):
        engine.terminate("t1", "again")
    assert engine.purge("t1") == 1
    with pytest.raises(NotFound):
        engine.status("t1")


def test_start_conflict_and_restart_of_finished(engine):
    engine.start("mini", "c1", json.dumps({"wait_for_event": True}))
    with pytest.raises(Conflict):
        engine.start("mini", "c1", None)
    engine.terminate("c1", "done")
    engine.start("mini", "c1", None)  # a finished instance may be replaced (NonRunningStates)
    drain(engine, engine.clock_ref)
    assert engine.status("c1")["runtimeStatus"] == "Completed"


def test_state_survives_a_new_engine_on_the_same_database(tmp_path):
    """What a restart after kill -9 sees: only committed state, and it is enough to finish."""
    mini_app.FAILURES.clear()
    clock = Clock()
    db = tmp_path / "host.sqlite"
    first = Engine(Store(db), FunctionIndex.from_app(mini_app.app), clock)
    first.start("mini", "r1", None)
    # Run a few steps, leaving an activity scheduled but not run (as if killed mid-activity).
    for _ in range(3):
        if first.run_next_episode() is None:
            work = first.pending_work(set())
            if work:
                first.run_activity(work[0])
    assert first.pending_work(set()) or first.next_due()
    second = Engine(Store(db), FunctionIndex.from_app(mini_app.app), clock)
    drain(second, clock)
    assert second.status("r1")["runtimeStatus"] == "Completed"


def test_events_not_yet_delivered_survive_continue_as_new(engine):
    """A second event queued behind the one that ends a generation reaches the next generation."""
    engine.start("mini", "can1", json.dumps({"generations": 1, "wait_for_event": True, "timer_s": 1}))
    drain(engine, engine.clock_ref)  # generation 0 now waits for "approve"
    engine.raise_event("can1", "approve", json.dumps({"n": 1}))  # ends generation 0 (continue-as-new)
    engine.raise_event("can1", "approve", json.dumps({"n": 2}))  # still queued at that moment
    drain(engine, engine.clock_ref)
    st = engine.status("can1")
    assert st["runtimeStatus"] == "Completed"
    assert st["output"]["generation"] == 1 and st["output"]["approved"] == {"n": 2}
