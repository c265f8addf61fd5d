"""End to end, offline, for real: the dev host process (`python -m devhost serve`) + Azurite + the
local backend (tiny Phi-3 fine-tuned on CPU, MLflow registry, scoring servers, promptflow
connection), driven only through what a user has: blob uploads, the HTTP API and `pf flow test`.

Also the crash tests: `kill -9` of the host while the job trains and while the model deploys;
after a restart the run completes with exactly one fine-tune job and one live deployment.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.naming import APP_TAG, instance_id, is_dataset_blob
from core.settings import Settings
from localml.paths import RunPaths
from testing.devhost_subprocess import ROOT, SAMPLE, WEBHOOK_SECRET, DevHost, finished, serve


def at_step(*steps: str) -> Callable[[dict[str, Any]], bool]:
    """At one of `steps`; for "training", once the run has read its submitted job as not yet ended
    (on the event path it reads the job once, then waits for its status event: the status may
    show Queued until the job ends)."""

    def check(body: dict[str, Any]) -> bool:
        custom = body.get("customStatus") or {}
        return custom.get("step") in steps and (
            custom.get("step") != "training" or custom.get("job_status") in ("Queued", "Running")
        )

    return check


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHost]:
    yield from serve(tmp_path_factory.mktemp("run"))


def pf_subprocess(host: DevHost, *args: str) -> str:
    pf = str(Path(sys.executable).with_name("pf"))
    proc = subprocess.run([pf, *args], env=host.env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_upload_to_answer(host: DevHost):
    dataset = host.upload("e2e/chats.jsonl")
    run_id = instance_id(dataset)
    body = host.wait(run_id, finished)

    out = body["output"]
    assert out["status"] == "completed", out
    assert (out["train_examples"], out["validation_examples"]) == (240, 60)
    assert out["deployment"].startswith("blue-") and out["previous_deployment"] is None
    assert out["scoring_uri"].startswith("http://127.0.0.1:")
    assert body["customStatus"]["step"] == "completed"

    # The registered MLflow model version carries the lineage tags.
    from mlflow.tracking import MlflowClient

    # registry_uri too: MlflowClient otherwise takes a registry URI another test set in this process
    uri = RunPaths.at(host.run_dir).mlflow_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version(out["model"]["name"], out["model"]["version"])
    assert version.tags["instance-id"] == run_id
    assert version.tags["dataset-blob"] == "datasets/e2e/chats.jsonl"
    assert version.tags["dataset-etag"] == dataset.etag
    assert version.tags["job-name"] == out["job"]

    # The Prompt flow connection points at the endpoint, and the flow answers through it.
    shown = pf_subprocess(host, "connection", "show", "--name", "phi3-finetuned")
    assert out["scoring_uri"] in shown
    answer = pf_subprocess(
        host, "flow", "test", "--flow", str(ROOT / "flows" / "phi3_chat"), "--inputs",
        "input_data=How do I descale the K2?",
    )  # fmt: skip
    text = json.loads(answer[answer.index("{") :])["answer"]
    assert isinstance(text, str) and text.strip()  # sampled from the tiny model: any non-empty text

    # The evaluation gate scored the new deployment on 50 of the 60 held-out examples (first
    # deployment: the floor alone decides) and tagged the registered version.
    ev = out["evaluation"]
    assert ev["sample_size"] == 50 and ev["new"]["examples"] == 50 and ev["live"] is None
    assert 0.0 <= ev["new"]["score"] <= 1.0 and ev["passed"] is True
    assert (
        version.tags["eval-score"] == f"{ev['new']['score']:.4f}" if "eval-score" in version.tags else False
    )

    # The run report sits next to the dataset; its PNG decodes.
    assert out["report"] == f"datasets/e2e/reports/{run_id}/"
    png = host.run_dir / "loss.png"
    png.write_bytes(host.blob(f"e2e/reports/{run_id}/loss.png"))
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size == (800, 450)
    report = host.blob(f"e2e/reports/{run_id}/report.md").decode()
    assert run_id in report and out["deployment"] in report and "Worst examples" in report
    assert json.loads(host.blob(f"e2e/reports/{run_id}/summary.json"))["loss"]["train"]

    # One signed completion event reached the webhook, with the summary.
    [event] = host.webhook.of(run_id)
    assert event["type"] == "run.completed" and event["data"]["status"] == "completed"
    assert out["notification"]["delivered"] is True

    # The secrets never reached the durable history.
    hist = httpx.get(f"{host.base_url}/runtime/webhooks/durabletask/instances/{run_id}?showHistory=true").text
    key_file = next((host.run_dir / "serving").rglob("key"))
    assert key_file.read_text().strip() not in hist
    assert WEBHOOK_SECRET not in hist and host.webhook.url not in hist

    # The job's end came by event: the local backend published RunStatusChanged to the host's Event
    # Grid webhook, on_job_status_changed raised it on the run, and the run went on to register.
    events = httpx.get(
        f"{host.base_url}/runtime/webhooks/durabletask/instances/{run_id}", params={"showHistory": "true"}
    ).json()["historyEvents"]
    raised = [e for e in events if e["EventType"] == "EventRaised" and e["Name"] == "job_status_changed"]
    assert raised and json.loads(raised[0]["Input"]) == {"job": out["job"], "status": "Completed"}
    delivered = httpx.get(f"{host.base_url}/admin/host/status").json()["eventGrid"]["on_job_status_changed"]
    assert delivered["events"] >= 1 and delivered["failures"] == 0


def _jobs(host: DevHost) -> list[str]:
    jobs = RunPaths.at(host.run_dir).jobs_dir
    return sorted(p.name for p in jobs.iterdir() if (p / "status.json").exists()) if jobs.exists() else []


def _endpoint(host: DevHost) -> dict[str, Any]:
    from localml.serving import LocalServing

    info = LocalServing(Settings(BACKEND="local", LOCAL_RUN_DIR=str(host.run_dir))).get_endpoint(
        "phi3-ft-endpoint"
    )
    return info.model_dump()


@pytest.mark.parametrize(
    ("label", "kill_at"),
    [
        ("monitoring", at_step("training")),
        ("deploy", at_step("creating endpoint", "deploying", "creating deployment", "smoke_testing")),
    ],
)
def test_kill9_and_restart_completes_once(host: DevHost, label, kill_at):
    jobs_before = _jobs(host)
    dataset = host.upload(f"crash/{label}.jsonl", SAMPLE.read_bytes() + b"\n" * (1 + len(label)))
    run_id = instance_id(dataset)
    host.wait(run_id, kill_at)
    turns = [b for b in host.blob_names() if b.startswith("_turns/")]
    assert turns == ([] if label == "monitoring" else ["_turns/phi3-ft-endpoint.json"])  # held in deploy
    host.kill9()
    host.start()
    body = host.wait(run_id, finished)

    out = body["output"]
    assert out["status"] == "completed", out
    new_jobs = sorted(set(_jobs(host)) - set(jobs_before))
    assert new_jobs == [f"{run_id}-finetune"]  # exactly one fine-tune job for this run
    endpoint = _endpoint(host)
    assert endpoint["traffic"] == {out["deployment"]: 100}
    assert endpoint["deployments"] == [out["deployment"]]  # one live deployment, the old one deleted
    assert httpx.post(out["scoring_uri"], json={}).status_code == 401  # still key-protected after restart
    assert not [b for b in host.blob_names() if b.startswith("_turns/")], "the turn resumed, then given back"


def test_dry_run_answers_with_a_plan_and_creates_nothing(host: DevHost):
    dataset = host.upload("dry/_splits/manual/chats.jsonl")  # a folder the blob trigger ignores
    jobs_before = _jobs(host)
    body = {"dataset": dataset.path, "dry_run": True}
    resp = httpx.post(f"{host.base_url}/api/runs", json=body, timeout=90)

    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["status"] == "planned"
    plan = out["plan"]
    assert plan["model_id"] == "local://tiny-phi3" and plan["train_examples"] == 240
    assert plan["deployment"].endswith(instance_id(dataset).removeprefix("ft-")[:12])  # the real run's name
    assert _jobs(host) == jobs_before
    assert not [
        b for b in host.blob_names() if b.startswith("dry/_splits/ft-") or b.startswith("dry/_splits/dry-")
    ]


def test_cancel_while_training(host: DevHost):
    """POST /api/runs/{id}/cancel during training: the local job is killed, the run ends canceled."""
    dataset = host.upload("cancel/chats.jsonl", SAMPLE.read_bytes() + b"\n\n\n\n\n\n\n")
    run_id = instance_id(dataset)
    host.wait(run_id, at_step("training"))
    resp = httpx.post(
        f"{host.base_url}/api/runs/{run_id}/cancel", json={"reason": "changed my mind"}, timeout=30
    )
    assert resp.status_code == 202, resp.text
    body = host.wait(run_id, finished)

    out = body["output"]
    assert out["status"] == "canceled" and "changed my mind" in out["reason"]
    status = json.loads(
        (RunPaths.at(host.run_dir).jobs_dir / f"{run_id}-finetune" / "status.json").read_text()
    )
    assert status["state"] == "Canceled"
    assert httpx.post(f"{host.base_url}/api/runs/{run_id}/cancel", timeout=30).status_code == 409


def test_duplicate_starts_of_one_blob_version(host: DevHost):
    """After all the runs above: every blob version the watcher saw has one receipt and one run,
    and 20 POSTs for an existing version start nothing."""
    dataset = host.upload("dupes/chats.jsonl", b"not json at all\n")
    run_id = instance_id(dataset)
    body = host.wait(run_id, finished)
    assert body["output"]["status"] == "invalid_dataset"
    codes = [
        httpx.post(f"{host.base_url}/api/runs", json={"dataset": dataset.path}, timeout=30).status_code
        for _ in range(20)
    ]
    assert codes == [409] * 20
    db = sqlite3.connect(f"file:{host.run_dir / 'devhost.sqlite'}?mode=ro", uri=True)
    receipts = db.execute("SELECT name, COUNT(*), MIN(state) FROM receipts GROUP BY name, etag").fetchall()
    runs = db.execute(  # dry runs (id dry-…) are started over HTTP only, never by an upload
        "SELECT COUNT(*) FROM instances WHERE name = 'finetune_orchestrator' AND id LIKE 'ft-%'"
    ).fetchone()[0]
    assert all(count == 1 and state == "done" for _, count, state in receipts), receipts
    assert runs == sum(1 for name, _, _ in receipts if is_dataset_blob(name))  # split outputs start nothing


def test_expired_endpoint_is_swept(host: DevHost):
    """Last, as it deletes the endpoint the tests above deployed: once its expires_at has passed,
    a sweep (the timer's orchestration, started on demand here) deletes it and says so."""
    from localml.serving import LocalServing

    serving = LocalServing(Settings(BACKEND="local", LOCAL_RUN_DIR=str(host.run_dir)))
    assert serving.get_endpoint("phi3-ft-endpoint").tags["created-by"] == APP_TAG
    serving.update_endpoint_tags("phi3-ft-endpoint", {"expires_at": "2020-01-01T00:00:00Z"})
    resp = httpx.post(f"{host.base_url}/api/sweep", timeout=30)
    assert resp.status_code == 202, resp.text
    sweep_id = resp.json()["id"]
    body = host.wait(sweep_id, finished)
    assert body["output"]["deleted"] == ["phi3-ft-endpoint"], body
    assert serving.get_endpoint("phi3-ft-endpoint").state.value == "NotFound"
    [event] = host.webhook.of("phi3-ft-endpoint")
    assert event["type"] == "endpoint.expired" and event["data"]["expires_at"] == "2020-01-01T00:00:00Z"
