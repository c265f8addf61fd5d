"""Completion events: a CloudEvents 1.0 JSON document POSTed to an optional webhook.

When a run reaches a terminal outcome (and when the cost guard deletes an expired endpoint) an
activity calls `deliver()` with an event built by `cloud_event()`. Structured content mode: the
whole event is the request body, sent as ``Content-Type: application/cloudevents+json; charset=utf-8``.

Example event (the body is compact, key-sorted UTF-8 JSON; shown indented here)::

    {
      "data": {"status": "completed", "instance_id": "run-42", "endpoint": "phi3-ft", ...},
      "datacontenttype": "application/json",
      "id": "4f1c2b8e9d0a7c6b5e4f3a2b1c0d9e8f",
      "source": "/phi3-finetune",
      "specversion": "1.0",
      "subject": "run-42",
      "time": "2024-05-01T12:34:56.789000+00:00",
      "type": "run.completed"
    }

`type` is ``run.<status>`` for the terminal run statuses (see `event_type_for`) or
``endpoint.expired``. `subject` is the orchestration instance id (or the endpoint name). `data` is
the `RunSummary` dumped as JSON (for ``endpoint.expired``: what the cost guard deleted); keeping
secrets out of it is the caller's job, this module sends `data` as given. `id` is deterministic,
the first 32 hex digits of ``sha256(f"{type}\\n{subject}\\n{time}")``, so a replayed or retried
activity sends the same id: receivers should deduplicate on it.

Signature: when a secret is configured, the header ``X-Signature-SHA256: sha256=<hex>`` carries the
lowercase hex HMAC-SHA256 of the exact body bytes, keyed with the secret (UTF-8). A receiver verifies
it over the raw body, before parsing it::

    expected = "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), request.headers["X-Signature-SHA256"].encode()):
        reject(401)

(`verify()` does the same.) Without a secret the event is still delivered, unsigned (no signature
header); receivers that require signatures will then reject it, and that shows up as a failed delivery.

Retry policy: up to `attempts` HTTP tries. Any 2xx is success. 408, 429, 5xx, transport errors and
timeouts are retried after ``first_backoff_s * 2**(n-1)`` seconds (n = tries made so far), capped at
`max_backoff_s`; a numeric ``Retry-After`` on 429/503 replaces that wait (also capped). Any other
status (other 4xx, 3xx: redirects are not followed, so the signed body never goes to another host)
stops at once. A delivery that still fails is returned as `Delivery(delivered=False, error=...)`,
never raised: a webhook must not fail a run. The error text is one short line naming only the
webhook's scheme and host (``HTTP 500 from https://hooks.example.com/…``): webhook URLs often carry
tokens in their path or query, so neither ever appears, nor does the secret or the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.models import Delivery, RunStatus
from core.redact import shorten

SPEC_VERSION = "1.0"
SOURCE = "/phi3-finetune"
SIGNATURE_HEADER = "X-Signature-SHA256"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
DATA_CONTENT_TYPE = "application/json"
ENDPOINT_EXPIRED = "endpoint.expired"

_RUN_OUTCOMES = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.INVALID_DATASET,
        RunStatus.PREFLIGHT_FAILED,
        RunStatus.FAILED,
        RunStatus.REJECTED_BY_EVALUATION,
        RunStatus.CANCELED,
        RunStatus.PLANNED,
    }
)
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_ERROR_LIMIT = 200

log = logging.getLogger(__name__)


def event_type_for(outcome: str) -> str:
    """The event type for a terminal run status (``"completed"`` -> ``"run.completed"``);
    ``"endpoint.expired"`` passes through. Anything else (including ``"running"``) is a ValueError."""
    value = str(outcome)
    if value == ENDPOINT_EXPIRED:
        return value
    if value in _RUN_OUTCOMES:
        return f"run.{value}"
    raise ValueError(f"no completion event for outcome {value!r}")


def event_id(event_type: str, subject: str, time: str) -> str:
    """Deterministic event id: the same (type, subject, time) always gives the same id."""
    return hashlib.sha256(f"{event_type}\n{subject}\n{time}".encode()).hexdigest()[:32]


def cloud_event(
    event_type: str, subject: str, data: dict[str, Any], *, time: str, source: str = SOURCE
) -> dict[str, Any]:
    """A CloudEvents 1.0 event (structured mode). `time` is an RFC 3339 timestamp chosen by the
    caller (the orchestration's deterministic clock), which keeps `id` stable across replays."""
    if not isinstance(data, dict):
        raise TypeError(f"event data must be a dict, not {type(data).__name__}")
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(event_type, subject, time),
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": time,
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": data,
    }


