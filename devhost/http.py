"""HTTP surface of the dev host (aiohttp, 127.0.0.1):

- the durable management API the Functions host serves, at the public webhook paths users curl
  (`/runtime/webhooks/durabletask/instances/{id}`, `…/raiseEvent/{event}`, `…/terminate`, purge)
  and at the RPC base the SDK's DurableOrchestrationClient calls (`/durabletask/…`);
- the app's HTTP triggers at `/api/<route>`, invoked through their real user functions with an
  `azure.functions.HttpRequest` and the durable client binding JSON.

Auth levels are not enforced, as with `func start`: the host only listens on loopback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import azure.functions as func
from aiohttp import web

from devhost.engine import Conflict, Engine, Gone, NotFound
from devhost.functions import FunctionIndex

log = logging.getLogger("devhost.http")
WEBHOOK = "/runtime/webhooks/durabletask"
RPC = "/durabletask"


def client_binding(base_url: str, task_hub: str) -> str:
    """The `durableClient` binding JSON the host passes to starters (DESIGN §4)."""
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


async def _json_text(request: web.Request) -> str | None:
    """Request body as the JSON text to store: the SDK posts `json=<json string>`, curl a raw object."""
    raw = await request.text()
    if not raw.strip():
        return None
    value = json.loads(raw)
    return value if isinstance(value, str) else json.dumps(value)


def build_app(
    engine: Engine, index: FunctionIndex, binding_json: str, wake: Callable[[], None]
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2)

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
        functions = sorted(
            [*index.orchestrators, *index.activities, *(r.function.name for r in index.http),
             *(f.name for f in index.blob), *(f.name for f in index.timers)]
        )  # fmt: skip
        return web.json_response({"state": "Running", "functions": functions})

    async def http_trigger(request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"].strip("/")
        found = index.route(request.method, path)
        if found is None:
            return web.json_response({"error": f"no function for {request.method} /api/{path}"}, status=404)
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
        app.router.add_get(f"{base}/instances/{{id}}", status)
        app.router.add_delete(f"{base}/instances/{{id}}", purge)
        app.router.add_post(f"{base}/instances/{{id}}/raiseEvent/{{event}}", raise_event)
        app.router.add_post(f"{base}/instances/{{id}}/terminate", terminate)
    app.router.add_get("/admin/host/status", host_status)
    app.router.add_route("*", "/api/{tail:.*}", http_trigger)
    return app


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex
