"""The emulated Azure ML service: its resources and how they change, with no HTTP in sight.

Resources are kept in their wire shape (the JSON the REST API returns), so the server only adds
the ARM envelope. Time does not pass by itself: a job moves one step along its `JobScript` each
time it is read (GET) and a deployment one step along its `DeploymentScript` each time it or its
long-running operation is polled, so a test says "completed after 3 polls" and never sleeps.
With an `Executor` (`local_executor.LocalExecutor`) jobs and deployments run for real instead: a
job trains on the offline stack and a deployment serves its model, and reads report their state.

What the service enforces and this emulator enforces too (the codes are the service's):
- 404 ResourceNotFound for a missing job, model, endpoint, deployment or connection;
- 409 Conflict for a PUT on an endpoint or deployment while an operation on it is still running;
- 400 UserError for an endpoint name taken in the region (endpoint names are unique per region,
  not per workspace), a traffic map naming an unknown deployment or not summing to 0 or 100,
  a deployment of an instance type the region does not offer or of a model that does not exist,
  deleting a deployment that still takes traffic, and a model version PUT that changes its URI;
- whatever `Fault`s a test injected (429 with Retry-After, 5xx, ...), consumed in order.
"""

from __future__ import annotations

import itertools
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Json = dict[str, Any]

# Job statuses of the service's JobStatus enum (azure-rest-api-specs, mfe.json `JobStatus`).
JOB_STATUSES = (
    "NotStarted",
    "Starting",
    "Provisioning",
    "Preparing",
    "Queued",
    "Running",
    "Finalizing",
    "CancelRequested",
    "Completed",
    "Failed",
    "Canceled",
    "NotResponding",
    "Paused",
    "Unknown",
)
TERMINAL_JOB_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding"})

PHI3 = "Phi-3-mini-4k-instruct"
# The azureml registry's Phi-3-mini-4k-instruct declares these (Azure/azureml-assets,
# assets/models/system/phi-3-mini-4k-instruct/spec.yaml, tags finetune_compute_allow_list and
# inference_compute_allow_list); the service returns list tags as a Python-literal string.
PHI3_FINETUNE_SKUS = (
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
)
PHI3_INFERENCE_SKUS = (
    "Standard_NC6s_v3",
    "Standard_NC12s_v3",
    "Standard_NC24s_v3",
    "Standard_ND40rs_v2",
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
    "Standard_NC96ads_A100_v4",
)


