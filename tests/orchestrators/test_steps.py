"""The run's steps are defined once (core/steps.py): the README lists exactly those statuses,
and every duration the orchestrator records is a step's duration key."""

from __future__ import annotations

import re
from pathlib import Path

from core.steps import Step

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_step_status_and_no_other() -> None:
    text = " ".join(README.read_text().split())
    listing = re.search(r"steps are (.*?) and finally the run's status", text)
    assert listing, "README.md no longer lists the custom status steps"
    steps_only = re.sub(r"\([^)]*\)", "", listing.group(1))  # drop "(with `field`…)" notes
    listed = re.findall(r"`([a-z_ ]+)`", steps_only)
    assert sorted(listed) == sorted(s.status for s in Step)


def test_statuses_and_duration_keys_are_unique() -> None:
    statuses = [s.status for s in Step]
    keys = [s.duration_key for s in Step if s.duration_key]
    assert len(set(statuses)) == len(statuses) and len(set(keys)) == len(keys)


def test_a_completed_run_times_its_steps_by_their_keys(orchestrator_handler, activity_functions, make_input):
    from core.contracts import ORCHESTRATOR
    from testing.replay import Replayer

    result = Replayer(
        orchestrator_handler,
        activity_functions,
        name=ORCHESTRATOR,
        instance_id="ft-0123456789abcdef",
        input_=make_input(),
    ).run()
    recorded = set(result.output["durations_s"])
    assert result.output["status"] == "completed"
    assert recorded <= {s.duration_key for s in Step if s.duration_key}
    assert {"validate", "preflight", "submit", "train", "register", "deploy", "smoke_test"} <= recorded
    shown = {s.custom_status["step"] for s in result.steps if s.custom_status}
    assert shown - {"completed"} <= {s.status for s in Step}
