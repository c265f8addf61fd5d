"""preflight: can this run start? Checked before any GPU money is spent; creates nothing."""

from __future__ import annotations

from activities.wrapper import activity
from backends.base import BlobStoreError
from backends.registry import current
from core.contracts import Preflight
from core.models import BlobRef
from core.preflight import PreflightCheck, PreflightReport


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
def preflight(inp: Preflight) -> PreflightReport:
    report = current().preflight.preflight(inp.config)
    blobs = [inp.dataset] + ([inp.validation] if inp.validation else [])
    return report.plus(*(_readable(b) for b in blobs))
