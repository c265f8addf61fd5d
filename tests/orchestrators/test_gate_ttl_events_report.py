"""Replay tests for the guardrails: the evaluation gate, the endpoint TTL (tags, renewal and the
timer-started sweep), the completion event on every terminal outcome, and the run report.

The real orchestrators run through testing/replay.py; the real activities run against the in-memory
Azure of testing/fakes.py (which answers evaluation prompts with the dataset's own reference for
"oracle" deployments, and with a fixed sentence otherwise)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from backends import registry
from core import notify as notify_module
from core.contracts import ORCHESTRATOR, SWEEPER
from core.models import EvaluationPolicy, ModelRef
from core.naming import APP_TAG
from core.settings import get_settings
from testing.fakes import SECRET_KEY, FakeAzure, FakeEndpoint
from testing.replay import T0, WHEN_ALL, Replayer, RunResult, flatten

RUN_ID = "ft-0123456789abcdef"
ENDPOINT = "phi3-ft-endpoint"
NEW = "green-0123456789ab"  # the new deployment's name when "blue-live" carries the traffic
LIVE_MODEL = ModelRef(name="phi3-mini-ft", version="7")


def replay(handler: Any, activities: dict[str, Any], input_: dict[str, Any], **kw: Any) -> RunResult:
    return Replayer(handler, activities, name=ORCHESTRATOR, instance_id=RUN_ID, input_=input_, **kw).run()


def use(fake: FakeAzure) -> Any:
    return registry.use(fake.backends())


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set app settings for the activities (they read get_settings(), cached per process)."""

    def set_(**values: str) -> None:
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    yield set_
    get_settings.cache_clear()


# --- evaluation gate ----------------------------------------------------------------------------


def test_first_deployment_passes_the_default_floor(
    orchestrator_handler, activity_functions, azure, make_input
):
    result = replay(orchestrator_handler, activity_functions, make_input())
    out = result.output
    assert out["status"] == "completed", out
    ev = out["evaluation"]
    assert ev["passed"] is True and ev["live"] is None
    assert ev["sample_size"] == 10  # min(EVAL_SAMPLE_SIZE 50, 10 validation examples)
    assert ev["new"]["examples"] == 10 and ev["new"]["deployment"] == "blue-0123456789ab"
    assert 0 <= ev["new"]["score"] < 0.5  # a fixed sentence against 10 different references
    assert "no live deployment" in ev["reason"]
    # the gate runs after the smoke test and before traffic moves
    names = result.activity_names
    assert names.index("smoke_test") < names.index("evaluate_batch") < names.index("set_traffic")
    assert names.count("evaluate_batch") == 1  # 10 examples, batches of 10
    # every evaluation call pinned to the new deployment, with the Prompt flow tool's payload shape
    evaluated = [(d, p) for _, d, p in azure.scored[1:]]
    assert len(evaluated) == 10 and {d for d, _ in evaluated} == {"blue-0123456789ab"}
    for _, payload in evaluated:
        assert payload["input_data"]["parameters"] == {"temperature": 0.7, "max_new_tokens": 128}
        assert payload["input_data"]["input_string"][-1]["role"] == "user"
    # scores recorded on the registered version
    tags = azure.model_tags[("phi3-mini-ft", "1")]
    assert tags["eval-verdict"] == "promoted" and tags["eval-live-score"] == "none"
    assert tags["eval-score"] == f"{ev['new']['score']:.4f}" and tags["eval-sample-size"] == "10"
    # and in the custom status while it ran
    evaluated_status = [s for s in result.custom_statuses if s and s.get("step") == "evaluated"]
    assert evaluated_status and evaluated_status[-1]["new_score"] == ev["new"]["score"]


