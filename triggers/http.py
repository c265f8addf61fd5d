"""HTTP API: `POST /api/runs` starts a run, `POST /api/runs/{id}/cancel` asks one to stop (status
is the durable management API).

The surface is strict, and every refusal happens before any storage call or run start:

- a body over `MAX_BODY_BYTES` is 413; one that is not a JSON object of the expected shape and
  types (strict: `"yes"` is not a boolean, `"2"` not a number; unknown fields refused) is 400;
- `dataset` / `validation` are `<container>/<blob>` or a blob URL of the configured storage
  account (`BlobDatasetStore.account_url`): another account or host, `http` for an `https`
  account, user info, `.`/`..` segments (also percent-encoded), empty segments, backslashes and
  control characters are 400, and so is a container outside `DATASET_CONTAINERS`;
- storage errors are answered, never raised: not found 404, a name the service refuses 400,
  refused credentials 502, unreachable / throttled / no token 503;
- error messages quote at most `QUOTE_CHARS` characters of the offending value.

Wrong methods: both routes declare every method and answer 405 with an `Allow` header for
anything but POST, so Azure (whose host would answer 404 for an undeclared method) and the dev
host behave alike.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from backends.base import BlobStoreError, DatasetStore
from backends.registry import current
from core.contracts import CANCEL_EVENT
from core.models import BlobRef, Overrides, RunRequest
from core.naming import instance_id
from core.settings import Settings, get_settings
from storage.blob_urls import parse_blob_reference, quote_prefix
from triggers.answers import (
    DECLARED_METHODS,
    bad_run_id,
    error,
    field_errors,
    json_answer,
    method_not_allowed,
    read_run,
    refuse,
    unavailable,
)
from triggers.start import start_once

bp = df.Blueprint()
log = logging.getLogger("triggers")

MAX_BODY_BYTES = 64 * 1024  # a real body is a few hundred bytes
MAX_REFERENCE_CHARS = 2048  # an account URL + a 63-character container + a 1024-character blob name


class StartRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(
        min_length=1,
        max_length=MAX_REFERENCE_CHARS,
        description="'<container>/<blob>' or the blob's URL in the configured storage account",
    )
    validation: str | None = Field(default=None, min_length=1, max_length=MAX_REFERENCE_CHARS)
    overrides: Overrides = Field(default_factory=Overrides)
    dry_run: StrictBool = Field(default=False, description="validate + preflight only; return the plan")


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(default="", max_length=500)


DRY_RUN_WAIT_MS = 60_000  # a dry run answers in the response when it finishes within this
TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}

_Body = TypeVar("_Body", bound=BaseModel)


def _parse(model: type[_Body], raw: bytes) -> _Body | func.HttpResponse:
    if len(raw) > MAX_BODY_BYTES:
        detail = f"{len(raw)} bytes; at most {MAX_BODY_BYTES}"
        return refuse(413, "request body too large", "(body)", detail)
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        return error(400, "invalid request body", field_errors(exc))


def _storage_error(field: str, blob: BlobRef, exc: BlobStoreError) -> func.HttpResponse:
    """A sanitized storage failure (codes and the path only) as a clear answer, never a 500."""
    path = quote_prefix(blob.path)
    code, err = exc.status_code, exc.error_code or "UnknownError"
    if code is None:  # unreachable, or no token for the managed identity
        return unavailable(
            "datasets storage unavailable",
            f"datasets storage could not be reached, or the app could not get a token for it ({path}); "
            "try again, or check DatasetsStorage and the app's identity",
        )
    if code in (401, 403):
        detail = (
            f"HTTP {code} {err} reading {path}: the app's identity needs Storage Blob Data Reader (or "
            "Contributor) on the account, or DatasetsStorage is wrong"
        )
        return refuse(502, "datasets storage refused the app", field, detail)
    if code == 400:
        return refuse(400, "invalid request body", field, f"storage refused {path}: HTTP 400 {err}")
    if code in (408, 429) or code >= 500:
        return unavailable("datasets storage busy", f"HTTP {code} {err} reading {path}; try again")
    return refuse(502, "datasets storage request failed", field, f"HTTP {code} {err} reading {path}")


def _locate(field: str, value: str, settings: Settings, store: DatasetStore) -> BlobRef | func.HttpResponse:
    """The blob `value` names, after every check that needs no storage call."""
    try:
        container, name = parse_blob_reference(value, account_url=store.account_url)
    except ValueError as exc:
        return refuse(400, "invalid request body", field, str(exc))
    allowed = settings.dataset_containers
    if container not in allowed:
        detail = (
            f"container {quote_prefix(container)} is not a dataset container; allowed: "
            f"{', '.join(allowed)} (DATASET_CONTAINERS)"
        )
        return refuse(400, "invalid request body", field, detail)
    return BlobRef(container=container, name=name)


def _describe(field: str, blob: BlobRef, store: DatasetStore) -> BlobRef | func.HttpResponse:
    """The blob's current version (etag), or the storage failure as an answer."""
    try:
        return store.describe(blob)
    except FileNotFoundError:
        return refuse(404, "dataset not found", field, f"no blob {quote_prefix(blob.path)}")
    except BlobStoreError as exc:
        return _storage_error(field, blob, exc)
    except OSError as exc:  # ConnectionError, TimeoutError from a store that raises them
        log.warning("describing %s failed: %s", blob.path, type(exc).__name__)
        detail = f"{type(exc).__name__} reading {quote_prefix(blob.path)}; try again"
        return unavailable("datasets storage unavailable", detail)


