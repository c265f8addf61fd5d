"""`python -m devhost serve|up|down|status|demo` — the offline runtime's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from devhost import azure_emulator, azurite, control
from devhost.config import host_env, job_event_env

ROOT = Path(__file__).resolve().parents[1]


def _run_dir(args: argparse.Namespace) -> Path:
    path = Path(args.run_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def serve(args: argparse.Namespace) -> int:
    """Run the host in the foreground (Azurite is started or reused)."""
    run_dir = _run_dir(args)
    store = azurite.ensure(run_dir / "azurite", args.azurite_port)
    env = host_env(run_dir, store.connection_string)
    if args.azure:
        emulator = azure_emulator.ensure(run_dir, env, env["DATASETS_CONTAINER"])
        env.update(emulator.app_env(env["DATASETS_CONTAINER"]))
    else:  # local jobs publish their end to this host's Event Grid webhook
        env.update(job_event_env(args.port))
    os.environ.update(env)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(ROOT))
    from core.redact import install_log_redaction

    install_log_redaction()  # no query string (webhook token, SAS) in devhost.log
    from devhost.host import Host

    host = Host(run_dir / "devhost.sqlite", args.port, env, module=args.app)
    if env.get("BACKEND") == "local":
        # After a crash or a reboot: bring the local endpoints back before runs poll them.
        threading.Thread(target=_reconcile_local_serving, args=(run_dir,), daemon=True).start()
    (run_dir / "devhost.pid").write_text(f"{os.getpid()}:{args.port}")
    asyncio.run(host.serve())
    return 0


def _reconcile_local_serving(run_dir: Path) -> None:
    from core.settings import Settings
    from localml.serving import LocalServing

    try:
        states = LocalServing(Settings(BACKEND="local", LOCAL_RUN_DIR=str(run_dir))).reconcile()
    except Exception:
        logging.getLogger("devhost").exception("restoring local endpoints failed")
        return
    if states:
        logging.getLogger("devhost").info("local endpoints: %s", {k: v.value for k, v in states.items()})


def up(args: argparse.Namespace) -> int:
    """Start the host in the background and wait until it answers."""
    run_dir = _run_dir(args)
    pid = control.host_pid(run_dir)
    if pid is not None:
        print(f"dev host already running (pid {pid[0]}) on http://127.0.0.1:{pid[1]}")
        return 0
    log = run_dir / "devhost.log"
    cmd = [sys.executable, "-m", "devhost", "serve", "--run-dir", str(run_dir), "--port", str(args.port),
           "--azurite-port", str(args.azurite_port), "--app", args.app]  # fmt: skip
    if args.azure:
        cmd.append("--azure")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    control.wait_ready(args.port, proc, 60, log)
    print(f"dev host running (pid {proc.pid}): http://127.0.0.1:{args.port}  log: {log}")
    print(f"  dashboard:  http://127.0.0.1:{args.port}/api/dashboard")
    print("  upload a dataset (starts a run):  .venv/bin/python -m devhost upload data/sample/chats.jsonl")
    body = '{"dataset": "datasets/<blob>.jsonl"}'
    print(f"  or start one over HTTP:  curl -s -X POST http://127.0.0.1:{args.port}/api/runs -d '{body}'")
    print('  ask the flow:  .venv/bin/python -m devhost chat "How do I descale the K2?"')
    return 0


def down(args: argparse.Namespace) -> int:
    """Stop everything `up`/`demo` started: host, local endpoints, training jobs, Azure ML
    emulator, Azurite."""
    stopped = control.stop_everything(_run_dir(args))
    print("stopped: " + (", ".join(stopped) or "nothing was running"))
    return 0


def _running_azurite(run_dir: Path) -> azurite.Azurite:
    pid_file = run_dir / "azurite" / "azurite.pid"
    if not pid_file.exists():
        raise SystemExit("the dev host is not running: start it with `make up`")
    pid, _, port = pid_file.read_text().partition(":")
    return azurite.Azurite(int(port), int(pid))


def upload(args: argparse.Namespace) -> int:
    """Upload a JSONL file to the running host's datasets container (this starts a run)."""
    from core.naming import instance_id
    from devhost.demo import upload_file

    src = Path(args.file)
    if not src.is_file():
        print(f"no such file: {src}", file=sys.stderr)
        return 2
    store = _running_azurite(_run_dir(args))
    name = args.name or src.name
    ref = upload_file(store.connection_string, os.environ.get("DATASETS_CONTAINER", "datasets"), name, src)
    run_id = instance_id(ref)
    print(f"uploaded {src} as {ref.path} (etag {ref.etag}) → run {run_id}")
    print(f"  status: http://127.0.0.1:{args.port}/runtime/webhooks/durabletask/instances/{run_id}")
    return 0


def chat(args: argparse.Namespace) -> int:
    """Ask the Prompt flow flow a question through the connection the last run wrote."""
    from devhost.demo import ask_flow, flow_env

    run_dir = _run_dir(args)
    azure = args.azure or azure_emulator.running(run_dir) is not None
    try:
        print(ask_flow(args.question, flow_env(run_dir, azure=azure), azure=azure))
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def status(args: argparse.Namespace) -> int:
    url = f"http://127.0.0.1:{args.port}/runtime/webhooks/durabletask/instances/{args.instance_id}"
    resp = httpx.get(url, params={"showHistory": str(args.history).lower()}, timeout=10)
    print(json.dumps(resp.json(), indent=2))
    return 0 if resp.status_code in (200, 202) else 1


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", default=os.environ.get("LOCAL_RUN_DIR", str(ROOT / ".run")))
    common.add_argument("--port", type=int, default=int(os.environ.get("DEVHOST_PORT", "7071")))
    common.add_argument("--azurite-port", type=int, default=int(os.environ.get("AZURITE_PORT", "10000")))
    common.add_argument("--app", default="function_app", help="module holding the FunctionApp")
    common.add_argument(
        "--azure",
        action="store_true",
        help="run the app's Azure code path (BACKEND=azureml) against the Azure ML emulator",
    )
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", parents=[common], help="run the host in the foreground")
    sub.add_parser("up", parents=[common], help="start the host in the background")
    sub.add_parser("down", parents=[common], help="stop everything the host started")
    st = sub.add_parser("status", parents=[common], help="print an instance's durable status")
    st.add_argument("instance_id")
    st.add_argument("--history", action="store_true")
    demo = sub.add_parser(
        "demo", parents=[common], help="the whole pipeline on the sample dataset, end to end"
    )
    demo.add_argument(
        "--single-run",
        action="store_true",
        help="stop after the first run (skip the retrain that shows the gate comparing two models)",
    )
    up_ = sub.add_parser(
        "upload", parents=[common], help="upload a JSONL dataset to the running host (starts a run)"
    )
    up_.add_argument("file")
    up_.add_argument("--name", help="blob name in the datasets container (default: the file name)")
    ch = sub.add_parser("chat", parents=[common], help="ask the Prompt flow flow a question")
    ch.add_argument("question")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from devhost.demo import run_demo

        return run_demo(args)
    commands = {"serve": serve, "up": up, "down": down, "status": status, "upload": upload, "chat": chat}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
