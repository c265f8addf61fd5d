"""Replay tests for preflight, dry run and cancel (issue #8), through the real orchestrator and
activities against the in-memory Azure."""

from __future__ import annotations

from typing import Any

import pytest

from core.contracts import ORCHESTRATOR
from core.models import ModelRef, RunRequest
from core.settings import Settings
from orchestrators.run_input import RunInput
from testing.fakes import FakeAzure, ultrachat_lines
from testing.replay import Replayer, RunResult

RUN_ID = "ft-0123456789abcdef"
ENDPOINT = "phi3-ft-endpoint"
CREATING = {"submit_finetune", "begin_create_endpoint", "begin_create_deployment", "set_traffic",
            "publish_connection", "register_model", "upload"}  # fmt: skip


def run(handler: Any, activities: Any, fake: FakeAzure, *, dry_run: bool = False, events: Any = None,
        instance: str = RUN_ID) -> RunResult:  # fmt: skip
    dataset = fake.put_blob("datasets", "chats/support.jsonl", ultrachat_lines(50))
    request = RunRequest(
        dataset=dataset,
        config=Settings(BACKEND="local").run_config(),
        source="http",
        dry_run=dry_run,
        real_run_id=RUN_ID if dry_run else None,
    )
    return Replayer(
        handler, activities, name=ORCHESTRATOR, instance_id=instance,
        input_=RunInput(request=request).model_dump(mode="json"), events=events,
    ).run()  # fmt: skip


def when(step: str, **fields: Any):
    def check(status: Any) -> bool:
        return (
            bool(status) and status.get("step") == step and all(status.get(k) == v for k, v in fields.items())
        )

    return check


def test_preflight_failure_submits_nothing(orchestrator_handler, activity_functions, azure):
    azure.preflight_failures = {
        "training_quota": "Standard NCADSA100v4 Family: 0 of 0 vCPUs free, 24 needed; request quota",
        "endpoint_owner": "endpoint phi3-ft-endpoint exists and was not created by this app",
    }
    result = run(orchestrator_handler, activity_functions, azure)

    out = result.output
    assert out["status"] == "preflight_failed"
    assert out["preflight"] == [
        "training_quota: Standard NCADSA100v4 Family: 0 of 0 vCPUs free, 24 needed; request quota",
        "endpoint_owner: endpoint phi3-ft-endpoint exists and was not created by this app",
    ]
    assert azure.count("submit_finetune") == 0 and azure.jobs == {}
    assert result.activity_names == ["validate_dataset", "preflight", "notify"]  # the event, no report


def test_dry_run_returns_a_plan_and_creates_nothing(orchestrator_handler, activity_functions, azure):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="4"))
    result = run(
        orchestrator_handler, activity_functions, azure, dry_run=True, instance="dry-0123456789abcdef"
    )

    out = result.output
    assert out["status"] == "planned" and out["reason"] == "dry run: nothing was created"
    plan = out["plan"]
    assert plan["model_version"] == "15" and plan["model_id"].endswith("Phi-3-mini-4k-instruct/versions/15")
    assert plan["training_instance_type"] == "Standard_NC24ads_A100_v4"
    assert plan["serving_instance_type"] == "Standard_NC24ads_A100_v4" and plan["serving_instance_count"] == 1
    assert (plan["train_examples"], plan["validation_examples"]) == (40, 10)
    assert plan["train_tokens"] > 0 and plan["estimated_gpu_hours"] >= 0.25
    assert "estimate" in plan["gpu_hours_basis"]
    # The deployment the REAL run would create, next to the live one it would replace.
    assert (plan["deployment"], plan["replaces_deployment"]) == ("green-0123456789ab", "blue-aaaaaaaaaaaa")
    assert not CREATING & {m for m, _ in azure.calls}, azure.calls
    assert not any("_splits" in name for _, name in azure.blobs)


