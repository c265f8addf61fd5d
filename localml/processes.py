"""The background processes of the offline stack: how they are started, recognised and stopped.

The training jobs (`localml.train_job`), the endpoint fronts and the scoring servers are all
started the same way: `python -m <module> <args>` from the project root, detached in a session of
their own (their process group id is their pid), offline (`OFFLINE_ENV`), output appended to a log
file. Whoever starts one records its pid and kernel start time (`spawn`'s return value) in a state
file; any later process, even after the starter was killed, then asks `alive(pid, start_time)`,
and a recycled pid does not count. `stop` ends recorded processes (SIGTERM to their group,
SIGKILL after a grace). The dev host also uses `running` for the Azurite it started.

POSIX only (process groups; /proc when present, else a bare `kill(pid, 0)`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core import redact
from localml import state_files

__all__ = [
    "OFFLINE_ENV",
    "PROJECT_ROOT",
    "alive",
    "child_env",
    "exit_code",
    "log_tail",
    "pid_exists",
    "reap",
    "running",
    "spawn",
    "start_time",
    "stop",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Environment every process of the offline stack gets (no phoning home, no hub).
OFFLINE_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}

STOP_GRACE_S = 5.0  # after SIGTERM, before SIGKILL; and again after SIGKILL, before giving up
POLL_S = 0.02
LOG_ROTATE_BYTES = 5 * 1024 * 1024  # a log larger than this is moved to `<log>.1` before a start
LOG_TAIL_BYTES = 2000

Process = tuple[int, int | None]  # (pid, kernel start time): what a state file records


# ------------------------------------------------------------------------------ is it running?


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc; None if there is no such
    process or no /proc (then callers fall back to `pid_exists`)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # fields 3.. (the command name may hold spaces)
    try:
        return fields[0], int(fields[19])  # state (field 3), starttime (field 22)
    except (IndexError, ValueError):
        return None


HAS_PROC = Path("/proc/self/stat").exists()


def running(pid: int, start_time: int | None) -> bool:
    """The recorded process is alive: not exited, not a zombie, and (when we know its start
    time) not a different process that reuses the pid."""
    if not HAS_PROC:
        return pid_exists(pid)
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_time is None or stat[1] == start_time


def start_time(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat[1] if stat else None


# ------------------------------------------------------------------------------ our children

# Popen objects of the children this process started, by (pid, start time): polling them reaps
# zombies (a finished child would otherwise stay a zombie, which still answers kill(pid, 0)) and
# gives exit codes. Children of an earlier process (before a host restart) are not here.
_CHILDREN: dict[Process, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


def _child(pid: int, started: int | None) -> subprocess.Popen[bytes] | None:
    with _CHILDREN_LOCK:
        return _CHILDREN.get((pid, started))


def reap() -> None:
    """Collect the children of ours that have exited (so none lingers as a zombie). Their exit
    codes stay available to `exit_code`."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN.values())
    for child in children:
        child.poll()


def alive(pid: int | None, started: int | None) -> bool:
    """Is the process we recorded (pid + start time, so a reused pid does not count) running?"""
    if not pid:
        return False
    child = _child(pid, started)
    if child is not None and child.poll() is not None:
        return False
    return running(pid, started)


def exit_code(pid: int | None, started: int | None) -> int | None:
    """The exit code of a child of this process that has exited; None if it runs or is not ours."""
    child = _child(pid, started) if pid else None
    return child.poll() if child is not None else None


# ------------------------------------------------------------------------------ start and stop


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's environment: ours + `OFFLINE_ENV` + the project root first on PYTHONPATH + `extra`."""
    env = {**os.environ, **OFFLINE_ENV}
    root = str(PROJECT_ROOT)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    env.update(extra or {})
    return env


def spawn(module: str, args: list[str], log_path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Start `python -m module args` detached (own session), output appended to `log_path`.

    An oversized log is first moved to `<log>.1`; each start begins with a `--- <time> starting`
    line. Returns the record to keep: pid, start time, `started_at` and `log_offset` (where this
    start's output begins, for `log_tail`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_path, log_path.with_suffix(log_path.suffix + ".1"))
    with open(log_path, "ab") as out:
        out.write(f"--- {state_files.now()} starting {module} {' '.join(args)}\n".encode())
        out.flush()
        offset = out.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    started = start_time(proc.pid)
    with _CHILDREN_LOCK:
        _CHILDREN[(proc.pid, started)] = proc
    return {"pid": proc.pid, "start_time": started, "started_at": state_files.now(), "log_offset": offset}


def _signal_group(pid: int, sig: signal.Signals) -> bool:
    """Signal the process group `pid` leads (pgid == pid: start_new_session). False if there is
    none: ESRCH when pid no longer leads a group, so a stranger that reuses the pid is never hit."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the group is someone else's now
        return False
    return True


def _wait_gone(targets: Iterable[Process], grace_s: float) -> bool:
    deadline = time.monotonic() + grace_s
    while any(alive(pid, started) for pid, started in targets):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def stop(targets: Iterable[Process], grace_s: float = STOP_GRACE_S) -> None:
    """Stop the recorded processes' groups: all get SIGTERM at once, then whoever is still there
    after `grace_s` gets SIGKILL (and is waited for as long again). Gone ones are skipped."""
    pending = [(pid, started) for pid, started in targets if alive(pid, started)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pending = [(pid, started) for pid, started in pending if _signal_group(pid, sig)]
        if _wait_gone(pending, grace_s):
            return
        pending = [(pid, started) for pid, started in pending if alive(pid, started)]


def log_tail(path: Path, offset: int) -> str:
    """The end of `path` from `offset` on (what the latest start of a process wrote), scrubbed."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = offset if 0 <= offset <= size else 0  # a rotated log starts over
            f.seek(max(start, size - LOG_TAIL_BYTES))
            return redact.scrub(f.read().decode("utf-8", errors="replace")).strip()
    except FileNotFoundError:
        return ""
