"""The runs dashboard with 200 runs in the store: the runs-list API's latency and the page's first paint.

    python -m bench.dashboard [--quick] [--requests N] [--loads R] [--out FILE]

The dev host in process (devhost/host.py `Host`, served by testing/devhost_in_process.py
`serving`) with the real Function App (testing/apps/dashboard_bench_app.py: function_app.py plus
one static page for the paint baseline), its SQLite store seeded with 200 fine-tune runs:

- **Shapes.** The real orchestrator is replayed through testing/replay.py's `Replayer` with the
  real activities against testing/fakes.py's `FakeAzure`, once per outcome: completed (a new model
  promoted over a live one), rejected_by_evaluation (the live model wins), invalid_dataset (three
  broken lines), failed (the job fails: CUDA out of memory). Each replay gives a real input, custom
  status, output and history; runs still going take the completed replay's state at `training`,
  `creating deployment` or `evaluating` (its custom status then, its history up to then).
- **Runs.** 150 completed, 20 running, 15 rejected_by_evaluation, 10 invalid_dataset, 5 failed,
  written as the engine writes them (devhost/engine.py `_create` + the last episode + `_finish`:
  one `instances` row each, with its `history`): distinct ids (`ft-<16 hex>`), ids, job,
  deployment, dataset and report names substituted throughout, created over the last 6 days (the
  running ones in the last 3 hours), every timestamp of the run shifted with it. No inbox or work
  rows: the host's dispatcher runs and finds nothing to do, so the running runs stay as seeded.
  The blob watcher and timer triggers are left out (there is no Azurite here; neither is on the
  dashboard's path).

**Runs-list API.** N requests (default 200; quick 30) of `GET /api/dashboard/api/runs` with the
page's `per_page=25`: page 1 (half of them), `state=completed` (a quarter) and page 3 (a quarter),
timed end to end with httpx from this process (JSON parsed). Each answer is checked (200 runs,
the seeded counts, 25 rows). **Baseline**, interleaved with them (alternating which goes first):
the raw durable listing the dashboard itself makes, `GET /runtime/webhooks/durabletask/instances
?top=100&showInput=true&createdTimeFrom=<30 days ago>`, following `x-ms-continuation-token`
(2 pages); it must return the 200 runs. Per contender: p50 / p95 (nearest rank) / max, and the
process CPU time per request (client + host: they share this process), which a busy machine
disturbs less than the wall time; the gen-2 garbage collections meanwhile are listed too (they
make the tail: the process holds the whole app). Budget (issue): p95 ≤ 200 ms.

**First paint.** Headless system Chromium through Playwright (testing/browser.py `launch`), R
loads (default 15; quick 3) per page, each in a fresh browser context (empty cache, new
connections, 1280x720), pages alternating, after one warm-up load of each. An init script
records, from navigation start (`performance.now()`): first-contentful-paint
(`performance.getEntriesByType('paint')`), the moment the 25th `[data-testid=run-row]` is in the
DOM (a MutationObserver), and "table painted": when the last of the 25 rows was first painted.
The observer gives each row's cells an `elementtiming` attribute as they enter the DOM, before any
frame draws them, and Chromium's Element Timing reports each row's render time: the presentation
time of the frame that drew it, the same clock as first-contentful-paint. (A
`requestAnimationFrame` + `setTimeout(0)` marker fires before the frame is presented: on the
static page it came out earlier than the page's own first-contentful-paint.)

**Baseline**: the same page drawn statically: the dashboard's DOM with its 25 rows, captured from
the warm-up load, scripts removed, served by the same host through an HTTP function
(`GET /api/dashboard-snapshot`, the page's headers, the same app.css). The ratio is what the
dashboard's script, its API call and the durable listing behind it add to painting the same rows.
Budget (issue): first paint under 1 s with 200 runs, judged on the table painted (the first paint
that shows runs), p95. No Chromium or no Playwright: that part is skipped, and one line says why.

Writes bench/results/dashboard.json (quick: dashboard.quick.json).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import REPO, RESULTS, fmt_table, machine_info, now_iso, write_json

# The same process settings as tests/conftest.py, before anything from the app is imported.
os.environ.setdefault("BACKEND", "local")
os.environ.setdefault("DatasetsStorage", "UseDevelopmentStorage=true")

# First: it registers the baseline page on function_app.app before anything indexes the app.
from testing.apps import dashboard_bench_app

TEMPLATE_ID = "ft-0123456789abcdef"
MIX = {"completed": 150, "running": 20, "rejected_by_evaluation": 15, "invalid_dataset": 10, "failed": 5}
RUNNING_STEPS = ("training", "training", "creating deployment", "evaluating")  # cycled over the 20
FOLDERS = ("support", "sales", "docs", "billing", "onboarding")
PER_PAGE = 25
DAYS = 30  # the dashboard's default window (`days`)
SEED = 7
FULL_REQUESTS, QUICK_REQUESTS = 200, 30
FULL_LOADS, QUICK_LOADS = 15, 3
WARMUP_REQUESTS = 5
BUDGET_API_P95_MS = 200.0
BUDGET_PAINT_MS = 1000.0
WEBHOOK_LIST = "/runtime/webhooks/durabletask/instances"
RUNS_API = "/api/dashboard/api/runs"
VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("page 1", {"page": "1", "per_page": str(PER_PAGE)}),
    ("state=completed", {"state": "completed", "page": "1", "per_page": str(PER_PAGE)}),
    ("page 1", {"page": "1", "per_page": str(PER_PAGE)}),
    ("page 3", {"page": "3", "per_page": str(PER_PAGE)}),
)

# Installed before every page's own scripts (Playwright's init scripts are not subject to the CSP).
# The rows' cells get an `elementtiming` attribute as they enter the DOM, before any frame draws
# them, so Chromium reports when each row's text was first painted (Element Timing: the frame's
# presentation time, as for first-contentful-paint).
MEASURE_JS = """
(() => {
  const want = WANT;
  const b = (window.__bench = { painted: {} });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (!e.identifier.startsWith("run-row-")) continue;
      const t = e.renderTime || e.loadTime;
      if (!(e.identifier in b.painted) || t < b.painted[e.identifier]) b.painted[e.identifier] = t;
    }
    const times = Object.values(b.painted);
    if (times.length >= want && b.tablePainted === undefined) b.tablePainted = Math.max(...times);
  }).observe({ type: "element", buffered: true });
  const observer = new MutationObserver(() => {
    const rows = document.querySelectorAll("[data-testid=run-row]");
    rows.forEach((row, i) => {
      for (const cell of row.cells) {
        if (!cell.hasAttribute("elementtiming")) cell.setAttribute("elementtiming", `run-row-${i}`);
      }
    });
    if (rows.length >= want) {
      b.rows = rows.length;
      b.rowsInDom = performance.now();
      observer.disconnect();
    }
  });
  observer.observe(document, { childList: true, subtree: true });
})();
""".replace("WANT", str(PER_PAGE))
DONE_JS = (
    "() => window.__bench && window.__bench.tablePainted !== undefined"
    " && performance.getEntriesByName('first-contentful-paint').length > 0"
)
COLLECT_JS = """
() => {
  const b = window.__bench;
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const api = res.find((e) => e.name.includes("/dashboard/api/runs"));
  const js = res.find((e) => e.name.endsWith("/app.js"));
  return {
    fcp_ms: performance.getEntriesByName("first-contentful-paint")[0].startTime,
    rows_in_dom_ms: b.rowsInDom,
    table_painted_ms: b.tablePainted,
    rows: document.querySelectorAll("[data-testid=run-row]").length,
    rows_painted: Object.keys(b.painted).length,
    page_height: document.documentElement.scrollHeight,
    html_received_ms: nav.responseEnd,
    dom_content_loaded_ms: nav.domContentLoadedEventEnd,
    app_js_received_ms: js ? js.responseEnd : null,
    api_sent_ms: api ? api.startTime : null,
    api_received_ms: api ? api.responseEnd : null,
  };
}
"""
SNAPSHOT_JS = """
() => {
  const copy = document.documentElement.cloneNode(true);
  copy.querySelectorAll("script").forEach((s) => s.remove());
  return "<!doctype html>\\n" + copy.outerHTML;
}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 2),
        "p95": round(percentile(values, 0.95), 2),
        "max": round(max(values), 2),
        "mean": round(statistics.fmean(values), 2),
        "n": len(values),
    }


