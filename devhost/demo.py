"""`make demo`: the whole pipeline on one machine, no Azure.

Starts Azurite and the dev host (the same function_app.py), uploads the sample dataset to the
datasets container — which fires the blob trigger exactly as in Azure — follows the durable
status until the run ends, prints how long after the fine-tuning job completed the run went on
to register the model (woken by the job's status event, or by a poll), prints the run summary,
asks the Prompt flow flow a question through the connection the run wrote, prints the
evaluation gate's scores and copies the run report (summary.json, loss.png, report.md) the
pipeline wrote next to the dataset. Then it starts a second run over HTTP, the same data with
one epoch instead of three: that run has a live deployment to beat, so the gate compares two
models (`--single-run` skips it). Finally it stops what it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from devhost import azure_emulator, azurite, control
from devhost.config import host_env

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "chats.jsonl"
FLOW = ROOT / "flows" / "phi3_chat"
QUESTION = "How do I descale the K2?"


def say(text: str) -> None:
    print(text, flush=True)


def upload_file(connection_string: str, container: str, name: str, src: Path = SAMPLE) -> Any:
    from azure.storage.blob import BlobServiceClient

    from core.models import BlobRef
    from storage.blob_store import BlobDatasetStore

    service = BlobServiceClient.from_connection_string(connection_string)
    if not service.get_container_client(container).exists():
        service.create_container(container)
    return BlobDatasetStore(service).upload(src, BlobRef(container=container, name=name))


def follow(base_url: str, instance_id: str, started: float, timeout_s: float) -> dict[str, Any]:
    """Print each new step/job state from the durable status until the run ends."""
    url = f"{base_url}/runtime/webhooks/durabletask/instances/{instance_id}"
    last: tuple[Any, ...] | None = None
    seen_running = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        resp = httpx.get(url, timeout=10)
        if resp.status_code == 404:
            time.sleep(0.2)
            continue
        body = resp.json()
        if seen_running is None:
            seen_running = time.monotonic() - started
            say(f"  [{seen_running:5.1f}s] orchestration {instance_id} is {body['runtimeStatus'].lower()}")
        custom = body.get("customStatus") or {}
        metrics = custom.get("metrics") or {}
        key = (custom.get("step"), custom.get("job_status"), metrics.get("step"))
        if key != last and custom:
            last = key
            extra = ""
            if custom.get("job_status"):
                extra += f" job={custom['job_status']}"
            if metrics.get("total_steps"):
                loss = metrics.get("train_loss")
                extra += f" step {int(metrics.get('step', 0))}/{int(metrics.get('total_steps', 0))}"
                extra += f" loss={loss:.3f}" if isinstance(loss, int | float) else ""
            if custom.get("deployment"):
                extra += f" deployment={custom['deployment']}"
            say(f"  [{time.monotonic() - started:5.1f}s] {custom.get('step')}{extra}")
        if body["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            body["_seen_running_s"] = seen_running
            return body
        time.sleep(0.5)
    raise TimeoutError(f"run {instance_id} did not finish within {timeout_s:.0f} s")


def _job_end(run_dir: Path, job: str) -> datetime | None:
    """When the local job `job` wrote its Completed status (the job's own end time), from its
    state file: under the run dir, or under the Azure ML emulator's executor with `--azure`."""
    from localml.paths import RunPaths
    from localml.training import read_status

    for root in (run_dir, azure_emulator.executor_dir(run_dir)):
        with contextlib.suppress(ValueError, OSError):
            status = read_status(RunPaths.at(root).jobs_dir / job) or {}
            if status.get("state") == "Completed" and status.get("updated_at"):
                return datetime.fromisoformat(str(status["updated_at"]))
    return None


def job_to_register_lag(base_url: str, instance_id: str, run_dir: Path) -> str | None:
    """`job completed → registering: 0.4 s (by event)`: from the job's own end time to the moment
    the run scheduled its register step (the durable history), and whether the job's status event
    woke the run or a poll found the job done. None if the run registered nothing."""
    from core.contracts import JOB_EVENT, Activity

    url = f"{base_url}/runtime/webhooks/durabletask/instances/{instance_id}"
    body = httpx.get(url, params={"showHistory": "true", "showInput": "false"}, timeout=10).json()
    events = body.get("historyEvents") or []
    scheduled = (e for e in events if e.get("EventType") == "TaskScheduled")
    registering = next((e for e in scheduled if e.get("Name") == Activity.REGISTER_MODEL), None)
    job = ((body.get("output") or {}).get("job")) or ((body.get("customStatus") or {}).get("job"))
    ended = _job_end(run_dir, str(job)) if job else None
    if registering is None or ended is None:
        return None
    lag = (datetime.fromisoformat(registering["Timestamp"].replace("Z", "+00:00")) - ended).total_seconds()
    woken = any(e.get("EventType") == "EventRaised" and e.get("Name") == JOB_EVENT for e in events)
    return f"job completed → registering: {lag:.2f} s ({'by event' if woken else 'by poll'})"


def flow_env(run_dir: Path, *, azure: bool) -> dict[str, str]:
    """What `pf` needs to use the connection runs write: the run dir's local Prompt flow store, or
    (`azure`) the Azure ML emulator's workspace, read as Prompt flow reads it on Azure."""
    from localml.connections import promptflow_env
    from localml.paths import RunPaths

    extra = azure_emulator.promptflow_env(run_dir) if azure else promptflow_env(RunPaths.at(run_dir))
    return {**os.environ, **extra}


def ask_flow(question: str, env: dict[str, str], *, azure: bool = False) -> str:
    """`pf flow test` against the connection the run wrote (the user-facing way to chat); with
    `azure`, the flow as it is served on Azure, its connection read from the workspace."""
    if azure:
        cmd = [sys.executable, "-m", "devhost.invoke_flow", str(FLOW), question]
    else:
        pf = Path(sys.executable).with_name("pf")
        cmd = [str(pf), "flow", "test", "--flow", str(FLOW), "--inputs", f"input_data={question}"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-2000:] or "no output"
        raise RuntimeError(f"the flow failed ({proc.returncode}); has a run completed yet?\n{output}")
    out = proc.stdout.strip()
    start = out.find("{")
    try:
        return str(json.loads(out[start:])["answer"])
    except (ValueError, KeyError):
        return out


def say_scores(summary: dict[str, Any]) -> None:
    ev = summary.get("evaluation")
    if not ev:
        say("demo: evaluation gate: off")
        return
    live = ev.get("live")
    live_text = f"{live['score']:.4f} ({live['deployment']})" if live else "none (first deployment)"
    verdict = "promoted" if ev["passed"] else "rejected"
    say(
        f"demo: evaluation on {ev['sample_size']} held-out examples ({ev['metric']}): "
        f"new {ev['new']['score']:.4f} ({ev['new']['deployment']}), live {live_text} → {verdict}"
    )


def fetch_report(connection_string: str, summary: dict[str, Any], run_dir: Path) -> Path:
    """Copy the run report the pipeline wrote next to the dataset into `run_dir/reports/<id>/`."""
    from azure.storage.blob import BlobServiceClient

    container, _, prefix = str(summary.get("report") or "").partition("/")
    dest = run_dir / "reports" / str(summary.get("instance_id"))
    dest.mkdir(parents=True, exist_ok=True)
    if not prefix:
        return dest
    client = BlobServiceClient.from_connection_string(connection_string).get_container_client(container)
    for blob in client.list_blobs(name_starts_with=prefix):
        (dest / blob.name.rsplit("/", 1)[-1]).write_bytes(client.download_blob(blob.name).readall())
    return dest


def run_demo(args: argparse.Namespace) -> int:
    from localml.paths import RunPaths

    t0 = time.monotonic()
    run_dir = Path(args.run_dir).resolve()
    paths = RunPaths.at(run_dir)
    say(f"demo: run directory {run_dir}")
    store = azurite.ensure(paths.azurite_dir, args.azurite_port)
    env = host_env(run_dir, store.connection_string)
    if args.azure:
        emulator = azure_emulator.ensure(run_dir, env, env["DATASETS_CONTAINER"])
        say(f"demo: Azure ML emulator on {emulator.url} (the app runs with BACKEND=azureml)")
    else:
        from localml.connections import promptflow_env

        env.update(promptflow_env(paths))
    base_url = f"http://127.0.0.1:{args.port}"
    log = run_dir / "devhost.log"
    cmd = [sys.executable, "-m", "devhost", "serve", "--run-dir", str(run_dir), "--port", str(args.port),
           "--azurite-port", str(args.azurite_port)]  # fmt: skip
    if args.azure:
        cmd.append("--azure")
    with open(log, "ab") as out:
        host = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        control.wait_ready(args.port, host, 90, log)
        say(f"demo: Azurite on :{store.port}, dev host on {base_url} ({time.monotonic() - t0:.1f}s)")
        say(
            f"demo: dashboard: {base_url}/api/dashboard (follow, inspect and cancel runs while the demo "
            "runs; `make up` keeps a dev host and its dashboard running)"
        )

        os.environ.update(env)
        from core.naming import instance_id

        name = f"sample/chats-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        uploaded_at = time.monotonic()
        dataset = upload_file(store.connection_string, env["DATASETS_CONTAINER"], name)
        run_id = instance_id(dataset)
        say(f"demo: uploaded {SAMPLE.relative_to(ROOT)} as {dataset.path} → run {run_id}")
        status = follow(base_url, run_id, uploaded_at, timeout_s=900)
        if lag := job_to_register_lag(base_url, run_id, run_dir):
            say(f"demo: {lag}")
        summary = status.get("output") or {}
        say("demo: run summary")
        say(json.dumps(summary, indent=2))
        if status["runtimeStatus"] != "Completed" or summary.get("status") != "completed":
            say(f"demo: the run did not complete: {summary.get('reason') or status.get('output')}")
            return 1

        say(f'demo: asking the Prompt flow flow: "{QUESTION}"')
        answer = ask_flow(QUESTION, {**env, **flow_env(run_dir, azure=args.azure)}, azure=args.azure)
        answered_s = time.monotonic() - uploaded_at
        say(f"demo: answer: {answer}")

        say_scores(summary)
        report = fetch_report(store.connection_string, summary, run_dir)
        say(f"demo: run report {summary.get('report')} (copied to {report})")
        if not args.single_run:
            # A retrain of the same data with one epoch instead of three, started over HTTP: this
            # run has a live deployment to beat, so the evaluation gate compares two models and
            # either promotes the new one or deletes it and leaves traffic alone.
            body = {"dataset": dataset.path, "overrides": {"hyperparameters": {"num_train_epochs": 1}}}
            started = time.monotonic()
            resp = httpx.post(f"{base_url}/api/runs", json=body, timeout=30)
            resp.raise_for_status()
            run2 = resp.json()["id"]
            say(f"demo: POST /api/runs {json.dumps(body)} → run {run2} (1 epoch: new model vs the live one)")
            status2 = follow(base_url, run2, started, timeout_s=900)
            if lag := job_to_register_lag(base_url, run2, run_dir):
                say(f"demo: {lag}")
            summary2 = status2.get("output") or {}
            say(f"demo: second run ended {summary2.get('status')}: {summary2.get('reason') or 'ok'}")
            say_scores(summary2)
            report2 = fetch_report(store.connection_string, summary2, run_dir)
            say(f"demo: run report {summary2.get('report')} (copied to {report2})")
        say(
            f"demo: timings: orchestration running {status['_seen_running_s']:.1f}s after upload; "
            f"first answer {answered_s:.1f}s after upload; total {time.monotonic() - t0:.1f}s"
        )
        return 0
    finally:
        if host.poll() is None:
            control.stop_process(host.pid)
        say("stopped: " + (", ".join(control.stop_everything(run_dir)) or "nothing was running"))
