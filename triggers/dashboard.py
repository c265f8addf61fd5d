"""The runs dashboard, served by the app itself (the same on Azure and in the dev host).

- `GET /api/dashboard` and `GET /api/dashboard/static/{name}`: the page (HTML, JS, CSS; no data,
  no build step). Anonymous: it holds nothing but code, and says how to open it with a key.
- `GET /api/dashboard/api/runs?state=&page=&per_page=&days=`: the runs list, newest first.
- `GET /api/dashboard/api/runs/{id}`: one run (timeline, validation, plan, evaluation, links).
- `GET /api/dashboard/api/runs/{id}/loss`: the job's loss history, live while it trains.
- `GET /api/dashboard/api/runs/{id}/report/{name}`: a file of the run report (summary.json,
  loss.png, report.md), read from storage by the app.

The API routes are auth level function, like the rest of the API: on Azure the page sends the
function key it was opened with (`?code=…`) as `x-functions-key`. Answers hold what the durable
status holds, scrubbed again (`dashboard.views.clean`): no key, SAS or connection string. Actions
(cancel, retrain, dry run) use the existing `POST /api/runs` and `POST /api/runs/{id}/cancel`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func

from backends.base import BlobStoreError
from backends.registry import current
from core.contracts import ORCHESTRATOR
from core.models import BlobRef
from core.redact import scrub
from core.report import REPORT_FILES
from core.settings import get_settings
from dashboard import views
from dashboard.instances import ListingFailed, list_instances
from triggers.answers import (
    DECLARED_METHODS,
    bad_run_id,
    json_answer,
    method_not_allowed,
    read_run,
    refuse,
    unavailable,
)

bp = df.Blueprint()
log = logging.getLogger("triggers.dashboard")

STATIC = Path(__file__).resolve().parents[1] / "dashboard" / "static"
ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
REPORT_TYPES = {"summary.json": "application/json", "loss.png": "image/png", "report.md": "text/markdown"}
assert set(REPORT_TYPES) == set(REPORT_FILES)
MAX_REPORT_BYTES = 8 * 1024 * 1024
DEFAULT_DAYS = 30  # the list covers runs started in the last this many days (`days`, 1–365)
READ = ("GET", "HEAD")
NO_STORE = {"Cache-Control": "no-store"}


def static_file(name: str) -> func.HttpResponse:
    if name not in ASSETS:
        return refuse(404, "no such file", "name", f"the dashboard has no file {name[:40]!r}")
    body = (STATIC / name).read_bytes()
    headers = {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        # The page runs only its own script and style, calls only this app, and cannot be framed.
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "Referrer-Policy": "no-referrer",
    }
    return func.HttpResponse(body, status_code=200, mimetype=ASSETS[name], charset="utf-8", headers=headers)


@bp.route(route="dashboard", methods=DECLARED_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
def dashboard_page(req: func.HttpRequest) -> func.HttpResponse:
    if (refused := method_not_allowed(req, "/api/dashboard", READ)) is not None:
        return refused
    path = urlsplit(req.url).path
    if path.endswith("/"):  # the page's relative links need its URL without the slash
        return func.HttpResponse(status_code=308, headers={"Location": path.rstrip("/")})
    return static_file("index.html")


@bp.route(route="dashboard/static/{name}", methods=DECLARED_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
def dashboard_static(req: func.HttpRequest) -> func.HttpResponse:
    if (refused := method_not_allowed(req, "/api/dashboard/static/{name}", READ)) is not None:
        return refused
    return static_file(req.route_params.get("name", ""))


def _int_param(
    req: func.HttpRequest, name: str, default: int, low: int, high: int
) -> int | func.HttpResponse:
    raw = req.params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not low <= int(raw) <= high:
        return refuse(400, "invalid query", name, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


@bp.route(route="dashboard/api/runs", methods=DECLARED_METHODS, auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
async def dashboard_runs(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The runs list: `state` (one of `views.STATES`), `page` (1…), `per_page` (1–100, default
    25), `days` (how far back, default 30)."""
    if (refused := method_not_allowed(req, "/api/dashboard/api/runs", READ)) is not None:
        return refused
    state = req.params.get("state") or None
    if state is not None and state not in views.STATES:
        return refuse(400, "invalid query", "state", f"state must be one of: {', '.join(views.STATES)}")
    numbers: list[int] = []
    for name, default, high in (
        ("page", 1, 10_000),
        ("per_page", 25, views.MAX_PER_PAGE),
        ("days", DEFAULT_DAYS, 365),
    ):
        value = _int_param(req, name, default, 1, high)
        if isinstance(value, func.HttpResponse):
            return value
        numbers.append(value)
    page, per_page, days = numbers
    now = datetime.now(UTC)
    try:
        listing = await list_instances(client, created_from=now - timedelta(days=days))
    except ListingFailed as exc:
        log.warning("listing runs failed: %s", exc)
        return unavailable("could not list the runs", f"{exc}; try again")
    body = views.runs_page(
        listing.instances,
        orchestrator=ORCHESTRATOR,
        now=now,
        state=state,
        page=page,
        per_page=per_page,
        truncated=listing.truncated,
    )
    return json_answer(200, body, NO_STORE)


