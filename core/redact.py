"""Keep secrets out of anything that reaches durable history, logs or exception text.

Backends call `remember()` with every secret they read (endpoint keys, connection keys);
`scrub()` removes those values and anything shaped like a credential from a string.
"""

from __future__ import annotations

import logging
import re
import threading

_lock = threading.Lock()
_known: set[str] = set()

_PATTERNS = [
    re.compile(r"(AccountKey=)[^;\s\"']+", re.IGNORECASE),
    re.compile(r"(SharedAccessSignature=)[^;\s\"']+", re.IGNORECASE),
    re.compile(r"([?&]sig=)[^&\s\"']+", re.IGNORECASE),
    re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
    re.compile(r"((?:api[-_]?key|primary_key|secondary_key|\"key\")\s*[:=]\s*\"?)[^\s\",}]+", re.IGNORECASE),
]
MASK = "***"


def remember(secret: str | None) -> None:
    if secret and len(secret) >= 6:
        with _lock:
            _known.add(secret)


def scrub(text: str) -> str:
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


_URL_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
# An HTTP request line as urllib3 logs it: `"POST /hook?token=... HTTP/1.1" 204`.
_REQUEST_LINE_QUERY = re.compile(r"\b((?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) /[^\s?\"']*)\?[^\s\"']*")


def hide_url_queries(text: str) -> str:
    """Every URL's (and request line's) query string replaced by `***`: webhook tokens, SAS."""
    return _REQUEST_LINE_QUERY.sub(r"\1?***", _URL_QUERY.sub(r"\1?***", text))


class RedactingFilter(logging.Filter):
    """Rewrites each record it sees, never drops one: query strings of URLs hidden
    (`hide_url_queries`) and credentials scrubbed (`scrub`), in the message and in the traceback.

    HTTP clients log the URLs they call: httpx at INFO (`HTTP Request: POST
    http://…/hook?token=… "HTTP/1.1 204 No Content"`), urllib3 (under requests, the Azure SDK,
    mlflow) at DEBUG. On Azure the log goes to Application Insights."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's error path
            return True
        clean = scrub(hide_url_queries(message))
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(hide_url_queries(record.exc_text))
        return True


# Loggers that print outgoing URLs. A logger's filter sees only records logged on that very
# logger (not its children's), hence the full names.
URL_LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "urllib3.connectionpool",
    "urllib3.util.retry",
    "azure.core.pipeline.policies.http_logging_policy",
)


def install_log_redaction(*, root_handlers: bool = True) -> None:
    """Put a `RedactingFilter` on the `URL_LOGGERS` and (with `root_handlers`) on every handler
    the root logger has now, so records of any logger are redacted before they are written.
    Idempotent: call it at import time of the app and again after logging is configured."""
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in URL_LOGGERS]
    if root_handlers:
        targets.extend(logging.getLogger().handlers)
    for target in targets:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())


def shorten(text: str, limit: int, *, hide_queries: bool = False, keep_end: bool = False) -> str:
    """Scrub `text` (and, if asked, every URL's query string), then cap it at `limit` characters
    (for messages that travel into history): its head, or with `keep_end` its head and its end
    (for messages whose cause comes last)."""
    if hide_queries:
        text = hide_url_queries(text)
    text = scrub(text)
    if len(text) <= limit:
        return text
    if keep_end:
        head = (limit - 5) // 2
        return text[:head] + " ... " + text[len(text) - (limit - 5 - head) :]
    return text[: limit - 3] + "..."