# ---------------------------------------------------------------------------------------------
# Seeding: real shapes from replays, written as the engine writes them


@dataclass(frozen=True)
class Template:
    kind: str  # the run's state on the dashboard
    runtime: str  # the instance's runtimeStatus
    input: Any
    custom_status: Any
    output: Any
    history: list[dict[str, Any]]
    elapsed_s: float  # first to last history event (simulated)


def _elapsed(history: list[dict[str, Any]]) -> float:
    first = datetime.fromisoformat(history[0]["Timestamp"].replace("Z", "+00:00"))
    last = datetime.fromisoformat(history[-1]["Timestamp"].replace("Z", "+00:00"))
    return (last - first).total_seconds()


def record_templates() -> list[Template]:
    """One replay of the real orchestrator per outcome; the running states from the completed one."""
    from backends import registry
    from core.contracts import ORCHESTRATOR
    from core.models import ModelRef, RunRequest
    from core.settings import Settings
    from orchestrators.run_input import RunInput
    from testing.app import orchestrator_and_activities
    from testing.fakes import FakeAzure, ultrachat_lines
    from testing.replay import Replayer, RunResult

    handler, activities = orchestrator_and_activities()
    config = Settings(BACKEND="local").run_config()
    live = ("phi3-ft-endpoint", "blue-live", ModelRef(name="phi3-mini-ft", version="7"))
    broken = (
        b'{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n'
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}\n'
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},'
        b' {"role": "user", "content": "and?"}]}\n'
    )

    def replay(fake: FakeAzure, lines: bytes) -> tuple[Any, RunResult]:
        with registry.use(fake.backends()):
            dataset = fake.put_blob("datasets", "chats/support.jsonl", lines)
            input_ = RunInput(request=RunRequest(dataset=dataset, config=config, source="blob")).model_dump(
                mode="json"
            )
            result = Replayer(
                handler, activities, name=ORCHESTRATOR, instance_id=TEMPLATE_ID, input_=input_
            ).run()
        if result.error is not None or result.generations != 1:
            raise AssertionError(f"the replay failed: {result.error or result.generations}")
        return input_, result

    promoted, rejected = FakeAzure(oracles=("green",)), FakeAzure(oracles=("blue",))
    promoted.live_endpoint(*live)
    rejected.live_endpoint(*live)
    scenarios = {
        "completed": (promoted, ultrachat_lines(50)),
        "rejected_by_evaluation": (rejected, ultrachat_lines(50)),
        "invalid_dataset": (FakeAzure(), ultrachat_lines(40) + broken),
        "failed": (
            FakeAzure(job_states=["Queued", "Running", "Failed"], job_error="CUDA out of memory"),
            ultrachat_lines(50),
        ),
    }
    templates: list[Template] = []
    completed: tuple[Any, RunResult] | None = None
    for kind, (fake, lines) in scenarios.items():
        input_, result = replay(fake, lines)
        if (result.output or {}).get("status") != kind:
            raise AssertionError(f"{kind}: the replay ended {result.output}")
        history = result.histories[-1]
        templates.append(
            Template(
                kind,
                "Completed",
                input_,
                result.custom_statuses[-1],
                result.output,
                history,
                _elapsed(history),
            )
        )
        if kind == "completed":
            completed = (input_, result)
    assert completed is not None
    input_, result = completed
    for step in dict.fromkeys(RUNNING_STEPS):
        at = max(i for i, s in enumerate(result.steps) if (s.custom_status or {}).get("step") == step)
        history = result.histories[-1][: result.steps[at].history_len]
        templates.append(
            Template(
                f"running:{step}",
                "Running",
                input_,
                result.steps[at].custom_status,
                None,
                history,
                _elapsed(history),
            )
        )
    return templates


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def shift_times(text: str, delta: timedelta) -> str:
    """Every ISO timestamp in `text` moved by `delta`, written as it was (fraction, zone)."""

    def moved(m: re.Match[str]) -> str:
        fraction, zone = m.group(1), m.group(2)
        ts = datetime.fromisoformat(m.group(0).replace("Z", "+00:00"))
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        out = (ts + delta).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if fraction:
            out += (ts + delta).strftime(".%f")[: len(fraction)]
        return out + ("Z" if zone == "Z" else "+00:00" if zone else "")

    return _TIMESTAMP.sub(moved, text)


