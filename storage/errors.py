"""The errors of the storage seam: what a `DatasetStore` raises besides FileNotFoundError.

Every implementation (the blob store, a test fake, a future one) raises these, not errors of its
own, so callers above the seam (activities, triggers, scripts) catch one set of classes. They are
re-exported by backends/base.py next to the `DatasetStore` protocol.
"""

from __future__ import annotations

__all__ = ["BlobChangedError", "BlobStoreError"]


class BlobStoreError(RuntimeError):
    """A storage request failed. Carries no URL, key or SAS: only codes and the blob path."""

    def __init__(
        self,
        message: str,
        *,
        container: str,
        name: str,
        status_code: int | None = None,
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.container = container
        self.name = name
        self.status_code = status_code
        self.error_code = error_code


class BlobChangedError(BlobStoreError):
    """The blob no longer has the etag we were asked to read: it was replaced since the event."""
