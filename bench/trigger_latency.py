"""Blob upload → orchestration running, through the real dev host process and Azurite.

Uploads N datasets (default 20) one after another and measures, for each, the time from the
upload returning to the durable status API reporting the run (Pending/Running/Completed). The
baseline, run in the same process against the same host, is the HTTP start of the same kind of
run (`POST /api/runs`), which involves no blob watcher. The datasets are deliberately invalid
(one line of non-JSON), so each run ends at validation in milliseconds and no training runs
(which is also the pipeline's promise: bad data costs nothing).

    python -m bench.trigger_latency [--uploads 20] [--quick]

Budget (issue #4): p95 ≤ 2 s over ≥ 20 uploads. Writes bench/results/trigger_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BUDGET_P95_S = 2.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


def _seen(base_url: str, run_id: str, deadline_s: float = 30.0) -> float:
    start = time.perf_counter()
    url = f"{base_url}/runtime/webhooks/durabletask/instances/{run_id}"
    while time.perf_counter() - start < deadline_s:
        if httpx.get(url, timeout=5).status_code != 404:
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(f"run {run_id} never appeared")


def measure(uploads: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from core.naming import instance_id
    from testing.devhost_subprocess import DevHostProcess

    with tempfile.TemporaryDirectory(prefix="trigger-bench-") as tmp:
        host = DevHostProcess(Path(tmp), {})
        host.start()
        try:
            blob, http = [], []
            for i in range(uploads):
                ref = host.upload(f"bench/blob-{i:03d}.jsonl", f"not json {i}\n".encode())
                t0 = time.perf_counter()
                blob.append(_seen(host.base_url, instance_id(ref)) - t0)
            for i in range(uploads):
                ref = host.upload(
                    f"bench/_splits/http-{i:03d}.jsonl", f"not json {i}\n".encode()
                )  # no trigger
                t0 = time.perf_counter()
                resp = httpx.post(f"{host.base_url}/api/runs", json={"dataset": ref.path}, timeout=30)
                assert resp.status_code == 202, resp.text
                http.append(_seen(host.base_url, instance_id(ref)) - t0)
        finally:
            host.stop()
            from devhost.control import stop_everything

            stop_everything(Path(tmp))
    return {
        "uploads": uploads,
        "blob_trigger_s": {"p50": statistics.median(blob), "p95": percentile(blob, 0.95), "max": max(blob)},
        "http_start_s": {"p50": statistics.median(http), "p95": percentile(http, 0.95), "max": max(http)},
        "ratio_p95_blob_over_http": percentile(blob, 0.95) / percentile(http, 0.95),
        "budget_p95_s": BUDGET_P95_S,
        "met": percentile(blob, 0.95) <= BUDGET_P95_S,
        "samples_s": {"blob": blob, "http": http},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 uploads; results to *.quick.json")
    args = parser.parse_args(argv)
    uploads = 5 if args.quick else args.uploads
    result = measure(uploads)
    b, h = result["blob_trigger_s"], result["http_start_s"]
    print(f"blob upload → run visible ({uploads} uploads): p50 {b['p50']:.3f} s, p95 {b['p95']:.3f} s")
    print(f"baseline POST /api/runs → run visible:      p50 {h['p50']:.3f} s, p95 {h['p95']:.3f} s")
    print(f"ratio p95 blob/http: {result['ratio_p95_blob_over_http']:.1f}×; budget p95 ≤ {BUDGET_P95_S} s: "
          f"{'met' if result['met'] else 'NOT met'}")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("trigger_latency.quick.json" if args.quick else "trigger_latency.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
