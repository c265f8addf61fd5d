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
import unicodedata
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
    "MAX_BLOB_NAME_CHARS",
    "BlobChangedError",
    "BlobDatasetStore",
    "BlobStoreError",
    "check_blob_path",
    "normalize_etag",
    "parse_blob_reference",
    "quote_prefix",
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
            raise ValueError(f"not a blob URL: {quote_prefix(_strip_query(text))}; {accepted}")
        where = _strip_query(text)
        path = parts.path.lstrip("/")
        if _path_style(parts.hostname):
            _account, _, path = path.partition("/")
        segments = path.split("/", 1)
        if len(segments) != 2:
            raise ValueError(f"blob URL has no container and blob name: {quote_prefix(where)}; {accepted}")
        container, name = unquote(segments[0]), unquote(segments[1])
    else:
        where = text
        container, _, name = text.partition("/")

    if not container or not name or name.endswith("/"):
        raise ValueError(
            f"blob location needs a container and a blob name: {quote_prefix(where)}; {accepted}"
        )
    if not _valid_container(container):
        raise ValueError(
            f"invalid container name {quote_prefix(container)} in {quote_prefix(where)}: 3-63 characters, "
            "lowercase letters, digits and single hyphens"
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


QUOTE_CHARS = 80  # error messages quote at most this much of a caller's value
MAX_BLOB_NAME_CHARS = 1024  # Azure Storage: a blob name is 1-1024 characters
MAX_PATH_SEGMENTS = 254  # Azure Storage: at most 254 path segments
# Unicode categories refused anywhere in a blob location: controls (C0, DEL, C1), invisible
# format characters (bidi overrides, zero-width), surrogates, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def quote_prefix(value: object, limit: int = QUOTE_CHARS) -> str:
    """`value` quoted for an error message: at most `limit` characters (then `…`), control
    characters escaped, so an oversized or hostile field is never echoed back whole."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:limit] + "…") if len(text) > limit else repr(text)


def _refused_char(text: str) -> str | None:
    """A description of the first control / invisible character in `text`, if any."""
    for i, c in enumerate(text):
        if unicodedata.category(c) in _REFUSED_CATEGORIES:
            return f"control or invisible character U+{ord(c):04X} at position {i}"
    return None


def _fully_unquoted(text: str) -> str:
    """Percent-decode until nothing changes (`%252e` -> `%2e` -> `.`), a few rounds at most."""
    for _ in range(4):
        if "%" not in text:
            break
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def check_blob_path(container: str, name: str) -> None:
    """Raise ValueError unless `container/name` is a plain, normalised blob path.

    Refused, before any storage call: an invalid container name; an empty or over-long name
    (1024 characters, 254 segments); `.` / `..` (any all-dots segment), empty segments (`//`, a
    leading or trailing `/`) and a trailing `.`; backslashes (Azure Storage reads `\\` as `/`);
    control and invisible characters. Each rule also applies to the percent-decoded name, so
    `%2e%2e` or `%00` cannot slip through a service that decodes once more.
    """
    if not _valid_container(container):
        raise ValueError(
            f"invalid container name {quote_prefix(container)}: 3-63 characters, lowercase letters, "
            "digits and single hyphens"
        )
    if not name:
        raise ValueError("the blob name is empty")
    if len(name) > MAX_BLOB_NAME_CHARS:
        raise ValueError(f"the blob name has {len(name)} characters; at most {MAX_BLOB_NAME_CHARS}")
    for text in dict.fromkeys((name, _fully_unquoted(name))):
        refused = _refused_char(text)
        if refused:
            raise ValueError(f"the blob name contains a {refused}")
        if "\\" in text:
            raise ValueError("the blob name contains a backslash (storage reads it as '/'); use '/'")
        segments = text.split("/")
        if len(segments) > MAX_PATH_SEGMENTS:
            raise ValueError(f"the blob name has {len(segments)} path segments; at most {MAX_PATH_SEGMENTS}")
        for segment in segments:
            if not segment:
                raise ValueError(
                    f"the blob name {quote_prefix(name)} has an empty path segment (//, or a leading or "
                    "trailing /)"
                )
            if not segment.strip("."):
                raise ValueError(
                    f"the blob name {quote_prefix(name)} has a {quote_prefix(segment)} segment: relative "
                    "paths are not allowed"
                )
        if text.endswith("."):
            raise ValueError(f"the blob name {quote_prefix(name)} ends with '.'")


def _endpoint(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port made explicit; ValueError for an invalid port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def parse_blob_reference(value: object, *, account_url: str | None = None) -> tuple[str, str]:
    """`(container, name)` of a blob reference a caller sent (`POST /api/runs`), checked strictly.

    `value` is `<container>/<blob>` or a blob URL. With `account_url` (the configured account's
    blob endpoint, `BlobDatasetStore.account_url`), a URL must be in that account: same scheme,
    host, port and, for path-style (Azurite) endpoints, account segment; anything else (another
    account, another host, the metadata address, http instead of https) is refused with a
    message naming the expected account. Without `account_url` the URL is split as
    `split_blob_url` does. A query string (SAS) is ignored; user info (`user:pass@`) is refused.
    The path then has to pass `check_blob_path`. Messages quote at most `QUOTE_CHARS` of `value`.
    """
    if not isinstance(value, str):
        raise ValueError("a blob location must be a string")
    refused = _refused_char(value)
    if refused:
        raise ValueError(f"the blob location contains a {refused}")
    text = value.strip()
    if "://" not in text:
        container, name = split_blob_url(text)
        check_blob_path(container, name)
        return container, name

    where = quote_prefix(_strip_query(text))
    try:
        parts = urlsplit(text)
        scheme, host, port = _endpoint(text)
    except ValueError:
        raise ValueError(f"not a valid URL: {where}") from None
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"not a blob URL: {where}; expected an http(s) URL or <container>/<blob>")
    if "@" in parts.netloc:
        raise ValueError(f"a blob URL must not carry user info (user:password@): {where}")
    if account_url is None:
        container, name = split_blob_url(text)
        check_blob_path(container, name)
        return container, name

    want = account_url.rstrip("/")
    want_scheme, want_host, want_port = _endpoint(want)
    prefix = urlsplit(want).path.rstrip("/")  # "/devstoreaccount1" (path-style) or "" (host-style)
    if scheme != want_scheme:
        why = f"{scheme} instead of {want_scheme}"
    elif host != want_host or port != want_port:
        why = "another host"
    elif not parts.path.startswith(prefix + "/"):
        why = "another account"
    else:
        why = ""
    if why:
        raise ValueError(
            f"{where} is not in the configured storage account ({why}): give a blob URL under "
            f"{want}/ or <container>/<blob>"
        )
    rest = parts.path[len(prefix) + 1 :]
    raw_container, _, raw_name = rest.partition("/")
    container, name = unquote(raw_container), unquote(raw_name)
    if not container or not raw_name:
        raise ValueError(f"blob URL has no container and blob name: {where}")
    check_blob_path(container, name)
    return container, name


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
        return _strip_query(self.service.url).rstrip("/")

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
