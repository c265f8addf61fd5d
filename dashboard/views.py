"""What the dashboard's JSON API answers, built from durable instance statuses (pure: no I/O).

An instance status is the Durable Functions HTTP API's JSON (`name`, `instanceId`,
`runtimeStatus`, `input`, `customStatus`, `output`, `createdTime`, `lastUpdatedTime`). The input
is the run's `RunInput`, the output its `RunSummary`; both hold no secret, and every answer is
scrubbed once more (`core.redact`) before it leaves, the way durable history is.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from core.models import RunStatus
from core.redact import hide_url_queries, scrub
from core.timeline import timeline

ACTIVE_RUNTIME = {"Pending", "Running", "ContinuedAsNew", "Suspended"}
# The colour classes of the page, one per state; `state` is the run's status once it ended.
STATES = ("pending", "running", *(s.value for s in RunStatus if s is not RunStatus.RUNNING), "terminated")
MAX_PER_PAGE = 100


def _object(value: Any) -> dict[str, Any]:
    """A status field as a dict: the dev host and Azure answer JSON values, older hosts a JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def state_of(instance: dict[str, Any]) -> str:
    """The run's state: its summary's status once it ended; pending/running/failed/terminated
    from the runtime otherwise."""
    runtime = str(instance.get("runtimeStatus") or "")
    if runtime == "Pending":
        return "pending"
    if runtime in ACTIVE_RUNTIME:
        return "running"
    if runtime == "Terminated":
        return "terminated"
    status = _object(instance.get("output")).get("status")
    if runtime == "Completed" and status in STATES:
        return str(status)
    return "failed"


def _request(instance: dict[str, Any]) -> dict[str, Any]:
    return _object(_object(instance.get("input")).get("request"))


def _progress(instance: dict[str, Any]) -> dict[str, Any]:
    """The run's progress as its input carries it (set at each continue-as-new)."""
    return _object(_object(instance.get("input")).get("progress"))


def _started(instance: dict[str, Any]) -> datetime | None:
    """When the run began: its progress remembers the first generation's start (continue-as-new
    gives an instance a new created time on some providers)."""
    progress = _progress(instance)
    return _parse_time(progress.get("started_at")) or _parse_time(instance.get("createdTime"))


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def run_row(instance: dict[str, Any], now: datetime) -> dict[str, Any]:
    """One line of the runs list."""
    state = state_of(instance)
    custom, summary, request = (
        _object(instance.get("customStatus")),
        _object(instance.get("output")),
        _request(instance),
    )
    started = _started(instance)
    ended = (
        None
        if instance.get("runtimeStatus") in ACTIVE_RUNTIME
        else _parse_time(instance.get("lastUpdatedTime"))
    )
    evaluation = _object(summary.get("evaluation"))
    dataset = custom.get("dataset") or _blob_path(request.get("dataset")) or ""
    return {
        "id": str(instance.get("instanceId") or ""),
        "state": state,
        "runtime_status": instance.get("runtimeStatus"),
        "step": custom.get("step") if state in ("running", "pending") else state,
        "dataset": dataset,
        "dry_run": bool(request.get("dry_run")),
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "duration_s": round(((ended or now) - started).total_seconds(), 1) if started else None,
        "new_score": _object(evaluation.get("new")).get("score"),
        "live_score": _object(evaluation.get("live")).get("score"),
        "passed": evaluation.get("passed"),
    }


