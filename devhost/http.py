"""HTTP surface of the dev host (aiohttp, 127.0.0.1):

- the durable management API the Functions host serves, at the public webhook paths users curl
  (`/runtime/webhooks/durabletask/instances/{id}`, `…/raiseEvent/{event}`, `…/terminate`, purge,
  and the list of instances `…/instances`) and at the RPC base the SDK's
  DurableOrchestrationClient calls (`/durabletask/…`);
- the app's HTTP triggers at `/api/<route>`, invoked through their real user functions with an
  `azure.functions.HttpRequest` and the durable client binding JSON;
- the Event Grid webhook (`/runtime/webhooks/eventgrid?functionName=<name>`) that delivers events
  to the app's Event Grid triggers (`devhost/eventgrid.py`).

Auth levels are not enforced, as with `func start`: the host only listens on loopback.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import azure.functions as func
from aiohttp import web

from devhost import eventgrid
from devhost.engine import (
    CONTINUATION_HEADER,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    RUNTIME_STATUSES,
    BadQuery,
    Conflict,
    Engine,
    Gone,
    InstanceQuery,
    NotFound,
)
from devhost.functions import FunctionIndex

log = logging.getLogger("devhost.http")
WEBHOOK = "/runtime/webhooks/durabletask"
RPC = "/durabletask"


def client_binding(base_url: str, task_hub: str) -> str:
    """The `durableClient` binding JSON the host passes to starters."""
    hook = f"{base_url}{WEBHOOK}"
    q = f"taskHub={task_hub}&connection=Storage"
    instance = f"{hook}/instances/INSTANCEID"
    return json.dumps(
        {
            "taskHubName": task_hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{hook}/orchestrators/{{functionName}}[/{{instanceId}}]?{q}",
                "createAndWaitOnNewInstancePostUri": (
                    f"{hook}/orchestrators/{{functionName}}[/{{instanceId}}]?timeout={{timeoutInSeconds}}"
                    f"&pollingInterval={{intervalInSeconds}}&{q}"
                ),
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{instance}?{q}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{q}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{q}",
                "purgeHistoryDeleteUri": f"{instance}?{q}",
                "rewindPostUri": f"{instance}/rewind?reason={{text}}&{q}",
                "restartPostUri": f"{instance}/restart?{q}",
                "suspendPostUri": f"{instance}/suspend?reason={{text}}&{q}",
                "resumePostUri": f"{instance}/resume?reason={{text}}&{q}",
            },
            "baseUrl": hook,
            "requiredQueryStringParameters": q,
            "rpcBaseUrl": f"{base_url}{RPC}/",
            "httpBaseUrl": "",
        }
    )


def management_payload(binding_json: str, instance_id: str) -> dict[str, str]:
    urls = json.loads(binding_json)["managementUrls"]
    return {k: v.replace("INSTANCEID", quote(instance_id, safe="")) for k, v in urls.items()}


STATUS_CODES = {"Completed": 200, "Pending": 202, "Running": 202, "Failed": 400, "Terminated": 400}


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() == "true"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _single(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once; None if absent or empty (as the extension reads them)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadQuery(name, f"{name} is given {len(values)} times; give it once")
    return values[0] if values and values[0].strip() else None


# aiohttp decodes an unescaped `+` in a query string as a space: `…T10:00:00+02:00` arrives as
# `…T10:00:00 02:00`. Put the sign of the UTC offset back.
_OFFSET_AS_SPACE = re.compile(r"(T[0-9:.,]+) ([0-9]{2}(?::?[0-9]{2})?)$")


def _created_bound(request: web.Request, name: str) -> datetime | None:
    text = _single(request, name)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(_OFFSET_AS_SPACE.sub(r"\1+\2", text.strip()))
    except ValueError:
        detail = f"{name} must be an ISO 8601 timestamp such as 2024-05-01T12:00:00Z, not {_shown(text)}"
        raise BadQuery(name, detail) from None


def _page_size(request: web.Request) -> int:
    text = _single(request, "top")
    if text is None:
        return DEFAULT_PAGE_SIZE
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,10}", text) or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise BadQuery("top", f"top must be a whole number from 1 to {MAX_PAGE_SIZE}, not {_shown(text)}")
    return int(text)


_STATUS_NAMES = {name.lower(): name for name in RUNTIME_STATUSES}


def _runtime_statuses(request: web.Request) -> tuple[str, ...]:
    """`runtimeStatus=Running,completed`: any of these (case-insensitive); empty items are ignored."""
    names = [n.strip() for v in request.query.getall("runtimeStatus", []) for n in v.split(",")]
    statuses: dict[str, None] = {}
    for name in filter(None, names):
        known = _STATUS_NAMES.get(name.lower())
        if known is None:
            detail = f"unknown runtime status {_shown(name)}; use any of {', '.join(RUNTIME_STATUSES)}"
            raise BadQuery("runtimeStatus", detail)
        statuses[known] = None
    return tuple(statuses)


def _continuation(request: web.Request) -> str | None:
    values = request.headers.getall(CONTINUATION_HEADER, [])
    if len(values) > 1:
        raise BadQuery(CONTINUATION_HEADER, f"the {CONTINUATION_HEADER} header is given more than once")
    token = values[0].strip() if values else ""
    return token or None  # an empty header: the first page


class BadBody(ValueError):
    """A management request body that is not JSON: answered 400 (never an opaque 500)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_EMPTY = object()  # `_json_value`: an empty body is an error
