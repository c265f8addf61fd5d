"""The steps of a fine-tune run as a person watching it sees them.

Each step has the text the run's custom status shows while it runs (`status`) and, if the run
times it, the key of its duration in `RunSummary.durations_s` (`duration_key`). The orchestrator
starts and ends steps by member, so the two can never disagree; the README lists the same
statuses (a test checks it).
"""

from __future__ import annotations

from enum import Enum


class Step(Enum):
    VALIDATE = ("validating", "validate")
    PREFLIGHT = ("preflight", "preflight")
    PLAN = ("planning", "plan")  # a dry run's last step
    SUBMIT = ("submitting", "submit")
    TRAIN = ("training", "train")
    REGISTER = ("registering", "register")
    WAIT_FOR_ENDPOINT = ("waiting_for_endpoint", "wait_for_endpoint")  # another run is releasing
    DEPLOY = ("deploying", "deploy")
    CREATE_ENDPOINT = ("creating endpoint", None)  # while polling; part of `deploy`
    CREATE_DEPLOYMENT = ("creating deployment", None)  # while polling; part of `deploy`
    SMOKE_TEST = ("smoke_testing", "smoke_test")
    EVALUATE = ("evaluating", "evaluate")
    EVALUATED = ("evaluated", None)  # the gate's verdict, shown until traffic moves
    SHIFT_TRAFFIC = ("shifting_traffic", "traffic")
    UPDATE_CONNECTION = ("updating_connection", "connection")
    ROLL_BACK = ("rolling_back", None)
    WRITE_REPORT = ("writing_report", None)
    NOTIFY = ("notifying", None)

    def __init__(self, status: str, duration_key: str | None) -> None:
        self.status = status
        self.duration_key = duration_key
