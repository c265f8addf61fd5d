"""Deterministic names: instance ids, job names, split/report blob names, blue/green deployments."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from datetime import UTC, datetime, timedelta

from core.models import BlobRef, Overrides

# Blob path segments the pipeline writes under; the blob trigger ignores anything below them.
SPLITS_DIR = "_splits"
REPORTS_DIR = "reports"
PIPELINE_DIRS = frozenset({SPLITS_DIR, REPORTS_DIR})
DATASET_SUFFIX = ".jsonl"
APP_TAG = "phi3-finetune-pipeline"
CREATED_BY_TAG = "created-by"
EXPIRES_TAG = "expires_at"  # ISO 8601 UTC; the cost guard deletes the endpoint after it
NEVER = "never"  # expires_at with no ENDPOINT_TTL_HOURS: overwrites an earlier TTL's date


def instance_id(
    dataset: BlobRef,
    validation: BlobRef | None = None,
    overrides: Overrides | None = None,
    dry_run: bool = False,
) -> str:
    """`ft-` (or `dry-` for a dry run) + 16 hex chars of sha256 over what defines a run.

    The same blob version (container/name@etag), with the same validation file and overrides,
    always gives the same id, so a duplicate event or a repeated POST never starts a second run;
    a new upload has a new ETag and so a new id. A dry run has its own id, so planning never
    blocks the real run.
    """
    if not dataset.etag:
        raise ValueError(f"{dataset.path}: an ETag is needed to name the run")
    parts = [f"{dataset.container}/{dataset.name}@{dataset.etag}"]
    if validation is not None:
        if not validation.etag:
            raise ValueError(f"{validation.path}: an ETag is needed to name the run")
        parts.append(f"validation={validation.container}/{validation.name}@{validation.etag}")
    if overrides is not None:
        dumped = overrides.model_dump(mode="json", exclude_defaults=True)
        if dumped:
            parts.append("overrides=" + json.dumps(dumped, sort_keys=True, separators=(",", ":")))
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return f"{'dry' if dry_run else 'ft'}-{digest[:16]}"


def is_dataset_blob(name: str) -> bool:
    """True for user datasets the trigger should start a run for: `*.jsonl`, not pipeline output."""
    if not name.lower().endswith(DATASET_SUFFIX):
        return False
    segments = name.split("/")[:-1]
    return not any(s in PIPELINE_DIRS for s in segments)


def split_blobs(dataset: BlobRef, run_id: str) -> tuple[BlobRef, BlobRef]:
    """Where the 80/20 split of `dataset` is written: next to it, under `_splits/<run_id>/`."""
    folder = posixpath.dirname(dataset.name)
    base = posixpath.join(folder, SPLITS_DIR, run_id) if folder else posixpath.join(SPLITS_DIR, run_id)
    return (
        BlobRef(container=dataset.container, name=f"{base}/train.jsonl"),
        BlobRef(container=dataset.container, name=f"{base}/validation.jsonl"),
    )


def report_prefix(dataset: BlobRef, run_id: str) -> str:
    """The blob folder of a run's report: next to the dataset, under `reports/<run_id>/`."""
    folder = posixpath.dirname(dataset.name)
    return posixpath.join(folder, REPORTS_DIR, run_id) + "/"


JOB_SUFFIX = "-finetune"
RUN_ID = re.compile(r"(?:ft|dry)-[0-9a-f]{16}")


def job_name(run_id: str) -> str:
    """Azure ML job name for a run (unique per workspace, so resubmits find the same job)."""
    return f"{run_id}{JOB_SUFFIX}"


def run_of_job(job: object) -> str | None:
    """The run (orchestration instance id) a job name belongs to: the inverse of `job_name`, or
    None for any job this app did not name (another team's job, a forged or garbled event)."""
    if not isinstance(job, str) or not job.endswith(JOB_SUFFIX):
        return None
    run_id = job[: -len(JOB_SUFFIX)]
    return run_id if RUN_ID.fullmatch(run_id) else None


def pick_deployments(traffic: dict[str, int], run_id: str) -> tuple[str, str | None]:
    """Blue/green: the new deployment takes the colour the live one does not have.

    Returns (new deployment name, live deployment name or None). Names carry the run id so a
    retried run reuses its own deployment and never collides with a leftover of another run.
    Azure limits deployment names to 32 chars: letters, digits and '-'.
    """
    live = max((d for d, w in traffic.items() if w > 0), key=lambda d: traffic[d], default=None)
    colour = "green" if live is not None and live.startswith("blue") else "blue"
    return f"{colour}-{run_id.removeprefix('ft-')[:12]}", live


def lineage_tags(run_id: str, dataset: BlobRef, job: str | None = None) -> dict[str, str]:
    tags = {
        CREATED_BY_TAG: APP_TAG,
        "instance-id": run_id,
        "dataset-blob": dataset.path,
        "dataset-etag": dataset.etag or "",
    }
    if job:
        tags["job-name"] = job
    return tags


def expiry_tag(deployed_at: datetime, ttl_hours: float | None) -> dict[str, str]:
    """`{"expires_at": deploy time + TTL}` (ISO, UTC, whole seconds); `"never"` without a TTL, so
    that turning the TTL off also disarms the date an earlier run wrote."""
    if ttl_hours is None:
        return {EXPIRES_TAG: NEVER}
    expires = deployed_at.astimezone(UTC).replace(microsecond=0) + timedelta(hours=ttl_hours)
    return {EXPIRES_TAG: expires.isoformat().replace("+00:00", "Z")}


def expired(tags: dict[str, str], now: datetime) -> bool:
    """True if the tags say this app created the endpoint and its expires_at has passed. An
    unparseable expires_at is never expired (a person's typo must not delete an endpoint)."""
    if tags.get(CREATED_BY_TAG) != APP_TAG or EXPIRES_TAG not in tags:
        return False
    try:
        expires = datetime.fromisoformat(tags[EXPIRES_TAG].replace("Z", "+00:00"))
    except ValueError:
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires <= now


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def unique_string(*parts: str) -> str:
    """13 lower-case base32 characters, deterministic in `parts`, like Bicep's `uniqueString()`
    (same length and alphabet; the hash here is SHA-256, so the values differ from Bicep's)."""
    digest = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")
    return "".join(_BASE32[(digest >> (5 * i)) & 31] for i in range(13))
