"""HTTP API: `POST /api/runs` starts a run (status is the durable management API)."""

from __future__ import annotations

import json
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backends.blob_store import split_blob_url
from backends.registry import current
from core.models import BlobRef, Overrides, RunRequest
from core.names import CANCEL_EVENT
from core.naming import instance_id
from core.settings import get_settings
from triggers.start import start_once

bp = df.Blueprint()


class StartRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="'<container>/<blob>' or the blob's https URL")
    validation: str | None = Field(default=None, min_length=1)
    overrides: Overrides = Field(default_factory=Overrides)
    dry_run: bool = Field(default=False, description="validate + preflight only; return the plan")


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)


DRY_RUN_WAIT_MS = 60_000  # a dry run answers in the response when it finishes within this
TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body), status_code=status, mimetype="application/json", headers=headers or {}
    )


def _error(status: int, message: str, details: list[dict[str, str]]) -> func.HttpResponse:
    return _json(status, {"error": message, "details": details})


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]} for e in exc.errors()
    ]


def _resolve(field: str, value: str) -> BlobRef | func.HttpResponse:
    try:
        container, name = split_blob_url(value)
    except ValueError as exc:
        return _error(400, "invalid request body", [{"field": field, "message": str(exc)}])
    try:
        return current().datasets.describe(BlobRef(container=container, name=name))
    except FileNotFoundError:
        return _error(404, "dataset not found", [{"field": field, "message": f"no blob {container}/{name}"}])


@bp.route(route="runs", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def start_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    raw = req.get_body() or b""
    try:
        body = StartRunBody.model_validate_json(raw)
    except ValidationError as exc:
        return _error(400, "invalid request body", _field_errors(exc))

    dataset = _resolve("dataset", body.dataset)
    if isinstance(dataset, func.HttpResponse):
        return dataset
    validation = None
    if body.validation is not None:
        validation = _resolve("validation", body.validation)
        if isinstance(validation, func.HttpResponse):
            return validation

    real_id = instance_id(dataset, validation, body.overrides)
    run_id = instance_id(dataset, validation, body.overrides, dry_run=True) if body.dry_run else real_id
    request = RunRequest(
        dataset=dataset,
        validation=validation,
        config=get_settings().run_config(body.overrides),
        source="http",
        dry_run=body.dry_run,
        real_run_id=real_id if body.dry_run else None,
    )
    outcome = await start_once(client, run_id, request)
    if outcome.started and body.dry_run:
        # Validation + preflight take seconds: answer with the plan when it is ready in time.
        return await client.wait_for_completion_or_create_check_status_response(
            req, run_id, timeout_in_milliseconds=DRY_RUN_WAIT_MS, retry_interval_in_milliseconds=250
        )
    if outcome.started:
        return client.create_check_status_response(req, run_id)
    links = client.get_client_response_links(req, run_id)
    return _json(
        409,
        {
            "error": "a run for this dataset version already exists",
            "id": run_id,
            "runtimeStatus": outcome.existing_status,
            **links,
        },
        headers={"Location": links["statusQueryGetUri"]},
    )


@bp.route(route="runs/{instance_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def cancel_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Ask a run to stop: its job is canceled, a new deployment without traffic deleted, live
    traffic left as it was. 404 for an unknown run, 409 for one that already ended."""
    run_id = req.route_params.get("instance_id", "")
    raw = req.get_body() or b"{}"
    try:
        body = CancelBody.model_validate_json(raw)
    except ValidationError as exc:
        return _error(400, "invalid request body", _field_errors(exc))
    status = await client.get_status(run_id)
    runtime = status.runtime_status.value if status.runtime_status is not None else None
    if runtime is None:
        return _error(404, "no such run", [{"field": "instance_id", "message": f"no run with id {run_id}"}])
    links = client.get_client_response_links(req, run_id)
    if runtime in TERMINAL:
        return _json(409, {"error": f"the run already ended ({runtime})", "id": run_id, **links})
    try:
        await client.raise_event(run_id, CANCEL_EVENT, {"reason": body.reason})
    except Exception:  # it ended between our look and the event (410)
        ended = await client.get_status(run_id)
        final = ended.runtime_status.value if ended.runtime_status is not None else "gone"
        return _json(409, {"error": f"the run already ended ({final})", "id": run_id, **links})
    return _json(
        202, {"id": run_id, "message": "cancel requested", **links}, {"Location": links["statusQueryGetUri"]}
    )
