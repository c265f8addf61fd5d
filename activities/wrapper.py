"""The activities' blueprint and the wrapper every activity runs in.

`@activity` registers a function under the name its input model's contract gives
(core/contracts.py): the payload from the durable history is parsed into that model before the
function runs, and the function's result is written back as JSON by the contract's output type.
Any exception leaves as `ActivityError` with credentials scrubbed (the host writes it into the
history).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast, get_type_hints

import azure.durable_functions as df
from pydantic import TypeAdapter

from core.contracts import ActivityInput
from core.redact import scrub

bp = df.Blueprint()
log = logging.getLogger("activities")

In = TypeVar("In", bound=ActivityInput[Any])
Payload = dict[str, Any]


class ActivityError(RuntimeError):
    """What the durable history sees when an activity fails: a scrubbed one-line message."""


def contract_of(fn: Callable[..., Any]) -> type[ActivityInput[Any]]:
    """The input model `fn`'s one parameter is annotated with; refuses anything else."""
    params = list(inspect.signature(fn).parameters)
    hint = get_type_hints(fn).get(params[0]) if len(params) == 1 else None
    if not (isinstance(hint, type) and issubclass(hint, ActivityInput) and "activity" in hint.__dict__):
        raise TypeError(
            f"activity {fn.__name__!r}: its one parameter must be annotated with its input model "
            "(an ActivityInput subclass in core.contracts)"
        )
    if fn.__name__ != hint.activity.value:
        raise ValueError(
            f"activity {fn.__name__!r}: its input model {hint.__name__} is the contract of "
            f"{hint.activity.value!r}; name the function after it"
        )
    return hint


def activity(fn: Callable[[In], Any]) -> Callable[[Payload], Any]:
    """Register `fn` as the activity its input model names."""
    contract = contract_of(fn)
    call = cast(Callable[[ActivityInput[Any]], Any], fn)
    output: TypeAdapter[Any] = TypeAdapter(contract.output_type)

    @functools.wraps(fn)
    def run(payload: Payload | str) -> Any:
        try:
            if isinstance(payload, str):  # some hosts hand over the raw JSON text
                payload = json.loads(payload)
            return output.dump_python(call(contract.model_validate(payload)), mode="json")
        except Exception as exc:
            message = scrub(f"{type(exc).__name__}: {exc}")
            log.warning("activity %s failed: %s", fn.__name__, message)
            raise ActivityError(message) from None

    bp.activity_trigger(input_name="payload", activity=contract.activity.value)(run)
    return run