def encode(event: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent: compact, key-sorted JSON in UTF-8."""
    if not isinstance(event, dict):
        raise TypeError(f"event must be a dict, not {type(event).__name__}")
    return json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(body: bytes, secret: str) -> str:
    """The signature header value: ``"sha256=" + lowercase hex HMAC-SHA256(secret, body)``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header_value: str) -> bool:
    """True if `header_value` is the signature of `body` under `secret` (constant-time compare)."""
    if not secret or not header_value:
        return False
    expected = sign(body, secret).encode("utf-8")
    return hmac.compare_digest(expected, header_value.strip().encode("utf-8"))


def deliver(
    url: str | None,
    event: dict[str, Any],
    secret: str | None,
    *,
    attempts: int = 5,
    first_backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST `event` to `url`, signed with `secret` if one is given (unsigned otherwise), retrying
    as described in the module docstring. Never raises for delivery problems; `url` None or ""
    gives a skipped Delivery. A `client` passed in is used as is (and not closed); the default
    client ignores proxy settings from the environment and does not follow redirects."""
    if not isinstance(event, dict):
        raise TypeError(f"event must be a dict, not {type(event).__name__}")
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    event_type, ident = str(event["type"]), str(event["id"])
    if not url:
        return Delivery(event_type=event_type, event_id=ident, delivered=False, skipped=True)
    origin = _origin(url)
    if origin is None:
        error = "webhook URL is not an absolute http(s) URL; nothing sent"
        log.warning("Completion event %s not delivered: %s", ident, error)
        return Delivery(event_type=event_type, event_id=ident, delivered=False, error=error)

    body = encode(event)
    headers = {"Content-Type": CONTENT_TYPE}
    signature = None
    if secret:
        signature = sign(body, secret)
        headers[SIGNATURE_HEADER] = signature
    hidden = [url, secret, signature, *_url_secrets(url)]

    http = (
        client
        if client is not None
        else httpx.Client(trust_env=False, timeout=timeout_s, follow_redirects=False)
    )
    tries = 0
    status: int | None = None
    error = ""
    try:
        for n in range(1, attempts + 1):
            tries = n
            wait: float | None = None
            try:
                response = http.post(url, content=body, headers=headers, timeout=timeout_s)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                status = None
                error = f"{_describe(exc, hidden)} contacting {origin}/…"
                retryable = True
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return Delivery(
                        event_type=event_type, event_id=ident, delivered=True, attempts=n, status_code=status
                    )
                error = f"HTTP {status} from {origin}/…"
                retryable = status in (408, 429) or 500 <= status < 600
                if status in _RETRY_AFTER_STATUSES:
                    wait = _retry_after(response.headers.get("Retry-After"))
            if not retryable:
                error += " (not retryable)"
                break
            if n < attempts:
                sleep(min(first_backoff_s * 2 ** (n - 1) if wait is None else wait, max_backoff_s))
        else:
            error += f" (gave up after {tries} attempt{'s' if tries != 1 else ''})"
    finally:
        if client is None:
            http.close()

    # Built only from the origin, the status and vetted exception text; shorten() scrubs once more.
    error = shorten(error, _ERROR_LIMIT, hide_queries=True)
    log.warning("Completion event %s (%s) not delivered: %s", ident, event_type, error)
    return Delivery(
        event_type=event_type,
        event_id=ident,
        delivered=False,
        attempts=tries,
        status_code=status,
        error=error,
    )


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL (no user info, path or query), else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def _url_secrets(url: str) -> list[str]:
    """The parts of the webhook URL that may carry tokens: user info, path, query, fragment."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return [p for p in (userinfo, parts.path, parts.query, parts.fragment) if len(p) > 1]


def _describe(exc: BaseException, hidden: Iterable[str | None]) -> str:
    """The exception's class name, plus its message when that mentions nothing we hide."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if not text or any(h and h in text for h in hidden):
        return name
    return f"{name}: {text[:120]}"


def _retry_after(value: str | None) -> float | None:
    """A numeric Retry-After (seconds); HTTP dates and garbage are ignored (normal backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
