"""The dataset's verdict while it downloads: validation overlapped with the download, against Azurite.

A large valid ultrachat-shaped JSONL (generated locally, seeded: `bench.validate_bench`'s
generator, keeping only the conversations that pass; 1 GB, `--quick` 20 MB) is uploaded once to a
fresh Azurite, then three contenders fetch it, each run in its own interpreter so that its peak
RSS is its own:

- `download`: `BlobDatasetStore.download(blob, file)` alone: the baseline, the time no verdict
  that needs every byte can beat;
- `old`: download, then `core.validation.validate_file(file)` (the activity before);
- `stream`: `validate_stream(store.open_stream(blob), file)` (the activity now): a helper thread
  pulls the 4 MiB chunks and writes them to the file, the validator checks them as they come.

Reported per contender: the verdict's wall time (the download's, for the baseline), CPU time and
peak RSS added by the work (peak RSS minus the RSS after imports). Ratios are against the
baseline of the same run, rounds interleaved with the order rotated, best of `--repeat`. Both
validating contenders must give the same report (it is compared) and the file written by each
must be the blob's bytes. Target (full mode): stream / download ≤ 1.2.

    python -m bench.download_validate [--quick] [--size-mb 1000] [--repeat 3] [--workdir DIR]

Writes bench/results/download_validate.json (`--quick`: download_validate.quick.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    DATA,
    MB,
    REPO,
    RESULTS,
    bench_env,
    current_rss_mib,
    fmt_table,
    machine_info,
    now_iso,
    peak_rss_mib,
    write_json,
)

CONTENDERS = ("download", "old", "stream")
LABELS = {
    "download": "plain download to a file (baseline)",
    "old": "download, then validate_file",
    "stream": "validate_stream(open_stream(blob), file)",
}
TARGET_RATIO = 1.2  # stream verdict time / plain download time, full mode
CONTAINER = "bench"
BLOB = "datasets/large.jsonl"
VALID_SEED = 20240607
VALID_VERSION = 1  # bump when the filtering changes


# --- data ---------------------------------------------------------------------------------------


def valid_dataset(workdir: Path, size_mb: float) -> tuple[Path, dict[str, Any]]:
    """A cached file of at least `size_mb` MB of valid conversations, generated on first use."""
    from bench.validate_bench import _Generator, conversation_ok

    path = workdir / f"ultrachat-valid-v{VALID_VERSION}-seed{VALID_SEED}-{size_mb:g}MB.jsonl"
    meta_path = path.with_name(path.name + ".meta.json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("bytes") == path.stat().st_size:
            return path, {**meta, "cached": True}
    print(f"generating {path.name} ...", flush=True)
    started = time.perf_counter()
    gen = _Generator(VALID_SEED)
    target = int(size_mb * MB)
    written = lines = 0
    digest = hashlib.sha256()
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb", buffering=1 << 20) as f:
        while written < target:
            conv = gen.conversation()
            if not conversation_ok(conv["messages"]):
                continue
            data = json.dumps(conv, ensure_ascii=False).encode() + b"\n"
            f.write(data)
            digest.update(data)
            written += len(data)
            lines += 1
    tmp.replace(path)
    meta = {
        "file": path.name,
        "seed": VALID_SEED,
        "version": VALID_VERSION,
        "bytes": written,
        "lines": lines,
        "sha256": digest.hexdigest(),
        "generated_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(meta_path, meta)
    return path, {**meta, "cached": False}


# --- Azurite --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_azurite(location: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A fresh Azurite (the setup's binary, as testing/azurite_fixtures.py starts it)."""
    from testing.azurite_fixtures import ACCOUNT_KEY, ACCOUNT_NAME, azurite_binary

    found = azurite_binary()
    if found is None:
        raise SystemExit("Azurite is not installed: run the setup (see README)")
    binary, blob_only = found
    port = _free_port()
    args = [str(binary), "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
    args += ["--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location)]
    if not blob_only:
        args += ["--queuePort", str(_free_port()), "--tablePort", str(_free_port())]
    log = open(location / "azurite.log", "wb")  # noqa: SIM115 (kept open by the child)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"Azurite did not start; see {location / 'azurite.log'}") from None
            time.sleep(0.05)
    endpoint = f"http://127.0.0.1:{port}/{ACCOUNT_NAME}"
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={endpoint};"
    )
    return proc, conn


# --- the contenders (each in its own interpreter) -------------------------------------------------


def _worker(name: str, conn: str, etag: str, dest: Path) -> dict[str, Any]:
    from core.models import BlobRef
    from core.validation import validate_file, validate_stream
    from storage.blob_store import BlobDatasetStore

    blob = BlobRef(container=CONTAINER, name=BLOB, etag=etag)
    store = BlobDatasetStore.from_connection_string(conn)
    options: dict[str, Any] = {"display_name": BLOB, "max_tokens": 4096, "max_errors": 50}
    rss_before = current_rss_mib()
    report = None
    cpu0, t0 = time.process_time(), time.perf_counter()
    split: dict[str, float] = {}
    if name == "download":
        store.download(blob, dest)
    elif name == "old":
        store.download(blob, dest)
        split["download_seconds"] = time.perf_counter() - t0
        report = validate_file(dest, **options)
        split["validate_seconds"] = time.perf_counter() - t0 - split["download_seconds"]
    else:
        report = validate_stream(store.open_stream(blob), dest, **options)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    store.close()
    peak = peak_rss_mib()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        **split,
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak, 1),
        "rss_added_mib": round(peak - rss_before, 1),
        "report": None if report is None else report.model_dump(mode="json"),
    }