def substitute(text: str, run_id: str, dataset: str, delta: timedelta) -> str:
    """A template's JSON text for another run: its id (and the deployment suffix made of it), its
    dataset (`folder/stem` for `chats/support`: the splits and the report follow the folder), its
    times moved by `delta`."""
    text = text.replace(TEMPLATE_ID, run_id).replace(TEMPLATE_ID[3:15], run_id[3:15])
    folder = dataset.split("/", 1)[0]
    text = text.replace("chats/support.jsonl", f"{dataset}.jsonl").replace("chats/", f"{folder}/")
    return shift_times(text, delta)


def seed_store(store: Any, templates: list[Template], now: datetime, rng: random.Random) -> list[str]:
    """Write MIX runs into the dev host's store; return their ids (newest first)."""
    from devhost.engine import iso
    from devhost.store import dumps
    from testing.replay import T0

    by_kind = {t.kind: t for t in templates}
    plan: list[tuple[Template, datetime]] = []
    for kind, count in MIX.items():
        for i in range(count):
            if kind == "running":
                template = by_kind[f"running:{RUNNING_STEPS[i % len(RUNNING_STEPS)]}"]
                created = now - timedelta(seconds=rng.uniform(600, 3 * 3600))
            else:
                template = by_kind[kind]
                created = now - timedelta(seconds=rng.uniform(3 * 3600, 6 * 86400))
            plan.append((template, created))
    rng.shuffle(plan)
    ids: list[tuple[datetime, str]] = []
    with store.tx() as db:
        for n, (template, created) in enumerate(plan):
            run_id = f"ft-{rng.getrandbits(64):016x}"
            folder, stem = FOLDERS[n % len(FOLDERS)], f"chats-{n:03d}"

            def real(
                value: Any,
                run_id: str = run_id,
                name: str = f"{folder}/{stem}",
                delta: timedelta = created - T0,
            ) -> str:
                return substitute(dumps(value), run_id, name, delta)

            updated = created + timedelta(seconds=template.elapsed_s)
            events = [json.loads(real(e)) for e in template.history]
            next_seq = 1 + max((e["EventId"] for e in events), default=-1)
            db.execute(
                "INSERT INTO instances (id, name, status, input, output, custom_status, created, updated,"
                " execution, next_seq, known_actions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    run_id,
                    "finetune_orchestrator",
                    template.runtime,
                    real(template.input),
                    real(template.output) if template.output is not None else None,
                    real(template.custom_status) if template.custom_status is not None else None,
                    iso(created),
                    iso(updated),
                    next_seq,
                    next_seq,
                ),
            )
            db.executemany(
                "INSERT INTO history (instance_id, idx, event) VALUES (?, ?, ?)",
                [(run_id, i, dumps(e)) for i, e in enumerate(events)],
            )
            ids.append((created.replace(microsecond=0), run_id))  # the list's order: createdTime, id
    return [run_id for _, run_id in sorted(ids, reverse=True)]


