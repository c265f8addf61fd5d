"""The endpoint is begun while the job trains, so its provisioning is off the critical path; an
existing endpoint is only read before the gate; a run that ends before its release deletes an
endpoint it created, and only if nothing uses it."""

from __future__ import annotations

from typing import Any

from core.contracts import CANCEL_EVENT, ORCHESTRATOR
from core.models import ModelRef
from testing.fakes import FakeAzure
from testing.replay import Replayer, RunResult

RUN_ID = "ft-0123456789abcdef"
ENDPOINT = "phi3-ft-endpoint"
OTHER = "ft-ffffffffffffffff"


def replay(handler: Any, activities: Any, input_: dict[str, Any], events: Any = None) -> RunResult:
    return Replayer(
        handler, activities, name=ORCHESTRATOR, instance_id=RUN_ID, input_=input_, events=events
    ).run()


def training(status: Any) -> bool:
    return bool(status) and status.get("step") == "training"


def test_the_endpoint_is_begun_right_after_submit_and_ready_at_release(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "completed"
    names = result.activity_names
    assert names.index("prepare_endpoint") == names.index("submit_finetune") + 1
    assert names.index("prepare_endpoint") < names.index("get_job_status")  # before the first wait
    # The release finds it (this fake provisions by reads, not by time: the time saved is
    # measured by bench/critical_path.py) and creates nothing twice.
    assert azure.count("begin_create_endpoint") == 1
    assert result.output["endpoint"] == ENDPOINT


def test_an_existing_endpoint_is_only_read_before_the_gate(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="1"))
    azure.endpoints[ENDPOINT].tags = {"owner": "team-a"}
    azure.job_states = ["Running", "Failed"]
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "failed"
    writes = {"begin_create_endpoint", "update_endpoint_tags", "set_traffic", "delete_endpoint"}
    assert not writes & {m for m, _ in azure.calls}, azure.calls
    assert azure.endpoints[ENDPOINT].tags == {"owner": "team-a"}
    assert azure.endpoints[ENDPOINT].traffic == {"blue-aaaaaaaaaaaa": 100}


def test_a_failed_job_deletes_the_endpoint_the_run_created(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.job_states = ["Running", "Failed"]
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "failed"
    assert azure.count("begin_create_endpoint") == 1
    assert azure.deleted_endpoints == [ENDPOINT] and ENDPOINT not in azure.endpoints
    assert azure.turns == {}, "the turn taken to check and delete is given back"


def test_a_cancel_during_training_deletes_the_endpoint_the_run_created(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.job_states = ["Running"] * 20
    events = [(training, CANCEL_EVENT, {"reason": "wrong data"})]
    result = replay(orchestrator_handler, activity_functions, make_input(), events)

    assert result.output["status"] == "canceled"
    assert azure.canceled == [f"{RUN_ID}-finetune"]
    assert azure.deleted_endpoints == [ENDPOINT]


def test_an_endpoint_another_run_is_releasing_onto_is_kept(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.job_states = ["Running", "Failed"]
    azure.turn_hold[ENDPOINT] = (OTHER, 1000)  # another run holds the endpoint's release turn
    result = replay(orchestrator_handler, activity_functions, make_input())

    assert result.output["status"] == "failed"
    assert azure.deleted_endpoints == [] and ENDPOINT in azure.endpoints
    assert azure.turns[ENDPOINT].holder == OTHER


def test_an_endpoint_that_gained_a_deployment_is_kept(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    azure.job_states = ["Running", "Running", "Failed"]

    def someone_deploys(status: Any) -> bool:
        if training(status) and ENDPOINT in azure.endpoints and not azure.endpoints[ENDPOINT].deployments:
            azure.add_deployment(ENDPOINT, "green-other", ModelRef(name="m", version="2"), share=0)
        return False

    result = replay(orchestrator_handler, activity_functions, make_input(), [(someone_deploys, "noop", None)])

    assert result.output["status"] == "failed"
    assert azure.deleted_endpoints == [] and "green-other" in azure.endpoints[ENDPOINT].deployments
