"""The datasets container as a `DatasetStore`, over azure-storage-blob (Azure Storage or Azurite).

Connection: `BlobDatasetStore.from_settings()` reads the same app settings the Functions host
reads for the blob trigger's `connection="DatasetsStorage"`:

- `DatasetsStorage`: a connection string (Azurite's `UseDevelopmentStorage=true`, an explicit
  `...;AccountKey=...;BlobEndpoint=...` one, or a SAS one) - wins when set;
- otherwise identity-based: `DatasetsStorage__blobServiceUri` (or `DatasetsStorage__accountName`,
  meaning `https://<name>.blob.core.windows.net`) with `DefaultAzureCredential`, pinned to the
  user-assigned identity `DatasetsStorage__clientId` when that is set.

ETags are kept exactly as the service returns them, quotes included (`"0x8DC..."`): `describe`
and `upload` return that string, so one blob version always maps to one string (the starter
hashes it into the instance id). Sources that drop the quotes (an Event Grid `BlobCreated` event
says `"eTag": "0x8DC..."`) can be brought to the same form with `normalize_etag`; `download`
normalizes before sending `If-Match`, so either form works there.

Secrets: nothing this module returns or raises carries the account key or a SAS token. URLs in
`BlobRef.url` have their query string removed, and every SDK error is replaced (not chained) by
an error holding only the status code, the storage error code and `container/name`.

Streaming: `open_stream` gives the blob's bytes chunk by chunk as they arrive (the validator
checks them while they are written to disk, `core.validation.validate_stream`), with the same
etag pinning and the same errors as `download`.

Streaming uploads: `upload_chunks` sends an iterable of byte chunks as staged blocks while it is
being produced (the split writes its two outputs straight to storage,
`core.splitting.split_streaming`); nothing is committed unless every chunk was read.

Memory: downloads and uploads go in chunks of `CHUNK_SIZE` (the SDK's defaults would buffer up to
32 MiB per GET and 64 MiB per PUT) when the client is built here (`from_settings`,
`from_connection_string`); a client passed to the constructor keeps its own settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings, StorageStreamDownloader

from core.models import BlobRef
from core.settings import Settings
from storage.blob_urls import normalize_etag, strip_query
from storage.errors import BlobChangedError, BlobStoreError

__all__ = ["CHUNK_SIZE", "CONTENT_TYPE", "BlobDatasetStore"]

CHUNK_SIZE = 4 * 1024 * 1024
CONTENT_TYPE = "application/jsonl"

# Client options that bound memory per request (see the module docstring).
_CLIENT_OPTIONS: dict[str, int] = {
    "max_single_get_size": CHUNK_SIZE,
    "max_chunk_get_size": CHUNK_SIZE,
    "max_single_put_size": CHUNK_SIZE,
    "max_block_size": CHUNK_SIZE,
}

_T = TypeVar("_T")


class BlobDatasetStore:
    """`DatasetStore` over one `BlobServiceClient` (any container: `BlobRef` names it)."""

    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_connection_string(cls, connection_string: str, **client_options: Any) -> BlobDatasetStore:
        options: dict[str, Any] = {**_CLIENT_OPTIONS, **client_options}
        try:
            service = BlobServiceClient.from_connection_string(connection_string, **options)
        except ValueError:
            service = None  # the SDK's message may quote the string: raised below, unchained
        if service is None:
            raise ValueError("DatasetsStorage is not a valid storage connection string")
        return cls(service)

    @classmethod
    def from_account_url(
        cls, account_url: str, credential: TokenCredential, **client_options: Any
    ) -> BlobDatasetStore:
        options: dict[str, Any] = {**_CLIENT_OPTIONS, **client_options}
        return cls(BlobServiceClient(account_url, credential=credential, **options))

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobDatasetStore:
        """Connection string if `DatasetsStorage` is set, else identity-based (see module doc)."""
        if settings.DatasetsStorage:
            return cls.from_connection_string(settings.DatasetsStorage)

        account_url = settings.DatasetsStorage__blobServiceUri
        if not account_url and settings.DatasetsStorage__accountName:
            account_url = f"https://{settings.DatasetsStorage__accountName}.blob.core.windows.net"
        if not account_url:
            raise ValueError(
                "no datasets storage configured: set DatasetsStorage (a connection string, e.g. "
                "UseDevelopmentStorage=true for Azurite) or DatasetsStorage__blobServiceUri / "
                "DatasetsStorage__accountName (identity-based, with DatasetsStorage__clientId for a "
                "user-assigned identity)"
            )
        credential_options: dict[str, str] = {}
        if settings.DatasetsStorage__clientId:
            credential_options["managed_identity_client_id"] = settings.DatasetsStorage__clientId
        return cls.from_account_url(account_url, DefaultAzureCredential(**credential_options))

    @property
    def account_url(self) -> str:
        """The account's blob endpoint (`https://<account>.blob.core.windows.net`, or Azurite's
        `http://127.0.0.1:10000/devstoreaccount1`), without a SAS or a trailing slash: the only
        account `parse_blob_reference` accepts URLs for."""
        return strip_query(self.service.url).rstrip("/")

    def close(self) -> None:
        self.service.close()

    def __enter__(self) -> BlobDatasetStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- DatasetStore ---------------------------------------------------------------------

    def describe(self, blob: BlobRef) -> BlobRef:
        client = self._client(blob)
        props = self._call(blob, client.get_blob_properties)
        return blob.model_copy(update={"etag": props.etag, "url": strip_query(client.url)})

    def download(self, blob: BlobRef, dest: Path) -> None:
        client = self._client(blob)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)

        def stream() -> None:
            downloader = _download_blob(client, blob)
            # readinto writes chunk by chunk (at most max_chunk_get_size in memory); later
            # chunks are pinned to the first response's etag by the SDK.
            with dest.open("wb") as out:
                downloader.readinto(out)

        try:
            self._call(blob, stream)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def open_stream(self, blob: BlobRef) -> Iterator[bytes]:
        """The blob's bytes as they arrive, one GET (`CHUNK_SIZE` when the client was built here)
        per chunk; the first GET is sent now, so a missing or changed blob raises here."""
        client = self._client(blob)
        chunks = self._call(blob, lambda: _download_blob(client, blob).chunks())
        return self._guarded(blob, chunks)

    def _guarded(self, blob: BlobRef, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """`chunks` with every fetch's SDK errors turned into sanitized ones (as `_call`): later
        chunks are pinned to the first response's etag, so an overwrite mid-way is
        BlobChangedError."""
        while (chunk := self._call(blob, lambda: next(chunks, None))) is not None:
            yield chunk

    def upload(self, src: Path, blob: BlobRef) -> BlobRef:
        client = self._client(blob)
        src = Path(src)
        size = os.path.getsize(src)

        def put() -> dict[str, Any]:
            with src.open("rb") as data:
                return client.upload_blob(
                    data,
                    length=size,
                    overwrite=True,
                    content_settings=ContentSettings(content_type=CONTENT_TYPE),
                )

        return self._uploaded(blob, client, self._call(blob, put))

    def upload_chunks(self, chunks: Iterable[bytes], blob: BlobRef) -> BlobRef:
        """Upload the chunks as they come: the SDK stages a block per `max_block_size` bytes read
        (`CHUNK_SIZE` when the client was built here) and commits the block list after the last
        one, so an error from `chunks` commits nothing (the staged blocks expire unused)."""
        client = self._client(blob)

        def put() -> dict[str, Any]:
            return client.upload_blob(
                iter(chunks),  # an iterator: the SDK stages blocks instead of one PUT of a length
                overwrite=True,
                content_settings=ContentSettings(content_type=CONTENT_TYPE),
            )

        return self._uploaded(blob, client, self._call(blob, put))

    # -- internals ------------------------------------------------------------------------

    def _client(self, blob: BlobRef) -> BlobClient:
        return self.service.get_blob_client(blob.container, blob.name)

    @staticmethod
    def _uploaded(blob: BlobRef, client: BlobClient, result: dict[str, Any]) -> BlobRef:
        return BlobRef(
            container=blob.container,
            name=blob.name,
            etag=result["etag"],
            url=strip_query(client.url),
        )

    @staticmethod
    def _call(blob: BlobRef, operation: Callable[[], _T]) -> _T:
        """Run one SDK call, turning its errors into sanitized ones.

        The replacement is raised outside the `except` block so it has no `__context__`: the
        SDK's exception (whose text can hold request URLs) is not even reachable from it.
        """
        failure: Exception
        try:
            return operation()
        except ResourceNotFoundError:
            failure = FileNotFoundError(f"blob not found: {blob.path}")
        except ResourceModifiedError as exc:
            failure = BlobChangedError(
                f"blob changed since it was described: {blob.path} no longer has etag {blob.etag} "
                f"(HTTP {exc.status_code} {_error_code(exc)})",
                container=blob.container,
                name=blob.name,
                status_code=exc.status_code,
                error_code=_error_code(exc),
            )
        except ClientAuthenticationError as exc:
            if exc.response is None:  # the credential could not get a token; no request was sent
                message = (
                    f"could not get a token for blob storage ({blob.path}): check the managed identity "
                    "and DatasetsStorage__clientId"
                )
            else:
                message = f"blob storage refused {blob.path}: HTTP {exc.status_code} {_error_code(exc)}"
            failure = BlobStoreError(
                message,
                container=blob.container,
                name=blob.name,
                status_code=exc.status_code,
                error_code=_error_code(exc),
            )
        except HttpResponseError as exc:
            failure = BlobStoreError(
                f"blob storage request failed for {blob.path}: HTTP {exc.status_code} {_error_code(exc)}",
                container=blob.container,
                name=blob.name,
                status_code=exc.status_code,
                error_code=_error_code(exc),
            )
        except AzureError as exc:  # transport errors: urllib3 messages can carry the full URL + SAS
            failure = BlobStoreError(
                f"blob storage unreachable for {blob.path}: {type(exc).__name__}",
                container=blob.container,
                name=blob.name,
            )
        raise failure


def _download_blob(client: BlobClient, blob: BlobRef) -> StorageStreamDownloader[bytes]:
    """The first GET of `blob`, pinned to `blob.etag` when it has one."""
    if blob.etag:
        return client.download_blob(
            etag=normalize_etag(blob.etag), match_condition=MatchConditions.IfNotModified
        )
    return client.download_blob()


def _error_code(exc: HttpResponseError) -> str:
    code: object = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # StorageErrorCode is a str enum
    return str(code) if code else "UnknownError"