def test_first_deployment_below_the_floor_is_rejected(
    orchestrator_handler, activity_functions, azure, make_input
):
    result = replay(
        orchestrator_handler, activity_functions, make_input(evaluation=EvaluationPolicy(floor=0.9))
    )
    out = result.output
    assert out["status"] == "rejected_by_evaluation", out
    assert "below the floor 0.9000" in out["reason"] and "traffic unchanged" in out["reason"]
    assert out["evaluation"]["passed"] is False
    # rolled back: the new deployment is gone, no traffic was ever set, connection untouched
    assert "set_traffic" not in result.activity_names
    assert azure.endpoints[ENDPOINT].deployments == {} and azure.endpoints[ENDPOINT].traffic == {}
    assert azure.deleted == ["blue-0123456789ab"]
    assert azure.connections == {}
    assert azure.model_tags[("phi3-mini-ft", "1")]["eval-verdict"] == "rejected"


def _with_live(fake: FakeAzure) -> FakeAzure:
    fake.live_endpoint(ENDPOINT, "blue-live", LIVE_MODEL)
    return fake


def test_better_new_model_is_promoted(orchestrator_handler, activity_functions, make_input, settings):
    fake = _with_live(FakeAzure(oracles=("green",)))  # the new deployment answers perfectly
    with use(fake):
        dataset_input = _input(fake, settings)
        result = replay(orchestrator_handler, activity_functions, dataset_input)
    out = result.output
    assert out["status"] == "completed", out
    ev = out["evaluation"]
    assert ev["new"]["score"] == 1.0 and ev["live"]["deployment"] == "blue-live"
    assert ev["live"]["score"] < ev["new"]["score"] and ev["passed"]
    assert fake.endpoints[ENDPOINT].traffic == {NEW: 100}
    assert out["previous_deployment"] == "blue-live"
    # both sides answered the same prompts
    by_deployment: dict[str, list[Any]] = {}
    for _, d, p in fake.scored:
        by_deployment.setdefault(d, []).append(p)
    assert by_deployment["blue-live"] == by_deployment[NEW][1:]  # NEW also got the smoke test


def test_worse_new_model_is_rejected_and_traffic_untouched(
    orchestrator_handler, activity_functions, settings
):
    fake = _with_live(FakeAzure(oracles=("blue",)))  # the live deployment answers perfectly
    with use(fake):
        result = replay(orchestrator_handler, activity_functions, _input(fake, settings))
    out = result.output
    assert out["status"] == "rejected_by_evaluation", out
    ev = out["evaluation"]
    assert ev["live"]["score"] == 1.0 and ev["new"]["score"] < 1.0 - ev["tolerance"]
    assert f"{ev['new']['score']:.4f}" in out["reason"] and "1.0000" in out["reason"]
    assert fake.endpoints[ENDPOINT].traffic == {"blue-live": 100}
    assert fake.traffic_history == []  # traffic never touched
    assert sorted(fake.endpoints[ENDPOINT].deployments) == ["blue-live"]
    assert fake.deleted == [NEW]
    assert "update_connection" not in result.activity_names
    final = result.custom_statuses[-1]
    assert final["step"] == "rejected_by_evaluation"
    assert final["new_score"] == ev["new"]["score"] and final["live_score"] == 1.0


def test_within_tolerance_is_promoted(orchestrator_handler, activity_functions, settings):
    fake = _with_live(FakeAzure(oracles=("blue",)))
    with use(fake):
        cfg = {"evaluation": EvaluationPolicy(tolerance=1.0)}
        result = replay(orchestrator_handler, activity_functions, _input(fake, settings, **cfg))
    assert result.output["status"] == "completed"
    assert result.output["evaluation"]["passed"] is True


def test_failed_scoring_calls_count_as_zero_and_reject(orchestrator_handler, activity_functions, settings):
    fake = _with_live(FakeAzure(oracles=("blue", "green"), eval_status={"green": 500}))
    with use(fake):
        result = replay(orchestrator_handler, activity_functions, _input(fake, settings))
    ev = result.output["evaluation"]
    assert ev["new"]["failures"] == ev["new"]["examples"] == 10 and ev["new"]["score"] == 0.0
    assert result.output["status"] == "rejected_by_evaluation"
    assert "failed 10 of 10 evaluation calls" in result.output["reason"]
    assert sum(1 for _, d, _ in fake.scored if d == NEW) == 1 + 10  # smoke test + one try each (500)


