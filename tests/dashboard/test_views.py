"""The dashboard's JSON (dashboard/views.py) from durable instance statuses.

Lists are built from hand-made statuses in the Durable Functions HTTP API's shape; a run's page
from the statuses of real runs: the registered orchestrator replayed with the real activities
against the in-memory Azure (testing/replay.py), its input, last custom status and output put
where the task hub would put them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from core import redact
from core.contracts import ORCHESTRATOR, SWEEPER
from core.models import EvaluationPolicy, RunStatus
from dashboard import views
from testing.fakes import FakeAzure
from testing.replay import T0, Replayer, RunResult, iso

RUN_ID = "ft-0123456789abcdef"
DRY_ID = "dry-0123456789abcdef"
NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
WORKSPACE = views.workspace_id("sub-1", "rg-ml", "ws-phi3")
SAS = "sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-12-01T00:00:00Z&sig=AbCdEf0123456789%2Bsig%3D"


def status(
    run_id: str,
    runtime: str = "Completed",
    *,
    outcome: str | None = "completed",
    created: str = "2026-11-01T08:00:00Z",
    updated: str | None = None,
    started_at: str | None = None,
    name: str = ORCHESTRATOR,
    dataset: str = "chats/support.jsonl",
    dry_run: bool = False,
    custom: Any = None,
) -> dict[str, Any]:
    """One instance as the durable HTTP API lists it (`showInput=true`)."""
    input_: dict[str, Any] = {
        "request": {
            "dataset": {"container": "datasets", "name": dataset},
            "dry_run": dry_run,
            "source": "blob",
        }
    }
    if started_at is not None:  # a run that continued as new remembers its first start
        input_["progress"] = {"started_at": started_at}
    return {
        "name": name,
        "instanceId": run_id,
        "runtimeStatus": runtime,
        "input": input_,
        "customStatus": custom,
        "output": {"status": outcome} if outcome is not None else None,
        "createdTime": created,
        "lastUpdatedTime": updated or created,
    }


def page(instances: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "orchestrator": ORCHESTRATOR,
        "now": NOW,
        "state": None,
        "page": 1,
        "per_page": 25,
    }
    return views.runs_page(instances, **(args | kw))


def ids(listing: dict[str, Any]) -> list[str]:
    return [row["id"] for row in listing["runs"]]


def at(hour: int, minute: int = 0) -> str:
    return f"2026-11-01T{hour:02d}:{minute:02d}:00Z"


# -- state_of --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "output", "state"),
    [
        ("Pending", None, "pending"),
        ("Running", None, "running"),
        ("ContinuedAsNew", None, "running"),
        ("Suspended", None, "running"),
        # an output on a live instance is not its outcome (a generation's leftovers)
        ("Running", {"status": "completed"}, "running"),
        ("Terminated", "terminated by ops", "terminated"),
        ("Failed", "Orchestrator function 'finetune_orchestrator' failed: TypeError", "failed"),
        ("Completed", {"status": "rejected_by_evaluation"}, "rejected_by_evaluation"),
        ("Completed", json.dumps({"status": "planned"}), "planned"),  # output as JSON text
        ("Completed", {"status": "something-new"}, "failed"),
        ("Completed", {"reason": "no status at all"}, "failed"),
        ("Completed", None, "failed"),
        ("Completed", "not json {", "failed"),
    ],
)
def test_state_of(runtime, output, state):
    assert views.state_of({"runtimeStatus": runtime, "output": output}) == state
    assert state in views.STATES  # every state has its colour class on the page


@pytest.mark.parametrize("outcome", [s.value for s in RunStatus if s is not RunStatus.RUNNING])
def test_every_outcome_of_a_run_is_its_state(outcome):
    assert views.state_of({"runtimeStatus": "Completed", "output": {"status": outcome}}) == outcome


# -- the runs list ---------------------------------------------------------------------------------


def test_newest_first_by_when_the_run_started():
    instances = [
        status("ft-000000000000000a", created=at(8)),
        # continued as new at 11:00 (a new created time), but started at 7:00: the oldest
        status(
            "ft-000000000000000b",
            "Running",
            outcome=None,
            created=at(11),
            started_at="2026-11-01T07:00:00+00:00",
        ),
        status("ft-000000000000000c", created=at(9, 30)),
        status("ft-000000000000000d", created=at(9)),
    ]
    listing = page(instances)
    assert ids(listing) == [
        "ft-000000000000000c",
        "ft-000000000000000d",
        "ft-000000000000000a",
        "ft-000000000000000b",
    ]
    oldest = listing["runs"][-1]
    assert oldest["started_at"] == "2026-11-01T07:00:00Z" and oldest["ended_at"] is None
    assert oldest["duration_s"] == (NOW - datetime(2026, 11, 1, 7, tzinfo=UTC)).total_seconds()


def test_filter_by_state_keeps_the_counts_of_every_state():
    instances = [
        status("ft-0000000000000001", outcome="completed", created=at(8)),
        status("ft-0000000000000002", outcome="completed", created=at(9)),
        status("ft-0000000000000003", outcome="rejected_by_evaluation", created=at(10)),
        status("ft-0000000000000004", "Running", outcome=None, created=at(11)),
        status("ft-0000000000000005", "Pending", outcome=None, created=at(12)),
        status("ft-0000000000000006", "Terminated", outcome=None, created=at(13)),
    ]
    everything = page(instances)
    only_completed = page(instances, state="completed")

    assert ids(only_completed) == ["ft-0000000000000002", "ft-0000000000000001"]
    assert only_completed["total"] == 2 and everything["total"] == 6
    assert set(everything["counts"]) == set(views.STATES)
    expected = dict.fromkeys(views.STATES, 0) | {
        "completed": 2,
        "rejected_by_evaluation": 1,
        "running": 1,
        "pending": 1,
        "terminated": 1,
    }
    assert everything["counts"] == only_completed["counts"] == expected
    assert everything["active"] == only_completed["active"] == 2  # pending + running
    assert page(instances, state="failed")["runs"] == []


def test_paging():
    instances = [status(f"ft-{i:016x}", created=at(8, i)) for i in range(7)]
    newest_first = [f"ft-{i:016x}" for i in reversed(range(7))]

    pages = [page(instances, page=n, per_page=3) for n in (1, 2, 3, 4)]
    assert [ids(p) for p in pages] == [newest_first[:3], newest_first[3:6], newest_first[6:], []]
    assert all((p["pages"], p["total"], p["per_page"]) == (3, 7, 3) for p in pages)
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    exact = page(instances[:6], per_page=3)
    assert exact["pages"] == 2
    assert page([], per_page=3)["pages"] == 1  # an empty list is one (empty) page


def test_other_orchestrators_are_not_runs():
    instances = [
        status(RUN_ID, created=at(8)),
        status("sweep-20261101T0900", "Running", outcome=None, created=at(9), name=SWEEPER),
        status("sweep-20261101T1000", created=at(10), name=SWEEPER),
    ]
    listing = page(instances)
    assert ids(listing) == [RUN_ID]
    assert listing["total"] == 1 and listing["active"] == 0
    assert sum(listing["counts"].values()) == 1


def test_fields_given_as_json_text_by_older_hosts():
    custom = {"step": "training", "dataset": "datasets/chats/older.jsonl"}
    instance = status(
        RUN_ID,
        "Running",
        outcome=None,
        created=at(10),
        started_at="2026-11-01T09:00:00+00:00",
        dataset="chats/older.jsonl",
        dry_run=True,
        custom=custom,
    )
    as_text = instance | {"input": json.dumps(instance["input"]), "customStatus": json.dumps(custom)}
    (row,) = page([as_text])["runs"]
    assert row == page([instance])["runs"][0]
    assert (row["started_at"], row["dry_run"], row["dataset"]) == (
        "2026-11-01T09:00:00Z",
        True,
        "datasets/chats/older.jsonl",
    )
    assert row["step"] == "training" and row["state"] == "running"
    # and text that is not JSON is no input at all, not an error
    (broken,) = page([instance | {"input": "{not json", "customStatus": "nor this"}])["runs"]
    assert broken["started_at"] == "2026-11-01T10:00:00Z" and broken["dataset"] == ""


def test_a_row_of_an_ended_run():
    instance = status(RUN_ID, outcome="completed", created=at(8), updated=at(9, 30))
    instance["output"] |= {"evaluation": {"new": {"score": 0.61}, "live": {"score": 0.58}, "passed": True}}
    instance["customStatus"] = {"step": "completed"}
    (row,) = page([instance])["runs"]
    assert row["state"] == row["step"] == "completed"
    assert (row["started_at"], row["ended_at"], row["duration_s"]) == (at(8), at(9, 30), 5400.0)
    assert (row["new_score"], row["live_score"], row["passed"]) == (0.61, 0.58, True)
    assert row["dataset"] == "datasets/chats/support.jsonl" and row["runtime_status"] == "Completed"


def test_newest_first_within_one_second():
    instances = [
        status("ft-000000000000000a", created="2026-11-01T08:00:00Z"),
        status("ft-000000000000000b", created="2026-11-01T08:00:00.500000Z"),
    ]
    assert ids(page(instances)) == ["ft-000000000000000b", "ft-000000000000000a"]


# -- a run's page, from real runs ------------------------------------------------------------------


def replay(handler: Any, activities: Any, input_: dict[str, Any], instance: str = RUN_ID) -> RunResult:
    return Replayer(handler, activities, name=ORCHESTRATOR, instance_id=instance, input_=input_).run()


def ended(result: RunResult, input_: dict[str, Any], instance: str = RUN_ID) -> dict[str, Any]:
    """The durable status of the replayed run once it ended, as the task hub answers it."""
    return {
        "name": ORCHESTRATOR,
        "instanceId": instance,
        "runtimeStatus": "Completed",
        "input": input_,
        "customStatus": result.custom_statuses[-1],
        "output": result.output,
        "createdTime": iso(T0),
        "lastUpdatedTime": iso(T0 + timedelta(hours=2)),
    }


def timeline_states(detail: dict[str, Any]) -> dict[str, str]:
    return {row["key"]: row["state"] for row in detail["timeline"]}


def test_the_page_of_a_completed_run(orchestrator_handler, activity_functions, azure, make_input):
    input_ = make_input()
    result = replay(orchestrator_handler, activity_functions, input_)
    out, config = result.output, input_["request"]["config"]
    assert out["status"] == "completed", out

    detail = views.run_detail(ended(result, input_), NOW, workspace_id=WORKSPACE)
    json.dumps(detail)  # the answer is JSON as it is
    assert (detail["id"], detail["state"], detail["reason"]) == (RUN_ID, "completed", "")
    assert detail["can_cancel"] is False and detail["dry_run"] is False
    assert {v for k, v in timeline_states(detail).items() if k != "notify"} == {"done"}  # no webhook here
    job = detail["job"]
    assert (job["name"], job["status"]) == (out["job"], "Completed")
    assert job["studio_url"] == f"https://ml.azure.com/runs/{out['job']}"
    assert detail["model"] == out["model"] and detail["endpoint"] == out["endpoint"]
    assert detail["deployment"] == out["deployment"] and detail["connection"] == out["connection"]
    assert detail["evaluation"]["passed"] is True and detail["report"] == out["report"]
    assert detail["examples"] == {"train": out["train_examples"], "validation": out["validation_examples"]}
    assert detail["validation_errors"] == [] and detail["plan"] is None
    assert detail["hyperparameters"] == config["hyperparameters"]
    assert detail["retrain"] == {
        "dataset": "datasets/chats/support.jsonl",
        "validation": None,
        "overrides": {},  # the run was started with none
        "num_train_epochs": config["hyperparameters"]["num_train_epochs"],  # as POST /api/runs takes it
        "learning_rate": config["hyperparameters"]["learning_rate"],
    }
    wsid = f"?wsid={quote(WORKSPACE, safe='/')}"
    model, endpoint = out["model"], out["endpoint"]
    assert detail["links"] == {
        "job": f"https://ml.azure.com/runs/{out['job']}",
        "model": f"https://ml.azure.com/model/{model['name']}:{model['version']}/details{wsid}",
        "endpoint": f"https://ml.azure.com/endpoints/realtime/{endpoint}/detail{wsid}",
    }
    offline = views.run_detail(ended(result, input_), NOW, workspace_id=None)
    assert set(offline["links"]) == {"job"}  # no workspace: no model or endpoint page


def test_the_page_of_a_running_run(orchestrator_handler, activity_functions, azure, make_input):
    input_ = make_input()
    result = replay(orchestrator_handler, activity_functions, input_)
    training = next(s for s in result.custom_statuses if s and s["step"] == "training" and s["job_status"])
    instance = ended(result, input_) | {"runtimeStatus": "Running", "customStatus": training, "output": None}

    detail = views.run_detail(instance, NOW, workspace_id=None)
    assert detail["state"] == "running" and detail["step"] == "training" and detail["can_cancel"] is True
    assert detail["ended_at"] is None and detail["duration_s"] == (NOW - T0).total_seconds()
    assert (detail["job"]["name"], detail["job"]["status"]) == (training["job"], training["job_status"])
    assert (
        detail["job"]["studio_url"] == training["studio_url"]
        and detail["links"]["job"] == training["studio_url"]
    )
    rows = timeline_states(detail)
    assert rows["train"] == "active" and rows["submit"] == "done" and rows["register"] == "pending"
    assert detail["report"] is None and detail["evaluation"] is None


def test_the_page_of_a_run_the_evaluation_rejected(
    orchestrator_handler, activity_functions, azure, make_input
):
    input_ = make_input(evaluation=EvaluationPolicy(floor=0.9))
    result = replay(orchestrator_handler, activity_functions, input_)
    out = result.output
    assert out["status"] == "rejected_by_evaluation", out

    detail = views.run_detail(ended(result, input_), NOW, workspace_id=WORKSPACE)
    assert detail["state"] == "rejected_by_evaluation" and detail["reason"] == out["reason"]
    evaluation = detail["evaluation"]
    assert evaluation["passed"] is False and evaluation["new"]["score"] < evaluation["floor"] == 0.9
    assert (detail["new_score"], detail["passed"]) == (evaluation["new"]["score"], False)
    rows = timeline_states(detail)
    assert rows["evaluate"] == "failed" and rows["traffic"] == rows["connection"] == "skipped"
    assert detail["connection"] is None and detail["report"] == out["report"]


def test_the_page_of_an_invalid_dataset(orchestrator_handler, activity_functions, azure, make_input):
    lines = (
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
        b'{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n'
    )
    input_ = make_input(lines)
    result = replay(orchestrator_handler, activity_functions, input_)
    assert result.output["status"] == "invalid_dataset", result.output

    detail = views.run_detail(ended(result, input_), NOW, workspace_id=WORKSPACE)
    assert detail["state"] == "invalid_dataset" and "failed validation" in detail["reason"]
    errors = detail["validation_errors"]
    assert errors and all(set(e) >= {"file", "line", "field", "message"} for e in errors)
    assert any(
        (e["file"], e["line"], e["field"]) == ("datasets/chats/support.jsonl", 2, "messages[0].role")
        for e in errors
    ), errors
    assert timeline_states(detail)["validate"] == "failed"
    assert detail["job"]["name"] is None and detail["links"] == {} and detail["report"] is None


def test_the_page_of_a_dry_run(orchestrator_handler, activity_functions, azure, make_input):
    input_ = make_input()
    input_["request"].update(dry_run=True, real_run_id=RUN_ID)
    result = replay(orchestrator_handler, activity_functions, input_, instance=DRY_ID)
    assert result.output["status"] == "planned", result.output

    detail = views.run_detail(ended(result, input_, DRY_ID), NOW, workspace_id=WORKSPACE)
    assert (detail["id"], detail["state"], detail["dry_run"]) == (DRY_ID, "planned", True)
    assert detail["real_run_id"] == RUN_ID
    plan = detail["plan"]
    assert plan == result.output["plan"]
    assert plan["train_examples"] == detail["examples"]["train"] > 0 and plan["estimated_gpu_hours"] > 0
    assert plan["endpoint"] == input_["request"]["config"]["endpoint_name"] and plan["deployment"]
    assert [(r["key"], r["state"]) for r in detail["timeline"]] == [
        ("validate", "done"),
        ("preflight", "done"),
        ("plan", "done"),
    ]
    assert detail["job"]["name"] is None and detail["links"] == {}


@pytest.mark.parametrize("runtime", ["Failed", "Terminated"])
def test_a_run_that_ended_without_a_summary_shows_no_active_step(runtime):
    instance = status(
        RUN_ID, runtime, outcome=None, custom={"step": "training", "durations_s": {"validate": 1.0}}
    )
    instance["output"] = "Orchestrator function 'finetune_orchestrator' failed: boom"
    detail = views.run_detail(instance, NOW, workspace_id=None)
    assert detail["can_cancel"] is False
    assert "active" not in timeline_states(detail).values()


# -- studio links ----------------------------------------------------------------------------------


def test_studio_links_need_https_and_a_workspace():
    summary = {"model": {"name": "phi3-mini-ft", "version": "3"}, "endpoint": "phi3-ft-endpoint"}
    job = "https://ml.azure.com/runs/ft-1-finetune?wsid=/subscriptions/s/resourceGroups/r"

    assert views.studio_links(None, studio_url=job, summary=summary) == {"job": job}
    for not_https in ("http://ml.azure.com/runs/x", "javascript:alert(1)", "file:///etc/passwd", None, 7):
        assert views.studio_links(None, studio_url=not_https, summary=summary) == {}
        assert "job" not in views.studio_links(WORKSPACE, studio_url=not_https, summary=summary)

    links = views.studio_links(WORKSPACE, studio_url=None, summary=summary)
    assert set(links) == {"model", "endpoint"}
    assert all(link.startswith("https://ml.azure.com/") for link in links.values())
    assert all(link.endswith(f"?wsid={WORKSPACE}") for link in links.values())  # "/" stays as it is
    assert "/model/phi3-mini-ft:3/" in links["model"] and "/realtime/phi3-ft-endpoint/" in links["endpoint"]
    # a model without a version has no page; nothing registered, nothing deployed: no links
    assert views.studio_links(WORKSPACE, studio_url=None, summary={"model": {"name": "m"}}) == {}
    assert views.studio_links(WORKSPACE, studio_url=None, summary={}) == {}


def test_workspace_id():
    assert WORKSPACE == (
        "/subscriptions/sub-1/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/ws-phi3"
    )
    assert views.workspace_id(None, "rg", "ws") is None
    assert views.workspace_id("sub", "", "ws") is None
    assert views.workspace_id("sub", "rg", None) is None


# -- nothing secret leaves ---------------------------------------------------------------------------


def test_clean_removes_credentials_anywhere():
    secret = "remembered-Secret-7f3a9c"
    redact.remember(secret)
    blob = "https://acct.blob.core.windows.net/datasets/chats/support.jsonl"
    value = {
        "url": f"{blob}?{SAS}",
        "bare": SAS,
        "conn": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=QUJDREVGR0g0NTY3ODk=;"
        "EndpointSuffix=core.windows.net",
        "nested": [{"deep": [f"reason: key {secret} rejected"]}, 3, None, True],
    }
    cleaned = views.clean(value)
    text = json.dumps(cleaned)
    for leaked in ("AbCdEf0123456789", "sig=Ab", "QUJDREVGR0g0NTY3ODk", secret):
        assert leaked not in text, leaked
    assert cleaned["url"].startswith(f"{blob}?")  # where it points stays readable
    assert "AccountName=acct" in cleaned["conn"]
    assert cleaned["nested"][0]["deep"][0].startswith("reason: key ") and cleaned["nested"][1:] == [
        3,
        None,
        True,
    ]


def test_answers_are_cleaned_but_studio_links_keep_their_workspace(
    orchestrator_handler, activity_functions, azure: FakeAzure, make_input
):
    secret = "dashboard-Secret-94b1e2"
    redact.remember(secret)
    input_ = make_input()
    result = replay(orchestrator_handler, activity_functions, input_)
    instance = ended(result, input_)
    studio = (
        f"https://ml.azure.com/runs/{result.output['job']}?wsid=/subscriptions/sub-1/resourceGroups/rg-ml"
    )
    instance["customStatus"] = instance["customStatus"] | {"studio_url": studio}
    instance["output"] = instance["output"] | {
        "reason": f"note: AccountKey=QUJDREVGR0g0NTY3ODk= and {secret}",
        "report": f"datasets/chats/reports/{RUN_ID}/?{SAS}",
    }
    instance["input"]["request"]["dataset"]["url"] += f"?{SAS}"

    detail = views.run_detail(instance, NOW, workspace_id=WORKSPACE)
    listing = page([instance])
    for answer in (detail, listing):
        text = json.dumps(answer)
        assert secret not in text and "QUJDREVGR0g0NTY3ODk" not in text and "AbCdEf0123456789" not in text
    assert detail["links"]["job"] == studio  # a link is only scrubbed: its ?wsid= stays
    assert "?wsid=/subscriptions/sub-1/" in detail["links"]["model"]
    assert (
        detail["job"]["studio_url"] != studio and "wsid" not in detail["job"]["studio_url"]
    )  # data is cleaned


def test_a_retrain_keeps_the_overrides_the_run_was_started_with(
    orchestrator_handler, activity_functions, azure, make_input
):
    """A run started over HTTP with its own endpoint and epochs: the page's retrain starts from
    those (only the fields the caller set), so a retrain never lands on the default endpoint."""
    from core.models import Overrides

    input_ = make_input()
    asked = Overrides.model_validate(
        {"endpoint": {"name": "support-phi3"}, "hyperparameters": {"num_train_epochs": 2}}, strict=True
    )
    input_["request"]["overrides"] = asked.model_dump(mode="json")
    result = replay(orchestrator_handler, activity_functions, input_)
    detail = views.run_detail(ended(result, input_), NOW, workspace_id=None)
    assert detail["retrain"]["overrides"] == {
        "endpoint": {"name": "support-phi3"},
        "hyperparameters": {"num_train_epochs": 2},
    }
    # What the page posts back is a body POST /api/runs accepts as it is.
    Overrides.model_validate(detail["retrain"]["overrides"], strict=True)


def test_a_run_started_before_overrides_were_recorded_offers_no_retrain(
    orchestrator_handler, activity_functions, azure, make_input
):
    """Its request has no `overrides`: which endpoint and model it asked for is unknown, so the
    page must not offer a retrain that would land on the defaults."""
    input_ = make_input()
    input_["request"].pop("overrides", None)
    result = replay(orchestrator_handler, activity_functions, input_)
    detail = views.run_detail(ended(result, input_), NOW, workspace_id=None)
    assert detail["retrain"]["overrides"] is None and detail["retrain"]["dataset"]