def runs_page(
    instances: list[dict[str, Any]],
    *,
    orchestrator: str,
    now: datetime,
    state: str | None,
    page: int,
    per_page: int,
    truncated: bool = False,
) -> dict[str, Any]:
    """The runs list: instances of `orchestrator`, newest first, filtered by state, one page.
    `truncated`: the listing held only part of the task hub's instances (the page says so)."""
    mine = [i for i in instances if i.get("name") == orchestrator]
    never = datetime.min.replace(tzinfo=UTC)
    mine.sort(key=lambda i: (_started(i) or never, str(i.get("instanceId") or "")), reverse=True)
    rows = [run_row(i, now) for i in mine]
    counts = {s: 0 for s in STATES}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    if state:
        rows = [r for r in rows if r["state"] == state]
    pages = max(1, -(-len(rows) // per_page))
    start = (page - 1) * per_page
    return clean(
        {
            "runs": rows[start : start + per_page],
            "page": page,
            "per_page": per_page,
            "pages": pages,
            "total": len(rows),
            "counts": counts,
            "active": counts["pending"] + counts["running"],
            "truncated": truncated,
        }
    )


def job_of(instance: dict[str, Any]) -> str | None:
    """The run's fine-tuning job, once submitted."""
    custom, summary = _object(instance.get("customStatus")), _object(instance.get("output"))
    progress = _progress(instance)
    job = summary.get("job") or custom.get("job") or progress.get("job")
    return str(job) if job else None


def report_of(instance: dict[str, Any]) -> str | None:
    """The run report's folder (`container/path/`), once the ended run wrote it."""
    if instance.get("runtimeStatus") != "Completed":
        return None
    report = _object(instance.get("output")).get("report")
    return str(report) if report else None


def run_detail(instance: dict[str, Any], now: datetime, *, workspace_id: str | None) -> dict[str, Any]:
    """Everything the run page shows but the loss curve and the evaluation examples (which come
    from the backend and the run report)."""
    row = run_row(instance, now)
    custom, request = _object(instance.get("customStatus")), _request(instance)
    ended = instance.get("runtimeStatus") not in ACTIVE_RUNTIME
    summary = _summary(instance) if ended else {}
    config = _object(request.get("config"))
    progress = _progress(instance)
    job = job_of(instance)
    studio_url = custom.get("studio_url") or progress.get("studio_url")
    hyper = _object(config.get("hyperparameters"))
    detail: dict[str, Any] = {
        **row,
        "reason": summary.get("reason") or "",
        "validation_dataset": _blob_path(request.get("validation")),
        "real_run_id": request.get("real_run_id"),
        "source": request.get("source"),
        "timeline": [r.as_json() for r in timeline(custom, summary or None, dry_run=row["dry_run"])],
        "job": {
            "name": job,
            "status": summary.get("job_state") or custom.get("job_status"),
            "metrics": custom.get("metrics") or {},
            "studio_url": studio_url,
            "waiting_for_event": bool(custom.get("waiting_for_event")),
        },
        "hyperparameters": hyper,
        "examples": {
            "train": summary.get("train_examples") or progress.get("train_examples") or 0,
            "validation": summary.get("validation_examples") or progress.get("validation_examples") or 0,
        },
        "validation_errors": summary.get("validation_errors") or [],
        "preflight": summary.get("preflight") or [],
        "plan": summary.get("plan"),
        "evaluation": summary.get("evaluation"),
        "model": summary.get("model"),
        "endpoint": summary.get("endpoint") or custom.get("endpoint"),
        "deployment": summary.get("deployment") or custom.get("deployment"),
        "previous_deployment": summary.get("previous_deployment"),
        "connection": summary.get("connection"),
        "expires_at": summary.get("expires_at"),
        "report": summary.get("report"),
        "notification": summary.get("notification"),
        "can_cancel": not ended,
        "retrain": {
            "dataset": _blob_path(request.get("dataset")),
            "validation": _blob_path(request.get("validation")),
            # The run's own overrides (the page changes two); None for a run started before they
            # were recorded: a retrain could not say which endpoint and model it asked for.
            "overrides": _compact(_object(request["overrides"])) if "overrides" in request else None,
            "num_train_epochs": hyper.get("num_train_epochs"),
            "learning_rate": hyper.get("learning_rate"),
        },
    }
    # Studio links keep their query (`?wsid=…`, a workspace path, no credential): scrubbed only.
    links = studio_links(workspace_id, studio_url=studio_url, summary=summary)
    return clean(detail) | {"links": {k: scrub(v) for k, v in links.items()}}


def _compact(value: dict[str, Any]) -> dict[str, Any]:
    """`value` without its unset (None or empty) fields, at every level: what a caller sent."""
    out = {}
    for key, item in value.items():
        item = _compact(item) if isinstance(item, dict) else item
        if item is not None and item != {}:
            out[key] = item
    return out


def _summary(instance: dict[str, Any]) -> dict[str, Any]:
    """The ended run's summary; for an orchestration that failed or was terminated (its output
    is an error text, not a summary), one that says so."""
    runtime, output = instance.get("runtimeStatus"), instance.get("output")
    summary = _object(output)
    if runtime == "Completed" and summary.get("status"):
        return summary
    text = output if isinstance(output, str) else json.dumps(output) if output is not None else ""
    status = RunStatus.CANCELED if runtime == "Terminated" else RunStatus.FAILED
    return {
        "status": status.value,
        "reason": f"the orchestration {str(runtime).lower()}: {text[:500]}".strip(),
    }


def _blob_path(value: Any) -> str | None:
    blob = _object(value)
    return f"{blob['container']}/{blob.get('name', '')}" if blob.get("container") else None


def studio_links(
    workspace_id: str | None, *, studio_url: str | None, summary: dict[str, Any]
) -> dict[str, str]:
    """Azure ML studio pages of the run's job, model and endpoint (Azure only: the offline
    stack has no studio)."""
    links: dict[str, str] = {}
    if isinstance(studio_url, str) and studio_url.startswith("https://"):
        links["job"] = studio_url
    if workspace_id is None:
        return links
    wsid = f"?wsid={quote(workspace_id, safe='/')}"
    model = _object(summary.get("model"))
    if model.get("name") and model.get("version"):
        links["model"] = (
            f"https://ml.azure.com/model/{quote(model['name'])}:{quote(str(model['version']))}/details{wsid}"
        )
    if summary.get("endpoint"):
        links["endpoint"] = (
            f"https://ml.azure.com/endpoints/realtime/{quote(summary['endpoint'])}/detail{wsid}"
        )
    return links


def workspace_id(subscription: str | None, resource_group: str | None, workspace: str | None) -> str | None:
    if not (subscription and resource_group and workspace):
        return None
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    )


def clean(value: Any) -> Any:
    """`value` with every string scrubbed of credentials and URL query strings (a SAS, a
    webhook token): the page shows what the durable history holds, never more."""
    if isinstance(value, str):
        return hide_url_queries(scrub(value))
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # a diverging run's NaN loss: JSON has no NaN
    return value
