"""Every step the orchestrator calls is an `Activity` member, and every member is a registered
activity function (forgetting a module in activities/__init__.py, or naming a function otherwise
than its member, is caught here instead of as a run stuck on an activity the host does not know)."""

from __future__ import annotations

from typing import Any

import pytest

from activities.blueprint import activity
from core.names import Activity


def test_every_activity_is_registered_and_nothing_else(activity_functions: dict[str, Any]) -> None:
    assert sorted(activity_functions) == sorted(a.value for a in Activity)


def test_a_function_named_outside_the_enum_is_refused() -> None:
    def submit_the_job(payload: dict[str, Any]) -> None:  # a typo of submit_finetune
        return None

    with pytest.raises(ValueError, match=r"'submit_the_job' is not a member of core\.names\.Activity"):
        activity(submit_the_job)
