"""The fine-tune orchestration: pure, deterministic control flow.

validate → preflight → submit (and begin the endpoint, so it provisions while the job trains) →
monitor (the job's status-changed event or a fallback timer, or backoff polling; the job is
always read before acting; deadline; continue-as-new keeps history bounded) → register →
endpoint (in the endpoint's release turn) → new deployment at 0 % → smoke test → evaluation
gate (new vs live on a seeded held-out sample, batched fan-out) → 100 % → delete old deployment →
Prompt flow connection → RunSummary. A dry run stops after preflight with a plan. Every run that
submitted a job ends by writing its report next to the dataset; every terminal outcome (not a dry
run) is announced by a signed CloudEvent; neither can change the outcome.

No I/O, no clock, no environment here: time is `context.current_utc_datetime`, configuration
arrives frozen in the input, every side effect is an activity. Domain outcomes (invalid data,
failed preflight, a failed job, a failed smoke test) end the run with a summary; transient
faults are retried by `call_activity_with_retry` and, once retries are exhausted, end the run as
failed after the cleanup the step needs (cancel the job, delete the new deployment, restore
traffic). A `cancel` event is honoured at every step until traffic has moved: it cancels the job
if one runs, deletes a new deployment that carries no traffic, and ends the run as canceled.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import azure.durable_functions as df

from core import gate
from core.contracts import (
    CANCEL_EVENT,
    JOB_EVENT,
    ORCHESTRATOR,
    ActivityInput,
    CancelJob,
    CreateDeployment,
    DeleteDeployment,
    EnsureEndpoint,
    EvaluateBatch,
    GetDeploymentState,
    GetEndpoint,
    GetJobStatus,
    GiveBackEndpointTurn,
    Notify,
    PrepareEndpoint,
    RegisterModel,
    RemoveUnusedEndpoint,
    SetTraffic,
    SmokeTest,
    SubmitFinetune,
    TagModel,
    TakeEndpointTurn,
    UpdateConnection,
    UpdateEndpointTags,
    ValidateDataset,
    WriteReport,
    payload_of,
)
from core.contracts import Preflight as PreflightCall
from core.evaluation import METRIC
from core.models import (
    DatasetOutcome,
    Delivery,
    EndpointInfo,
    Evaluation,
    ExampleScore,
    JobInfo,
    JobState,
    ModelRef,
    PollPolicy,
    ProvisioningState,
    RunStatus,
    RunSummary,
)
from core.naming import (
    EXPIRES_TAG,
    NEVER,
    expiry_tag,
    job_name,
    lineage_tags,
    pick_deployments,
    report_prefix,
)
from core.preflight import GPU_HOURS_BASIS, Plan, PreflightReport, estimate_gpu_hours
from core.steps import Step
from orchestrators.run_input import Progress, RunInput

bp = df.Blueprint()

Flow = Generator[Any, Any, Any]  # a generator the orchestrator function yields from
Out = TypeVar("Out")
MAX_REPORTED_ERRORS = 20
TURN_MARGIN_S = 3600  # on top of the deploy deadline: covers the evaluation's waves and the rest


class StepFailed(Exception):
    """A step ended in a domain failure; the message is the run's reason."""


class Canceled(Exception):
    """A `cancel` event arrived; the message is who/why, if the caller said."""


class Rejected(Exception):
    """The evaluation gate said no; the message is its reason."""


class ContinuedAsNew:
    """What a step returns when the orchestration continued as new: this generation ends here,
    with no summary (a step that forgets to return its result cannot pass for this)."""


CONTINUED = ContinuedAsNew()


class Ended:
    """A step whose activity's retries were exhausted: the run ends with this summary."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary


class FinetuneRun:
    def __init__(self, context: df.DurableOrchestrationContext, run: RunInput) -> None:
        self.ctx = context
        self.request = run.request
        self.cfg = run.request.config
        self.run_id = context.instance_id
        self.progress = run.progress or Progress(started_at=self.now.isoformat())
        self.retry = df.RetryOptions(
            first_retry_interval_in_milliseconds=self.cfg.activity_retry_first_interval_ms,
            max_number_of_attempts=self.cfg.activity_retry_attempts,
        )
        self._step: Step | None = None
        self._step_started: datetime = self.now
        self.cancel_event = context.wait_for_external_event(CANCEL_EVENT)
        self.job_event: df.Task | None = None  # the pending wait for the job's status-changed event
        self.cancelable = True
        self.releasing = False  # the release (in the endpoint's turn) has begun
        self.evaluated: dict[str, list[ExampleScore]] = {}  # per-example scores, for the report
        self.last_step: Step | None = None  # the last step shown before the outcome was decided
        self.outcome: str | None = None  # the run's status, once `summary` decided it

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.ctx.current_utc_datetime

    def call(self, inp: ActivityInput[Any]) -> df.Task:
        """The durable task of the activity `inp` is the input of (with the run's retry policy)."""
        return self.ctx.call_activity_with_retry(inp.activity.value, self.retry, payload_of(inp))

    def act(self, inp: ActivityInput[Out]) -> Generator[Any, Any, Out]:
        """Run the activity `inp` is the input of and return its output, parsed by its contract;
        then honour a cancel that arrived meanwhile."""
        result = inp.parse_output((yield self.call(inp)))
        self.check_cancel()
        return result

    def sleep(self, seconds: int) -> Flow:
        """A durable timer that a cancel event interrupts."""
        timer = self.ctx.create_timer(self.now + timedelta(seconds=seconds))
        yield self.ctx.task_any([timer, self.cancel_event])
        self.check_cancel()

    def listen_for_cancel(self) -> Flow:
        """Register the cancel event with the runtime at the start of every generation (an
        immediate timer raced against it), so `check_cancel` sees events that arrive while an
        activity runs."""
        yield from self.sleep(0)

    def check_cancel(self) -> None:
        if self.cancelable and self.cancel_event.is_completed:
            detail = self.cancel_event.result
            raise Canceled(detail.get("reason", "") if isinstance(detail, dict) else str(detail or ""))

    def elapsed_since(self, iso: str) -> float:
        return (self.now - datetime.fromisoformat(iso)).total_seconds()

    def status(self, step: Step | str, **extra: Any) -> None:
        """Custom status, set at every step: what a person watching the run wants to see (`step`
        is a step, or the run's final status)."""
        p = self.progress
        if isinstance(step, Step) and step is not Step.ROLL_BACK and self.outcome is None:
            self.last_step = step  # a rollback undoes the step that failed; it is not where the run stopped
        body: dict[str, Any] = {
            "step": step.status if isinstance(step, Step) else step,
            "dataset": self.request.dataset.path,
            "job": p.job,
            "job_status": p.job_status,
            "elapsed_s": round(self.elapsed_since(p.started_at)),
            # For a step timeline (the dashboard): the steps done so far, when the current one began.
            "durations_s": dict(p.durations_s),
            "step_started_at": self.step_started_at(step),
            "studio_url": p.studio_url,
        }
        if self.outcome is not None:  # decided: the report and the notification still run
            body["outcome"] = self.outcome
            body["stopped_at"] = self.last_step.status if self.last_step is not None else None
        body.update({k: v for k, v in extra.items() if v is not None})
        self.ctx.set_custom_status(body)

    def step_started_at(self, step: Step | str) -> str | None:
        """When the step shown began: training at submit (across generations), the wait for the
        endpoint at the first take, any other step when `begin` started it (its sub-steps, such as
        creating the endpoint, included)."""
        if not isinstance(step, Step) or self.outcome is not None:
            return None  # the run's own status, or the wrap-up after it
        if step is Step.TRAIN:
            return self.progress.submitted_at
        if self._step is not None or step is Step.WAIT_FOR_ENDPOINT:
            return self._step_started.isoformat()
        return None

    def begin(self, step: Step, **extra: Any) -> None:
        """`step` starts now: the custom status shows it, and `end` times it."""
        self._step, self._step_started = step, self.now
        self.status(step, **extra)

    def end(self) -> None:
        """The step `begin` started is done: its duration goes into the summary."""
        if self._step is not None and self._step.duration_key is not None:
            seconds = (self.now - self._step_started).total_seconds()
            self.progress.durations_s[self._step.duration_key] = round(seconds, 3)
        self._step = None

    def summary(self, status: RunStatus, reason: str = "", **fields: Any) -> dict[str, Any]:
        p = self.progress
        reason = " ".join(reason.split())  # task failures arrive as "<reason> \n <details>"
        result = RunSummary(
            status=status,
            reason=reason,
            instance_id=self.run_id,
            dataset=self.request.dataset,
            train_examples=p.train_examples,
            validation_examples=p.validation_examples,
            job=p.job,
            job_state=p.job_status,
            durations_s=dict(p.durations_s),
            **fields,
        )
        self.outcome = status.value
        self.status(status.value, reason=reason or None)
        return result.model_dump(mode="json")

    def poll(
        self, inp: ActivityInput[Out], policy: PollPolicy, settled: Callable[[Out], bool], step: Step
    ) -> Generator[Any, Any, Out]:
        """Call the activity until `settled(result)` or the policy's deadline; return the last result."""
        started, interval = self.now, policy.first_interval_s
        while True:
            result = yield from self.act(inp)
            if settled(result):
                return result
            waited = (self.now - started).total_seconds()
            if waited >= policy.deadline_s:
                raise StepFailed(
                    f"{step.status}: still not ready after {round(waited)} s (limit {policy.deadline_s} s)"
                )
            self.status(step, waiting_s=round(waited))
            yield from self.sleep(min(interval, policy.deadline_s - int(waited)))
            interval = policy.next_interval(interval)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> Flow:
        try:
            yield from self.listen_for_cancel()
            result = yield from self.steps()
        except Canceled as canceled:
            result = yield from self.canceled(canceled)
        if result is CONTINUED:
            return None
        if not isinstance(result, dict):
            raise TypeError(f"the run's steps ended without a summary: {result!r}")
        yield from self.remove_unused_endpoint()
        return (yield from self.finish(result))

    def canceled(self, canceled: Canceled) -> Flow:
        why = f" ({canceled})" if str(canceled) else ""
        if self.progress.job and self.progress.job_status not in {s.value for s in JobState if s.terminal}:
            self.cancelable = False
            yield from self.cancel_job_quietly()
            return self.summary(
                RunStatus.CANCELED, f"canceled{why}; fine-tuning job {self.progress.job} canceled"
            )
        return self.summary(RunStatus.CANCELED, f"canceled{why}")

    def finish(self, result: dict[str, Any]) -> Flow:
        """Report (if a job was submitted) and completion event (unless a dry run); best effort:
        the outcome is already decided and neither step can change it."""
        self.cancelable = False
        summary = RunSummary.model_validate(result)
        if summary.status is RunStatus.PLANNED:
            return result
        if self.progress.job:
            prefix = f"{summary.dataset.container}/{report_prefix(summary.dataset, self.run_id)}"
            summary = summary.model_copy(update={"report": prefix})
            self.status(Step.WRITE_REPORT, report=prefix)
            report = WriteReport(summary=summary, config=self.cfg, examples=self.evaluated)
            try:
                yield self.call(report)
            except Exception as exc:
                note = f"run report not written: {' '.join(str(exc).split())}"
                summary = summary.model_copy(
                    update={"report": None, "reason": "; ".join(r for r in (summary.reason, note) if r)}
                )
        self.status(Step.NOTIFY)
        event = Notify(
            outcome=summary.status.value,
            subject=self.run_id,
            data=summary.model_dump(mode="json"),
            time=self.now.isoformat(),
        )
        try:
            delivery = event.parse_output((yield self.call(event)))
        except Exception as exc:  # the activity reports failures as data; this is a crash
            delivery = Delivery(
                event_type=f"run.{summary.status.value}", event_id="", delivered=False, error=str(exc)[:300]
            )
        summary = summary.model_copy(update={"notification": delivery})
        evaluation = summary.evaluation
        self.status(
            summary.status.value,
            reason=summary.reason or None,
            report=summary.report,
            new_score=evaluation.new.score if evaluation else None,
            live_score=evaluation.live.score if evaluation and evaluation.live else None,
            notified=delivery.delivered if not delivery.skipped else None,
        )
        return summary.model_dump(mode="json")

    def guarded(
        self, step: Flow, failed: str, cleanup: Callable[[], Flow] | None = None, **fields: Any
    ) -> Flow:
        """`step`'s result, or `Ended` (the run fails with "<failed>: <error>", after `cleanup`)
        when its activity's retries are exhausted. A cancel passes through."""
        try:
            return (yield from step)
        except Canceled:
            raise
        except Exception as exc:
            if cleanup is not None:
                yield from cleanup()
            return Ended(self.summary(RunStatus.FAILED, f"{failed}: {exc}", **fields))

    def steps(self) -> Flow:
        p = self.progress
        if p.job is None:
            # retries exhausted here means storage unreachable, not bad data
            outcome = yield from self.guarded(self.validate(), "validating the dataset failed")
            if isinstance(outcome, Ended):
                return outcome.summary
            if not outcome.ok:
                return self.invalid(outcome)
            report = yield from self.guarded(self.preflight(), "preflight could not run")
            if isinstance(report, Ended):
                return report.summary
            if not report.ok:
                return self.summary(
                    RunStatus.PREFLIGHT_FAILED,
                    f"preflight failed: {'; '.join(report.reasons)}",
                    preflight=report.reasons,
                )
            if self.request.dry_run:
                return (yield from self.plan(outcome, report))
            submitted = yield from self.guarded(
                self.submit(), "submitting the fine-tuning job failed", self.cancel_unconfirmed_job
            )
            if isinstance(submitted, Ended):
                return submitted.summary
            yield from self.prepare_endpoint()
        job = yield from self.monitor()
        if job is CONTINUED:
            return CONTINUED
        if job.state is not JobState.COMPLETED:
            detail = f": {job.error}" if job.error else ""
            return self.summary(
                RunStatus.FAILED, f"fine-tuning job {job.name} ended {job.raw_status}{detail}"
            )
        model = yield from self.guarded(self.register(), "registering the model failed")
        if isinstance(model, Ended):
            return model.summary
        return (yield from self.deploy(model))

    def validate(self) -> Flow:
        self.begin(Step.VALIDATE)
        request = self.request
        outcome = yield from self.act(
            ValidateDataset(
                instance_id=self.run_id,
                dataset=request.dataset,
                validation=request.validation,
                config=self.cfg,
                dry_run=request.dry_run,
            )
        )
        self.end()
        p = self.progress
        p.train_examples, p.validation_examples = outcome.train_examples, outcome.validation_examples
        p.train, p.validation = outcome.train, outcome.validation
        return outcome

    def invalid(self, outcome: DatasetOutcome) -> dict[str, Any]:
        errors = [e for r in outcome.reports for e in r.errors][:MAX_REPORTED_ERRORS]
        total = sum(r.error_count for r in outcome.reports)
        first = errors[0] if errors else None
        where = f"{first.file}:{first.line} {first.field}: {first.message}" if first else "no examples"
        reason = f"dataset failed validation ({total} error(s)); first: {where}"
        return self.summary(RunStatus.INVALID_DATASET, reason, validation_errors=errors)

    def preflight(self) -> Flow:
        self.begin(Step.PREFLIGHT)
        request = self.request
        report = yield from self.act(
            PreflightCall(dataset=request.dataset, validation=request.validation, config=self.cfg)
        )
        self.end()
        return report

    def plan(self, outcome: DatasetOutcome, report: PreflightReport) -> Flow:
        """A dry run's answer: what the real run would create and roughly cost."""
        self.begin(Step.PLAN)
        endpoint = yield from self.act(GetEndpoint(name=self.cfg.endpoint_name))
        new, live = pick_deployments(endpoint.traffic, self.request.real_run_id or self.run_id)
        first = outcome.reports[0]
        share = outcome.train_examples / first.examples if first.examples else 1.0
        train_tokens = round(first.tokens.total * min(1.0, share))
        epochs = self.cfg.hyperparameters.num_train_epochs
        plan = Plan(
            model_id=report.model_id,
            model_version=report.model_version,
            training_instance_type=self.cfg.training_instance_type,
            serving_instance_type=self.cfg.serving_instance_type,
            serving_instance_count=self.cfg.serving_instance_count,
            train_examples=outcome.train_examples,
            validation_examples=outcome.validation_examples,
            train_tokens=train_tokens,
            epochs=epochs,
            estimated_gpu_hours=estimate_gpu_hours(train_tokens, epochs),
            gpu_hours_basis=GPU_HOURS_BASIS,
            endpoint=self.cfg.endpoint_name,
            deployment=new,
            replaces_deployment=live,
            checks=report.checks,
        )
        self.end()
        return self.summary(RunStatus.PLANNED, "dry run: nothing was created", plan=plan)

    def submit(self) -> Flow:
        self.begin(Step.SUBMIT)
        p = self.progress
        submit = SubmitFinetune(
            instance_id=self.run_id,
            dataset=self.request.dataset,
            train=p.train,
            validation=p.validation,
            config=self.cfg,
        )
        p.job = submit.parse_output((yield self.call(submit)))
        p.submitted_at = self.now.isoformat()
        p.next_poll_s = self.cfg.job_poll.first_interval_s
        self.end()
        self.check_cancel()

    def monitor(self) -> Flow:
        """Watch the job until it ends or the deadline passes.

        With job events on (`job_event_fallback_s`), wait for the job's status-changed event or
        the fallback timer, whichever comes first; otherwise poll with backoff. Either way the job
        is read before anything is decided, so a lost, late, repeated or forged event can neither
        skip nor repeat a step: it only decides when the job is read. After
        `monitor_polls_per_generation` reads the orchestration continues as new with its progress,
        so the history of any one generation stays small however long training runs.
        """
        p, policy = self.progress, self.cfg.job_poll
        assert p.job is not None and p.submitted_at is not None
        polls_here = 0
        while True:
            try:
                job = yield from self.act(GetJobStatus(job=p.job))
            except Canceled:
                raise
            except Exception as exc:  # retries exhausted: do not leave a GPU job unwatched
                yield from self.cancel_job_quietly()
                return JobInfo(name=p.job, state=JobState.FAILED, raw_status="Unknown", error=str(exc))
            p.job_status, p.polls = job.raw_status, p.polls + 1
            p.studio_url = job.studio_url or p.studio_url
            elapsed = self.elapsed_since(p.submitted_at)
            p.durations_s[str(Step.TRAIN.duration_key)] = round(elapsed, 3)
            if job.state.terminal:
                self.status(Step.TRAIN)
                return job
            if elapsed >= policy.deadline_s:
                yield from self.cancel_job_quietly()
                hours = policy.deadline_s / 3600
                return JobInfo(
                    name=p.job,
                    state=JobState.CANCELED,
                    raw_status="DeadlineExceeded",
                    error=f"deadline of {hours:g} h passed; the job was canceled",
                )
            fallback_s = self.cfg.job_event_fallback_s
            wait_s = min(fallback_s or p.next_poll_s, max(1, policy.deadline_s - int(elapsed)))
            next_at = self.now + timedelta(seconds=wait_s)
            self.status(
                Step.TRAIN,
                metrics=job.metrics or None,
                next_poll_at=next_at.isoformat(),
                waiting_for_event=True if fallback_s else None,
            )
            if fallback_s:
                yield from self.wait_for_job_event(wait_s)
            else:
                yield from self.sleep(wait_s)
                p.next_poll_s = policy.next_interval(p.next_poll_s)
            polls_here += 1
            if polls_here >= self.cfg.monitor_polls_per_generation:
                p.generation += 1
                self.ctx.continue_as_new(RunInput(request=self.request, progress=p).model_dump(mode="json"))
                return CONTINUED

    def wait_for_job_event(self, seconds: int) -> Flow:
        """Until the job's status-changed event, the fallback timer or a cancel, whichever first.

        One wait for the event stays pending across timeouts: an event raised while a timer was
        running completes it, and a new wait starts only once it has (events are delivered to
        waits in the order they were made)."""
        if self.job_event is None:
            self.job_event = self.ctx.wait_for_external_event(JOB_EVENT)
        timer = self.ctx.create_timer(self.now + timedelta(seconds=seconds))
        winner = yield self.ctx.task_any([self.job_event, timer, self.cancel_event])
        self.check_cancel()
        if winner is self.job_event:
            self.job_event = None
            self.progress.job_events += 1

    def prepare_endpoint(self) -> Flow:
        """Start creating the endpoint now, so its provisioning overlaps training instead of
        following registration (an endpoint with no deployment runs no compute). An existing
        endpoint is only read. Best effort: the release creates it if this did not. Its expiry
        covers the job's and the deployment's deadlines, so the cost guard leaves it alone while
        the run still needs it."""
        cfg = self.cfg
        horizon = self.now + timedelta(seconds=cfg.job_poll.deadline_s + cfg.deploy_poll.deadline_s)
        tags = lineage_tags(self.run_id, self.request.dataset, self.progress.job) | expiry_tag(
            horizon, cfg.endpoint_ttl_hours
        )
        try:
            created = yield from self.act(PrepareEndpoint(name=cfg.endpoint_name, tags=tags))
        except Canceled:
            raise
        except Exception:
            return
        self.progress.endpoint_created = created

    def remove_unused_endpoint(self) -> Flow:
        """A run that created the endpoint while its job trained and ends before its release
        deletes it again, if nothing else uses it (best effort; the cost guard's TTL is the net)."""
        if not self.progress.endpoint_created or self.releasing:
            return
        try:
            yield self.call(RemoveUnusedEndpoint(name=self.cfg.endpoint_name, run=self.run_id))
        except Exception:
            return

    def cancel_unconfirmed_job(self) -> Flow:
        """The job may exist even though the submit call failed (a lost response): cancel it by its
        deterministic name so no GPU job runs unwatched."""
        self.progress.job = job_name(self.run_id)
        yield from self.cancel_job_quietly()

    def cancel_job_quietly(self) -> Flow:
        try:
            yield self.call(CancelJob(job=str(self.progress.job)))
        except Exception:  # best effort; the failure reason is already being reported
            return

    def register(self) -> Flow:
        self.begin(Step.REGISTER)
        job = str(self.progress.job)
        model = yield from self.act(
            RegisterModel(
                job=job,
                model_name=self.cfg.output_model_prefix,
                tags=lineage_tags(self.run_id, self.request.dataset, job),
            )
        )
        self.end()
        return model

    # -- the endpoint's release turn ----------------------------------------------------------

    @property
    def turn_ttl_s(self) -> int:
        """How long a turn lasts unless renewed: the longest step of a release (creating the
        deployment, bounded by the deploy deadline; the evaluation, by its waves) plus a margin.
        The holder renews it before each step, so only a vanished holder lets it expire."""
        return self.cfg.deploy_poll.deadline_s + TURN_MARGIN_S

    def wait_for_turn(self, endpoint: str) -> Flow:
        """Take the endpoint's release turn, waiting (durable timers, cancelable) while another
        run holds it; the custom status says whom we wait for."""
        policy, started = self.cfg.deploy_poll, self.now
        interval = policy.first_interval_s
        refused = False
        if self.outcome is None:
            self.last_step = Step.WAIT_FOR_ENDPOINT  # a take that fails stops the run here, not at register
        while True:
            answer = yield from self.act(self._take_turn(endpoint))
            if answer.granted:
                if refused:  # a turn granted at once is no wait
                    waited_s = round((self.now - started).total_seconds(), 3)
                    self.progress.durations_s[str(Step.WAIT_FOR_ENDPOINT.duration_key)] = waited_s
                return
            if not refused:
                refused = True
                self._step, self._step_started = None, started  # the wait began with the first take
            self.status(
                Step.WAIT_FOR_ENDPOINT,
                endpoint=endpoint,
                waiting_for=answer.holder,
                message=f"waiting for {answer.holder} to release {endpoint}",
                waiting_s=round((self.now - started).total_seconds()),
            )
            yield from self.sleep(interval)
            interval = policy.next_interval(interval)

    def renew_turn(self, endpoint: str) -> Flow:
        take = self._take_turn(endpoint)
        answer = take.parse_output((yield self.call(take)))
        if not answer.granted:
            raise StepFailed(f"lost the release turn of {endpoint} to {answer.holder} (it expired)")

    def give_back_turn(self, endpoint: str) -> Flow:
        """Best effort: a turn not given back expires on its own (`turn_ttl_s`)."""
        try:
            yield self.call(GiveBackEndpointTurn(endpoint=endpoint, run=self.run_id))
        except Exception:
            return

    def _take_turn(self, endpoint: str) -> TakeEndpointTurn:
        return TakeEndpointTurn(endpoint=endpoint, run=self.run_id, ttl_s=self.turn_ttl_s)

    def deploy(self, model: ModelRef) -> Flow:
        """One release at a time per endpoint: the whole release (endpoint, new deployment, smoke
        test, evaluation against whatever is live now, traffic, old deployment) runs in this run's
        turn, given back however it ends (a cancel included)."""
        endpoint_name = self.cfg.endpoint_name
        try:
            waited = yield from self.guarded(
                self.wait_for_turn(endpoint_name), f"taking the release turn of {endpoint_name}", model=model
            )
        except Canceled:
            yield from self.give_back_turn(endpoint_name)  # granted just before the cancel arrived
            raise
        if isinstance(waited, Ended):
            return waited.summary
        try:
            result = yield from self.release(model)
        except Exception:
            yield from self.give_back_turn(endpoint_name)
            raise
        yield from self.give_back_turn(endpoint_name)
        return result

    def release(self, model: ModelRef) -> Flow:
        """The release, in this run's turn: the endpoint; the new deployment rolled out (created,
        smoke-tested, gated, given the traffic; rolled back on any failure); then go-live."""
        cfg, endpoint_name = self.cfg, self.cfg.endpoint_name
        self.releasing = True
        lineage = lineage_tags(self.run_id, self.request.dataset, self.progress.job)
        tags = lineage | expiry_tag(self.now, cfg.endpoint_ttl_hours)
        self.begin(Step.DEPLOY, endpoint=endpoint_name)
        endpoint = yield from self.guarded(
            self.ensure_endpoint(tags), "endpoint", model=model, endpoint=endpoint_name
        )
        if isinstance(endpoint, Ended):
            return endpoint.summary

        new, live = pick_deployments(endpoint.traffic, self.run_id)
        fields: dict[str, Any] = {"model": model, "endpoint": endpoint_name, "deployment": new}
        # Lease the endpoint before creating the deployment, so the cost guard cannot delete it
        # under a run that is still deploying and evaluating (its lineage tags still describe the
        # live model: they change only once traffic has moved).
        _expires, lease_error = yield from self.renew_expiry(endpoint_name, {})
        refused = yield from self.roll_out(endpoint, model, new, live, tags, fields)
        if refused is not None:
            return refused
        return (yield from self.go_live(new, live, lineage, lease_error, fields))

    def ensure_endpoint(self, tags: dict[str, str]) -> Flow:
        """The endpoint, created if missing and waited for until it is ready."""
        cfg, endpoint_name = self.cfg, self.cfg.endpoint_name
        endpoint = yield from self.act(EnsureEndpoint(name=endpoint_name, tags=tags))
        if not endpoint.state.settled:
            endpoint = yield from self.poll(
                GetEndpoint(name=endpoint_name),
                cfg.deploy_poll,
                lambda e: e.state.settled,
                Step.CREATE_ENDPOINT,
            )
        if endpoint.state is not ProvisioningState.SUCCEEDED:
            raise StepFailed(f"endpoint {endpoint_name} is {endpoint.state.value}")
        return endpoint

    def roll_out(
        self,
        endpoint: EndpointInfo,
        model: ModelRef,
        new: str,
        live: str | None,
        tags: dict[str, str],
        fields: dict[str, Any],
    ) -> Flow:
        """Create `new` at 0 %, smoke-test it, gate it against `live`, give it the traffic. None
        once the traffic has moved; otherwise the run's summary, after a rollback that leaves the
        endpoint as it was (a cancel is re-raised after the rollback)."""
        cfg, endpoint_name = self.cfg, endpoint.name
        traffic_touched = False
        try:
            spec = CreateDeployment(
                endpoint_name=endpoint_name,
                deployment_name=new,
                model=model,
                instance_type=cfg.serving_instance_type,
                instance_count=cfg.serving_instance_count,
                tags=tags,
            )
            self.status(Step.DEPLOY, endpoint=endpoint_name, deployment=new)
            yield self.call(spec)
            state = yield from self.poll(
                GetDeploymentState(endpoint=endpoint_name, deployment=new),
                cfg.deploy_poll,
                lambda s: s.settled,
                Step.CREATE_DEPLOYMENT,
            )
            if state is not ProvisioningState.SUCCEEDED:
                raise StepFailed(f"deployment {new} ended {state.value}")
            self.end()

            self.begin(Step.SMOKE_TEST, endpoint=endpoint_name, deployment=new)
            smoke = yield from self.act(
                SmokeTest(endpoint=endpoint_name, deployment=new, prompt=cfg.smoke_test_prompt)
            )
            if not smoke.ok:
                raise StepFailed(f"smoke test of {new} failed: HTTP {smoke.status_code}: {smoke.error}")
            self.end()

            yield from self.renew_turn(endpoint_name)
            evaluation = yield from self.evaluate(endpoint_name, new, live if live != new else None)
            if evaluation is not None:
                fields["evaluation"] = evaluation
                yield from self.tag_model(model, evaluation)
                if not evaluation.passed:
                    raise Rejected(evaluation.reason)

            yield from self.renew_turn(endpoint_name)
            self.begin(Step.SHIFT_TRAFFIC, endpoint=endpoint_name, deployment=new)
            traffic = {name: 0 for name in endpoint.traffic} | {new: 100}
            traffic_touched = True
            self.cancelable = False  # from here on the new model is (about to be) live: finish
            yield self.call(SetTraffic(endpoint=endpoint_name, traffic=traffic))
            self.end()
        except Exception as exc:
            cleanup_error = yield from self.roll_back(endpoint, new, traffic_touched)
            if isinstance(exc, Canceled):
                raise
            outcome = (
                f"{new} deleted, traffic unchanged"
                if cleanup_error is None
                else f"rollback incomplete ({cleanup_error}); check {new} and the traffic by hand"
            )
            if isinstance(exc, Rejected):
                return self.summary(
                    RunStatus.REJECTED_BY_EVALUATION,
                    f"evaluation gate: {exc}; {outcome}",
                    previous_deployment=live,
                    **fields,
                )
            return self.summary(
                RunStatus.FAILED,
                f"deploy: {exc}; rolled back ({outcome})",
                previous_deployment=live,
                **fields,
            )
        return None

    def go_live(
        self,
        new: str,
        live: str | None,
        lineage: dict[str, str],
        lease_error: str | None,
        fields: dict[str, Any],
    ) -> Flow:
        """The new deployment has the traffic: its TTL starts, the old one goes, the Prompt flow
        connection points at the endpoint."""
        cfg, endpoint_name = self.cfg, self.cfg.endpoint_name
        expires, renew_error = yield from self.renew_expiry(endpoint_name, lineage)
        fields["expires_at"] = expires
        notes = [n for n in (lease_error, renew_error) if n]
        reason = "; ".join(dict.fromkeys(notes))
        if live and live != new:
            try:
                yield self.call(DeleteDeployment(endpoint=endpoint_name, deployment=live))
            except Exception as exc:
                note = f"old deployment {live} could not be deleted ({exc}); delete it by hand"
                reason = f"{reason}; {note}" if reason else note

        self.begin(Step.UPDATE_CONNECTION, endpoint=endpoint_name, deployment=new)
        connection = UpdateConnection(name=cfg.connection_name, endpoint=endpoint_name)
        try:
            scoring_uri = connection.parse_output((yield self.call(connection)))
        except Exception as exc:
            return self.summary(
                RunStatus.FAILED,
                f"{new} is live but the Prompt flow connection {cfg.connection_name} was not updated: {exc}",
                previous_deployment=live,
                **fields,
            )
        self.end()
        return self.summary(
            RunStatus.COMPLETED,
            reason,
            previous_deployment=live,
            scoring_uri=scoring_uri,
            connection=cfg.connection_name,
            **fields,
        )

    def evaluate(self, endpoint: str, new: str, live: str | None) -> Flow:
        """The gate's scores: both deployments answer the same seeded sample of the held-out split,
        in batches of `batch_size` per activity, at most `max_parallel` activities at a time (so
        the history grows by a few events per batch, not per example). None when the gate is off
        or there is nothing to sample."""
        policy, p = self.cfg.evaluation, self.progress
        k = min(policy.sample_size, p.validation_examples)
        if k == 0 or p.validation is None:
            return None
        self.begin(Step.EVALUATE, endpoint=endpoint, deployment=new)
        sides = {"new": new} | ({"live": live} if live else {})
        batches = -(-k // policy.batch_size)
        # New and live batch b go in the same wave: each deployment gets the same load at once.
        calls = [(name, deployment, b) for b in range(batches) for name, deployment in sides.items()]
        scores: dict[str, list[ExampleScore]] = {name: [] for name in sides}
        for start in range(0, len(calls), policy.max_parallel):
            wave = calls[start : start + policy.max_parallel]
            tasks = [
                self.call(
                    EvaluateBatch(
                        validation=p.validation,
                        endpoint=endpoint,
                        deployment=deployment,
                        sample_size=k,
                        seed=self.cfg.split_seed,
                        batch=b,
                        batch_size=policy.batch_size,
                    )
                )
                for _name, deployment, b in wave
            ]
            outputs = yield self.ctx.task_all(tasks)
            self.check_cancel()
            for (name, _deployment, _b), output in zip(wave, outputs, strict=True):
                scores[name].extend(EvaluateBatch.parse_output(output))
            done = sum(len(v) for v in scores.values())
            self.status(Step.EVALUATE, endpoint=endpoint, deployment=new, scored=done, of=k * len(sides))
        new_side = gate.side(new, scores["new"])
        live_side = gate.side(live, scores["live"]) if live else None
        passed, reason = gate.verdict(new_side, live_side, policy)
        self.evaluated = scores
        self.end()
        self.status(
            Step.EVALUATED,
            endpoint=endpoint,
            deployment=new,
            new_score=new_side.score,
            live_score=live_side.score if live_side else None,
            passed=passed,
        )
        return Evaluation(
            metric=METRIC,
            sample_size=k,
            new=new_side,
            live=live_side,
            tolerance=policy.tolerance,
            floor=policy.floor,
            passed=passed,
            reason=reason,
        )

    def tag_model(self, model: ModelRef, evaluation: Evaluation) -> Flow:
        """Scores as tags on the registered version (best effort: a tag is not worth a failed run)."""
        tags = {
            "eval-score": f"{evaluation.new.score:.4f}",
            "eval-live-score": f"{evaluation.live.score:.4f}" if evaluation.live else "none",
            "eval-verdict": "promoted" if evaluation.passed else "rejected",
            "eval-sample-size": str(evaluation.sample_size),
        }
        try:
            yield self.call(TagModel(model=model, tags=tags))
        except Exception:
            return

    def renew_expiry(self, endpoint: str, lineage: dict[str, str]) -> Flow:
        """Tag the endpoint with `expires_at` = now + TTL ("never" without a TTL) and `lineage`.
        Returns (expires_at or None, a note if the tags could not be written)."""
        expiry = expiry_tag(self.now, self.cfg.endpoint_ttl_hours)
        expires = expiry[EXPIRES_TAG] if expiry[EXPIRES_TAG] != NEVER else None
        try:
            yield self.call(UpdateEndpointTags(name=endpoint, tags=lineage | expiry))
        except Exception as exc:
            return expires, f"endpoint expiry tag not renewed ({exc}); the cost guard may delete it early"
        return expires, None

    def roll_back(self, endpoint: EndpointInfo, new: str, traffic_touched: bool) -> Flow:
        """Leave the endpoint exactly as it was: old traffic back (if we touched it), new deleted.
        Returns None, or what could not be undone (the caller puts it in the run's reason)."""
        self.status(Step.ROLL_BACK, endpoint=endpoint.name, deployment=new)
        try:
            if traffic_touched:
                restore = dict(endpoint.traffic) | {new: 0}
                yield self.call(SetTraffic(endpoint=endpoint.name, traffic=restore))
            yield self.call(DeleteDeployment(endpoint=endpoint.name, deployment=new))
        except Exception as exc:
            return " ".join(str(exc).split())[:300]
        return None


@bp.orchestration_trigger(context_name="context", orchestration=ORCHESTRATOR)
def finetune_orchestrator(context: df.DurableOrchestrationContext) -> Flow:
    run = RunInput.model_validate(context.get_input())
    return (yield from FinetuneRun(context, run).run())