# ---------------------------------------------------------------------------------------------
# Runs-list API


def raw_listing(http: Any, base_url: str, created_from: datetime) -> list[dict[str, Any]]:
    """The durable listing the dashboard makes, every page."""
    from dashboard.instances import CONTINUATION, NULL_TOKEN

    params = {
        "top": "100",
        "showInput": "true",
        "createdTimeFrom": created_from.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    found: list[dict[str, Any]] = []
    headers: dict[str, str] = {}
    while True:
        response = http.get(base_url + WEBHOOK_LIST, params=params, headers=headers)
        response.raise_for_status()
        page = response.json()
        found.extend(page)
        token = response.headers.get(CONTINUATION)
        if not token or token == NULL_TOKEN or not page:
            return found
        headers = {CONTINUATION: token}


def check_answer(label: str, body: dict[str, Any], newest: list[str]) -> None:
    """The answer lists the seeded runs: totals, counts, 25 rows of the right state and page."""
    counts = {k: v for k, v in body["counts"].items() if v}
    if counts != MIX:
        raise AssertionError(f"{label}: counts {counts}, seeded {MIX}")
    rows = body["runs"]
    if len(rows) != PER_PAGE:
        raise AssertionError(f"{label}: {len(rows)} rows, not {PER_PAGE}")
    if label == "state=completed":
        if body["total"] != MIX["completed"] or {r["state"] for r in rows} != {"completed"}:
            raise AssertionError(f"{label}: total {body['total']}, states { ({r['state'] for r in rows}) }")
        return
    page = 3 if label == "page 3" else 1
    expected = newest[(page - 1) * PER_PAGE : page * PER_PAGE]
    if body["total"] != sum(MIX.values()) or body["page"] != page or [r["id"] for r in rows] != expected:
        raise AssertionError(f"{label}: total {body['total']}, page {body['page']}, not the newest runs")


class GcPauses:
    """Gen-2 garbage collections of this process (host and client) while measuring, in ms."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._start) * 1000)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def measure_api(base_url: str, requests: int, newest: list[str]) -> dict[str, Any]:
    import httpx

    created_from = datetime.now(UTC) - timedelta(days=DAYS)
    dash: dict[str, list[float]] = {"wall": [], "cpu": []}
    raw: dict[str, list[float]] = {"wall": [], "cpu": []}
    by_variant: dict[str, list[float]] = {}
    listed: set[int] = set()  # instances per raw listing
    seen: dict[str, set[tuple[int, int]]] = {}  # (total, rows) per dashboard query
    with httpx.Client(timeout=30) as http, GcPauses() as gc_pauses:

        def dashboard(i: int, keep: bool) -> None:
            label, params = VARIANTS[i % len(VARIANTS)]
            c0, t0 = time.process_time(), time.perf_counter()
            response = http.get(base_url + RUNS_API, params=params)
            body = response.json()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if response.status_code != 200:
                raise AssertionError(f"{label}: HTTP {response.status_code}: {body}")
            check_answer(label, body, newest)
            seen.setdefault(label, set()).add((body["total"], len(body["runs"])))
            if keep:
                dash["wall"].append(wall * 1000)
                dash["cpu"].append(cpu * 1000)
                by_variant.setdefault(label, []).append(wall * 1000)

        def baseline(keep: bool) -> None:
            c0, t0 = time.process_time(), time.perf_counter()
            found = raw_listing(http, base_url, created_from)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            listed.add(len(found))
            if keep:
                raw["wall"].append(wall * 1000)
                raw["cpu"].append(cpu * 1000)

        for i in range(WARMUP_REQUESTS):
            dashboard(i, keep=False)
            baseline(keep=False)
        gc_pauses.pauses.clear()
        for i in range(requests):
            if i % 2:
                baseline(keep=True)
                dashboard(i, keep=True)
            else:
                dashboard(i, keep=True)
                baseline(keep=True)
    if listed != {sum(MIX.values())}:
        raise AssertionError(f"the raw listing returned {sorted(listed)} instances, not {sum(MIX.values())}")
    d, r = stats(dash["wall"]), stats(raw["wall"])
    cpu_d, cpu_r = statistics.fmean(dash["cpu"]), statistics.fmean(raw["cpu"])
    return {
        "requests": requests,
        "warmup_requests": WARMUP_REQUESTS,
        "variants": {label: dict(params) for label, params in VARIANTS},
        "dashboard_ms": d,
        "dashboard_by_variant_ms": {k: stats(v) for k, v in by_variant.items()},
        "raw_listing_ms": r,
        "cpu_ms_per_request": {"dashboard": round(cpu_d, 2), "raw_listing": round(cpu_r, 2)},
        "ratios": {
            "p50": round(d["p50"] / r["p50"], 2),
            "p95": round(d["p95"] / r["p95"], 2),
            "cpu": round(cpu_d / cpu_r, 2),
        },
        # What was answered (every answer checked against the seed; these are what the checks saw).
        "checks": {
            "raw_listing_instances": sorted(listed),
            "dashboard_total_and_rows": {label: sorted(pairs) for label, pairs in seen.items()},
        },
        "gc_gen2_pauses_ms": [round(x, 1) for x in gc_pauses.pauses],
        "samples_ms": {
            "dashboard": [round(x, 3) for x in dash["wall"]],
            "raw_listing": [round(x, 3) for x in raw["wall"]],
        },
    }


# ---------------------------------------------------------------------------------------------
# First paint


def paint_unavailable() -> str | None:
    """Why the browser part cannot run here (None: it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    from testing.browser import find_chromium

    if find_chromium() is None:
        return "no Chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chromium)"
    return None


def load_once(browser: Any, url: str, errors: list[str]) -> tuple[dict[str, Any], Any]:
    """One load in a fresh context: the timings, and the page (for the snapshot) until closed."""
    from testing.browser import record_console_errors

    context = browser.new_context()
    context.add_init_script(MEASURE_JS)
    page = context.new_page()
    record_console_errors(page, errors)
    page.goto(url, wait_until="commit")
    page.wait_for_function(DONE_JS, polling=20, timeout=30_000)
    return page.evaluate(COLLECT_JS), context


def measure_paint(base_url: str, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from testing.browser import launch

    pages = {"dashboard": f"{base_url}/api/dashboard", "baseline": f"{base_url}/api/dashboard-snapshot"}
    samples: dict[str, list[dict[str, Any]]] = {"dashboard": [], "baseline": []}
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            # Warm-up (not measured): the dashboard once, whose drawn list becomes the baseline page.
            first, context = load_once(browser, pages["dashboard"], errors)
            html = context.pages[0].evaluate(SNAPSHOT_JS)
            context.close()
            dashboard_bench_app.SNAPSHOT["html"] = html.encode("utf-8")
            load_once(browser, pages["baseline"], errors)[1].close()
            for i in range(loads):
                for name in ("dashboard", "baseline") if i % 2 == 0 else ("baseline", "dashboard"):
                    timings, context = load_once(browser, pages[name], errors)
                    context.close()
                    samples[name].append(timings)
        finally:
            browser.close()
    for name, runs in samples.items():
        if any(s["rows"] != PER_PAGE or s["rows_painted"] != PER_PAGE for s in runs):
            drawn = [(s["rows"], s["rows_painted"]) for s in runs]
            raise AssertionError(f"{name}: rows in the DOM, painted {drawn}, not {PER_PAGE}")
    out: dict[str, Any] = {"loads": loads, "skipped": None, "snapshot_bytes": len(html.encode("utf-8"))}
    for name, runs in samples.items():
        out[name] = {
            "fcp_ms": stats([s["fcp_ms"] for s in runs]),
            "rows_in_dom_ms": stats([s["rows_in_dom_ms"] for s in runs]),
            "table_painted_ms": stats([s["table_painted_ms"] for s in runs]),
            "rows": [s["rows"] for s in runs],
            "rows_painted": [s["rows_painted"] for s in runs],
            "breakdown_p50_ms": {
                k: round(statistics.median(v), 1)
                for k in ("html_received_ms", "app_js_received_ms", "api_sent_ms", "api_received_ms")
                if (v := [s[k] for s in runs if s[k] is not None])
            },
            "samples": runs,
        }
    d, b = out["dashboard"], out["baseline"]
    out["ratios"] = {
        "fcp_p50": round(d["fcp_ms"]["p50"] / b["fcp_ms"]["p50"], 2),
        "table_painted_p50": round(d["table_painted_ms"]["p50"] / b["table_painted_ms"]["p50"], 2),
        "table_painted_p95": round(d["table_painted_ms"]["p95"] / b["table_painted_ms"]["p95"], 2),
    }
    out["warmup"] = first
    out["console_errors"] = errors
    return out


# ---------------------------------------------------------------------------------------------
# Report


def target(value: float, budget: float) -> dict[str, Any]:
    return {"value": value, "target": f"<= {budget:g}", "met": value <= budget}


def report_api(api: dict[str, Any], runs: int) -> None:
    def cells(s: dict[str, float]) -> list[str]:
        return [f"{s[k]:.1f}" for k in ("p50", "p95", "max")]

    cpu = api["cpu_ms_per_request"]
    rows = [
        ["GET /api/dashboard/api/runs (all)", *cells(api["dashboard_ms"]), f"{cpu['dashboard']:.1f}"],
        *[[f"  {label}", *cells(s), ""] for label, s in api["dashboard_by_variant_ms"].items()],
        [
            "baseline: raw durable listing (2 pages)",
            *cells(api["raw_listing_ms"]),
            f"{cpu['raw_listing']:.1f}",
        ],
    ]
    print(f"\nruns-list API, {runs} runs in the store ({api['requests']} requests each, ms):")
    print(fmt_table(["request", "p50", "p95", "max", "CPU ms/req"], rows))
    gcs = api["gc_gen2_pauses_ms"]
    if gcs:
        print(
            f"gen-2 garbage collections meanwhile (this process: host + client): {len(gcs)},"
            f" p50 {statistics.median(gcs):.0f} ms, max {max(gcs):.0f} ms"
        )
    r = api["ratios"]
    print(f"ratio dashboard/raw: p50 {r['p50']:.2f}×, p95 {r['p95']:.2f}×, CPU {r['cpu']:.2f}×")


def report_paint(paint: dict[str, Any]) -> None:
    rows = []
    for name, label in (("dashboard", "GET /api/dashboard"), ("baseline", "baseline: the same list, static")):
        p = paint[name]
        fcp, table = p["fcp_ms"], p["table_painted_ms"]
        times = (fcp["p50"], fcp["p95"], table["p50"], table["p95"], table["max"])
        rows.append([label, *(f"{x:.0f}" for x in times), str(min(p["rows"]))])
    print(f"\nfirst paint, {paint['loads']} loads of each page in fresh contexts (ms from navigation start):")
    print(fmt_table(["page", "FCP p50", "FCP p95", "table p50", "table p95", "table max", "rows"], rows))
    steps = {
        **paint["dashboard"]["breakdown_p50_ms"],
        "rows_in_dom_ms": paint["dashboard"]["rows_in_dom_ms"]["p50"],
    }
    print(
        "dashboard p50 steps: "
        + ", ".join(f"{k.removesuffix('_ms').replace('_', ' ')} {v:.0f}" for k, v in steps.items())
    )
    r = paint["ratios"]
    print(
        f"ratio dashboard/static: FCP p50 {r['fcp_p50']:.2f}×,"
        f" table painted p50 {r['table_painted_p50']:.2f}×, p95 {r['table_painted_p95']:.2f}×"
    )
    if paint["console_errors"]:
        print(f"console errors: {paint['console_errors']}")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 requests, 3 page loads each (CI)")
    parser.add_argument("--requests", type=int, help=f"runs-list requests (default {FULL_REQUESTS})")
    parser.add_argument("--loads", type=int, help=f"page loads per page (default {FULL_LOADS})")
    parser.add_argument(
        "--out", type=Path, help="results file (default bench/results/dashboard[.quick].json)"
    )
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("dashboard.quick.json" if args.quick else "dashboard.json")
    requests = args.requests or (QUICK_REQUESTS if args.quick else FULL_REQUESTS)
    loads = args.loads or (QUICK_LOADS if args.quick else FULL_LOADS)

    from devhost.host import Host
    from testing.devhost_in_process import serving
    from testing.devhost_subprocess import free_port

    started = time.perf_counter()
    machine = machine_info()
    templates = record_templates()
    replayed = time.perf_counter() - started
    outcomes = [t.kind for t in templates if t.runtime == "Completed"]
    print(f"  replayed {len(outcomes)} outcomes ({', '.join(outcomes)}) in {replayed:.1f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        db_path = Path(tmp) / "devhost.sqlite"
        host = Host(db_path, free_port(), {"TASK_HUB_NAME": "devhost"}, module=dashboard_bench_app.__name__)
        host.index.blob.clear()  # no Azurite here; neither is on the dashboard's path
        host.index.timers.clear()
        newest = seed_store(host.store, templates, datetime.now(UTC), random.Random(SEED))
        with host.store.read() as db:
            rows = db.execute(
                "SELECT COUNT(*), SUM(LENGTH(input)), SUM(LENGTH(output)), SUM(LENGTH(custom_status))"
                " FROM instances"
            ).fetchone()
            events = db.execute("SELECT COUNT(*) FROM history").fetchone()[0]
        seeded = {
            "runs": rows[0],
            "mix": MIX,
            "history_events": events,
            "bytes": {"input": rows[1], "output": rows[2], "custom_status": rows[3]},
            "store_bytes": sum(f.stat().st_size for f in Path(tmp).glob("devhost.sqlite*")),
            "templates": {
                t.kind: {"history_events": len(t.history), "elapsed_s": t.elapsed_s} for t in templates
            },
        }
        mix = ", ".join(f"{n} {k}" for k, n in MIX.items())
        print(f"  seeded {rows[0]} runs ({mix}), {events} history events", flush=True)

        with serving(host):
            api = measure_api(host.base_url, requests, newest)
            print(f"  runs-list API: {requests} requests + {requests} baseline listings", flush=True)
            skipped = paint_unavailable()
            if skipped is None:
                paint = measure_paint(host.base_url, loads)
                print(f"  first paint: {loads} loads of each page", flush=True)
            else:
                paint = {"loads": 0, "skipped": skipped}

    report_api(api, seeded["runs"])
    targets = {"list_api_p95_ms": target(api["dashboard_ms"]["p95"], BUDGET_API_P95_MS)}
    if paint.get("skipped"):
        print(f"\nfirst paint: skipped: {paint['skipped']}")
    else:
        report_paint(paint)
        targets["table_painted_p95_ms"] = target(
            paint["dashboard"]["table_painted_ms"]["p95"], BUDGET_PAINT_MS
        )

    print("\ntargets:")
    for name, t in targets.items():
        print(f"  {name}: {t['value']:.1f} (target {t['target']})  {'met' if t['met'] else 'NOT MET'}")

    elapsed = time.perf_counter() - started
    write_json(
        out,
        {
            "bench": "dashboard",
            "quick": args.quick,
            "created": now_iso(),
            "elapsed_seconds": round(elapsed, 1),
            "machine": machine,
            "method": {
                "host": "devhost.host.Host in process (testing/devhost_in_process.serving), app "
                "testing.apps.dashboard_bench_app (function_app + GET /api/dashboard-snapshot), blob "
                "watcher and timer triggers left out",
                "seed": "the real orchestrator replayed per outcome (testing/replay.py, testing/fakes.py); "
                "rows written as the engine writes them, ids/names substituted, times shifted",
                "api": "httpx from this process, JSON parsed; dashboard and baseline interleaved; "
                f"{WARMUP_REQUESTS} warm-up requests each not counted; p95 nearest rank",
                "api_baseline": f"GET {WEBHOOK_LIST}?top=100&showInput=true&createdTimeFrom=<{DAYS} days"
                " ago>, following x-ms-continuation-token",
                "paint": "headless Chromium (testing/browser.py), fresh context per load (1280x720), pages "
                "alternating; table painted = the latest of the 25 rows' first Element Timing render times "
                "(elementtiming set on their cells as they enter the DOM); one warm-up load each not counted",
                "paint_baseline": "the dashboard's drawn list (DOM after a warm-up load, scripts removed) "
                "served by the same host: GET /api/dashboard-snapshot",
                "seed_value": SEED,
            },
            "seeded": seeded,
            "api": api,
            "paint": paint,
            "targets": targets,
        },
    )
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
