"""A time-aware in-memory Azure: `FakeAzure` whose slow operations last scripted simulated time.

`TimedAzure` reads the time from a clock it is given (the replay harness's: `lambda:
replayer.clock`) instead of counting polls: a fine-tuning job is Running until `submitted_at +
training` and Completed from then on; a new endpoint is Creating, a new deployment Creating
(Azure reports Creating or Updating while it provisions), until their creation times have passed
since the call that started them. `on_job_end(job, ended_at)` is called when a job is submitted,
so a caller can announce the job's end as Azure ML's RunStatusChanged would
(`Replayer.raise_at`).

`Latencies` holds the scripted durations; `Latencies.activity_time` is the replay harness's
`activity_time` callback (how long each activity runs), with the slow activities (registration,
smoke test, evaluation) taking their scripted time and every other one `call`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.contracts import Activity
from core.models import DeploymentInfo, DeploymentSpec, EndpointInfo, JobInfo, JobState, ProvisioningState
from testing.fakes import FakeAzure


@dataclass(frozen=True)
class Latencies:
    """Scripted durations, in seconds."""

    training: float = 90 * 60
    endpoint_creation: float = 8 * 60
    deployment_creation: float = 15 * 60
    registration: float = 60
    smoke_test: float = 30
    evaluation: float = 150  # all of the evaluation's waves together
    call: float = 1  # any other activity: one control-plane call plus the host's dispatch
    # The evaluation's shape, to split `evaluation` over its waves (each wave takes evaluation /
    # waves; the batches of a wave run at once): EVAL_MAX_PARALLEL, and 1 side for a new endpoint
    # (nothing live to compare with) or 2 (new and live).
    eval_max_parallel: int = 2
    eval_sides: int = 1

    @property
    def smoke_and_evaluation(self) -> float:
        return self.smoke_test + self.evaluation

    def activity_time(self, name: str, payload: Any) -> timedelta:
        """How long the activity `name` runs (the Replayer's `activity_time`)."""
        seconds = {
            Activity.REGISTER_MODEL.value: self.registration,
            Activity.SMOKE_TEST.value: self.smoke_test,
        }.get(name, self.call)
        if name == Activity.EVALUATE_BATCH.value:
            waves = evaluation_waves(
                int(payload["sample_size"]),
                int(payload["batch_size"]),
                self.eval_max_parallel,
                self.eval_sides,
            )
            seconds = self.evaluation / max(1, waves)
        return timedelta(seconds=seconds)


def evaluation_waves(sample_size: int, batch_size: int, max_parallel: int, sides: int) -> int:
    """How many waves of `EvaluateBatch` the orchestrator makes (orchestrators/finetune.py
    `evaluate`): ceil(sample / batch) batches per side, `max_parallel` batches per wave."""
    if sample_size == 0:
        return 0
    return math.ceil(math.ceil(sample_size / batch_size) * sides / max_parallel)


class TimedAzure(FakeAzure):
    """`FakeAzure` on a simulated clock (see the module's docstring)."""

    def __init__(
        self,
        now: Callable[[], datetime],
        latencies: Latencies | None = None,
        *,
        on_job_end: Callable[[str, datetime], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.now = now
        self.latencies = latencies or Latencies()
        self.on_job_end = on_job_end
        self.job_ends: dict[str, datetime] = {}
        self.submitted_at: dict[str, datetime] = {}
        self.ready_at: dict[tuple[str, str | None], datetime] = {}  # (endpoint, deployment or None)
        self.endpoint_begun_at: dict[str, datetime] = {}  # when the creation of a new endpoint began

    # -- jobs ----------------------------------------------------------------------------------

    def submit_finetune(self, spec: Any) -> str:
        job = super().submit_finetune(spec)
        if job not in self.job_ends:
            now = self.now()
            self.submitted_at[job] = now
            self.job_ends[job] = now + timedelta(seconds=self.latencies.training)
            if self.on_job_end is not None:
                self.on_job_end(job, self.job_ends[job])
        return job

    def get_job(self, job_name: str) -> JobInfo:
        self._call("get_job", job_name)
        if job_name in self.canceled:
            return JobInfo(name=job_name, state=JobState.CANCELED, raw_status="Canceled")
        done = self.now() >= self.job_ends[job_name]
        return JobInfo(
            name=job_name,
            state=JobState.COMPLETED if done else JobState.RUNNING,
            raw_status="Completed" if done else "Running",
            studio_url=f"https://ml.azure.com/runs/{job_name}",
        )

    # -- provisioning --------------------------------------------------------------------------

    def _sync(self) -> None:
        """Provisioning state from the clock: what is not ready yet has one poll left."""
        now = self.now()
        for (endpoint, deployment), ready in self.ready_at.items():
            ep = self.endpoints.get(endpoint)
            if ep is None:
                continue
            left = 1 if now < ready else 0
            if deployment is None:
                ep.polls_left = left
            elif deployment in ep.deployments:
                ep.deployments[deployment].polls_left = left

    def begin_create_endpoint(self, name: str, tags: dict[str, str]) -> None:
        new = name not in self.endpoints
        super().begin_create_endpoint(name, tags)
        if new:
            self.endpoint_begun_at[name] = self.now()
            self.ready_at[(name, None)] = self.now() + timedelta(seconds=self.latencies.endpoint_creation)
        self._sync()

    def begin_create_deployment(self, spec: DeploymentSpec) -> None:
        key = (spec.endpoint_name, spec.deployment_name)
        new = spec.deployment_name not in self.endpoints[spec.endpoint_name].deployments
        super().begin_create_deployment(spec)
        if new:
            self.ready_at[key] = self.now() + timedelta(seconds=self.latencies.deployment_creation)
        self._sync()

    def get_endpoint(self, name: str) -> EndpointInfo:
        self._sync()
        return super().get_endpoint(name)

    def get_deployment_state(self, endpoint: str, deployment: str) -> ProvisioningState:
        self._sync()
        return super().get_deployment_state(endpoint, deployment)

    def list_deployments(self, endpoint: str) -> list[DeploymentInfo]:
        self._sync()
        return super().list_deployments(endpoint)