async def _run_status(req: func.HttpRequest, client: df.DurableOrchestrationClient, path: str) -> Any:
    if (refused := method_not_allowed(req, path, READ)) is not None:
        return refused
    run_id = req.route_params.get("instance_id", "")
    if (refused := bad_run_id(run_id)) is not None:
        return refused
    status = await read_run(client, run_id, show_input=True, orchestrator=ORCHESTRATOR)
    if isinstance(status, func.HttpResponse):
        return status
    return dict(status.to_json())  # the HTTP API's JSON, as the listing gives it


def _workspace_id() -> str | None:
    settings = get_settings()
    if settings.BACKEND != "azureml":
        return None
    return views.workspace_id(
        settings.AZURE_SUBSCRIPTION_ID, settings.AZURE_RESOURCE_GROUP, settings.AZUREML_WORKSPACE
    )


@bp.route(
    route="dashboard/api/runs/{instance_id}", methods=DECLARED_METHODS, auth_level=func.AuthLevel.FUNCTION
)
@bp.durable_client_input(client_name="client")
async def dashboard_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance = await _run_status(req, client, "/api/dashboard/api/runs/{id}")
    if isinstance(instance, func.HttpResponse):
        return instance
    try:
        workspace = _workspace_id()
    except Exception:  # settings that do not validate: the page still shows the run
        log.exception("the app's settings could not be loaded")
        workspace = None
    return json_answer(200, views.run_detail(instance, datetime.now(UTC), workspace_id=workspace), NO_STORE)


@bp.route(
    route="dashboard/api/runs/{instance_id}/loss",
    methods=DECLARED_METHODS,
    auth_level=func.AuthLevel.FUNCTION,
)
@bp.durable_client_input(client_name="client")
async def dashboard_run_loss(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """The job's `train` and `validation` loss per step (empty before the job logs anything), and
    its state and latest metrics as the training backend reports them now (`state` None if it
    could not be read)."""
    instance = await _run_status(req, client, "/api/dashboard/api/runs/{id}/loss")
    if isinstance(instance, func.HttpResponse):
        return instance
    job = views.job_of(instance)
    if not job:
        return json_answer(
            200, {"job": None, "state": None, "metrics": {}, "train": [], "validation": []}, NO_STORE
        )
    training = current().training
    try:
        history = await asyncio.to_thread(training.loss_history, job)
    except Exception as exc:
        log.warning("loss history of %s unavailable: %s", job, scrub(str(exc)))
        return unavailable("loss history unavailable", "the training backend did not answer; try again")
    # The job as it is now: with job events on, the run reads it only when it ends.
    try:
        info = await asyncio.to_thread(training.get_job, job)
        state, metrics = info.raw_status, info.metrics
    except Exception as exc:
        log.warning("job %s could not be read: %s", job, scrub(str(exc)))
        state, metrics = None, {}
    body = {"job": job, "state": state, "metrics": metrics, **history.model_dump(mode="json")}
    return json_answer(200, views.clean(body), NO_STORE)


@bp.route(
    route="dashboard/api/runs/{instance_id}/report/{name}",
    methods=DECLARED_METHODS,
    auth_level=func.AuthLevel.FUNCTION,
)
@bp.durable_client_input(client_name="client")
async def dashboard_run_report(
    req: func.HttpRequest, client: df.DurableOrchestrationClient
) -> func.HttpResponse:
    """One file of the run's report, as written by the run (404 until the run wrote it)."""
    name = req.route_params.get("name", "")
    instance = await _run_status(req, client, "/api/dashboard/api/runs/{id}/report/{name}")
    if isinstance(instance, func.HttpResponse):
        return instance
    if name not in REPORT_TYPES:
        return refuse(404, "no such report file", "name", f"a run report has {', '.join(REPORT_FILES)}")
    folder = views.report_of(instance)
    if not folder:
        return refuse(404, "no report", "instance_id", "this run has no report (yet)")
    container, _, prefix = str(folder).partition("/")
    blob = BlobRef(container=container, name=prefix + name)
    try:
        body = await asyncio.to_thread(_read_capped, blob)
    except FileNotFoundError:
        return refuse(404, "no such report file", "name", f"the report has no {name}")
    except (BlobStoreError, OSError) as exc:
        log.warning("reading %s failed: %s", blob.path, type(exc).__name__)
        return unavailable("could not read the report", "the datasets storage did not answer; try again")
    if name == "summary.json":  # scrubbed like every other answer, value by value (stays JSON)
        try:
            body = json.dumps(views.clean(json.loads(body)), ensure_ascii=False, allow_nan=False).encode(
                "utf-8"
            )
        except ValueError:
            return unavailable("could not read the report", "its summary.json is not JSON")
    elif name == "report.md":
        body = views.clean(body.decode("utf-8", errors="replace")).encode("utf-8")
    # The files hold dataset text: never sniffed as HTML, never run as a page.
    headers = NO_STORE | {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
    }
    return func.HttpResponse(body, status_code=200, mimetype=REPORT_TYPES[name], headers=headers)


def _read_capped(blob: BlobRef) -> bytes:
    out = bytearray()
    for chunk in current().datasets.open_stream(blob):
        out += chunk
        if len(out) > MAX_REPORT_BYTES:
            raise OSError(f"{blob.path} is larger than {MAX_REPORT_BYTES} bytes")
    return bytes(out)
