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
from core.naming import instance_id
from core.settings import get_settings
from triggers.start import start_once

bp = df.Blueprint()


class StartRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="'<container>/<blob>' or the blob's https URL")
    validation: str | None = Field(default=None, min_length=1)
    overrides: Overrides = Field(default_factory=Overrides)


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

    run_id = instance_id(dataset, validation, body.overrides)
    request = RunRequest(
        dataset=dataset,
        validation=validation,
        config=get_settings().run_config(body.overrides),
        source="http",
    )
    outcome = await start_once(client, run_id, request)
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