def test_cancel_during_monitoring_cancels_the_job(orchestrator_handler, activity_functions, azure):
    azure.job_states = ["Queued"] + ["Running"] * 50
    events = [(when("training", job_status="Running"), "cancel", {"reason": "wrong dataset"})]
    result = run(orchestrator_handler, activity_functions, azure, events=events)

    out = result.output
    assert out["status"] == "canceled"
    assert "wrong dataset" in out["reason"] and f"{RUN_ID}-finetune canceled" in out["reason"]
    assert azure.canceled == [f"{RUN_ID}-finetune"]
    assert "register_model" not in result.activity_names
    assert result.steps[-1].custom_status["step"] == "canceled"


def test_cancel_during_validation_needs_no_cleanup(orchestrator_handler, activity_functions, azure):
    events = [(when("validating"), "cancel", None)]
    result = run(orchestrator_handler, activity_functions, azure, events=events)

    assert result.output["status"] == "canceled" and result.output["reason"] == "canceled"
    assert azure.count("submit_finetune") == 0 and azure.canceled == []


@pytest.mark.parametrize("step", ["creating deployment", "smoke_testing"])
def test_cancel_during_deploy_removes_the_new_deployment(
    orchestrator_handler, activity_functions, azure, step
):
    azure.live_endpoint(ENDPOINT, "blue-aaaaaaaaaaaa", ModelRef(name="phi3-mini-ft", version="4"))
    azure.provisioning_polls = 3
    result = run(orchestrator_handler, activity_functions, azure, events=[(when(step), "cancel", {})])

    out = result.output
    assert out["status"] == "canceled"
    assert azure.deleted == ["green-0123456789ab"]
    assert azure.endpoints[ENDPOINT].traffic == {"blue-aaaaaaaaaaaa": 100}  # live traffic as it was
    assert azure.count("set_traffic") == 0 and "update_connection" not in result.activity_names
    assert azure.canceled == []  # the job had already completed


def test_cancel_after_traffic_moved_is_too_late(orchestrator_handler, activity_functions, azure):
    result = run(
        orchestrator_handler, activity_functions, azure, events=[(when("updating_connection"), "cancel", {})]
    )
    assert result.output["status"] == "completed"
    assert azure.connections  # the run finished wiring the new model


def test_deadline_cancels_job_and_is_not_a_cancel_event(orchestrator_handler, activity_functions, azure):
    azure.job_states = ["Running"]
    dataset = azure.put_blob("datasets", "chats/support.jsonl", ultrachat_lines(50))
    cfg = Settings(BACKEND="local", JOB_DEADLINE_HOURS=0.5).run_config()
    request = RunRequest(dataset=dataset, config=cfg, source="blob")
    result = Replayer(
        orchestrator_handler, activity_functions, name=ORCHESTRATOR, instance_id=RUN_ID,
        input_=RunInput(request=request).model_dump(mode="json"),
    ).run()  # fmt: skip
    assert result.output["status"] == "failed" and "deadline" in result.output["reason"]
    assert azure.canceled == [f"{RUN_ID}-finetune"]


@pytest.mark.parametrize(
    ("step", "submitted", "deployed"),
    [
        ("preflight", False, False),
        ("submitting", True, False),
        ("registering", True, False),
        ("creating endpoint", True, False),
    ],
)
def test_cancel_at_each_remaining_step(
    orchestrator_handler, activity_functions, azure, step, submitted, deployed
):
    azure.provisioning_polls = 3  # so "creating endpoint" is a step that waits
    result = run(
        orchestrator_handler, activity_functions, azure, events=[(when(step), "cancel", {"reason": step})]
    )

    out = result.output
    assert out["status"] == "canceled" and step in out["reason"]
    assert bool(azure.jobs) is submitted
    assert azure.count("begin_create_deployment") == 0 and not azure.deleted
    assert azure.connections == {}
    if step == "submitting":  # the job was created as the cancel arrived: it is canceled, not left running
        assert azure.canceled == [f"{RUN_ID}-finetune"]
    if step in ("registering", "creating endpoint"):  # the job had finished: nothing to cancel
        assert azure.canceled == []
