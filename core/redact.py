"""Keep secrets out of anything that reaches durable history, logs or exception text.

Backends call `remember()` with every secret they read (endpoint keys, connection keys);
`scrub()` removes those values and anything shaped like a credential from a string.
"""

from __future__ import annotations

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


def shorten(text: str, limit: int, *, hide_queries: bool = False, keep_end: bool = False) -> str:
    """Scrub `text` (and, if asked, every URL's query string), then cap it at `limit` characters
    (for messages that travel into history): its head, or with `keep_end` its head and its end
    (for messages whose cause comes last)."""
    if hide_queries:
        text = _URL_QUERY.sub(r"\1?***", text)
    text = scrub(text)
    if len(text) <= limit:
        return text
    if keep_end:
        head = (limit - 5) // 2
        return text[:head] + " ... " + text[len(text) - (limit - 5 - head) :]
    return text[: limit - 3] + "..."
