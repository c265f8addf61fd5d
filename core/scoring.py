"""One scoring call, shared by both backends: the Prompt flow tool's request, a ScoreResult back.

The key is used for the Authorization header only; nothing returned or raised can carry it:
the answer and error texts are scrubbed and capped, and a transport failure is re-raised as a
fresh ConnectionError outside the `except` block, so the httpx exception (whose request holds
the header) is neither its cause nor its context.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from core.models import ScoreResult
from core.payload import output_of
from core.redact import shorten

# Scores one payload on a deployment (None: by traffic) of the endpoint a backend's `scorer` was
# made for; the key it uses was read once, when the scorer was made.
Scorer = Callable[[str | None, dict[str, object]], ScoreResult]

DEPLOYMENT_HEADER = "azureml-model-deployment"
MAX_OUTPUT_CHARS = 2000  # 128 new tokens fit; the evaluation gate scores the whole answer
MAX_ERROR_CHARS = 300


def error_of(text: str) -> str:
    """A JSON body's `error` (or `message`) string, if it has one."""
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    if isinstance(data, dict):
        for key in ("error", "message"):
            value = data.get(key)
            if isinstance(value, str):
                return value
    return ""


def post_score(
    uri: str,
    key: str,
    deployment: str | None,
    payload: dict[str, object],
    *,
    timeout_s: float,
    label: str,
    http: httpx.Client | None = None,
    trust_env: bool = True,
) -> ScoreResult:
    """POST `payload` to the endpoint's scoring URI (pinned to `deployment` if given).

    HTTP errors come back as `ok=False`; an unreachable endpoint or a timeout raises
    ConnectionError (transient: the orchestrator retries the activity). `label` names the target
    in that message; `trust_env=False` keeps proxies from the environment off loopback traffic.
    """
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if deployment:
        headers[DEPLOYMENT_HEADER] = deployment
    body = json.dumps(payload)
    failure: str | None = None
    started = time.perf_counter()
    try:
        if http is not None:
            response = http.post(uri, content=body, headers=headers, timeout=timeout_s)
        else:
            with httpx.Client(timeout=timeout_s, trust_env=trust_env) as client:
                response = client.post(uri, content=body, headers=headers)
        text = response.text
    except httpx.HTTPError as e:
        failure = type(e).__name__
    latency_ms = round((time.perf_counter() - started) * 1000)
    if failure is not None:
        raise ConnectionError(f"scoring {label} unreachable: {failure}")

    if response.is_success:
        return ScoreResult(
            ok=True,
            status_code=response.status_code,
            output=shorten(output_of(text), MAX_OUTPUT_CHARS),
            latency_ms=latency_ms,
        )
    detail = error_of(text)
    error = f"HTTP {response.status_code} {response.reason_phrase or 'error'}" + (
        f": {detail}" if detail else ""
    )
    return ScoreResult(
        ok=False,
        status_code=response.status_code,
        output=shorten(text, MAX_OUTPUT_CHARS) if text else None,
        error=shorten(error, MAX_ERROR_CHARS, hide_queries=True),
        latency_ms=latency_ms,
    )
