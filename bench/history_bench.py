"""Orchestration history size over long training jobs: bounded, not growing with time.

    python -m bench.history_bench [--quick] [--out FILE]

Replays the real orchestrator through the project's replay harness (testing/replay.py: the host's
side of the durable protocol, a simulated clock, continue-as-new) with the real activities running
against the in-memory Azure of testing/fakes.py. The fine-tuning job stays Running for as many polls
as the default job PollPolicy (60 s, x1.5 backoff, capped at 600 s) makes in 1 h, 24 h and 72 h of
monitoring (deadline raised to 100 h), then completes; the run goes on to register and deploy.

Per scenario: generations (executions: 1 + continue-as-new count), history events per generation
(max and mean), events in total across generations, and the wall time of the replay. The target
(issue 7): the largest history the host holds for the instance at once (max per generation) at
72 h ≤ 1.5x that at 1 h. Quick mode (CI): 1 h and 6 h only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import REPO, RESULTS, fmt_table, machine_info, now_iso, write_json

# The same process settings as tests/conftest.py, before anything from the app is imported: the
# local backend is never built because every activity reaches the fakes through registry.use().
os.environ.setdefault("BACKEND", "local")
os.environ.setdefault("DatasetsStorage", "UseDevelopmentStorage=true")

INSTANCE_ID = "ft-0123456789abcdef"
FULL_HOURS = (1.0, 24.0, 72.0)
QUICK_HOURS = (1.0, 6.0)
TARGET_RATIO = 1.5
DEADLINE_S = 100 * 3600


def polls_for(hours: float, first_s: int, next_interval: Any) -> int:
    """Polls the job PollPolicy makes before `hours` of monitoring have passed."""
    t, interval, n = 0, first_s, 0
    while t < hours * 3600:
        t += interval
        interval = next_interval(interval)
        n += 1
    return n


def _app() -> tuple[Any, dict[str, Any]]:
    """The orchestrator handler and every activity function, as the host indexes function_app."""
    from testing.app import orchestrator_and_activities

    return orchestrator_and_activities()


def scenario(hours: float, handler: Any, activities: dict[str, Any]) -> dict[str, Any]:
    from backends import registry
    from core.contracts import ORCHESTRATOR
    from core.models import RunRequest
    from core.settings import Settings
    from orchestrators.run_input import RunInput
    from testing.fakes import FakeAzure, ultrachat_lines
    from testing.replay import Replayer

    config = Settings(BACKEND="local").run_config()
    policy = config.job_poll.model_copy(update={"deadline_s": DEADLINE_S})
    polls = polls_for(hours, policy.first_interval_s, policy.next_interval)
    azure = FakeAzure(job_states=["Running"] * polls + ["Completed"])
    with registry.use(azure.backends()):
        dataset = azure.put_blob("datasets", "chats/support.jsonl", ultrachat_lines(50))
        cfg = config.model_copy(update={"job_poll": policy})
        input_ = RunInput(request=RunRequest(dataset=dataset, config=cfg, source="blob")).model_dump(
            mode="json"
        )
        started = time.perf_counter()
        result = Replayer(
            handler, activities, name=ORCHESTRATOR, instance_id=INSTANCE_ID, input_=input_
        ).run()
        wall = time.perf_counter() - started
    out = result.output or {}
    if result.error is not None or out.get("status") != "completed":
        raise AssertionError(f"{hours:g} h: the run did not complete: {result.error or out}")
    sizes = [len(h) for h in result.histories]
    trained_s = out.get("durations_s", {}).get("train", 0)
    if trained_s < hours * 3600 - 1:
        raise AssertionError(f"{hours:g} h: monitored only {trained_s} s")
    return {
        "hours": hours,
        "job_polls": polls + 1,  # Running polls + the one that sees Completed
        "monitored_seconds": trained_s,
        "monitor_polls_per_generation": cfg.monitor_polls_per_generation,
        "generations": result.generations,
        "continue_as_new": result.generations - 1,
        "events_per_generation": sizes,
        "max_events_per_generation": result.max_history_len,
        "mean_events_per_generation": round(statistics.fmean(sizes), 1),
        "total_events": result.total_history_events,
        "episodes": len(result.steps),
        "activity_calls": len(result.calls),
        "replay_seconds": round(wall, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 h and 6 h only (CI)")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/history[.quick].json)")
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("history.quick.json" if args.quick else "history.json")
    hours_list = QUICK_HOURS if args.quick else FULL_HOURS

    started = time.perf_counter()
    machine = machine_info()
    handler, activities = _app()
    results = []
    for hours in hours_list:
        results.append(scenario(hours, handler, activities))
        r = results[-1]
        print(f"  {hours:g} h: {r['generations']} generation(s), {r['replay_seconds']:.2f} s", flush=True)

    rows = [
        [
            f"{r['hours']:g} h",
            str(r["job_polls"]),
            str(r["generations"]),
            str(r["continue_as_new"]),
            str(r["max_events_per_generation"]),
            f"{r['mean_events_per_generation']:.1f}",
            str(r["total_events"]),
            f"{r['replay_seconds']:.2f}",
        ]
        for r in results
    ]
    headers = ["monitoring", "polls", "generations", "cont.-as-new", "max ev/gen", "mean ev/gen"]
    headers += ["total events", "replay s"]
    print("\n" + fmt_table(headers, rows))

    first, last = results[0], results[-1]
    ratio = round(last["max_events_per_generation"] / first["max_events_per_generation"], 3)
    total_ratio = round(last["total_events"] / first["total_events"], 2)
    met = ratio <= TARGET_RATIO
    print(
        f"\nevents per instance (max per generation) {last['hours']:g} h / {first['hours']:g} h = {ratio}"
        f"  target <= {TARGET_RATIO}  {'met' if met else 'NOT MET'}"
        f"\nevents in total across generations {last['hours']:g} h / {first['hours']:g} h = {total_ratio}"
        " (grows with the job's length: one short history per generation)"
    )
    elapsed = time.perf_counter() - started
    write_json(
        out,
        {
            "bench": "history",
            "quick": args.quick,
            "created": now_iso(),
            "elapsed_seconds": round(elapsed, 1),
            "machine": machine,
            "method": {
                "harness": "testing/replay.py Replayer; the real orchestrator and activities against "
                "testing/fakes.py FakeAzure",
                "job_poll": "default PollPolicy from core.settings (deadline raised to 100 h); the job "
                "is Running for every poll until the monitored time has passed, then Completed",
                "events_per_instance": "max history events of one generation (what the host replays)",
            },
            "scenarios": results,
            "target": {
                "name": "max_events_per_generation ratio",
                "on": f"{last['hours']:g} h vs {first['hours']:g} h",
                "value": ratio,
                "target": f"<= {TARGET_RATIO}",
                "met": met,
            },
            "total_events_ratio": total_ratio,
        },
    )
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