@bp.route(route="runs", methods=DECLARED_METHODS, auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def start_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    if (refused := method_not_allowed(req, "/api/runs")) is not None:
        return refused
    body = _parse(StartRunBody, req.get_body() or b"")
    if isinstance(body, func.HttpResponse):
        return body
    try:
        settings = get_settings()
        config = settings.run_config(body.overrides)
        store = current().datasets
    except Exception:  # settings that do not validate, storage that cannot be configured
        log.exception("POST /api/runs: the app's settings or backends could not be loaded")
        return unavailable(
            "the app is misconfigured", "its settings or backends could not be loaded; see the app's log"
        )

    # Both references are checked before either is looked up: a bad one costs no storage call.
    located = {"dataset": _locate("dataset", body.dataset, settings, store)}
    if body.validation is not None:
        located["validation"] = _locate("validation", body.validation, settings, store)
    for answer in located.values():
        if isinstance(answer, func.HttpResponse):
            return answer
    described: dict[str, BlobRef] = {}
    for field, blob in located.items():
        assert isinstance(blob, BlobRef)
        found = _describe(field, blob, store)
        if isinstance(found, func.HttpResponse):
            return found
        described[field] = found
    dataset, validation = described["dataset"], described.get("validation")

    real_id = instance_id(dataset, validation, body.overrides)
    run_id = instance_id(dataset, validation, body.overrides, dry_run=True) if body.dry_run else real_id
    request = RunRequest(
        dataset=dataset,
        validation=validation,
        config=config,
        source="http",
        dry_run=body.dry_run,
        real_run_id=real_id if body.dry_run else None,
        overrides=body.overrides,
    )
    try:
        outcome = await start_once(client, run_id, request)
    except Exception:  # the task hub did not answer or refused the start
        log.exception("starting run %s failed", run_id)
        return unavailable("could not start the run", "the durable task hub did not accept it; try again")
    if outcome.started and body.dry_run:
        # Validation + preflight take seconds: answer with the plan when it is ready in time.
        try:
            return await client.wait_for_completion_or_create_check_status_response(
                req, run_id, timeout_in_milliseconds=DRY_RUN_WAIT_MS, retry_interval_in_milliseconds=250
            )
        except Exception:  # the run started; its status links still answer
            log.exception("waiting for dry run %s failed; answering with its status links", run_id)
            return client.create_check_status_response(req, run_id)
    if outcome.started:
        return client.create_check_status_response(req, run_id)
    links = client.get_client_response_links(req, run_id)
    return json_answer(
        409,
        {
            "error": "a run for this dataset version already exists",
            "id": run_id,
            "runtimeStatus": outcome.existing_status,
            **links,
        },
        headers={"Location": links["statusQueryGetUri"]},
    )


@bp.route(route="runs/{instance_id}/cancel", methods=DECLARED_METHODS, auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def cancel_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Ask a run to stop: its job is canceled, a new deployment without traffic deleted, live
    traffic left as it was. 404 for an unknown run, 409 for one that already ended."""
    if (refused := method_not_allowed(req, "/api/runs/{id}/cancel")) is not None:
        return refused
    run_id = req.route_params.get("instance_id", "")
    if (refused := bad_run_id(run_id)) is not None:
        return refused
    body = _parse(CancelBody, req.get_body() or b"{}")
    if isinstance(body, func.HttpResponse):
        return body
    status = await read_run(client, run_id)
    if isinstance(status, func.HttpResponse):
        return status
    runtime = status.runtime_status.value
    links = client.get_client_response_links(req, run_id)
    if runtime in TERMINAL:
        return json_answer(409, {"error": f"the run already ended ({runtime})", "id": run_id, **links})
    try:
        await client.raise_event(run_id, CANCEL_EVENT, {"reason": body.reason})
    except Exception:  # it ended between our look and the event (410)
        try:
            ended = await client.get_status(run_id)
            final = ended.runtime_status.value if ended.runtime_status is not None else "gone"
        except Exception:
            log.exception("reading the status of %s failed", run_id)
            return unavailable("could not cancel the run", "the durable task hub did not answer; try again")
        return json_answer(409, {"error": f"the run already ended ({final})", "id": run_id, **links})
    return json_answer(
        202, {"id": run_id, "message": "cancel requested", **links}, {"Location": links["statusQueryGetUri"]}
    )