def run_contender(name: str, conn: str, etag: str, scratch: Path) -> dict[str, Any]:
    dest = scratch / f"{name}.jsonl"
    cmd = [sys.executable, "-m", "bench.download_validate", "--worker", name]
    cmd += ["--conn", conn, "--etag", etag, "--dest", str(dest)]
    load = round(os.getloadavg()[0], 2)
    proc = subprocess.run(cmd, cwd=REPO, env=bench_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["file_sha256"] = _sha256(dest)
    result["load_avg_1m"] = load
    dest.unlink(missing_ok=True)
    return result


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# --- the bench ----------------------------------------------------------------------------------


def measure(path: Path, meta: dict[str, Any], repeat: int, scratch: Path) -> dict[str, Any]:
    from azure.storage.blob import BlobServiceClient

    from core.models import BlobRef
    from storage.blob_store import BlobDatasetStore

    location = scratch / "azurite"
    location.mkdir()
    azurite, conn = start_azurite(location)
    try:
        BlobServiceClient.from_connection_string(conn).create_container(CONTAINER)
        with BlobDatasetStore.from_connection_string(conn) as store:
            t0 = time.perf_counter()
            ref = store.upload(path, BlobRef(container=CONTAINER, name=BLOB))
            upload_s = time.perf_counter() - t0
        print(f"uploaded {meta['bytes'] / MB:,.0f} MB in {upload_s:.1f} s", flush=True)
        assert ref.etag is not None
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
        for round_no in range(repeat):
            order = CONTENDERS[round_no % 3 :] + CONTENDERS[: round_no % 3]
            for name in order:
                result = run_contender(name, conn, ref.etag, scratch)
                runs[name].append(result)
                print(f"  round {round_no + 1} {name:<8} {result['seconds']:7.2f} s", flush=True)
    finally:
        azurite.terminate()
        try:
            azurite.wait(timeout=10)
        except subprocess.TimeoutExpired:
            azurite.kill()
            azurite.wait(timeout=10)

    for name, contender_runs in runs.items():
        for r in contender_runs:
            if r["file_sha256"] != meta["sha256"]:
                raise RuntimeError(f"{name} wrote a file that is not the blob")
    reports = [r.pop("report") for name in ("old", "stream") for r in runs[name]]
    for r in runs["download"]:
        r.pop("report")
    if any(rep != reports[0] for rep in reports) or not reports[0]["ok"]:
        raise RuntimeError("the streaming report differs from validate_file's, or the file is not valid")

    def best(name: str) -> dict[str, Any]:
        chosen = min(runs[name], key=lambda r: r["seconds"])
        summary = {
            "best_seconds": round(chosen["seconds"], 3),
            "mb_per_s": round(meta["bytes"] / MB / chosen["seconds"], 1),
            "cpu_seconds_of_best": round(chosen["cpu_seconds"], 3),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[name]),
            "rss_added_mib": max(r["rss_added_mib"] for r in runs[name]),
            "runs": [
                {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in runs[name]
            ],
        }
        for key in ("download_seconds", "validate_seconds"):
            if key in chosen:
                summary[f"best_{key}"] = round(chosen[key], 3)
        return summary

    contenders = {name: best(name) for name in CONTENDERS}
    base = contenders["download"]["best_seconds"]
    report = reports[0]
    return {
        "file": {k: meta[k] for k in ("file", "bytes", "lines", "sha256")},
        "upload_seconds": round(upload_s, 2),
        "verdict": {"ok": report["ok"], "examples": report["examples"], "duplicates": report["duplicates"]},
        "contenders": contenders,
        "ratios": {
            "stream_over_download": round(contenders["stream"]["best_seconds"] / base, 3),
            "old_over_download": round(contenders["old"]["best_seconds"] / base, 3),
            "stream_over_old": round(
                contenders["stream"]["best_seconds"] / contenders["old"]["best_seconds"], 3
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.download_validate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="20 MB, one round (CI)")
    parser.add_argument("--size-mb", type=float, help="file size in MB (default 1000; quick 20)")
    parser.add_argument("--repeat", type=int, help="rounds; the best time counts (default 3; quick 1)")
    parser.add_argument("--workdir", type=Path, help=f"where the generated file is cached (default {DATA})")
    parser.add_argument(
        "--out", type=Path, help="results file (default bench/results/download_validate[.quick].json)"
    )
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--conn", help=argparse.SUPPRESS)
    parser.add_argument("--etag", help=argparse.SUPPRESS)
    parser.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = _worker(args.worker, args.conn, args.etag, args.dest)
        sys.stdout.write("\n" + json.dumps(result) + "\n")
        return 0

    size_mb = args.size_mb or (20 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 3)
    workdir = (args.workdir or DATA).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / ("download_validate.quick.json" if args.quick else "download_validate.json")
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < 2.2 * size_mb * MB:
        raise SystemExit(
            f"need {2.2 * size_mb:,.0f} MB free in {tempfile.gettempdir()}, have {free / MB:,.0f}"
        )
    started = time.perf_counter()
    machine = machine_info()
    print(
        f"download_validate: {size_mb:g} MB, best of {repeat}, {machine['cpu_model']} "
        f"x{machine['usable_cores']}, load {machine['load_avg_at_start']}",
        flush=True,
    )
    path, meta = valid_dataset(workdir, size_mb)
    with tempfile.TemporaryDirectory(prefix="download-validate-") as tmp:
        result = measure(path, meta, repeat, Path(tmp))

    rows = []
    for name, c in result["contenders"].items():
        ratio = c["best_seconds"] / result["contenders"]["download"]["best_seconds"]
        rows.append(
            [LABELS[name], f"{c['best_seconds']:.2f}", f"{c['mb_per_s']:.0f}", f"{ratio:.2f}x",
             f"{c['cpu_seconds_of_best']:.2f}", f"{c['rss_added_mib']:.0f}"]
        )  # fmt: skip
    print()
    print(fmt_table(["contender", "verdict s", "MB/s", "vs download", "CPU s", "RSS added MiB"], rows))
    ratio = result["ratios"]["stream_over_download"]
    met = ratio <= TARGET_RATIO
    print(
        f"\ntarget: stream verdict / plain download {ratio:.2f}x <= {TARGET_RATIO}x: "
        f"{'met' if met else 'NOT MET'}{' (quick mode: indicative only)' if args.quick else ''}"
    )
    write_json(
        out,
        {
            "bench": "download_validate",
            "quick": args.quick,
            "created": now_iso(),
            "elapsed_seconds": round(time.perf_counter() - started, 1),
            "machine": machine,
            "method": {
                "repeat": repeat,
                "timing": "best wall time of the rounds, work only (after imports), each run in its own "
                "subprocess against one Azurite on this machine; rounds interleaved, order rotated",
                "rss_added": "ru_maxrss of the subprocess after the work minus its RSS just before it",
                "client": "BlobDatasetStore.from_connection_string: 4 MiB GETs, one at a time",
                "units": "MB = 10^6 bytes, MiB = 2^20 bytes",
            },
            "contenders": LABELS,
            "result": result,
            "target": {"name": "stream_over_download", "value": ratio, "target": TARGET_RATIO, "met": met},
        },
    )
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
