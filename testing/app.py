"""The app's functions as the Functions host indexes them (function_app.py through
azure.functions' own indexing API): what replay tests and benchmarks drive."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from core.contracts import ORCHESTRATOR


def functions() -> dict[str, Any]:
    """Every registered function, by name."""
    import function_app
    from devhost.functions import app_functions

    return {f.get_function_name(): f for f in app_functions(function_app.app)}


def activities(indexed: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """The activity functions among `indexed`, by name."""
    found = {}
    for name, fn in indexed.items():
        bindings = json.loads(fn.get_function_json())["bindings"]
        if any(b["type"] == "activityTrigger" for b in bindings):
            found[name] = fn.get_user_function()
    return found


def orchestrator_and_activities() -> tuple[Any, dict[str, Callable[[Any], Any]]]:
    """The fine-tune orchestrator's handler and every activity function."""
    indexed = functions()
    return indexed[ORCHESTRATOR].get_user_function(), activities(indexed)
