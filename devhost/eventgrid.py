"""Event Grid triggers offline: the webhook the Functions host serves for them.

On Azure, an Event Grid subscription delivers to
`POST /runtime/webhooks/eventgrid?functionName=<name>&code=<key>` and the host's Event Grid
extension answers it; the dev host serves the same path (the key is not checked: loopback only):

- `aeg-event-type: SubscriptionValidation`: the handshake, answered by the host itself, 200
  `{"validationResponse": <data.validationCode of the first event>}`;
- `aeg-event-type: Notification`: the body is a JSON array of events in the Event Grid schema
  (`id`, `topic`, `subject`, `eventType`, `eventTime`, `data`, `dataVersion`); every event is
  checked first (a malformed one is a 400 naming its field, and nothing is invoked), then the
  function runs once per event, in order, with an `azure.functions.EventGridEvent` decoded by the
  SDK's own converter (as the Python worker does) and, with a `durableClient` binding, the same
  client binding JSON the other triggers get. 202 when every invocation succeeded; 500 when one
  failed (Event Grid then retries the delivery);
- `aeg-event-type: Unsubscribe`: 202;
- an unknown `functionName`: 404.

`Deliveries` counts what each function was given and what it did with it (the host status shows
it), so a test can see that an event really arrived.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from devhost.functions import Function

log = logging.getLogger("devhost.eventgrid")
PATH = "/runtime/webhooks/eventgrid"
EVENT_TYPE_HEADER = "aeg-event-type"
MAX_EVENTS = 5000  # Event Grid delivers at most 5,000 events per batch


class BadEvents(ValueError):
    """A delivery that is not an array of Event Grid schema events; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Deliveries:
    """Per function: events delivered, invocations that raised."""

    events: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)

    def as_json(self, names: list[str]) -> dict[str, dict[str, int]]:
        return {n: {"events": self.events[n], "failures": self.failures[n]} for n in names}


def _require_str(event: dict[str, Any], where: str, name: str, *, optional: bool = False) -> None:
    value = event.get(name)
    if value is None and optional and name not in event:
        return
    if not isinstance(value, str) or (not optional and not value.strip()):
        shown = "missing" if name not in event else f"a {type(value).__name__}"
        raise BadEvents(f"{where}.{name}", f"{where}.{name} must be a non-empty string, not {shown}")


def parse_events(value: Any) -> list[dict[str, Any]]:
    """The events of a Notification body (parsed JSON), checked against the Event Grid schema."""
    if not isinstance(value, list):
        raise BadEvents("(body)", f"the body must be a JSON array of events, not a {type(value).__name__}")
    if not value:
        raise BadEvents("(body)", "the body is an empty array: no event to deliver")
    if len(value) > MAX_EVENTS:
        detail = f"{len(value)} events in one delivery; Event Grid sends at most {MAX_EVENTS}"
        raise BadEvents("(body)", detail)
    for i, event in enumerate(value):
        where = f"[{i}]"
        if not isinstance(event, dict):
            raise BadEvents(where, f"{where} must be an event object, not a {type(event).__name__}")
        if "specversion" in event:
            raise BadEvents(
                f"{where}.specversion",
                f"{where} is a CloudEvent; the dev host delivers the Event Grid schema only",
            )
        for name in ("id", "eventType", "subject", "eventTime"):
            _require_str(event, where, name)
        for name in ("topic", "dataVersion", "metadataVersion"):
            _require_str(event, where, name, optional=True)
        if "data" not in event:
            raise BadEvents(f"{where}.data", f"{where}.data is missing")
        try:
            datetime.fromisoformat(event["eventTime"])
        except ValueError:
            detail = f"{where}.eventTime is not an ISO 8601 time: {event['eventTime'][:40]!r}"
            raise BadEvents(f"{where}.eventTime", detail) from None
    return value


def validation_code(value: Any) -> str:
    """`data.validationCode` of a SubscriptionValidation body's first event."""
    first = value[0] if isinstance(value, list) and value else None
    data = first.get("data") if isinstance(first, dict) else None
    code = data.get("validationCode") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code:
        raise BadEvents("[0].data.validationCode", "a validation handshake needs [0].data.validationCode")
    return code


def to_event(event: dict[str, Any]) -> func.EventGridEvent:
    """The `EventGridEvent` the Python worker would build from the host's JSON for one event."""
    decoded = EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata=None)
    assert isinstance(decoded, func.EventGridEvent)
    return decoded


async def deliver(
    fn: Function, events: list[dict[str, Any]], binding_json: str, deliveries: Deliveries
) -> int:
    """Invoke `fn` once per event, in order; return how many invocations failed (each is logged)."""
    trigger = fn.binding("eventGridTrigger")
    assert trigger is not None
    failed = 0
    for event in events:
        kwargs: dict[str, Any] = {trigger["name"]: to_event(event)}
        if fn.client_param:
            kwargs[fn.client_param] = binding_json
        deliveries.events[fn.name] += 1
        try:
            await fn.acall(**kwargs)
        except Exception:
            failed += 1
            deliveries.failures[fn.name] += 1
            log.exception("event grid trigger %s failed on event %s", fn.name, str(event["id"])[:80])
    return failed