class ServiceError(Exception):
    """An answer the service gives instead of a result: HTTP status + ARM error code + message."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def not_found(kind: str, name: str) -> ServiceError:
    return ServiceError(404, "ResourceNotFound", f"The {kind} '{name}' was not found.")


@dataclass
class JobScript:
    """How a job goes: one status per read, the last one sticks.

    `error` is the (code, message) run history reports for a failed job; `register_model` makes a
    completed job register its `registered_model` output (as the service's fine-tuning does);
    `loss` is the train loss logged per step to the job's MLflow run, `eval_loss` the validation loss."""

    statuses: tuple[str, ...] = ("Queued", "Running", "Completed")
    error: tuple[str, str] | None = None
    register_model: bool = True
    loss: tuple[float, ...] = (2.4, 1.9, 1.5, 1.3)
    eval_loss: tuple[float, ...] = (2.5, 2.0)


@dataclass
class DeploymentScript:
    """How a deployment's creation goes: `polls` reads in Creating, then `outcome`; a failed one
    carries `error` (code, message), e.g. a liveness probe that never passed."""

    polls: int = 1
    outcome: str = "Succeeded"
    error: tuple[str, str] = ("DeploymentFailed", "The deployment failed.")
    # Seconds the model takes to load in the container: when the liveness probe's window
    # (initialDelay + failureThreshold x period) is shorter, the deployment fails as on Azure.
    load_seconds: float = 0.0


# What the service fills in for a managed deployment that does not say (the REST spec's defaults;
# initialDelay has none there: the service uses 10 s).
DEFAULT_PROBE = {
    "failureThreshold": 30,
    "successThreshold": 1,
    "timeout": "PT2S",
    "period": "PT10S",
    "initialDelay": "PT10S",
}
DEFAULT_REQUEST_SETTINGS = {
    "maxQueueWait": "PT0.5S",
    "requestTimeout": "PT5S",
    "maxConcurrentRequestsPerInstance": 1,
}


@dataclass
class Fault:
    """Answer the next `times` requests whose method is `method` (or any, "*") and whose path
    contains `path` with `status`/`code`, before the route runs."""

    path: str
    status: int
    code: str = "ServiceError"
    message: str = "injected fault"
    method: str = "*"
    times: int = 1
    retry_after: int | None = None


Scorer = Callable[[str, str, Json], tuple[int, Json]]


class Executor(Protocol):
    """Runs jobs and deployments for real (`local_executor.LocalExecutor`) instead of scripts.

    Called with the World's lock held, except `score`. Statuses are the service's words."""

    def start_job(self, name: str, props: Json, training_data: str, validation_data: str) -> None: ...

    def job_status(self, name: str) -> tuple[str, str | None]: ...

    def cancel_job(self, name: str) -> None: ...

    def job_metrics(self, name: str) -> dict[str, list[tuple[int, float]]]: ...

    def job_model(self, job_name: str, model_name: str) -> Any: ...

    def create_endpoint(self, name: str) -> None: ...

    def delete_endpoint(self, name: str) -> None: ...

    def start_deployment(self, endpoint: str, deployment: str, model: Any, instance_type: str) -> None: ...

    def deployment_state(self, endpoint: str, deployment: str) -> tuple[str, str | None]: ...

    def delete_deployment(self, endpoint: str, deployment: str) -> None: ...

    def score(self, endpoint: str, deployment: str, payload: Json) -> tuple[int, Json]: ...


def echo_scorer(endpoint: str, deployment: str, payload: Json) -> tuple[int, Json]:
    """The Prompt flow tool's contract: `input_data.input_string[-1].content` in, `{"output"}` out."""
    try:
        messages = payload["input_data"]["input_string"]
        text = str(messages[-1]["content"])
    except (KeyError, IndexError, TypeError):
        return 400, {"error": "expected {input_data: {input_string: [{role, content}], parameters}}"}
    return 200, {"output": f"[{deployment}] {text}"}


@dataclass
class _Job:
    name: str
    body: Json
    script: JobScript
    created: float
    reads: int = 0
    status: str = "NotStarted"
    canceled: bool = False
    cancel_reads: int = 0
    error: str | None = None  # what the executor reported for a failed job


@dataclass
class _Deployment:
    endpoint: str
    name: str
    body: Json
    script: DeploymentScript
    reads: int = 0
    state: str = "Creating"
    failure: tuple[str, str] | None = None


@dataclass
class _Endpoint:
    name: str
    body: Json
    keys: tuple[str, str]
    polls_left: int = 1
    state: str = "Creating"


@dataclass
class Operation:
    """A long-running operation (Azure-AsyncOperation / Location)."""

    id: str
    ws: str
    kind: str  # endpoint-create, endpoint-update, endpoint-delete, deployment-create, deployment-delete
    endpoint: str
    deployment: str | None = None


@dataclass
class World:
    """One subscription, one resource group, one region, workspaces in it, the azureml registry."""

    subscription: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "rg-emulator"
    region: str = "eastus2"
    workspaces: tuple[str, ...] = ("ws-emulator",)
    tenant: str = "11111111-1111-1111-1111-111111111111"
    # Endpoint names already taken in this region by someone else's workspace.
    foreign_endpoints: set[str] = field(default_factory=set)
    endpoint_polls: int = 1
    scorer: Scorer = echo_scorer
    vm_sizes: list[Json] = field(default_factory=lambda: default_vm_sizes())
    quota: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "standardNCADSA100v4Family": (0, 96),
            "standardNDAMSv4_A100Family": (0, 0),
            "standardNCSv3Family": (0, 24),
            "standardNCASv3_T4Family": (0, 64),
            "standardDSv2Family": (0, 100),
        }
    )
    total_regional_vcpus: tuple[int, int] = (0, 300)
    registry_models: dict[str, dict[str, Json]] = field(default_factory=lambda: default_registry())
    # Set by the server once it listens: where scoring URIs and discovery answers point.
    base_url: str = "https://127.0.0.1"
    # Runs jobs and deployments for real; None: `JobScript`s and `DeploymentScript`s drive them.
    executor: Executor | None = None
    # The workspace's datastores: name -> the container of the datasets account it points at.
    datastores: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[tuple[str, str], _Job] = {}
        self.job_scripts: dict[str, JobScript] = {}
        self.default_job_script = JobScript()
        self.models: dict[tuple[str, str], dict[str, Json]] = {}
        self.endpoints: dict[tuple[str, str], _Endpoint] = {}
        self.deployments: dict[tuple[str, str, str], _Deployment] = {}
        self.deployment_scripts: dict[str, DeploymentScript] = {}
        self.default_deployment_script = DeploymentScript()
        self.connections: dict[tuple[str, str], Json] = {}
        self.operations: dict[str, Operation] = {}
        self.faults: list[Fault] = []
        self.scorers: dict[str, Scorer] = {}
        self.metrics: dict[str, dict[str, list[tuple[int, int, float]]]] = {}
        self.run_tags: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ scripting (tests)

    def script_job(self, name: str, script: JobScript) -> None:
        """How the job named `name` will go once submitted (default: `default_job_script`)."""
        self.job_scripts[name] = script

    def script_deployment(self, name: str, script: DeploymentScript) -> None:
        self.deployment_scripts[name] = script

    def inject(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method in ("*", method) and fault.path in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------ ids

    def ws_id(self, workspace: str) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
        )

    def check_workspace(self, subscription: str, resource_group: str, workspace: str) -> None:
        if (
            subscription != self.subscription
            or resource_group.lower() != self.resource_group.lower()
            or workspace not in self.workspaces
        ):
            raise ServiceError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.MachineLearningServices/workspaces/{workspace}' under resource "
                f"group '{resource_group}' was not found.",
            )

    def new_operation(self, ws: str, kind: str, endpoint: str, deployment: str | None = None) -> Operation:
        op_id = f"op-{next(self._ids):06d}-{secrets.token_hex(4)}"
        op = Operation(id=op_id, ws=ws, kind=kind, endpoint=endpoint, deployment=deployment)
        self.operations[op.id] = op
        return op

    # ------------------------------------------------------------------ jobs

    def put_job(self, ws: str, name: str, body: Json) -> tuple[int, Json]:
        with self.lock:
            existing = self.jobs.get((ws, name))
            if existing is not None:
                # Jobs are immutable once submitted, except for a few fields (tags, displayName...).
                props = body.get("properties", {})
                if props.get("jobType") != existing.body["properties"].get("jobType"):
                    raise ServiceError(409, "Conflict", f"Job {name} already exists with another jobType.")
                return 200, self.job_json(ws, existing)
            props = dict(body.get("properties", {}))
            if self.executor is not None:
                details = props.get("fineTuningDetails") or {}
                self.executor.start_job(
                    name,
                    props,
                    self.resolve_data(str((details.get("trainingData") or {}).get("uri") or "")),
                    self.resolve_data(str((details.get("validationData") or {}).get("uri") or "")),
                )
            job = _Job(
                name=name,
                body={"properties": props},
                script=self.job_scripts.get(name, self.default_job_script),
                created=time.time(),
            )
            self.jobs[(ws, name)] = job
            return 201, self.job_json(ws, job)

    def get_job(self, ws: str, name: str) -> Json:
        with self.lock:
            job = self._job(ws, name)
            self._advance_job(ws, job)
            return self.job_json(ws, job)

    def resolve_data(self, uri: str) -> str:
        """Where a job input lives: `azureml://datastores/<d>/paths/<p>` through the workspace's
        datastores (as `<container>/<p>`), a blob URL as is."""
        found = re.fullmatch(r"azureml://datastores/([^/]+)/paths/(.+)", uri)
        if found:
            container = self.datastores.get(found[1])
            if container is None:
                raise ServiceError(
                    400, "UserError", f"Datastore '{found[1]}' was not found in the workspace."
                )
            return f"{container}/{found[2]}"
        if uri.startswith(("https://", "http://")):
            return uri
        raise ServiceError(400, "UserError", f"Job input URI {uri[:200]!r} is not a datastore path or a URL.")

    def _job(self, ws: str, name: str) -> _Job:
        job = self.jobs.get((ws, name))
        if job is None:
            raise not_found("job", name)
        return job

    def _advance_job(self, ws: str, job: _Job) -> None:
        if job.status in TERMINAL_JOB_STATUSES:
            return
        if self.executor is not None:
            job.status, job.error = self.executor.job_status(job.name)
            if job.status == "Completed":
                self._complete_job(ws, job)
            return
        if job.canceled:
            job.cancel_reads += 1
            job.status = "CancelRequested" if job.cancel_reads == 1 else "Canceled"
            return
        statuses = job.script.statuses
        job.status = statuses[min(job.reads, len(statuses) - 1)]
        job.reads += 1
        if job.status == "Completed":
            self._complete_job(ws, job)

    def _complete_job(self, ws: str, job: _Job) -> None:
        props = job.body["properties"]
        experiment = str(props.get("experimentName") or "Default")
        if self.executor is not None:
            logged = self.executor.job_metrics(job.name)
            train = [v for _, v in logged.get("loss", [])]
            self.metrics[job.name] = {
                key: [(step, 1_700_000_000_000 + i, v) for i, (step, v) in enumerate(points)]
                for key, points in logged.items()
            }
        else:
            train = list(job.script.loss)
            self.metrics[job.name] = {
                "loss": [(i + 1, 1_700_000_000_000 + i, v) for i, v in enumerate(train)],
                "eval_loss": [(i + 1, 1_700_000_000_000 + i, v) for i, v in enumerate(job.script.eval_loss)],
            }
        self.metrics[job.name]["train_loss"] = [(len(train), 1_700_000_000_100, train[-1] if train else 0.0)]
        self.run_tags[job.name] = {"mlflow.rootRunId": job.name, "experiment": experiment}
        output = (props.get("outputs") or {}).get("registered_model")
        if job.script.register_model and output and output.get("assetName"):
            name = str(output["assetName"])
            versions = self.models.setdefault((ws, name), {})
            version = str(1 + max((int(v) for v in versions if v.isdigit()), default=0))
            versions[version] = self._model_json(
                ws,
                name,
                version,
                {
                    "modelUri": f"azureml://jobs/{job.name}/outputs/registered_model/paths/",
                    "modelType": "mlflow_model",
                    "jobName": job.name,
                    "tags": {},
                    "properties": {},
                    "isArchived": False,
                    "isAnonymous": False,
                },
            )

    def cancel_job(self, ws: str, name: str) -> None:
        with self.lock:
            job = self._job(ws, name)
            if job.status in TERMINAL_JOB_STATUSES:
                raise ServiceError(
                    400,
                    "UserError",
                    f"Job {name} is in a terminal state ({job.status}) and cannot be canceled.",
                )
            job.canceled = True
            job.status = "CancelRequested"
            if self.executor is not None:
                self.executor.cancel_job(name)

    def job_json(self, ws: str, job: _Job) -> Json:
        props = dict(job.body["properties"])
        props["status"] = job.status
        props.setdefault("experimentName", "Default")
        props["services"] = {
            "Studio": {
                "jobServiceType": "Studio",
                "endpoint": f"https://ml.azure.com/runs/{job.name}?wsid={self.ws_id(ws)}",
                "status": None,
            }
        }
        details = props.get("fineTuningDetails")
        if isinstance(details, dict):  # the service fills each input's mode (default: read-only mount)
            props["fineTuningDetails"] = {
                **details,
                **{
                    k: {"mode": "ReadOnlyMount", **details[k]}
                    for k in ("model", "trainingData", "validationData")
                    if isinstance(details.get(k), dict)
                },
            }
        props.setdefault("identity", {"identityType": "AMLToken"})  # the service's default job identity
        outputs = dict(props.get("outputs") or {})
        if "registered_model" in outputs:
            outputs["registered_model"] = {
                **outputs["registered_model"],
                "mode": "ReadWriteMount",
                "uri": f"azureml://jobs/{job.name}/outputs/registered_model",
            }
        props["outputs"] = outputs
        return {
            "id": f"{self.ws_id(ws)}/jobs/{job.name}",
            "name": job.name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": props,
            "systemData": _system_data(job.created),
        }

    def run_details(self, ws: str, name: str) -> Json:
        with self.lock:
            job = self._job(ws, name)
            details: Json = {"runId": name, "status": job.status, "target": "serverless"}
            if job.status == "Failed" and job.error:
                details["error"] = {"error": {"code": "UserError", "message": job.error}}
            elif job.status == "Failed" and job.script.error:
                code, message = job.script.error
                details["error"] = {"error": {"code": code, "message": message}}
            return details

    # ------------------------------------------------------------------ models

    def _model_json(self, ws: str, name: str, version: str, props: Json) -> Json:
        now = time.time()
        return {
            "id": f"{self.ws_id(ws)}/models/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
            "properties": {"flavors": model_flavors(props.get("modelType")), "isAnonymous": False, **props},
            "systemData": _system_data(now),
            "_created": now,
        }

    def put_model_version(self, ws: str, name: str, version: str, body: Json) -> tuple[int, Json]:
        props = dict(body.get("properties") or {})
        with self.lock:
            versions = self.models.setdefault((ws, name), {})
            current = versions.get(version)
            if current is None:
                versions[version] = self._model_json(ws, name, version, props)
                return 201, _public(versions[version])
            old_uri = current["properties"].get("modelUri")
            if props.get("modelUri") and old_uri and props["modelUri"] != old_uri:
                raise ServiceError(
                    409,
                    "Conflict",
                    f"Model {name}:{version} exists with another modelUri; modelUri is immutable.",
                )
            for key in ("tags", "description", "isArchived", "stage", "properties"):
                if key in props:
                    current["properties"][key] = props[key]
            return 200, _public(current)

    def get_model_version(self, ws: str, name: str, version: str) -> Json:
        with self.lock:
            found = self.models.get((ws, name), {}).get(version)
            if found is None:
                raise not_found("model version", f"{name}:{version}")
            return _public(found)

    def list_model_versions(self, ws: str, name: str, view: str, top: int | None) -> list[Json]:
        with self.lock:
            versions = list(self.models.get((ws, name), {}).values())
        return _model_list(versions, view, top)

    def get_model_container(self, ws: str, name: str) -> Json:
        with self.lock:
            versions = self.models.get((ws, name))
            if not versions:
                raise not_found("model", name)
            return self._container(ws, name, versions)

    def list_model_containers(self, ws: str, view: str = "ActiveOnly") -> list[Json]:
        """The workspace's models; `view` (listViewType) ActiveOnly, ArchivedOnly or All."""
        with self.lock:
            found = [self._container(w, n, v) for (w, n), v in sorted(self.models.items()) if w == ws and v]
        if view == "ActiveOnly":
            return [c for c in found if not c["properties"]["isArchived"]]
        if view == "ArchivedOnly":
            return [c for c in found if c["properties"]["isArchived"]]
        return found

    def _container(self, ws: str, name: str, versions: dict[str, Json]) -> Json:
        latest = max(versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))
        archived = all(v["properties"].get("isArchived") for v in versions.values())
        return {
            "id": f"{self.ws_id(ws)}/models/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/models",
            "properties": {
                "latestVersion": latest,
                "nextVersion": str(1 + max((int(v) for v in versions if v.isdigit()), default=0)),
                "isArchived": archived,
                "tags": {},
            },
            "systemData": _system_data(time.time()),
        }

    # ------------------------------------------------------------------ registry (azureml)

    def registry_versions(self, registry: str, name: str, top: int | None) -> list[Json]:
        if registry != "azureml":
            raise not_found("registry", registry)
        versions = list(self.registry_models.get(name, {}).values())
        if not versions:
            raise not_found("model", name)
        return _model_list(versions, "ActiveOnly", top)

    def registry_version(self, registry: str, name: str, version: str) -> Json:
        if registry != "azureml":
            raise not_found("registry", registry)
        found = self.registry_models.get(name, {}).get(version)
        if found is None:
            raise not_found("model version", f"{name}:{version}")
        return _public(found)

    # ------------------------------------------------------------------ endpoints

    def put_endpoint(self, ws: str, name: str, body: Json) -> tuple[int, Json, Operation | None]:
        props = dict(body.get("properties") or {})
        with self.lock:
            ep = self.endpoints.get((ws, name))
            if ep is None:
                taken = name in self.foreign_endpoints or any(n == name for (_, n) in self.endpoints)
                if taken:
                    raise ServiceError(
                        400,
                        "UserError",
                        f"The specified endpoint name '{name}' is not available. Endpoint names must be "
                        "unique within the region. Please choose a different name and try again.",
                    )
                keys = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
                ep = _Endpoint(name=name, body={}, keys=keys, polls_left=self.endpoint_polls)
                ep.body = self._endpoint_body(ws, name, body, props)
                if self.executor is not None:
                    self.executor.create_endpoint(name)
                self.endpoints[(ws, name)] = ep
                op = self.new_operation(ws, "endpoint-create", name)
                return 201, self.endpoint_json(ws, ep), op
            if ep.state in ("Creating", "Updating", "Deleting"):
                raise ServiceError(
                    409,
                    "Conflict",
                    f"Endpoint {name} is {ep.state.lower()}: another operation is in progress.",
                )
            traffic = props.get("traffic") or {}
            self._check_traffic(ws, name, traffic)
            ep.body = self._endpoint_body(ws, name, body, props)
            # Traffic and tag updates complete in the PUT (200 with a terminal provisioningState, which
            # ARM allows for a long-running PUT): the app waits on them, and azure-core's poller would
            # otherwise sleep its own 30 s interval per poll (it reads Retry-After: 0 as "not given").
            return 200, self.endpoint_json(ws, ep), None

    def _check_traffic(self, ws: str, endpoint: str, traffic: dict[str, Any]) -> None:
        unknown = sorted(d for d in traffic if (ws, endpoint, d) not in self.deployments)
        if unknown:
            raise ServiceError(
                400,
                "UserError",
                f"Traffic names deployment(s) {', '.join(unknown)} that do not exist on endpoint {endpoint}.",
            )
        total = sum(int(v) for v in traffic.values())
        if traffic and total not in (0, 100):
            raise ServiceError(
                400, "UserError", f"Traffic of endpoint {endpoint} must add up to 0 or 100, not {total}."
            )

    def _endpoint_body(self, ws: str, name: str, body: Json, props: Json) -> Json:
        identity = body.get("identity") or {"type": "SystemAssigned"}
        return {
            "location": body.get("location") or self.region,
            "tags": dict(body.get("tags") or {}),
            "kind": body.get("kind") or "Managed",
            "identity": {
                **identity,
                "principalId": "22222222-2222-2222-2222-222222222222",
                "tenantId": self.tenant,
            },
            "properties": {
                "authMode": props.get("authMode") or "Key",
                "description": props.get("description"),
                "traffic": {k: int(v) for k, v in (props.get("traffic") or {}).items()},
                "mirrorTraffic": dict(props.get("mirrorTraffic") or {}),
                "scoringUri": f"{self.inference_url(name)}/score",
                "swaggerUri": f"{self.inference_url(name)}/swagger.json",
                "properties": {"azureml.onlineendpointid": f"{self.ws_id(ws)}/onlineendpoints/{name}"},
            },
        }

    def inference_url(self, endpoint: str) -> str:
        """The endpoint's inference host, path-style, under the server's base URL."""
        return f"{self.base_url}/inference/{self.region}/{endpoint}"

    def endpoint_json(self, ws: str, ep: _Endpoint) -> Json:
        body = {**ep.body, "properties": {**ep.body["properties"], "provisioningState": ep.state}}
        return {
            "id": f"{self.ws_id(ws)}/onlineEndpoints/{ep.name}",
            "name": ep.name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            **body,
            "systemData": _system_data(time.time()),
        }

    def _endpoint(self, ws: str, name: str) -> _Endpoint:
        ep = self.endpoints.get((ws, name))
        if ep is None:
            raise not_found("online endpoint", name)
        return ep

    def get_endpoint(self, ws: str, name: str) -> Json:
        with self.lock:
            ep = self._endpoint(ws, name)
            self._advance_endpoint(ep)
            return self.endpoint_json(ws, ep)

    def _advance_endpoint(self, ep: _Endpoint) -> None:
        if ep.state in ("Creating", "Updating"):
            if ep.polls_left <= 0:
                ep.state = "Succeeded"
            ep.polls_left -= 1

    def list_endpoints(self, ws: str) -> list[Json]:
        with self.lock:
            return [self.endpoint_json(w, ep) for (w, _), ep in sorted(self.endpoints.items()) if w == ws]

    def endpoint_keys(self, ws: str, name: str) -> Json:
        with self.lock:
            ep = self._endpoint(ws, name)
            return {"primaryKey": ep.keys[0], "secondaryKey": ep.keys[1]}

    def delete_endpoint(self, ws: str, name: str) -> Operation:
        with self.lock:
            ep = self._endpoint(ws, name)
            ep.state = "Deleting"
            return self.new_operation(ws, "endpoint-delete", name)

    def endpoint_name_taken(self, name: str) -> bool:
        with self.lock:
            return name in self.foreign_endpoints or any(n == name for (_, n) in self.endpoints)

    # ------------------------------------------------------------------ deployments

    def put_deployment(self, ws: str, endpoint: str, name: str, body: Json) -> tuple[int, Json, Operation]:
        props = dict(body.get("properties") or {})
        with self.lock:
            ep = self._endpoint(ws, endpoint)
            if ep.state == "Deleting":
                raise ServiceError(409, "Conflict", f"Endpoint {endpoint} is being deleted.")
            existing = self.deployments.get((ws, endpoint, name))
            if existing is not None and existing.state in ("Creating", "Updating", "Deleting"):
                raise ServiceError(
                    409,
                    "Conflict",
                    f"Deployment {name} is {existing.state.lower()}: another operation is in progress.",
                )
            instance_type = str(props.get("instanceType") or "")
            if instance_type.lower() not in {str(s["name"]).lower() for s in self.vm_sizes}:
                raise ServiceError(
                    400,
                    "UserError",
                    f"Instance type {instance_type or '(none)'} is not supported in region {self.region}.",
                )
            model = self._check_model_reference(ws, str(props.get("model") or ""))
            if self.executor is not None:
                self.executor.start_deployment(
                    endpoint, name, self._executed_model(ws, *model), instance_type
                )
            script = self.deployment_scripts.get(name, self.default_deployment_script)
            dep = _Deployment(endpoint=endpoint, name=name, body={}, script=script)
            props = {
                "endpointComputeType": "Managed",
                "scaleSettings": {"scaleType": "Default"},
                "appInsightsEnabled": False,
                "egressPublicNetworkAccess": "Enabled",
                **props,
                "requestSettings": {**DEFAULT_REQUEST_SETTINGS, **(props.get("requestSettings") or {})},
                "livenessProbe": {**DEFAULT_PROBE, **(props.get("livenessProbe") or {})},
                "readinessProbe": {**DEFAULT_PROBE, **(props.get("readinessProbe") or {})},
            }
            dep.body = {
                "location": body.get("location") or self.region,
                "tags": dict(body.get("tags") or {}),
                "kind": body.get("kind") or "Managed",
                "sku": body.get("sku") or {"name": "Default", "capacity": 1},
                "properties": props,
            }
            self.deployments[(ws, endpoint, name)] = dep
            op = self.new_operation(ws, "deployment-create", endpoint, name)
            return (200 if existing else 201), self.deployment_json(ws, dep), op

    def _check_model_reference(self, ws: str, model: str) -> tuple[str, str]:
        """The deployment's model, (name, version): a model version's ARM id."""
        marker = "/models/"
        if marker in model and "/versions/" in model:
            tail = model.split(marker, 1)[1]
            name, _, version = tail.partition("/versions/")
            if "/registries/" not in model and version not in self.models.get((ws, name), {}):
                raise ServiceError(
                    404, "ResourceNotFound", f"Model {name}:{version} was not found in workspace {ws}."
                )
            return name, version
        raise ServiceError(400, "UserError", f"Deployment model must be a model version id, got {model!r}.")

    def _executed_model(self, ws: str, name: str, version: str) -> Any:
        """The executor's copy of a workspace model that a job produced (its modelUri names the job)."""
        assert self.executor is not None
        uri = str(
            self.models.get((ws, name), {}).get(version, {}).get("properties", {}).get("modelUri") or ""
        )
        found = re.match(r"azureml://jobs/([^/]+)/outputs/", uri)
        if not found:
            raise ServiceError(
                400,
                "UserError",
                f"Model {name}:{version} ({uri or 'no modelUri'}) was not produced by a job here.",
            )
        return self.executor.job_model(found[1], name)

    def deployment_json(self, ws: str, dep: _Deployment) -> Json:
        props = {**dep.body["properties"], "provisioningState": dep.state}
        return {
            "id": f"{self.ws_id(ws)}/onlineEndpoints/{dep.endpoint}/deployments/{dep.name}",
            "name": dep.name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
            **{k: v for k, v in dep.body.items() if k != "properties"},
            "properties": props,
            "systemData": _system_data(time.time()),
        }

    def _deployment(self, ws: str, endpoint: str, name: str) -> _Deployment:
        dep = self.deployments.get((ws, endpoint, name))
        if dep is None:
            raise not_found("deployment", f"{endpoint}/{name}")
        return dep

    def _advance_deployment(self, dep: _Deployment) -> None:
        if dep.state != "Creating":
            return
        if self.executor is not None:
            state, error = self.executor.deployment_state(dep.endpoint, dep.name)
            dep.state = "Creating" if state == "Deleting" else state
            if error is not None:
                dep.failure = (
                    "ResourceNotReady",
                    f"User container has crashed or terminated: {error[-1000:]}",
                )
            return
        if dep.reads >= dep.script.polls:
            dep.state = dep.script.outcome
            window = probe_window_seconds(dep.body["properties"]["livenessProbe"])
            if dep.state == "Succeeded" and dep.script.load_seconds > window:
                dep.state = "Failed"
                dep.failure = (
                    "ResourceNotReady",
                    f"User container has crashed or terminated: liveness probe failed after {window:.0f} s; "
                    f"the model needs {dep.script.load_seconds:.0f} s to load; raise the initialDelay.",
                )
        dep.reads += 1

    def get_deployment(self, ws: str, endpoint: str, name: str) -> Json:
        with self.lock:
            self._endpoint(ws, endpoint)
            dep = self._deployment(ws, endpoint, name)
            self._advance_deployment(dep)
            return self.deployment_json(ws, dep)

    def list_deployments(self, ws: str, endpoint: str) -> list[Json]:
        with self.lock:
            self._endpoint(ws, endpoint)
            return [
                self.deployment_json(w, d)
                for (w, e, _), d in sorted(self.deployments.items())
                if w == ws and e == endpoint
            ]

    def delete_deployment(self, ws: str, endpoint: str, name: str) -> Operation:
        with self.lock:
            ep = self._endpoint(ws, endpoint)
            dep = self._deployment(ws, endpoint, name)
            share = int(ep.body["properties"].get("traffic", {}).get(name, 0))
            if share > 0:
                raise ServiceError(
                    400,
                    "UserError",
                    f"Deployment {name} receives {share}% of the traffic of endpoint {endpoint}; "
                    "set its traffic to 0 before deleting it.",
                )
            dep.state = "Deleting"
            return self.new_operation(ws, "deployment-delete", endpoint, name)

    # ------------------------------------------------------------------ operations

    def poll_operation(self, op_id: str) -> Json:
        """Status of a long-running operation; polling it moves the target along."""
        with self.lock:
            op = self.operations.get(op_id)
            if op is None:
                raise not_found("operation", op_id)
            status, error = self._operation_status(op)
            body: Json = {"id": op.id, "name": op.id, "status": status}
            if error is not None:
                body["error"] = {"code": error[0], "message": error[1]}
            return body

    def _operation_status(self, op: Operation) -> tuple[str, tuple[str, str] | None]:
        ws = op.ws
        if op.kind.startswith("endpoint"):
            ep = self.endpoints.get((ws, op.endpoint))
            if op.kind == "endpoint-delete":
                if ep is not None:
                    if self.executor is not None:
                        self.executor.delete_endpoint(op.endpoint)
                    for key in [k for k in self.deployments if k[0] == ws and k[1] == op.endpoint]:
                        del self.deployments[key]
                    del self.endpoints[(ws, op.endpoint)]
                return "Succeeded", None
            if ep is None:
                return "Failed", ("ResourceNotFound", f"Endpoint {op.endpoint} no longer exists.")
            self._advance_endpoint(ep)
            return ("InProgress", None) if ep.state in ("Creating", "Updating") else ("Succeeded", None)
        key = (ws, op.endpoint, op.deployment or "")
        dep = self.deployments.get(key)
        if op.kind == "deployment-delete":
            if dep is not None:
                if self.executor is not None:
                    self.executor.delete_deployment(op.endpoint, op.deployment or "")
                del self.deployments[key]
            return "Succeeded", None
        if dep is None:
            return "Failed", ("ResourceNotFound", f"Deployment {op.deployment} no longer exists.")
        self._advance_deployment(dep)
        if dep.state == "Creating":
            return "InProgress", None
        if dep.state == "Failed":
            return "Failed", dep.failure or dep.script.error
        return "Succeeded", None

    # ------------------------------------------------------------------ connections

    def put_connection(self, ws: str, name: str, body: Json) -> tuple[int, Json]:
        with self.lock:
            self.connections[(ws, name)] = {"properties": dict(body.get("properties") or {})}
            return 200, self.connection_json(ws, name, secrets_too=False)

    def connection_json(self, ws: str, name: str, *, secrets_too: bool) -> Json:
        with self.lock:
            found = self.connections.get((ws, name))
            if found is None:
                raise not_found("connection", name)
            props = dict(found["properties"])
            if not secrets_too:
                props.pop("credentials", None)
            return {
                "id": f"{self.ws_id(ws)}/connections/{name}",
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/connections",
                "properties": props,
                "systemData": _system_data(time.time()),
            }

    def delete_connection(self, ws: str, name: str) -> bool:
        with self.lock:
            return self.connections.pop((ws, name), None) is not None

    # ------------------------------------------------------------------ scoring

    def score(self, endpoint: str, key: str, deployment: str | None, payload: Json) -> tuple[int, Json]:
        with self.lock:
            found = [(ws, ep) for (ws, n), ep in self.endpoints.items() if n == endpoint]
            if not found:
                return 404, {"message": f"endpoint {endpoint} not found"}
            ws, ep = found[0]
            if key not in ep.keys:
                return 401, {"message": "Unauthorized"}
            traffic = {k: int(v) for k, v in ep.body["properties"].get("traffic", {}).items() if int(v) > 0}
            if deployment is None:
                if not traffic:
                    return 424, {"message": f"endpoint {endpoint} has no deployment with traffic"}
                deployment = max(traffic, key=lambda d: traffic[d])
            dep = self.deployments.get((ws, endpoint, deployment))
            if dep is None or dep.state != "Succeeded":
                return 404, {"message": f"deployment {deployment} not found or not ready"}
            executor = self.executor
            scorer = self.scorers.get(deployment, self.scorer)
        if executor is not None:  # the deployment's own container answers, outside the lock
            return executor.score(endpoint, deployment, payload)
        return scorer(endpoint, deployment, payload)

    # ------------------------------------------------------------------ MLflow (loss history)

    def mlflow_run(self, run_id: str) -> Json:
        with self.lock:
            metrics = self.metrics.get(run_id)
            if metrics is None:
                raise ServiceError(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found")
            return self._mlflow_run_json(run_id, metrics)

    def _mlflow_run_json(self, run_id: str, metrics: dict[str, list[tuple[int, int, float]]]) -> Json:
        latest = [
            {"key": k, "value": pts[-1][2], "timestamp": pts[-1][1], "step": pts[-1][0]}
            for k, pts in metrics.items()
            if pts
        ]
        tags = [{"key": k, "value": v} for k, v in self.run_tags.get(run_id, {}).items()]
        return {
            "info": {
                "run_id": run_id,
                "run_uuid": run_id,
                "experiment_id": "1",
                "run_name": run_id,
                "status": "FINISHED",
                "start_time": 1_700_000_000_000,
                "lifecycle_stage": "active",
            },
            "data": {"metrics": latest, "tags": tags},
        }

    def mlflow_search(self, filter_string: str) -> list[Json]:
        """Runs whose mlflow.rootRunId equals the filter's value (the one filter the app sends)."""
        value = filter_string.split("=", 1)[-1].strip().strip("'\"") if "=" in filter_string else ""
        with self.lock:
            return [
                self._mlflow_run_json(run_id, m)
                for run_id, m in self.metrics.items()
                if self.run_tags.get(run_id, {}).get("mlflow.rootRunId") == value and run_id != value
            ]

    def mlflow_history(self, run_id: str, key: str) -> list[Json]:
        with self.lock:
            points = self.metrics.get(run_id, {}).get(key)
            if points is None:
                return []
            return [{"key": key, "value": v, "timestamp": ts, "step": step} for step, ts, v in points]


def _public(resource: Json) -> Json:
    return {k: v for k, v in resource.items() if not k.startswith("_")}


def _model_list(versions: list[Json], view: str, top: int | None) -> list[Json]:
    if view == "ActiveOnly":
        versions = [v for v in versions if not v["properties"].get("isArchived")]
    elif view == "ArchivedOnly":
        versions = [v for v in versions if v["properties"].get("isArchived")]
    versions = sorted(versions, key=lambda v: v.get("_created", 0.0), reverse=True)
    if top is not None:
        versions = versions[:top]
    return [_public(v) for v in versions]


def iso_seconds(duration: str) -> float:
    """Seconds of an ISO 8601 duration like PT10M, PT1M30S, PT0.5S, P1D."""
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?", duration or "")
    if not match:
        return 0.0
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def probe_window_seconds(probe: Json) -> float:
    """How long a container may take to answer a probe before it is declared dead."""
    return iso_seconds(str(probe.get("initialDelay", "PT10S"))) + int(
        probe.get("failureThreshold", 30)
    ) * iso_seconds(str(probe.get("period", "PT10S")))


def model_flavors(model_type: object) -> Json:
    """What the service reads from an MLflow model's MLmodel file (every example carries flavors)."""
    if str(model_type).lower() != "mlflow_model":
        return {}
    return {
        "python_function": {"data": {"loader_module": "mlflow.transformers", "python_version": "3.11"}},
        "transformers": {"data": {"task": "text-generation", "transformers_version": "4.44.0"}},
    }


def _system_data(created: float) -> Json:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(created))
    return {
        "createdAt": stamp,
        "createdBy": "emulator",
        "createdByType": "Application",
        "lastModifiedAt": stamp,
        "lastModifiedBy": "emulator",
        "lastModifiedByType": "Application",
    }


