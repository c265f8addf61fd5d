"""One release at a time per endpoint (issue 15), through the real orchestrator and activities
against the in-memory Azure: a run waits for the run holding the endpoint's release turn, gates
against what is live when its turn comes, gives the turn back however it ends, and a cancel
while waiting ends it with nothing created."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.models import ModelRef
from core.turns import Turn, take
from testing.fakes import FakeAzure
from tests.orchestrators.test_preflight_dry_run_cancel import ENDPOINT, RUN_ID, run, when

OTHER = "ft-ffffffffffffffff"
LIVE = ModelRef(name="phi3-mini-ft", version="4")


def waiting_statuses(result: Any) -> list[dict[str, Any]]:
    return [
        s.custom_status for s in result.steps if (s.custom_status or {}).get("step") == "waiting_for_endpoint"
    ]


def test_a_run_waits_for_the_holder_then_releases(orchestrator_handler, activity_functions, azure: FakeAzure):
    azure.turn_hold[ENDPOINT] = (OTHER, 3)
    result = run(orchestrator_handler, activity_functions, azure)

    out = result.output
    assert out["status"] == "completed", out
    waiting = waiting_statuses(result)
    assert waiting and all(s["message"] == f"waiting for {OTHER} to release {ENDPOINT}" for s in waiting)
    assert all(s["waiting_for"] == OTHER for s in waiting)
    # Nothing touched the endpoint before the turn was ours; the turn is given back at the end.
    names = result.activity_names
    first_take_granted = names.index("ensure_endpoint")
    assert names[:first_take_granted].count("take_endpoint_turn") == 4  # 3 refused, 1 granted
    assert "wait_for_endpoint" in out["durations_s"]
    assert azure.turns == {} and azure.count("give_back_turn") == 1


def test_the_second_run_gates_against_what_is_live_when_its_turn_comes(
    orchestrator_handler, activity_functions, azure: FakeAzure
):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", LIVE)
    azure.turn_hold[ENDPOINT] = (OTHER, 2)
    # The other run releases while we wait: its deployment is the live one from then on.
    azure.on_turn_freed = lambda: azure.live_endpoint(
        ENDPOINT, "green-ffffffffffff", ModelRef(name="phi3-mini-ft", version="5")
    )
    result = run(orchestrator_handler, activity_functions, azure)

    out = result.output
    assert out["previous_deployment"] == "green-ffffffffffff", out
    assert out["evaluation"]["live"]["deployment"] == "green-ffffffffffff"
    assert out["deployment"] == "blue-0123456789ab"  # the other colour than what is live now


def test_cancel_while_waiting_creates_nothing(orchestrator_handler, activity_functions, azure: FakeAzure):
    azure.turn_hold[ENDPOINT] = (OTHER, 1000)
    events = [(when("waiting_for_endpoint"), "cancel", {"reason": "not now"})]
    result = run(orchestrator_handler, activity_functions, azure, events=events)

    out = result.output
    assert out["status"] == "canceled" and "not now" in out["reason"]
    assert azure.count("begin_create_deployment") == 0
    # The endpoint was begun while the job trained; the run releasing onto it keeps it.
    assert azure.count("begin_create_endpoint") == 1 and azure.count("delete_endpoint") == 0
    assert azure.turns[ENDPOINT].holder == OTHER  # never ours, never taken from its holder


def test_the_turn_is_given_back_when_the_gate_rejects(
    orchestrator_handler, activity_functions, azure: FakeAzure
):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", LIVE)
    azure.oracles = ("blue-",)  # the live deployment answers perfectly: the new one loses
    result = run(orchestrator_handler, activity_functions, azure)

    assert result.output["status"] == "rejected_by_evaluation", result.output
    assert azure.turns == {}


def test_the_turn_is_given_back_when_the_deployment_fails(
    orchestrator_handler, activity_functions, azure: FakeAzure
):
    from core.models import ProvisioningState

    azure.deployment_final = ProvisioningState.FAILED
    result = run(orchestrator_handler, activity_functions, azure)

    assert result.output["status"] == "failed", result.output
    assert azure.turns == {}


def test_the_turn_is_given_back_on_a_cancel_during_evaluation(
    orchestrator_handler, activity_functions, azure: FakeAzure
):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", LIVE)
    result = run(orchestrator_handler, activity_functions, azure, events=[(when("evaluating"), "cancel", {})])

    assert result.output["status"] == "canceled", result.output
    assert azure.turns == {} and azure.endpoints[ENDPOINT].traffic == {"blue-aaaaaaaaaaaa": 100}


def test_a_turn_lost_to_expiry_stops_the_release_and_rolls_back(
    orchestrator_handler, activity_functions, azure: FakeAzure
):
    """A holder that stalled past its turn's expiry (another run took it) must not move traffic."""
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", LIVE)
    original = azure.take

    def take_then_lose(endpoint: str, run_id: str, ttl_s: float) -> Any:
        answer = original(endpoint, run_id, ttl_s)
        if run_id == RUN_ID and azure.count("take_turn") == 2:  # after the first renewal
            azure.turns[endpoint] = Turn(holder=OTHER, expires_at=azure.turn_clock + timedelta(hours=1))
        return answer

    azure.take = take_then_lose  # type: ignore[method-assign]
    result = run(orchestrator_handler, activity_functions, azure)

    out = result.output
    assert out["status"] == "failed" and f"lost the release turn of {ENDPOINT} to {OTHER}" in out["reason"]
    assert azure.endpoints[ENDPOINT].traffic == {"blue-aaaaaaaaaaaa": 100}
    assert azure.deleted == ["green-0123456789ab"]
    assert azure.turns[ENDPOINT].holder == OTHER  # not ours to give back


def test_take_grants_a_free_expired_or_own_turn_only():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    held = Turn(holder=OTHER, expires_at=now + timedelta(seconds=10))
    assert take(None, RUN_ID, now, 60)[0].granted
    assert take(held, OTHER, now, 60)[0].granted  # renewal
    refused, record = take(held, RUN_ID, now, 60)
    assert not refused.granted and refused.holder == OTHER and record is None
    assert take(held, RUN_ID, now + timedelta(seconds=10), 60)[0].granted  # expired


# --- the cost guard removes orphaned deployments -----------------------------------------------


def _deployment(fake: FakeAzure, name: str, run_id: str | None, share: int) -> None:
    from core.naming import APP_TAG
    from testing.fakes import FakeEndpoint

    fake.endpoints.setdefault(ENDPOINT, FakeEndpoint(name=ENDPOINT, tags={"created-by": APP_TAG}))
    tags = {"created-by": APP_TAG, "instance-id": run_id} if run_id else {}
    fake.add_deployment(ENDPOINT, name, LIVE, share=share, tags=tags)


def test_the_sweep_deletes_orphaned_deployments_only(functions, activity_functions):
    from backends.registry import use
    from core.contracts import SWEEPER
    from testing.replay import Replayer

    fake = FakeAzure()
    _deployment(fake, "blue-live", "ft-live", 100)
    _deployment(fake, "green-crashed", "ft-crashed", 0)  # a release that never ended
    _deployment(fake, "green-releasing", OTHER, 0)  # the turn holder's, being evaluated
    _deployment(fake, "manual", None, 0)  # not ours: someone added it by hand
    fake.turns[ENDPOINT] = Turn(holder=OTHER, expires_at=fake.turn_clock + timedelta(hours=1))
    handler = functions[SWEEPER].get_user_function()
    with use(fake.backends()):
        result = Replayer(handler, activity_functions, name=SWEEPER, instance_id="sweep-o", input_={}).run()

    assert result.error is None
    assert result.output["orphaned_deployments_deleted"] == [f"{ENDPOINT}/green-crashed"]
    assert sorted(fake.endpoints[ENDPOINT].deployments) == ["blue-live", "green-releasing", "manual"]
