"""Waiting in tests for something another process does (a job, a scoring server), by reading its
state until it is what the test expects, with a deadline that says what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEADLINE_S = 30.0
POLL_S = 0.05


def wait_for(read: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = DEADLINE_S) -> T:
    """`read()` once `done` accepts it; AssertionError (with the last value) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        time.sleep(POLL_S)
