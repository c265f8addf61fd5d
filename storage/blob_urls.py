"""Blob locations as text: splitting, checking and quoting them, with no storage call.

`split_blob_url` reads a blob URL (host-style or the emulator's path-style) or `container/name`;
`parse_blob_reference` checks a caller's reference strictly (in the configured account, a plain
normalised path); `check_blob_path` holds the path rules; `normalize_etag` brings an etag to the
quoted form the service returns; `quote_prefix` quotes a caller's value for an error message.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "MAX_BLOB_NAME_CHARS",
    "MAX_PATH_SEGMENTS",
    "QUOTE_CHARS",
    "check_blob_path",
    "normalize_etag",
    "parse_blob_reference",
    "quote_prefix",
    "split_blob_url",
    "strip_query",
]


def normalize_etag(etag: str) -> str:
    """The quoted form the service returns: `0x8DC...` and `"0x8DC..."` both give `"0x8DC..."`.

    `*` and weak validators (`W/"..."`) are left alone.
    """
    etag = etag.strip()
    if etag == "*" or etag.startswith("W/") or (len(etag) >= 2 and etag[0] == etag[-1] == '"'):
        return etag
    bare = etag.strip('"')
    return f'"{bare}"'


def strip_query(url: str) -> str:
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
            raise ValueError(f"not a blob URL: {quote_prefix(strip_query(text))}; {accepted}")
        where = strip_query(text)
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

    where = quote_prefix(strip_query(text))
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
