"""The HTTP API's answers, one shape for every route: JSON bodies, errors as
`{"error", "details": [{"field", "message"}]}` with capped texts, 405 with `Allow`, 503 with
`Retry-After`.

Every route declares every method (`DECLARED_METHODS`) and refuses the ones it does not serve
itself, so Azure (whose host would answer 404 for an undeclared method) and the dev host agree.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

from storage.blob_urls import quote_prefix

log = logging.getLogger("triggers")

MAX_FIELD_CHARS = 80  # of a field path (an unknown key can be arbitrarily long)
MAX_MESSAGE_CHARS = 400
DECLARED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")  # ft-<16 hex>, dry-<16 hex>


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, allow_nan=False),
        status_code=status,
        mimetype="application/json",
        headers=headers or {},
    )


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def error(
    status: int, message: str, details: list[dict[str, str]], headers: dict[str, str] | None = None
) -> func.HttpResponse:
    capped = [
        {"field": _cap(d["field"], MAX_FIELD_CHARS), "message": _cap(d["message"], MAX_MESSAGE_CHARS)}
        for d in details
    ]
    return json_answer(status, {"error": message, "details": capped}, headers)


def refuse(
    status: int, message: str, field: str, detail: str, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    """An error answer with one detail."""
    return error(status, message, [{"field": field, "message": detail}], headers)


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    # `msg` never holds the input (pydantic keeps it in `input`, which is not sent back).
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]} for e in exc.errors()
    ]


def method_not_allowed(
    req: func.HttpRequest, path: str, allowed: tuple[str, ...] = ("POST",)
) -> func.HttpResponse | None:
    """None when `req`'s method is one of `allowed`; otherwise the 405 answer."""
    if req.method.upper() in allowed:
        return None
    listed = ", ".join(allowed)
    detail = f"{quote_prefix(req.method, 10)} is not allowed on {path}; use {listed}"
    return refuse(405, "method not allowed", "(method)", detail, {"Allow": listed})


def unavailable(what: str, message: str) -> func.HttpResponse:
    return refuse(503, what, "(service)", message, {"Retry-After": "10"})


def bad_run_id(run_id: str) -> func.HttpResponse | None:
    """None for a run id's shape; otherwise the 400 answer naming it."""
    if RUN_ID.fullmatch(run_id):
        return None
    return refuse(
        400, "invalid run id", "instance_id", f"not a run id: {quote_prefix(run_id)} (ft-… or dry-…)"
    )


async def read_run(
    client: df.DurableOrchestrationClient,
    run_id: str,
    *,
    show_input: bool = False,
    orchestrator: str | None = None,
) -> df.DurableOrchestrationStatus | func.HttpResponse:
    """The run's durable status, or the answer: 503 when the task hub does not answer, 404 for an
    unknown id (or an instance of another orchestrator than `orchestrator`, when given)."""
    try:
        status = await client.get_status(run_id, show_input=show_input)
    except Exception:
        log.exception("reading the status of %s failed", run_id)
        return unavailable("could not read the run", "the durable task hub did not answer; try again")
    if status.runtime_status is None or (orchestrator is not None and status.name != orchestrator):
        return refuse(404, "no such run", "instance_id", f"no run with id {run_id}")
    return status