def default_vm_sizes() -> list[Json]:
    """A few GPU and CPU sizes of the region, in the REST `VirtualMachineSize` shape."""

    def size(name: str, family: str, vcpus: int, gpus: int, memory_gb: float, usd_per_hour: float) -> Json:
        return {
            "name": name,
            "family": family,
            "vCPUs": vcpus,
            "gpus": gpus,
            "osVhdSizeMB": 1047552,
            "maxResourceVolumeMB": 65536,
            "memoryGB": memory_gb,
            "lowPriorityCapable": True,
            "premiumIO": True,
            "supportedComputeTypes": ["ComputeInstance", "AmlCompute"],
            # Linux pay-as-you-go list prices (orders of magnitude of the region's, not quotes).
            "estimatedVMPrices": {
                "billingCurrency": "USD",
                "unitOfMeasure": "OneHour",
                "values": [
                    {"retailPrice": usd_per_hour, "osType": "Linux", "vmTier": "Standard"},
                    {"retailPrice": round(usd_per_hour * 0.2, 4), "osType": "Linux", "vmTier": "LowPriority"},
                ],
            },
        }

    return [
        size("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 1, 220, 3.67),
        size("Standard_NC48ads_A100_v4", "standardNCADSA100v4Family", 48, 2, 440, 7.35),
        size("Standard_NC96ads_A100_v4", "standardNCADSA100v4Family", 96, 4, 880, 14.69),
        size("Standard_ND96amsr_A100_v4", "standardNDAMSv4_A100Family", 96, 8, 1900, 32.77),
        size("Standard_NC4as_T4_v3", "standardNCASv3_T4Family", 4, 1, 28, 0.526),
        size("Standard_DS3_v2", "standardDSv2Family", 4, 0, 14, 0.229),
    ]


def default_registry() -> dict[str, dict[str, Json]]:
    """The azureml registry's Phi-3-mini-4k-instruct, version 15, with its compute allow lists."""
    version = "15"
    tags = {
        "task": "chat-completion",
        "license": "mit",
        "author": "Microsoft",
        "finetune_compute_allow_list": repr(list(PHI3_FINETUNE_SKUS)),
        "inference_compute_allow_list": repr(list(PHI3_INFERENCE_SKUS)),
    }
    resource = {
        "id": f"azureml://registries/azureml/models/{PHI3}/versions/{version}",
        "name": version,
        "type": "Microsoft.MachineLearningServices/registries/models/versions",
        "properties": {
            "flavors": model_flavors("mlflow_model"),
            "modelType": "mlflow_model",
            "modelUri": f"azureml://registries/azureml/models/{PHI3}/versions/{version}",
            "tags": tags,
            "properties": {"finetuning-tasks": "chat-completion"},
            "isArchived": False,
            "isAnonymous": False,
        },
        "systemData": _system_data(1_716_000_000),
        "_created": 1_716_000_000.0,
    }
    older = {
        **resource,
        "id": resource["id"].replace(f"/versions/{version}", "/versions/14"),
        "name": "14",
        "_created": 1_710_000_000.0,
    }
    return {PHI3: {version: resource, "14": older}}
