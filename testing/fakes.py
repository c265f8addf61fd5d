"""An in-memory Azure: fakes at the backend-protocol boundary, with knobs for each scenario.

It behaves like the services where the orchestration depends on it: deployments start with 0 %
traffic, a deployment that carries traffic cannot be deleted, provisioning takes a few polls, a
job moves through its states one poll at a time, and the endpoint key is only handed out inside
`score`/`publish_connection` (and remembered for scrubbing, as the real backends do).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backends.registry import Backends
from core import redact, turns
from core.models import (
    BlobRef,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    FineTuneSpec,
    JobInfo,
    JobState,
    LossHistory,
    MetricPoint,
    ModelRef,
    ProvisioningState,
    RunConfig,
    ScoreResult,
)
from core.preflight import PreflightCheck, PreflightReport
from core.turns import Turn, TurnAnswer
from storage.blob_urls import normalize_etag

SECRET_KEY = "fAkE-EnDpOiNt-KeY-3f9d2c71b6a04e8d"
SCORING_URI = "https://phi3-ft-endpoint.eastus2.inference.ml.azure.com/score"
ACCOUNT_URL = "https://datasets.blob.core.windows.net"


class TransientError(ConnectionError):
    pass


@dataclass
class FakeDeployment:
    spec: DeploymentSpec
    polls_left: int
    final: ProvisioningState


@dataclass
class FakeEndpoint:
    name: str
    polls_left: int = 0
    traffic: dict[str, int] = field(default_factory=dict)
    deployments: dict[str, FakeDeployment] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class FakeAzure:
    """Implements TrainingBackend, ServingBackend, ConnectionStore and DatasetStore."""

    def __init__(
        self,
        *,
        job_states: list[str] | None = None,
        job_error: str | None = None,
        deployment_final: ProvisioningState = ProvisioningState.SUCCEEDED,
        provisioning_polls: int = 2,
        smoke_answer: str | None = "Hello! I am a fine-tuned Phi-3.",
        smoke_status: int = 200,
        failures: dict[str, int] | None = None,
        preflight_failures: dict[str, str] | None = None,
        oracles: tuple[str, ...] = (),
        eval_status: dict[str, int] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.etags: dict[tuple[str, str], str] = {}
        self.job_states = list(job_states or ["Queued", "Running", "Running", "Completed"])
        self.job_error = job_error
        self.deployment_final = deployment_final
        self.provisioning_polls = provisioning_polls
        self.smoke_answer = smoke_answer
        self.smoke_status = smoke_status
        self.failures = dict(failures or {})  # method name -> how many times to fail first
        self.preflight_failures = dict(preflight_failures or {})  # check name -> detail
        self.calls: list[tuple[str, Any]] = []
        self.jobs: dict[str, FineTuneSpec] = {}
        self.job_cursor: dict[str, int] = {}
        self.canceled: list[str] = []
        self.models: list[tuple[str, ModelRef, dict[str, str]]] = []
        self.endpoints: dict[str, FakeEndpoint] = {}
        self.deleted: list[str] = []
        self.scored: list[tuple[str, str | None, dict[str, object]]] = []
        self.connections: dict[str, dict[str, str]] = {}
        self.traffic_history: list[dict[str, int]] = []
        # Evaluation: deployments whose name starts with one of `oracles` answer with the dataset's
        # own reference (score 1.0); the others answer `smoke_answer`. `eval_status` maps a
        # deployment prefix to an HTTP status its multi-message (evaluation) calls get.
        self.oracles = oracles
        self.eval_status = dict(eval_status or {})
        self.model_tags: dict[tuple[str, str], dict[str, str]] = {}
        self.deleted_endpoints: list[str] = []
        self.deleted_models: list[ModelRef] = []
        # Release turns per endpoint (TurnStore); `turn_hold` makes another run hold the turn
        # for as many `take`s as it says (then it gives the turn back).
        self.turns: dict[str, Turn] = {}
        self.turn_hold: dict[str, tuple[str, int]] = {}
        self.turn_clock = datetime(2030, 1, 1, tzinfo=UTC)  # fixed: histories stay reproducible
        self.on_turn_freed: Any = None  # called when the other run of `turn_hold` gives its turn back

    def backends(self) -> Backends:
        return Backends(
            training=self, serving=self, connections=self, datasets=self, preflight=self, turns=self
        )

    account_url = ACCOUNT_URL  # DatasetStore: every blob of the fake lives in this account

    # -- TurnStore -----------------------------------------------------------------------------

    def take(self, endpoint: str, run: str, ttl_s: float) -> TurnAnswer:
        self._call("take_turn", endpoint, run)
        if endpoint in self.turn_hold:
            other, takes = self.turn_hold[endpoint]
            if takes > 0 and other != run:
                self.turn_hold[endpoint] = (other, takes - 1)
                self.turns[endpoint] = Turn(holder=other, expires_at=self.turn_clock + timedelta(hours=1))
            elif self.turns.get(endpoint) is not None and self.turns[endpoint].holder == other:
                del self.turns[endpoint]
                del self.turn_hold[endpoint]
                if self.on_turn_freed is not None:
                    self.on_turn_freed()
        answer, record = turns.take(self.turns.get(endpoint), run, self.turn_clock, ttl_s)
        if record is not None:
            self.turns[endpoint] = record
        return answer

    def give_back(self, endpoint: str, run: str) -> bool:
        self._call("give_back_turn", endpoint, run)
        if turns.give_back(self.turns.get(endpoint), run):
            del self.turns[endpoint]
            return True
        return False

    def current(self, endpoint: str) -> Turn | None:
        return self.turns.get(endpoint)

    # -- PreflightBackend ----------------------------------------------------------------------

    def preflight(self, config: RunConfig) -> PreflightReport:
        self._call("preflight", config.endpoint_name)
        checks = [
            PreflightCheck(name=name, ok=name not in self.preflight_failures,
                           detail=self.preflight_failures.get(name, f"{name} ok"))
            for name in ("base_model", "training_instance", "training_quota", "serving_instance",
                         "serving_quota", "endpoint_name", "endpoint_owner")
        ]  # fmt: skip
        version = config.base_model_version or "15"
        model_id = (
            f"azureml://registries/{config.model_registry}/models/{config.base_model_name}/versions/{version}"
        )
        return PreflightReport(checks=checks, model_id=model_id, model_version=version)

    def _call(self, method: str, *args: Any) -> None:
        with self._lock:  # `upload_chunks` may be called from two threads at once
            self.calls.append((method, args))
            fail = self.failures.get(method, 0) > 0
            if fail:
                self.failures[method] -= 1
        if fail:
            # A realistic leak: SDK errors sometimes echo request headers. Activities must scrub it.
            raise TransientError(
                f"{method}: connection reset (request had Authorization: Bearer {SECRET_KEY})"
            )

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    # -- seeding -------------------------------------------------------------------------------

    def put_blob(self, container: str, name: str, data: bytes) -> BlobRef:
        self._store(container, name, data)
        return self.describe(BlobRef(container=container, name=name))

    def _store(self, container: str, name: str, data: bytes) -> str:
        """Keep `data` as the blob; its etag, derived from its name and bytes (not from a counter:
        uploads running at once get the same etags in any order)."""
        etag = '"0x' + hashlib.sha256(data + name.encode()).hexdigest()[:15].upper() + '"'
        self.blobs[(container, name)] = data
        self.etags[(container, name)] = etag
        return etag

    def live_endpoint(self, name: str, deployment: str, model: ModelRef) -> None:
        self.endpoints[name] = FakeEndpoint(name=name)
        self.add_deployment(name, deployment, model, share=100)

    def add_deployment(
        self,
        endpoint: str,
        deployment: str,
        model: ModelRef,
        *,
        share: int,
        tags: dict[str, str] | None = None,
    ) -> None:
        """A provisioned deployment on `endpoint` (created if missing) taking `share` % of its traffic."""
        spec = DeploymentSpec(
            endpoint_name=endpoint,
            deployment_name=deployment,
            model=model,
            instance_type="Standard_NC6s_v3",
            instance_count=1,
            tags=dict(tags or {}),
        )
        ep = self.endpoints.setdefault(endpoint, FakeEndpoint(name=endpoint))
        ep.deployments[deployment] = FakeDeployment(spec, 0, ProvisioningState.SUCCEEDED)
        ep.traffic[deployment] = share

    # -- DatasetStore --------------------------------------------------------------------------

    stream_chunk = 4096  # bytes per `open_stream` chunk: small, so test datasets come in several

    def describe(self, blob: BlobRef) -> BlobRef:
        self._call("describe", blob.path)
        key = (blob.container, blob.name)
        if key not in self.blobs:
            raise FileNotFoundError(f"blob not found: {blob.path}")
        return BlobRef(
            container=blob.container, name=blob.name, etag=self.etags[key], url=f"{ACCOUNT_URL}/{blob.path}"
        )

    def download(self, blob: BlobRef, dest: Path) -> None:
        self._call("download", blob.path)
        dest.write_bytes(self._version(blob))

    def open_stream(self, blob: BlobRef) -> Iterator[bytes]:
        """The blob in chunks of `stream_chunk` bytes; recorded (and failed) as a "download"."""
        self._call("download", blob.path)
        data = self._version(blob)
        size = self.stream_chunk
        return iter([data[i : i + size] for i in range(0, len(data), size)])

    def _version(self, blob: BlobRef) -> bytes:
        key = (blob.container, blob.name)
        if key not in self.blobs:
            raise FileNotFoundError(f"blob not found: {blob.path}")
        if blob.etag and normalize_etag(blob.etag) != normalize_etag(self.etags[key]):
            from backends.base import BlobChangedError

            raise BlobChangedError(
                f"{blob.path} changed", container=blob.container, name=blob.name, status_code=412
            )
        return self.blobs[key]

    def upload(self, src: Path, blob: BlobRef) -> BlobRef:
        self._call("upload", blob.path)
        return self.put_blob(blob.container, blob.name, src.read_bytes())

    def upload_chunks(self, chunks: Iterable[bytes], blob: BlobRef) -> BlobRef:
        """Recorded (and failed) as an "upload". The blob is stored once every chunk is read (an
        error from `chunks` leaves it as it was); its etag comes from its name and bytes, so two
        uploads running at once get the same etags whichever finishes first."""
        self._call("upload", blob.path)
        data = b"".join(chunks)
        with self._lock:
            etag = self._store(blob.container, blob.name, data)
        # Not through `describe` (as `upload` is): a second recorded call per upload could
        # interleave with the other thread's, and the replay tests compare the calls' order.
        return BlobRef(container=blob.container, name=blob.name, etag=etag, url=f"{ACCOUNT_URL}/{blob.path}")

    # -- TrainingBackend -----------------------------------------------------------------------

    def data_uri(self, blob: BlobRef) -> str:
        return f"azureml://datastores/datasets/paths/{blob.name}"

    def submit_finetune(self, spec: FineTuneSpec) -> str:
        self._call("submit_finetune", spec)
        self.jobs.setdefault(spec.job_name, spec)
        self.job_cursor.setdefault(spec.job_name, 0)
        return spec.job_name

    def get_job(self, job_name: str) -> JobInfo:
        self._call("get_job", job_name)
        if job_name in self.canceled:
            return JobInfo(name=job_name, state=JobState.CANCELED, raw_status="Canceled")
        i = self.job_cursor[job_name]
        raw = self.job_states[min(i, len(self.job_states) - 1)]
        self.job_cursor[job_name] = i + 1
        state = {
            "Completed": JobState.COMPLETED,
            "Failed": JobState.FAILED,
            "Canceled": JobState.CANCELED,
        }.get(raw, JobState.RUNNING if raw == "Running" else JobState.QUEUED)
        error = self.job_error if state is JobState.FAILED else None
        return JobInfo(
            name=job_name,
            state=state,
            raw_status=raw,
            error=error,
            studio_url=f"https://ml.azure.com/runs/{job_name}",
        )

    def cancel_job(self, job_name: str) -> None:
        self._call("cancel_job", job_name)
        self.canceled.append(job_name)

    def register_model(self, job_name: str, model_name: str, tags: dict[str, str]) -> ModelRef:
        self._call("register_model", job_name, model_name, tags)
        for job, ref, _ in self.models:
            if job == job_name:
                return ref
        ref = ModelRef(name=model_name, version=str(len(self.models) + 1))
        self.models.append((job_name, ref, tags))
        self.model_tags[(ref.name, ref.version)] = dict(tags)
        return ref

    def set_model_tags(self, model: ModelRef, tags: dict[str, str]) -> None:
        self._call("set_model_tags", model, dict(tags))
        self.model_tags.setdefault((model.name, model.version), {}).update(tags)

    def loss_history(self, job_name: str) -> LossHistory:
        self._call("loss_history", job_name)
        if job_name not in self.jobs:
            return LossHistory()
        return LossHistory(
            train=[MetricPoint(step=s, value=round(3.0 / s, 4)) for s in range(1, 11)],
            validation=[MetricPoint(step=s, value=round(3.2 / s, 4)) for s in (5, 10)],
        )

    def list_models(self, created_by: str) -> list[tuple[ModelRef, dict[str, str]]]:
        self._call("list_models", created_by)
        return [
            (ModelRef(name=n, version=v), dict(t))
            for (n, v), t in sorted(self.model_tags.items())
            if t.get("created-by") == created_by and ModelRef(name=n, version=v) not in self.deleted_models
        ]

    def delete_model(self, model: ModelRef) -> None:
        self._call("delete_model", model)
        if model not in self.deleted_models:
            self.deleted_models.append(model)

    # -- ServingBackend ------------------------------------------------------------------------

    def get_endpoint(self, name: str) -> EndpointInfo:
        self._call("get_endpoint", name)
        ep = self.endpoints.get(name)
        if ep is None:
            return EndpointInfo(name=name, state=ProvisioningState.NOT_FOUND)
        if ep.polls_left > 0:
            ep.polls_left -= 1
            state = ProvisioningState.CREATING
        else:
            state = ProvisioningState.SUCCEEDED
        return EndpointInfo(
            name=name,
            state=state,
            traffic=dict(ep.traffic),
            deployments=sorted(ep.deployments),
            scoring_uri=SCORING_URI,
            tags=dict(ep.tags),
        )

    def list_endpoints(self) -> list[EndpointInfo]:
        self._call("list_endpoints")
        return [
            EndpointInfo(
                name=ep.name,
                state=ProvisioningState.SUCCEEDED,
                traffic=dict(ep.traffic),
                deployments=sorted(ep.deployments),
                scoring_uri=SCORING_URI,
                tags=dict(ep.tags),
            )
            for ep in sorted(self.endpoints.values(), key=lambda e: e.name)
        ]

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        self._call("list_deployments", endpoint)
        ep = self.endpoints.get(endpoint)
        if ep is None:
            return []
        return [
            DeploymentInfo(
                name=name,
                instance_type=d.spec.instance_type,
                instance_count=d.spec.instance_count,
                state=d.final if d.polls_left == 0 else ProvisioningState.CREATING,
                tags=dict(d.spec.tags),
            )
            for name, d in sorted(ep.deployments.items())
        ]

    def update_endpoint_tags(self, name: str, tags: dict[str, str]) -> None:
        self._call("update_endpoint_tags", name, dict(tags))
        self.endpoints[name].tags.update(tags)

    def delete_endpoint(self, name: str) -> None:
        self._call("delete_endpoint", name)
        if self.endpoints.pop(name, None) is not None:
            self.deleted_endpoints.append(name)

    def begin_create_endpoint(self, name: str, tags: dict[str, str]) -> None:
        self._call("begin_create_endpoint", name, tags)
        self.endpoints.setdefault(
            name, FakeEndpoint(name=name, polls_left=self.provisioning_polls, tags=dict(tags))
        )

    def begin_create_deployment(self, spec: DeploymentSpec) -> None:
        self._call("begin_create_deployment", spec)
        ep = self.endpoints[spec.endpoint_name]
        if spec.deployment_name not in ep.deployments:
            ep.deployments[spec.deployment_name] = FakeDeployment(
                spec, self.provisioning_polls, self.deployment_final
            )
            ep.traffic.setdefault(spec.deployment_name, 0)

    def get_deployment_state(self, endpoint: str, deployment: str) -> ProvisioningState:
        self._call("get_deployment_state", endpoint, deployment)
        ep = self.endpoints.get(endpoint)
        d = ep.deployments.get(deployment) if ep else None
        if d is None:
            return ProvisioningState.NOT_FOUND
        if d.polls_left > 0:
            d.polls_left -= 1
            return ProvisioningState.CREATING
        return d.final

    def score(self, endpoint: str, deployment: str | None, payload: dict[str, object]) -> ScoreResult:
        self._call("score", endpoint, deployment, payload)
        redact.remember(SECRET_KEY)  # the real backends read the key here
        self.scored.append((endpoint, deployment, payload))
        if self.smoke_status != 200:
            return ScoreResult(ok=False, status_code=self.smoke_status, error="upstream error", latency_ms=12)
        messages = payload["input_data"]["input_string"]  # type: ignore[index]
        reference = self._reference(messages)
        if reference is not None:  # an evaluation call: the prompt comes from a stored dataset
            name = deployment or ""
            status = next((c for prefix, c in self.eval_status.items() if name.startswith(prefix)), 200)
            if status != 200:
                return ScoreResult(ok=False, status_code=status, error="eval call failed", latency_ms=12)
            if self.oracles and name.startswith(self.oracles):
                return ScoreResult(ok=True, status_code=200, output=reference, latency_ms=12)
        return ScoreResult(ok=True, status_code=200, output=self.smoke_answer, latency_ms=12)

    def scorer(self, endpoint: str, *, timeout_s: float) -> Any:
        self._call("scorer", endpoint, timeout_s)
        redact.remember(SECRET_KEY)  # the real backends read the key here, once
        return lambda deployment, payload: self.score(endpoint, deployment, payload)

    def _reference(self, messages: Any) -> str | None:
        """The assistant turn that follows `messages` in a stored dataset, or None."""
        import json

        for data in self.blobs.values():
            for line in data.splitlines():
                try:
                    turns = json.loads(line)["messages"]
                except (ValueError, KeyError, TypeError):
                    continue
                if turns[: len(messages)] == messages and len(turns) > len(messages):
                    return str(turns[len(messages)]["content"])
        return None

    def set_traffic(self, endpoint: str, traffic: dict[str, int]) -> None:
        self._call("set_traffic", endpoint, dict(traffic))
        ep = self.endpoints[endpoint]
        unknown = set(traffic) - set(ep.deployments)
        if unknown:
            raise ValueError(f"traffic names unknown deployments {sorted(unknown)}")
        ep.traffic = {name: traffic.get(name, 0) for name in ep.deployments}
        self.traffic_history.append(dict(ep.traffic))

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        self._call("delete_deployment", endpoint, deployment)
        ep = self.endpoints.get(endpoint)
        if ep is None or deployment not in ep.deployments:
            return
        if ep.traffic.get(deployment, 0) > 0:
            raise ValueError(f"cannot delete {deployment}: it still has {ep.traffic[deployment]} % traffic")
        del ep.deployments[deployment]
        ep.traffic.pop(deployment, None)
        self.deleted.append(deployment)

    # -- ConnectionStore -----------------------------------------------------------------------

    def publish_connection(self, name: str, endpoint: str) -> str:
        self._call("publish_connection", name, endpoint)
        redact.remember(SECRET_KEY)
        self.connections[name] = {"endpoint": SCORING_URI, "key": SECRET_KEY}
        return SCORING_URI

    def connection_exists(self, name: str) -> bool:
        self._call("connection_exists", name)
        return name in self.connections

    def delete_connection(self, name: str) -> None:
        self._call("delete_connection", name)
        self.connections.pop(name, None)


def ultrachat_lines(n: int) -> bytes:
    """`n` valid ultrachat_200k-shaped JSONL lines."""
    import json

    rows = []
    for i in range(n):
        prompt = f"Question number {i}: how do I fine-tune a small language model?"
        rows.append(
            json.dumps(
                {
                    "prompt": prompt,
                    "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": f"Answer {i}: prepare data, train, evaluate."},
                    ],
                }
            )
        )
    return ("\n".join(rows) + "\n").encode()


def copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, dirs_exist_ok=True)
