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

Memory: downloads and uploads go in chunks of `CHUNK_SIZE` (the SDK's defaults would buffer up to
32 MiB per GET and 64 MiB per PUT) when the client is built here (`from_settings`,
`from_connection_string`); a client passed to the constructor keeps its own settings.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

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
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings

from core.models import BlobRef
from core.settings import Settings

__all__ = [
    "CHUNK_SIZE",
    "CONTENT_TYPE",
    "BlobChangedError",
    "BlobDatasetStore",
    "BlobStoreError",
    "normalize_etag",
    "split_blob_url",
]

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


def normalize_etag(etag: str) -> str:
    """The quoted form the service returns: `0x8DC...` and `"0x8DC..."` both give `"0x8DC..."`.

    `*` and weak validators (`W/"..."`) are left alone.
    """
    etag = etag.strip()
    if etag == "*" or etag.startswith("W/") or (len(etag) >= 2 and etag[0] == etag[-1] == '"'):
        return etag
    bare = etag.strip('"')
    return f'"{bare}"'


def _strip_query(url: str) -> str:
    """Drop the query (a SAS token, when the client has one) and the fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _path_style(host: str) -> bool:
    """Azurite / emulator URLs carry the account as the first path segment
    (`http://127.0.0.1:10000/devstoreaccount1/...`, `http://azurite:10000/devstoreaccount1/...`)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "." not in host
    return True


def split_blob_url(url: str) -> tuple[str, str]:
    """`(container, blob name)` from a blob URL or a `container/name` path.

    Accepts `https://<account>.blob.core.windows.net/<container>/<name>` (any host-style
    endpoint), the emulator's path-style `http://127.0.0.1:10000/<account>/<container>/<name>`
    (host an IP address or a dot-less name such as `localhost` / `azurite`), and
    `<container>/<name>`. URL paths are percent-decoded (`%20` -> space); a query string (SAS)
    is ignored. The plain `container/name` form is taken literally.
    """
    accepted = (
        "expected https://<account>.blob.core.windows.net/<container>/<blob>, "
        "http://127.0.0.1:<port>/<account>/<container>/<blob> or <container>/<blob>"
    )
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise ValueError(f"empty blob location; {accepted}")

    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a blob URL: {_strip_query(text)!r}; {accepted}")
        where = _strip_query(text)
        path = parts.path.lstrip("/")
        if _path_style(parts.hostname):
            _account, _, path = path.partition("/")
        segments = path.split("/", 1)
        if len(segments) != 2:
            raise ValueError(f"blob URL has no container and blob name: {where!r}; {accepted}")
        container, name = unquote(segments[0]), unquote(segments[1])
    else:
        where = text
        container, _, name = text.partition("/")

    if not container or not name or name.endswith("/"):
        raise ValueError(f"blob location needs a container and a blob name: {where!r}; {accepted}")
    if not _valid_container(container):
        raise ValueError(
            f"invalid container name {container!r} in {where!r}: 3-63 characters, lowercase letters, "
            "digits and single hyphens"
        )
    return container, name


def _valid_container(name: str) -> bool:
    if name in ("$root", "$web", "$logs"):
        return True
    return (
        3 <= len(name) <= 63
        and all(c.isascii() and (c.islower() or c.isdigit() or c == "-") for c in name)
        and name[0] != "-"
        and name[-1] != "-"
        and "--" not in name
    )


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
        return blob.model_copy(update={"etag": props.etag, "url": _strip_query(client.url)})

    def download(self, blob: BlobRef, dest: Path) -> None:
        client = self._client(blob)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)

        def stream() -> None:
            if blob.etag:
                downloader = client.download_blob(
                    etag=normalize_etag(blob.etag), match_condition=MatchConditions.IfNotModified
                )
            else:
                downloader = client.download_blob()
            # readinto writes chunk by chunk (at most max_chunk_get_size in memory); later
            # chunks are pinned to the first response's etag by the SDK.
            with dest.open("wb") as out:
                downloader.readinto(out)

        try:
            self._call(blob, stream)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

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

        result = self._call(blob, put)
        return BlobRef(
            container=blob.container,
            name=blob.name,
            etag=result["etag"],
            url=_strip_query(client.url),
        )

    # -- internals ------------------------------------------------------------------------

    def _client(self, blob: BlobRef) -> BlobClient:
        return self.service.get_blob_client(blob.container, blob.name)

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


def _error_code(exc: HttpResponseError) -> str:
    code: object = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # StorageErrorCode is a str enum
    return str(code) if code else "UnknownError"
