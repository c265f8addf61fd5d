"""preflight: can this run start? Checked before any GPU money is spent; creates nothing."""

from __future__ import annotations

from typing import Any

from activities.blueprint import Payload, activity
from backends.blob_store import BlobStoreError
from backends.registry import current
from core.models import BlobRef, RunConfig
from core.preflight import PreflightCheck


def _readable(blob: BlobRef) -> PreflightCheck:
    """The app's identity can read the blob (what the training service will read, too)."""
    try:
        current().datasets.describe(blob)
    except FileNotFoundError:
        return PreflightCheck(name="dataset_readable", ok=False, detail=f"{blob.path} no longer exists")
    except BlobStoreError as exc:
        return PreflightCheck(
            name="dataset_readable",
            ok=False,
            detail=f"cannot read {blob.path} ({exc}): give the app's identity Storage Blob Data Reader on it",
        )
    return PreflightCheck(name="dataset_readable", ok=True, detail=f"{blob.path} is readable")


@activity
def preflight(payload: Payload) -> dict[str, Any]:
    config = RunConfig.model_validate(payload["config"])
    report = current().preflight.preflight(config)
    blobs = [BlobRef.model_validate(payload["dataset"])]
    if payload.get("validation"):
        blobs.append(BlobRef.model_validate(payload["validation"]))
    return report.plus(*(_readable(b) for b in blobs)).model_dump(mode="json")