def test_busy_answers_are_retried_then_count_as_failures(
    orchestrator_handler, activity_functions, settings, monkeypatch
):
    import activities.evaluation

    monkeypatch.setattr(activities.evaluation, "EVAL_BUSY_BACKOFF_S", (0.0, 0.0, 0.0, 0.0))
    fake = _with_live(FakeAzure(eval_status={"green": 429}))
    with use(fake):
        result = replay(orchestrator_handler, activity_functions, _input(fake, settings))
    attempts = settings.EVAL_SCORE_ATTEMPTS
    assert sum(1 for _, d, _ in fake.scored if d == NEW) == 1 + 10 * attempts  # busy: every attempt used
    assert result.output["status"] == "rejected_by_evaluation"


def test_a_broken_live_deployment_does_not_block_a_good_new_one(
    orchestrator_handler, activity_functions, settings
):
    fake = _with_live(FakeAzure(eval_status={"blue": 500}))
    with use(fake):
        result = replay(orchestrator_handler, activity_functions, _input(fake, settings))
    out = result.output
    assert out["status"] == "completed", out
    assert "live deployment failed 10 of 10 calls: not compared" in out["evaluation"]["reason"]
    assert fake.endpoints[ENDPOINT].traffic == {NEW: 100}


def test_scoring_runs_in_bounded_batches(orchestrator_handler, activity_functions, settings):
    fake = _with_live(FakeAzure())
    policy = EvaluationPolicy(sample_size=10, batch_size=3, max_parallel=2)
    with use(fake):
        result = replay(orchestrator_handler, activity_functions, _input(fake, settings, evaluation=policy))
    assert result.output["status"] == "completed"
    batches = [json.loads(i) if isinstance(i, str) else i for n, i in result.calls if n == "evaluate_batch"]
    assert len(batches) == 8  # ceil(10 / 3) = 4 batches for each of the two deployments
    assert sorted((b["deployment"], b["batch"]) for b in batches) == sorted(
        (d, b) for d in (NEW, "blue-live") for b in range(4)
    )
    fan_outs = [
        a
        for s in result.steps
        for a in s.new_actions
        if a["actionType"] == WHEN_ALL and {f.get("functionName") for f in flatten([a])} == {"evaluate_batch"}
    ]
    assert [len(a["compoundActions"]) for a in fan_outs] == [2, 2, 2, 2]  # max_parallel 2
    assert result.output["evaluation"]["new"]["examples"] == 10
    # the run's history stays small: a few events per batch, not per example
    assert result.max_history_len < 250


def test_gate_off_with_sample_size_zero(orchestrator_handler, activity_functions, azure, make_input):
    result = replay(
        orchestrator_handler, activity_functions, make_input(evaluation=EvaluationPolicy(sample_size=0))
    )
    assert result.output["status"] == "completed" and result.output["evaluation"] is None
    assert "evaluate_batch" not in result.activity_names


def _input(fake: FakeAzure, settings: Any, lines: bytes | None = None, **config: Any) -> dict[str, Any]:
    """A run input for a FakeAzure other than the `azure` fixture's (as conftest's make_input)."""
    from core.models import RunRequest
    from orchestrators.run_input import RunInput
    from testing.fakes import ultrachat_lines

    dataset = fake.put_blob("datasets", "chats/support.jsonl", lines or ultrachat_lines(50))
    cfg = settings.run_config().model_copy(update=config)
    return RunInput(request=RunRequest(dataset=dataset, config=cfg, source="blob")).model_dump(mode="json")


# --- cost guard: tags, renewal, sweep ----------------------------------------------------------