_EMPTY_BODY = object()  # `_json_text`: an empty body is no input


async def _json_value(request: web.Request, empty: Any = _EMPTY) -> Any:
    """The body as a JSON value; `empty` for an empty body (BadBody if no `empty` is given), and
    BadBody if it is not UTF-8 JSON."""
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("the body is not UTF-8") from None
    if not text.strip():
        if empty is _EMPTY:
            raise BadBody("the body is empty")
        return empty
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadBody(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # NaN / Infinity, absurd nesting
        raise BadBody(f"the body is not JSON: {str(exc)[:80] or type(exc).__name__}") from None


async def _json_text(request: web.Request) -> str | None:
    """Request body as the JSON text to store: the SDK posts `json=<json string>`, curl a raw value.

    A body that is not UTF-8 JSON raises BadBody. A JSON string is kept as the JSON text the SDK
    meant when it parses as JSON, and otherwise stored as that string (so the orchestration
    always receives valid JSON)."""
    value = await _json_value(request, empty=_EMPTY_BODY)
    if value is _EMPTY_BODY:
        return None
    if isinstance(value, str):
        try:
            json.loads(value, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return json.dumps(value)
        return value
    return json.dumps(value)


def _error(
    status: int, message: str, field: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The app's error shape: {"error", "details": [{"field", "message"}]}."""
    body = {"error": message, "details": [{"field": field, "message": detail}]}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def _answer_errors(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    """Malformed bodies are 400; a bug in the host is a JSON 500 that says where to look."""
    try:
        return await handler(request)
    except BadBody as exc:
        return _error(400, "invalid request body", "(body)", str(exc))
    except web.HTTPMethodNotAllowed as exc:  # a management route with another method
        allowed = ", ".join(sorted(exc.allowed_methods))
        detail = f"{request.method} is not allowed here; use {allowed}"
        return _error(405, "method not allowed", "(method)", detail, {"Allow": allowed})
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "the dev host failed", "(host)", "an error in the dev host; see its log")


def build_app(
    engine: Engine,
    index: FunctionIndex,
    binding_json: str,
    wake: Callable[[], None],
    deliveries: eventgrid.Deliveries | None = None,
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2, middlewares=[_answer_errors])
    delivered = deliveries if deliveries is not None else eventgrid.Deliveries()

    async def start(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        instance_id = request.match_info.get("id") or _new_id()
        try:
            engine.start(name, instance_id, await _json_text(request))
        except KeyError as exc:
            return web.json_response({"ExceptionMessage": str(exc)}, status=400)
        except Conflict as exc:
            return web.json_response(str(exc), status=409)
        wake()
        payload = management_payload(binding_json, instance_id)
        return web.json_response(payload, status=202, headers={"Location": payload["statusQueryGetUri"]})

    async def status(request: web.Request) -> web.Response:
        try:
            body = engine.status(
                request.match_info["id"],
                show_history=_flag(request, "showHistory", False),
                show_input=_flag(request, "showInput", True),
            )
        except NotFound:
            return web.json_response("", status=404)
        return web.json_response(body, status=STATUS_CODES.get(body["runtimeStatus"], 202))

    async def list_instances(request: web.Request) -> web.Response:
        """Get all instances status: the filters, `showInput` (default true, as in the extension),
        `top` (default 100) and the `x-ms-continuation-token` header of the previous page; the
        next page's token comes back in that response header (none on the last page). Other query
        parameters (`taskHub`, `connection`, `code`, …) are ignored."""
        try:
            query = InstanceQuery(
                created_from=_created_bound(request, "createdTimeFrom"),
                created_to=_created_bound(request, "createdTimeTo"),
                runtime_status=_runtime_statuses(request),
                instance_id_prefix=_single(request, "instanceIdPrefix") or "",
            )
            page = engine.list_instances(
                query,
                show_input=_flag(request, "showInput", True),
                top=_page_size(request),
                continuation=_continuation(request),
            )
        except BadQuery as exc:
            return _error(400, "invalid instance query", exc.field, str(exc))
        headers = {CONTINUATION_HEADER: page.continuation} if page.continuation else None
        return web.json_response(page.instances, headers=headers)

    def _signal(request: web.Request, operation: Callable[[], None]) -> web.Response:
        """Run an operation on a live instance: 202, or 404 unknown / 410 already finished."""
        try:
            operation()
        except NotFound:
            return web.json_response(f"No instance with ID '{request.match_info['id']}' found.", status=404)
        except Gone:
            return web.json_response("instance already completed", status=410)
        wake()
        return web.Response(status=202)

    async def raise_event(request: web.Request) -> web.Response:
        data = await _json_text(request)
        info = request.match_info
        return _signal(request, lambda: engine.raise_event(info["id"], info["event"], data))

    async def terminate(request: web.Request) -> web.Response:
        reason = request.query.get("reason", "")
        return _signal(request, lambda: engine.terminate(request.match_info["id"], reason))

    async def purge(request: web.Request) -> web.Response:
        deleted = engine.purge(request.match_info["id"])
        return web.json_response({"instancesDeleted": deleted}, status=200 if deleted else 404)

    async def host_status(request: web.Request) -> web.Response:
        body = {
            "state": "Running",
            "functions": index.names,
            "eventGrid": delivered.as_json(sorted(index.event_grid)),
        }
        return web.json_response(body)

    async def event_grid(request: web.Request) -> web.Response:
        name = request.query.get("functionName", "")
        if not name:
            detail = "the functionName query parameter names the Event Grid triggered function"
            return _error(400, "invalid event grid delivery", "functionName", detail)
        fn = index.event_grid.get(name)
        if fn is None:
            shown = name if len(name) <= 80 else name[:80] + "…"
            known = ", ".join(sorted(index.event_grid)) or "none"
            detail = f"no Event Grid triggered function named {shown!r} (there are: {known})"
            return _error(404, "no such function", "functionName", detail)
        kind = request.headers.get(eventgrid.EVENT_TYPE_HEADER, "")
        if kind not in ("SubscriptionValidation", "Notification", "Unsubscribe"):
            detail = (
                f"the {eventgrid.EVENT_TYPE_HEADER} header must be SubscriptionValidation, Notification"
                f" or Unsubscribe, not {kind[:40]!r}"
            )
            return _error(400, "invalid event grid delivery", eventgrid.EVENT_TYPE_HEADER, detail)
        if kind == "Unsubscribe":
            return web.Response(status=202)
        body = await _json_value(request)
        try:
            if kind == "SubscriptionValidation":
                code = eventgrid.validation_code(body)
                log.info("event grid subscription validated for %s", name)
                return web.json_response({"validationResponse": code})
            events = eventgrid.parse_events(body)
        except eventgrid.BadEvents as exc:
            return _error(400, "invalid event grid delivery", exc.field, str(exc))
        try:
            failed = await eventgrid.deliver(fn, events, binding_json, delivered)
        finally:
            wake()
        if failed:
            detail = f"{failed} of {len(events)} invocations of {name} failed; see the host log"
            return _error(500, "function failed", "(function)", detail)
        return web.Response(status=202)

    async def http_trigger(request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"].strip("/")
        shown = path if len(path) <= 80 else path[:80] + "…"  # never echo an absurd URL whole
        found = index.route(request.method, path)
        if found is None:
            # A known route with another method: 405 + Allow. (On Azure the Functions host answers
            # 404 for a method a function does not declare; the app's own routes declare every
            # method and answer 405 themselves, so both hosts agree for them.)
            allowed = sorted({m for r in index.http if r.pattern.fullmatch(path) for m in r.methods})
            if allowed:
                detail = f"{request.method} is not allowed on /api/{shown}; use {', '.join(allowed)}"
                return _error(405, "method not allowed", "(method)", detail, {"Allow": ", ".join(allowed)})
            return _error(404, "no such route", "(path)", f"no function for {request.method} /api/{shown}")
        route, params = found
        trigger = route.function.binding("httpTrigger")
        assert trigger is not None
        req = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=dict(request.headers),
            params=dict(request.query),
            route_params=params,
            body=await request.read(),
        )
        kwargs: dict[str, Any] = {trigger["name"]: req}
        if route.function.client_param:
            kwargs[route.function.client_param] = binding_json
        try:
            resp = await route.function.acall(**kwargs)
        except Exception:
            log.exception("function %s failed", route.function.name)
            return web.json_response(
                {"error": f"function {route.function.name} failed; see the host log"}, status=500
            )
        finally:
            wake()
        if not isinstance(resp, func.HttpResponse):
            return web.Response(status=204 if resp is None else 200, text=None if resp is None else str(resp))
        headers = {k: v for k, v in resp.headers.items() if k.lower() != "content-length"}
        if resp.mimetype and "content-type" not in {k.lower() for k in headers}:
            headers["Content-Type"] = resp.mimetype + (f"; charset={resp.charset}" if resp.charset else "")
        return web.Response(status=resp.status_code, body=resp.get_body(), headers=headers)

    for base in (WEBHOOK, RPC):
        app.router.add_post(f"{base}/orchestrators/{{name}}", start)
        app.router.add_post(f"{base}/orchestrators/{{name}}/{{id}}", start)
        app.router.add_get(f"{base}/instances", list_instances)
        app.router.add_get(f"{base}/instances/", list_instances)  # the SDK's URL (RpcManagementOptions)
        app.router.add_get(f"{base}/instances/{{id}}", status)
        app.router.add_delete(f"{base}/instances/{{id}}", purge)
        app.router.add_post(f"{base}/instances/{{id}}/raiseEvent/{{event}}", raise_event)
        app.router.add_post(f"{base}/instances/{{id}}/terminate", terminate)
    app.router.add_get("/admin/host/status", host_status)
    app.router.add_post(eventgrid.PATH, event_grid)
    app.router.add_route("*", "/api/{tail:.*}", http_trigger)
    return app


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex
