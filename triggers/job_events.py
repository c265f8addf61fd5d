"""Event Grid trigger: Azure ML says a job's status changed; the run that owns the job is woken.

Azure Machine Learning publishes `Microsoft.MachineLearningServices.RunStatusChanged` to an Event
Grid system topic on the workspace (the post-deploy template subscribes this function, filtered
to terminal statuses). The job's name is the run id plus a suffix (`core.naming.job_name`), so
the owner is found without a lookup; the event is raised on it as `job_status_changed`.

The event is a hint, never a verdict: the orchestrator reads the job itself before it acts, so a
duplicated, late or forged event can neither skip nor repeat a step. Events for jobs this app did
not name, from another workspace, or for runs that are no longer waiting are ignored, each logged
once per process (a busy workspace sends many). Nothing of the event but the job name and its
status goes anywhere: `runTags` and `runProperties` may hold what other teams put there.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import azure.durable_functions as df
import azure.functions as func

from core.contracts import JOB_EVENT
from core.naming import run_of_job
from core.settings import get_settings
from storage.blob_urls import quote_prefix

bp = df.Blueprint()
log = logging.getLogger("triggers")

RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
WAITING = frozenset({df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending})
_IGNORED_MAX = 1024
_ignored: OrderedDict[str, None] = OrderedDict()  # what was already logged as ignored


def _ignore_once(key: str, message: str, *args: object) -> None:
    """Log `message` the first time `key` is ignored (bounded memory: the oldest keys go)."""
    if key in _ignored:
        return
    _ignored[key] = None
    if len(_ignored) > _IGNORED_MAX:
        _ignored.popitem(last=False)
    log.info(message, *args)


def _workspace_of(topic: str) -> str:
    """The workspace name at the end of a system topic's ARM id ("" if there is none)."""
    parts = topic.rstrip("/").split("/")
    return parts[-1].lower() if len(parts) >= 2 and parts[-2].lower() == "workspaces" else ""


async def handle_job_event(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> str | None:
    """Raise `job_status_changed` on the run that owns the event's job; the run id, or None if
    the event was ignored."""
    if event.event_type != RUN_STATUS_CHANGED:
        _ignore_once(
            f"type:{event.event_type}", "ignoring Event Grid event type %s", quote_prefix(event.event_type)
        )
        return None
    data = event.get_json()
    data = data if isinstance(data, dict) else {}
    job, status = data.get("runId"), data.get("runStatus")
    run_id = run_of_job(job)
    if run_id is None:
        _ignore_once(
            f"job:{job}", "ignoring status event of job %s: not a job this app named", quote_prefix(job)
        )
        return None
    expected = (get_settings().project_name or "").lower()  # the workspace jobs are submitted to
    workspace = _workspace_of(event.topic or "")
    if expected and workspace != expected:
        _ignore_once(
            f"ws:{workspace}",
            "ignoring status event from workspace %s (jobs run in %s)",
            quote_prefix(workspace),
            expected,
        )
        return None
    state = await client.get_status(run_id)
    if state is None or state.runtime_status not in WAITING:
        _ignore_once(f"run:{run_id}", "ignoring status event of %s: run %s is not waiting", job, run_id)
        return None
    said = str(status)[:40] if isinstance(status, str) else ""
    await client.raise_event(run_id, JOB_EVENT, {"job": job, "status": said})
    log.info("job %s says %s: woke run %s", job, quote_prefix(said), run_id)
    return run_id


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_job_status_changed(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    await handle_job_event(event, client)
