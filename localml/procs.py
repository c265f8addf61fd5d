"""Is a process we started still the one running? (pid + kernel start time, so a recycled pid
does not count). Shared by the training jobs, the serving processes and the dev host."""

from __future__ import annotations

import os
from pathlib import Path


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