def test_endpoint_and_deployment_carry_expiry_and_it_is_renewed(
    orchestrator_handler, activity_functions, azure, make_input
):
    result = replay(orchestrator_handler, activity_functions, make_input(endpoint_ttl_hours=48))
    out = result.output
    assert out["status"] == "completed"
    [(_, (_name, created_tags))] = [c for c in azure.calls if c[0] == "begin_create_endpoint"]
    for tags in (created_tags, azure.endpoints[ENDPOINT].deployments["blue-0123456789ab"].spec.tags):
        assert tags["created-by"] == APP_TAG and tags["instance-id"] == RUN_ID
        assert tags["dataset-blob"] == "datasets/chats/support.jsonl" and tags["dataset-etag"]
        assert tags["expires_at"].endswith("Z")
    # Created while the job trained, with an expiry past the job's and the deployment's deadlines
    # (24 h + 90 min) plus the TTL; leased before the deployment is created; renewed when traffic
    # moved (48 h from then).
    created_expiry = datetime.fromisoformat(created_tags["expires_at"].replace("Z", "+00:00"))
    assert created_expiry >= T0 + timedelta(hours=24 + 1.5 + 48)
    renewed = azure.endpoints[ENDPOINT].tags["expires_at"]
    assert renewed == out["expires_at"]
    names = result.activity_names
    leases = [i for i, n in enumerate(names) if n == "update_endpoint_tags"]
    assert len(leases) == 2
    assert leases[0] < names.index("create_deployment") and leases[1] > names.index("set_traffic")
    lease, renewal = (i for n, i in result.calls if n == "update_endpoint_tags")
    lease, renewal = (json.loads(x) if isinstance(x, str) else x for x in (lease, renewal))
    assert set(lease["tags"]) == {"expires_at"}  # the lineage still describes the live model
    assert renewal["tags"]["instance-id"] == RUN_ID and renewal["tags"]["expires_at"] == renewed


def test_no_ttl_disarms_an_earlier_expiry(orchestrator_handler, activity_functions, azure, make_input):
    azure.live_endpoint(ENDPOINT, "blue-live", LIVE_MODEL)
    azure.endpoints[ENDPOINT].tags = {"created-by": APP_TAG, "expires_at": "2026-11-01T09:00:00Z"}
    result = replay(orchestrator_handler, activity_functions, make_input())
    assert result.output["status"] == "completed" and result.output["expires_at"] is None
    assert azure.endpoints[ENDPOINT].tags["expires_at"] == "never"  # the sweep leaves it alone


def test_rejected_run_leaves_the_live_lineage_tags(orchestrator_handler, activity_functions, settings):
    fake = _with_live(FakeAzure(oracles=("blue",)))
    fake.endpoints[ENDPOINT].tags = {"created-by": APP_TAG, "instance-id": "ft-live-run"}
    with use(fake):
        result = replay(
            orchestrator_handler, activity_functions, _input(fake, settings, endpoint_ttl_hours=2)
        )
    assert result.output["status"] == "rejected_by_evaluation"
    tags = fake.endpoints[ENDPOINT].tags
    assert tags["instance-id"] == "ft-live-run" and tags["expires_at"].endswith("Z")  # leased only


def _endpoint(fake: FakeAzure, name: str, **tags: str) -> None:
    fake.endpoints[name] = FakeEndpoint(name=name, tags=dict(tags))


def test_sweep_deletes_only_expired_endpoints_this_app_created(functions, activity_functions, settings_env):
    settings_env(NOTIFY_WEBHOOK_URL="")
    past, future = (T0 - timedelta(hours=1)).isoformat(), (T0 + timedelta(hours=1)).isoformat()
    fake = FakeAzure()
    _endpoint(fake, "ours-expired", **{"created-by": APP_TAG, "expires_at": past.replace("+00:00", "Z")})
    _endpoint(fake, "ours-fresh", **{"created-by": APP_TAG, "expires_at": future})
    _endpoint(fake, "ours-no-ttl", **{"created-by": APP_TAG})
    _endpoint(fake, "theirs-expired", **{"created-by": "someone-else", "expires_at": past})
    _endpoint(fake, "untagged-expired", expires_at=past)
    _endpoint(fake, "ours-typo", **{"created-by": APP_TAG, "expires_at": "next tuesday"})
    _endpoint(fake, "ours-never", **{"created-by": APP_TAG, "expires_at": "never"})
    handler = functions[SWEEPER].get_user_function()
    with use(fake):
        result = Replayer(handler, activity_functions, name=SWEEPER, instance_id="sweep-1", input_={}).run()
    assert result.error is None
    assert result.output["deleted"] == ["ours-expired"] and result.output["failed"] == {}
    assert fake.deleted_endpoints == ["ours-expired"]
    assert sorted(fake.endpoints) == [
        "ours-fresh",
        "ours-never",
        "ours-no-ttl",
        "ours-typo",
        "theirs-expired",
        "untagged-expired",
    ]
    assert result.output["notified"] == {"ours-expired": "skipped"}  # no webhook configured
    notify = [json.loads(i) if isinstance(i, str) else i for n, i in result.calls if n == "notify"]
    assert [(n["outcome"], n["subject"]) for n in notify] == [("endpoint.expired", "ours-expired")]
    assert result.output["checked_at"] == T0.isoformat()


def test_sweep_keeps_going_when_one_delete_fails(functions, activity_functions, settings_env):
    settings_env(NOTIFY_WEBHOOK_URL="")
    past = (T0 - timedelta(minutes=5)).isoformat()
    fake = FakeAzure(failures={"delete_endpoint": 99})
    _endpoint(fake, "a-expired", **{"created-by": APP_TAG, "expires_at": past})
    handler = functions[SWEEPER].get_user_function()
    with use(fake):
        result = Replayer(handler, activity_functions, name=SWEEPER, instance_id="sweep-2", input_={}).run()
    assert result.output["deleted"] == [] and list(result.output["failed"]) == ["a-expired"]
    assert SECRET_KEY not in json.dumps(result.output)  # the fake error echoes a key: scrubbed


# --- completion events and report --------------------------------------------------------------


class Hook(BaseHTTPRequestHandler):
    """Records each POST; answers with the next scripted status (then 200)."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]]
    statuses: ClassVar[list[int]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[Hook]]]:
    handler = type("ScriptedHook", (Hook,), {"received": [], "statuses": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/runs", handler
    finally:
        server.shutdown()
        server.server_close()


OUTCOMES = {
    "completed": ({}, None, {}),
    "invalid_dataset": ({}, b'{"messages": []}\n' * 5, {}),
    "preflight_failed": ({"preflight_failures": {"serving_quota": "no quota"}}, None, {}),
    "failed": ({"job_states": ["Queued", "Failed"], "job_error": "OOM"}, None, {}),
    "rejected_by_evaluation": ({}, None, {"evaluation": EvaluationPolicy(floor=0.99)}),
    "canceled": ({}, None, {}),
}


@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_every_terminal_outcome_sends_one_signed_event(
    outcome, orchestrator_handler, activity_functions, settings, settings_env, hook
):
    url, server = hook
    secret = "whsec-test-0123456789"
    settings_env(NOTIFY_WEBHOOK_URL=url, NOTIFY_WEBHOOK_SECRET=secret, NOTIFY_FIRST_BACKOFF_S="0")
    knobs, lines, config = OUTCOMES[outcome]
    fake = FakeAzure(**knobs)
    events = [(lambda s: bool(s) and s.get("step") == "training", "cancel", {"reason": "test"})]
    with use(fake):
        from core.models import RunRequest
        from orchestrators.run_input import RunInput
        from testing.fakes import ultrachat_lines

        dataset = fake.put_blob("datasets", "chats/support.jsonl", lines or ultrachat_lines(50))
        cfg = settings.run_config().model_copy(update=config)
        input_ = RunInput(request=RunRequest(dataset=dataset, config=cfg, source="blob")).model_dump(
            mode="json"
        )
        result = replay(
            orchestrator_handler, activity_functions, input_, events=events if outcome == "canceled" else None
        )
    out = result.output
    assert out["status"] == outcome, out
    assert result.activity_names[-1] == "notify" and result.activity_names.count("notify") == 1
    [(headers, body)] = server.received
    assert notify_module.verify(body, secret, headers[notify_module.SIGNATURE_HEADER.lower()])
    event = json.loads(body)
    assert event["specversion"] == "1.0" and event["type"] == f"run.{outcome}"
    assert event["subject"] == RUN_ID and event["data"]["status"] == outcome
    assert event["time"].startswith("2026-11-01T") and event["id"] == out["notification"]["event_id"]
    assert out["notification"]["delivered"] is True and out["notification"]["attempts"] == 1
    history = json.dumps(result.histories)
    assert secret not in history and secret not in json.dumps(out) and url not in history


def test_undeliverable_event_never_changes_the_outcome(
    orchestrator_handler, activity_functions, azure, make_input, settings_env, hook
):
    url, server = hook
    server.statuses = [500, 500, 500]
    settings_env(NOTIFY_WEBHOOK_URL=url, NOTIFY_ATTEMPTS="3", NOTIFY_FIRST_BACKOFF_S="0")
    result = replay(orchestrator_handler, activity_functions, make_input())
    out = result.output
    assert out["status"] == "completed"
    assert out["notification"]["delivered"] is False and out["notification"]["attempts"] == 3
    assert len(server.received) == 3 and "500" in out["notification"]["error"]


def test_report_written_next_to_the_dataset_for_a_trained_run(
    orchestrator_handler, activity_functions, azure, make_input
):
    result = replay(orchestrator_handler, activity_functions, make_input())
    out = result.output
    prefix = f"chats/reports/{RUN_ID}/"
    assert out["report"] == f"datasets/{prefix}"
    for name in ("summary.json", "loss.png", "report.md"):
        assert ("datasets", prefix + name) in azure.blobs, name
    assert azure.blobs[("datasets", prefix + "loss.png")].startswith(b"\x89PNG")
    summary = json.loads(azure.blobs[("datasets", prefix + "summary.json")])
    assert summary["status"] == "completed" and summary["report"] == out["report"]
    report = azure.blobs[("datasets", prefix + "report.md")].decode()
    assert RUN_ID in report and "blue-0123456789ab" in report
    # the report step comes after the outcome was decided, and the event after the report
    names = result.activity_names
    assert names.index("update_connection") < names.index("write_report") < names.index("notify")


def test_no_report_when_nothing_trained(orchestrator_handler, activity_functions, azure, make_input):
    result = replay(orchestrator_handler, activity_functions, make_input(lines=b'{"messages": []}\n' * 3))
    assert result.output["status"] == "invalid_dataset"
    assert result.output["report"] is None and "write_report" not in result.activity_names
    assert not [k for k in azure.blobs if "/reports/" in k[1]]


def test_report_without_loss_metrics_is_still_written(
    orchestrator_handler, activity_functions, make_input, azure
):
    azure.failures["loss_history"] = 99  # the tracking store is unreachable (error echoes a key)
    result = replay(orchestrator_handler, activity_functions, make_input())
    out = result.output
    assert out["status"] == "completed" and out["report"] == f"datasets/chats/reports/{RUN_ID}/"
    assert ("datasets", f"chats/reports/{RUN_ID}/loss.png") in azure.blobs


def test_report_failure_is_noted_not_fatal(orchestrator_handler, activity_functions, make_input, monkeypatch):
    import activities.reporting

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(f"disk full (token {SECRET_KEY})")

    monkeypatch.setattr(activities.reporting, "render", broken)
    result = replay(orchestrator_handler, activity_functions, make_input())
    out = result.output
    assert out["status"] == "completed" and out["report"] is None
    assert "run report not written" in out["reason"] and "disk full" in out["reason"]
    assert SECRET_KEY not in json.dumps(out) and SECRET_KEY not in json.dumps(result.histories)
