"""The emulator's HTTPS surface (aiohttp on 127.0.0.1): the ARM envelope and the routes.

Every ARM route checks the bearer token (one this server's managed-identity route issued), runs
injected faults first, validates the request body against the official OpenAPI definitions of the
api-version the request names (`openapi.RequestValidator`; a body the service would reject gets
the service's 400) and then asks the `World`. Long-running PUT/DELETE answer 201/202 with
`Azure-AsyncOperation` (and `Location` for deletes) pointing at an operation-status route. Their
`Retry-After: 0` is read by azure-core as "not given" (it then waits its own 30 s): the pollers the
SDK starts for creates and deletes, which the app never waits on, stay quiet for a test's length,
and a test moves the resource along by reading it. Endpoint updates (traffic, tags), which the app
does wait on, complete in the PUT.

`EmulatorServer` runs the app on its own thread and event loop, for tests and the dev host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web

from azureml_emulator.openapi import RequestValidator
from azureml_emulator.tls import Tls, make_tls
from azureml_emulator.tunnel import start_tunnel
from azureml_emulator.world import Json, ServiceError, World

log = logging.getLogger("azureml_emulator")

PROVIDER = "providers/Microsoft.MachineLearningServices"
SUB_RG = "/subscriptions/{sub}/resourceGroups/{rg}"
WS = f"{SUB_RG}/{PROVIDER}/workspaces/{{ws}}"
REGION = f"/subscriptions/{{sub}}/{PROVIDER}/locations/{{loc}}"
REGISTRY = f"/mferp/managementfrontend{SUB_RG}/{PROVIDER}/registries/{{reg}}"
MLFLOW = f"/mlflow/v2.0{WS}/api/2.0/mlflow"
HISTORY = f"/history/v1.0{WS}"
# The registry the SDK's discovery call names lives in Microsoft's own subscription.
REGISTRY_SUBSCRIPTION = "6c6683e9-e5fe-4038-8519-ce6ebec2ba15"
REGISTRY_RESOURCE_GROUP = "registry-builtin-prod-eastus-01"
IDENTITY_HEADER = "X-IDENTITY-HEADER"
TOKEN_LIFETIME_S = 3600
MANAGED_IDENTITY_CLIENT_ID = "33333333-3333-3333-3333-333333333333"
MANAGED_IDENTITY_OBJECT_ID = "44444444-4444-4444-4444-444444444444"

Handler = Callable[[web.Request, Json | None], Awaitable[web.StreamResponse]]


def arm_error(error: ServiceError) -> web.Response:
    headers = {"x-ms-error-code": error.code}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    body = {"error": {"code": error.code, "message": error.message, "details": [], "additionalInfo": []}}
    return web.json_response(body, status=error.status, headers=headers)


class ArmRouter(web.UrlDispatcher):
    """ARM matches path segments case-insensitively (promptflow, for one, sends `resourcegroups`):
    a path no route matches is retried with its known segments spelled as the routes spell them."""

    def __init__(self) -> None:
        super().__init__()
        self._spelling: dict[str, str] = {}

    def learn(self, template: str) -> None:
        for segment in template.split("/"):
            if segment and "{" not in segment:
                self._spelling.setdefault(segment.lower(), segment)

    async def resolve(self, request: web.Request) -> Any:
        found = await super().resolve(request)
        if found.http_exception is None:
            return found
        path = request.rel_url.path
        canonical = "/".join(self._spelling.get(s.lower(), s) for s in path.split("/"))
        if canonical == path:
            return found
        return await super().resolve(request.clone(rel_url=request.rel_url.with_path(canonical)))


class Emulator:
    """The aiohttp application over a `World`."""

    def __init__(self, world: World, *, validator: RequestValidator | None = None) -> None:
        self.world = world
        self.validator = validator if validator is not None else RequestValidator.load()
        self.identity_header = secrets.token_urlsafe(16)
        self.tokens: set[str] = set()
        self._signing_key = secrets.token_bytes(32)
        self.validation_errors: list[str] = []
        self.router = ArmRouter()
        self.app = web.Application(
            client_max_size=8 * 1024 * 1024, middlewares=[self._envelope], router=self.router
        )
        self._routes()

    @property
    def base_url(self) -> str:
        return self.world.base_url

    # ------------------------------------------------------------------ envelope

    @web.middleware
    async def _envelope(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.world.requests.append((request.method, request.path_qs))
        route = request.match_info.route
        validate = getattr(route, "_emulator_validate", False) if route is not None else False
        needs_token = getattr(route, "_emulator_auth", False) if route is not None else False
        if needs_token:
            problem = self._token_problem(request.headers.get("Authorization", ""))
            if problem is not None:
                return arm_error(
                    ServiceError(401, "AuthenticationFailed", f"Authentication failed: {problem}.")
                )
        fault = self.world.take_fault(request.method, request.path)
        if fault is not None:
            return arm_error(
                ServiceError(fault.status, fault.code, fault.message, retry_after=fault.retry_after)
            )
        body: Json | None = None
        if request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    return arm_error(
                        ServiceError(400, "InvalidRequestContent", "The request body is not JSON.")
                    )
        if validate:
            api_version = request.query.get("api-version", "")
            problems = self.validator.validate(request.method, request.path, api_version, body)
            if problems:
                self.validation_errors.extend(
                    f"{request.method} {request.path} {api_version}: {p}" for p in problems
                )
                message = "The request is invalid: " + "; ".join(problems[:5])
                return arm_error(ServiceError(400, "UserError", message))
        request["json"] = body
        try:
            response: web.StreamResponse = await handler(request)
        except ServiceError as e:
            return arm_error(e)
        api_version = request.query.get("api-version", "")
        if validate and not self.validator.declared_status(
            request.method, request.path, api_version, response.status
        ):
            problem = f"{request.method} {request.path} {api_version}: answered {response.status}, undeclared"
            self.validation_errors.append(problem)
            return arm_error(ServiceError(500, "EmulatorSpecViolation", problem))
        return response

    def _token_problem(self, authorization: str) -> str | None:
        """Why a bearer token is not accepted (None: it is): it must be a JWT this server issued,
        unexpired, for this cloud's resource manager (the ARM audience: management.azure.com on
        AzureCloud), as ARM and the workspace's data plane (MLflow, run history) require."""
        if not authorization.startswith("Bearer "):
            return "no bearer token"
        try:
            claims = jwt.decode(
                authorization[7:], self._signing_key, algorithms=["HS256"], options={"verify_aud": False}
            )
        except jwt.ExpiredSignatureError:
            return "the token has expired"
        except jwt.InvalidTokenError:
            return "not a token this cloud issued"
        audience = str(claims.get("aud", "")).rstrip("/")
        if audience != self.base_url:
            return f"the token's audience {audience!r} is not this cloud's resource manager {self.base_url!r}"
        return None

    def _add(
        self,
        method: str,
        path: str,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        *,
        validate: bool = False,
        auth: bool = True,
    ) -> None:
        route = self.app.router.add_route(method, path, handler)
        self.router.learn(path)
        route._emulator_validate = validate  # type: ignore[attr-defined]
        route._emulator_auth = auth  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ routes

    def _routes(self) -> None:
        add = self._add
        add("GET", "/metadata/endpoints", self.cloud_metadata, auth=False)
        add("GET", "/msi/token", self.msi_token, auth=False)
        add("GET", "/registrymanagement/v1.0/registries/{reg}/discovery", self.registry_discovery)
        add("GET", "/discovery", self.workspace_discovery, auth=False)
        add("GET", WS, self.get_workspace, validate=True)
        add("GET", f"{WS}/jobs/{{name}}", self.get_job, validate=True)
        add("PUT", f"{WS}/jobs/{{name}}", self.put_job, validate=True)
        add("POST", f"{WS}/jobs/{{name}}/cancel", self.cancel_job, validate=True)
        add("GET", f"{WS}/models", self.list_model_containers, validate=True)
        add("GET", f"{WS}/models/{{name}}", self.get_model_container, validate=True)
        add("GET", f"{WS}/models/{{name}}/versions", self.list_model_versions, validate=True)
        add("GET", f"{WS}/models/{{name}}/versions/{{version}}", self.get_model_version, validate=True)
        add("PUT", f"{WS}/models/{{name}}/versions/{{version}}", self.put_model_version, validate=True)
        add("GET", f"{REGISTRY}/models/{{name}}/versions", self.list_registry_versions)
        add("GET", f"{REGISTRY}/models/{{name}}/versions/{{version}}", self.get_registry_version)
        add("GET", f"{WS}/onlineEndpoints", self.list_endpoints, validate=True)
        add("GET", f"{WS}/onlineEndpoints/{{ep}}", self.get_endpoint, validate=True)
        add("PUT", f"{WS}/onlineEndpoints/{{ep}}", self.put_endpoint, validate=True)
        add("DELETE", f"{WS}/onlineEndpoints/{{ep}}", self.delete_endpoint, validate=True)
        add("POST", f"{WS}/onlineEndpoints/{{ep}}/listKeys", self.endpoint_keys, validate=True)
        add("GET", f"{WS}/onlineEndpoints/{{ep}}/deployments", self.list_deployments, validate=True)
        add("GET", f"{WS}/onlineEndpoints/{{ep}}/deployments/{{dep}}", self.get_deployment, validate=True)
        add("PUT", f"{WS}/onlineEndpoints/{{ep}}/deployments/{{dep}}", self.put_deployment, validate=True)
        add(
            "DELETE",
            f"{WS}/onlineEndpoints/{{ep}}/deployments/{{dep}}",
            self.delete_deployment,
            validate=True,
        )
        add("GET", f"{WS}/connections/{{name}}", self.get_connection, validate=True)
        add("PUT", f"{WS}/connections/{{name}}", self.put_connection, validate=True)
        add("DELETE", f"{WS}/connections/{{name}}", self.delete_connection, validate=True)
        add(
            "POST",
            f"{WS}/connections/{{name}}/listsecrets",
            self.list_connection_secrets,
            validate=True,
        )
        add("GET", f"{REGION}/usages", self.usages, validate=True)
        add("GET", f"{REGION}/vmSizes", self.vm_sizes, validate=True)
        add("GET", f"{REGION}/mfeOperationsStatus/{{op}}", self.operation_status)
        add("GET", f"{REGION}/mfeOperationResults/{{op}}", self.operation_result)
        add("GET", f"{HISTORY}/runs/{{run}}/details", self.run_details)
        add("GET", f"{HISTORY}/experimentids/{{exp}}/runs/{{run}}/details", self.run_details)
        add("GET", f"{MLFLOW}/runs/get", self.mlflow_get_run)
        add("POST", f"{MLFLOW}/runs/search", self.mlflow_search_runs)
        add("GET", f"{MLFLOW}/metrics/get-history", self.mlflow_metric_history)
        add("GET", "/inference/{loc}/{ep}/", self.inference_probe, auth=False)
        add("POST", "/inference/{loc}/{ep}/score", self.score, auth=False)

    # ------------------------------------------------------------------ identity and discovery

    async def cloud_metadata(self, request: web.Request) -> web.Response:
        """ARM's cloud metadata (`ARM_CLOUD_METADATA_URL`), one cloud whose resource manager is us."""
        base = f"{self.base_url}/"
        return web.json_response(
            [
                {
                    "name": f"AzureMLEmulator{self.base_url.rsplit(':', 1)[-1]}",
                    "portal": "https://portal.emulator.localhost",
                    "resourceManager": base,
                    "authentication": {"loginEndpoint": base, "audiences": [base], "tenant": "common"},
                    "suffixes": {"storage": "core.windows.net"},
                }
            ]
        )

    async def msi_token(self, request: web.Request) -> web.Response:
        """App Service managed identity (IDENTITY_ENDPOINT/IDENTITY_HEADER, api-version 2019-08-01)."""
        if request.headers.get(IDENTITY_HEADER) != self.identity_header:
            return web.json_response({"error": "invalid identity header"}, status=401)
        now = int(time.time())
        claims = {
            "aud": request.query.get("resource", ""),
            "iss": f"https://sts.windows.net/{self.world.tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_S,
            "appid": MANAGED_IDENTITY_CLIENT_ID,
            "oid": MANAGED_IDENTITY_OBJECT_ID,
            "tid": self.world.tenant,
            "sub": MANAGED_IDENTITY_OBJECT_ID,
        }
        token = jwt.encode(claims, self._signing_key, algorithm="HS256")
        self.tokens.add(token)
        return web.json_response(
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + TOKEN_LIFETIME_S),
                "resource": request.query.get("resource", ""),
                "token_type": "Bearer",
                "client_id": MANAGED_IDENTITY_CLIENT_ID,
            }
        )

    async def registry_discovery(self, request: web.Request) -> web.Response:
        name = request.match_info["reg"]
        if name != "azureml":
            raise ServiceError(404, "ResourceNotFound", f"Registry {name} was not found.")
        return web.json_response(
            {
                "registryName": name,
                "tenantId": self.world.tenant,
                "primaryRegion": self.world.region,
                "regions": [self.world.region],
                "subscriptionId": REGISTRY_SUBSCRIPTION,
                "resourceGroup": REGISTRY_RESOURCE_GROUP,
                "primaryRegionResourceProviderUri": f"{self.base_url}/",
            }
        )

    async def workspace_discovery(self, request: web.Request) -> web.Response:
        base = self.base_url
        services = ("api", "catalog", "experimentation", "gallery", "history", "hyperdrive", "labeling")
        return web.json_response({**{s: base for s in services}, "modelmanagement": base, "pipelines": base})

    def _ws(self, request: web.Request) -> str:
        m = request.match_info
        self.world.check_workspace(m["sub"], m["rg"], m["ws"])
        return m["ws"]

    async def get_workspace(self, request: web.Request) -> web.Response:
        ws = self._ws(request)
        w = self.world
        host = self.base_url.removeprefix("https://")
        rid = w.ws_id(ws)
        storage = f"/subscriptions/{w.subscription}/resourceGroups/{w.resource_group}/providers"
        return web.json_response(
            {
                "id": rid,
                "name": ws,
                "type": "Microsoft.MachineLearningServices/workspaces",
                "location": w.region,
                "kind": "Default",
                "tags": {},
                "identity": {
                    "type": "SystemAssigned",
                    "principalId": "44444444-4444-4444-4444-444444444444",
                    "tenantId": w.tenant,
                },
                "sku": {"name": "Basic", "tier": "Basic"},
                "properties": {
                    "friendlyName": ws,
                    "workspaceId": "55555555-5555-5555-5555-555555555555",
                    "provisioningState": "Succeeded",
                    "storageAccount": f"{storage}/Microsoft.Storage/storageAccounts/stemulator",
                    "keyVault": f"{storage}/Microsoft.KeyVault/vaults/kv-emulator",
                    "applicationInsights": f"{storage}/Microsoft.Insights/components/ai-emulator",
                    "discoveryUrl": f"{self.base_url}/discovery",
                    "mlFlowTrackingUri": f"azureml://{host}/mlflow/v1.0{rid}",
                    "publicNetworkAccess": "Enabled",
                    "serviceProvisionedResourceGroup": f"{ws}_{w.subscription.replace('-', '')[:16]}",
                    "privateLinkCount": 0,
                    "allowPublicAccessWhenBehindVnet": False,
                    "hbiWorkspace": False,
                    "v1LegacyMode": False,
                },
                "systemData": {
                    "createdAt": "2026-01-01T00:00:00Z",
                    "createdBy": "emulator",
                    "createdByType": "Application",
                },
            }
        )

    # ------------------------------------------------------------------ jobs

    async def get_job(self, request: web.Request) -> web.Response:
        return web.json_response(self.world.get_job(self._ws(request), request.match_info["name"]))

    async def put_job(self, request: web.Request) -> web.Response:
        status, body = self.world.put_job(
            self._ws(request), request.match_info["name"], request["json"] or {}
        )
        return web.json_response(body, status=status)

    async def cancel_job(self, request: web.Request) -> web.Response:
        ws = self._ws(request)
        self.world.cancel_job(ws, request.match_info["name"])
        return web.Response(
            status=202, headers=self._location(request, f"cancel-{request.match_info['name']}")
        )

    async def run_details(self, request: web.Request) -> web.Response:
        return web.json_response(self.world.run_details(self._ws(request), request.match_info["run"]))

    # ------------------------------------------------------------------ models

    async def list_model_containers(self, request: web.Request) -> web.Response:
        view = request.query.get("listViewType", "ActiveOnly")
        return web.json_response({"value": self.world.list_model_containers(self._ws(request), view)})

    async def get_model_container(self, request: web.Request) -> web.Response:
        return web.json_response(
            self.world.get_model_container(self._ws(request), request.match_info["name"])
        )

    async def list_model_versions(self, request: web.Request) -> web.Response:
        top = request.query.get("$top")
        versions = self.world.list_model_versions(
            self._ws(request),
            request.match_info["name"],
            request.query.get("listViewType", "ActiveOnly"),
            int(top) if top else None,
        )
        return web.json_response({"value": versions})

    async def get_model_version(self, request: web.Request) -> web.Response:
        m = request.match_info
        return web.json_response(self.world.get_model_version(self._ws(request), m["name"], m["version"]))

    async def put_model_version(self, request: web.Request) -> web.Response:
        m = request.match_info
        status, body = self.world.put_model_version(
            self._ws(request), m["name"], m["version"], request["json"] or {}
        )
        return web.json_response(body, status=status)

    async def list_registry_versions(self, request: web.Request) -> web.Response:
        top = request.query.get("$top")
        m = request.match_info
        versions = self.world.registry_versions(m["reg"], m["name"], int(top) if top else None)
        return web.json_response({"value": versions})

    async def get_registry_version(self, request: web.Request) -> web.Response:
        m = request.match_info
        return web.json_response(self.world.registry_version(m["reg"], m["name"], m["version"]))

    # ------------------------------------------------------------------ endpoints and deployments

    def _operation_url(self, request: web.Request, route: str, op_id: str) -> str:
        """An operation's status or result URL, at the request's api-version."""
        sub = request.match_info["sub"]
        region = f"{self.base_url}/subscriptions/{sub}/{PROVIDER}/locations/{self.world.region}"
        return f"{region}/{route}/{op_id}?api-version={request.query.get('api-version', '')}"

    def _async_headers(self, request: web.Request, op_id: str, *, location: bool = False) -> dict[str, str]:
        headers = {
            "Azure-AsyncOperation": self._operation_url(request, "mfeOperationsStatus", op_id),
            "Retry-After": "0",
        }
        if location:
            headers["Location"] = self._operation_url(request, "mfeOperationResults", op_id)
        return headers

    def _location(self, request: web.Request, op_id: str) -> dict[str, str]:
        return {"Location": self._operation_url(request, "mfeOperationResults", op_id), "Retry-After": "0"}

    async def list_endpoints(self, request: web.Request) -> web.Response:
        return web.json_response({"value": self.world.list_endpoints(self._ws(request))})

    async def get_endpoint(self, request: web.Request) -> web.Response:
        return web.json_response(self.world.get_endpoint(self._ws(request), request.match_info["ep"]))

    async def put_endpoint(self, request: web.Request) -> web.Response:
        ws = self._ws(request)
        status, body, op = self.world.put_endpoint(ws, request.match_info["ep"], request["json"] or {})
        headers = self._async_headers(request, op.id) if op is not None else {}
        return web.json_response(body, status=status, headers=headers)

    async def delete_endpoint(self, request: web.Request) -> web.Response:
        op = self.world.delete_endpoint(self._ws(request), request.match_info["ep"])
        return web.Response(status=202, headers=self._async_headers(request, op.id, location=True))

    async def endpoint_keys(self, request: web.Request) -> web.Response:
        return web.json_response(self.world.endpoint_keys(self._ws(request), request.match_info["ep"]))

    async def list_deployments(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"value": self.world.list_deployments(self._ws(request), request.match_info["ep"])}
        )

    async def get_deployment(self, request: web.Request) -> web.Response:
        m = request.match_info
        return web.json_response(self.world.get_deployment(self._ws(request), m["ep"], m["dep"]))

    async def put_deployment(self, request: web.Request) -> web.Response:
        m = request.match_info
        status, body, op = self.world.put_deployment(
            self._ws(request), m["ep"], m["dep"], request["json"] or {}
        )
        return web.json_response(body, status=status, headers=self._async_headers(request, op.id))

    async def delete_deployment(self, request: web.Request) -> web.Response:
        m = request.match_info
        op = self.world.delete_deployment(self._ws(request), m["ep"], m["dep"])
        return web.Response(status=202, headers=self._async_headers(request, op.id, location=True))

    async def operation_status(self, request: web.Request) -> web.Response:
        return web.json_response(
            self.world.poll_operation(request.match_info["op"]), headers={"Retry-After": "0"}
        )

    async def operation_result(self, request: web.Request) -> web.Response:
        op_id = request.match_info["op"]
        if op_id.startswith("cancel-"):
            return web.Response(status=200)
        status = self.world.poll_operation(op_id)
        if status["status"] == "InProgress":
            return web.Response(status=202, headers={"Retry-After": "0"})
        return web.Response(status=200)

    # ------------------------------------------------------------------ connections

    async def get_connection(self, request: web.Request) -> web.Response:
        ws = self._ws(request)
        return web.json_response(
            self.world.connection_json(ws, request.match_info["name"], secrets_too=False)
        )

    async def put_connection(self, request: web.Request) -> web.Response:
        status, body = self.world.put_connection(
            self._ws(request), request.match_info["name"], request["json"] or {}
        )
        return web.json_response(body, status=status)

    async def delete_connection(self, request: web.Request) -> web.Response:
        found = self.world.delete_connection(self._ws(request), request.match_info["name"])
        return web.Response(status=200 if found else 204)

    async def list_connection_secrets(self, request: web.Request) -> web.Response:
        ws = self._ws(request)
        return web.json_response(self.world.connection_json(ws, request.match_info["name"], secrets_too=True))

    # ------------------------------------------------------------------ quota

    async def usages(self, request: web.Request) -> web.Response:
        w = self.world
        loc = request.match_info["loc"]
        sub = request.match_info["sub"]
        rows = []
        for family, (current, limit) in sorted(w.quota.items()):
            core = family.removeprefix("standard").removesuffix("Family")
            rows.append(
                _usage(sub, loc, family, f"Standard {core} Family Cluster Dedicated vCPUs", current, limit)
            )
        current, limit = w.total_regional_vcpus
        rows.append(
            _usage(
                sub,
                loc,
                "TotalClusterDedicatedRegionalvCPUs",
                "Total Cluster Dedicated Regional vCPUs",
                current,
                limit,
            )
        )
        return web.json_response({"value": rows})

    async def vm_sizes(self, request: web.Request) -> web.Response:
        if request.match_info["loc"].lower() != self.world.region.lower():
            return web.json_response({"value": []})
        return web.json_response({"value": self.world.vm_sizes})

    # ------------------------------------------------------------------ MLflow

    async def mlflow_get_run(self, request: web.Request) -> web.Response:
        self._ws(request)
        run_id = request.query.get("run_id") or request.query.get("run_uuid") or ""
        try:
            return web.json_response({"run": self.world.mlflow_run(run_id)})
        except ServiceError as e:
            return web.json_response({"error_code": e.code, "message": e.message}, status=404)

    async def mlflow_search_runs(self, request: web.Request) -> web.Response:
        self._ws(request)
        body = request["json"] or {}
        return web.json_response({"runs": self.world.mlflow_search(str(body.get("filter", "")))})

    async def mlflow_metric_history(self, request: web.Request) -> web.Response:
        self._ws(request)
        q = request.query
        return web.json_response(
            {"metrics": self.world.mlflow_history(q.get("run_id", ""), q.get("metric_key", ""))}
        )

    # ------------------------------------------------------------------ inference

    async def inference_probe(self, request: web.Request) -> web.Response:
        """The endpoint's public host: answers (401) when the name exists in the region, else 404."""
        if self.world.endpoint_name_taken(request.match_info["ep"]):
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response({"message": "not found"}, status=404)

    async def score(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        deployment = request.headers.get("azureml-model-deployment")
        payload = request["json"]
        if not isinstance(payload, dict):
            return web.json_response({"message": "expected a JSON object"}, status=400)
        status, body = await asyncio.to_thread(
            self.world.score, request.match_info["ep"], key, deployment, payload
        )
        return web.json_response(body, status=status)


def _usage(sub: str, loc: str, family: str, label: str, current: int, limit: int) -> Json:
    return {
        "id": f"/subscriptions/{sub}/{PROVIDER}/locations/{loc}/usages/{family}",
        "amlWorkspaceLocation": loc,
        "type": "Microsoft.MachineLearningServices/totalCores/usages",
        "unit": "Count",
        "currentValue": current,
        "limit": limit,
        "name": {"value": family, "localizedValue": label},
    }


class EmulatorServer:
    """The emulator on a background thread: `with EmulatorServer(world) as emu: emu.env()`."""

    def __init__(
        self,
        world: World | None = None,
        *,
        port: int = 0,
        state_dir: Path | None = None,
        validator: RequestValidator | None = None,
    ) -> None:
        self.world = world if world is not None else World()
        self.port = port
        self._state_dir = state_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.emulator: Emulator | None = None
        self.tls: Tls | None = None
        self._validator = validator
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._tunnel: asyncio.Server | None = None
        # HTTPS_PROXY for clients that hard-code management.azure.com (see `tunnel`); set at start.
        self.arm_proxy: str | None = None

    @property
    def url(self) -> str:
        return self.world.base_url

    def reset(self, world: World | None = None) -> World:
        """Serve a fresh world (tests): same address, certificate and issued tokens."""
        fresh = world if world is not None else World()
        fresh.base_url = self.world.base_url
        self.world = fresh
        if self.emulator is not None:
            self.emulator.world = fresh
            self.emulator.validation_errors.clear()
        return fresh

    def start(self) -> EmulatorServer:
        if self._state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="azureml-emulator-")
            self._state_dir = Path(self._tmp.name)
        self.tls = make_tls(self._state_dir)
        self.emulator = Emulator(self.world, validator=self._validator)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:  # surfaced to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="azureml-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    async def _serve(self) -> None:
        assert self.emulator is not None and self.tls is not None
        self._runner = web.AppRunner(self.emulator.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls.server_context)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        self.world.base_url = f"https://127.0.0.1:{self.port}"
        self._tunnel = await start_tunnel(self.port)
        self.arm_proxy = f"http://127.0.0.1:{self._tunnel.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._runner is not None:
            if self._tunnel is not None:
                loop.call_soon_threadsafe(self._tunnel.close)
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """What a client process sets to use this emulator (see `clients`)."""
        from azureml_emulator.clients import client_env

        assert self.emulator is not None and self.tls is not None
        return client_env(self.url, self.tls.ca_bundle, self.emulator.identity_header, self.world)
