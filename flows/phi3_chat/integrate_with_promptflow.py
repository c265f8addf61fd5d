"""Prompt flow tool: send the user's message to the fine-tuned Phi-3 endpoint (tutorial, scenario 3).

The custom connection holds ``configs["endpoint"]`` (the scoring URI: an Azure ML managed online
endpoint's ``.../score`` or the offline stack's local one) and ``secrets["key"]`` (its key). The
request body and headers are the tutorial's, unchanged; the endpoint answers ``{"output": "..."}``.

Only the standard library is used for HTTP, so the flow needs nothing beyond promptflow itself.
"""

# No `from __future__ import annotations` here: promptflow reads the tool's parameter types from
# the live annotations to know that `connection` is a CustomConnection to resolve by name.
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from promptflow.connections import CustomConnection

try:
    from promptflow.core import tool
except ImportError:  # older promptflow runtimes, before the promptflow.core package
    from promptflow import tool  # type: ignore[no-redef]

TEMPERATURE = 0.7
MAX_NEW_TOKENS = 128
TIMEOUT_S = 60.0
_BODY_EXCERPT = 300  # characters of an error response kept in the exception message


class EndpointError(RuntimeError):
    """The endpoint could not be reached or did not answer with a 2xx JSON ``{"output": ...}``.

    ``status`` is the HTTP status, or None when no response arrived. The message never holds the key.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def build_payload(input_data: str) -> dict[str, Any]:
    """The tutorial's request body."""
    return {
        "input_data": {
            "input_string": [{"role": "user", "content": input_data}],
            "parameters": {"temperature": TEMPERATURE, "max_new_tokens": MAX_NEW_TOKENS},
        }
    }


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _where(url: str) -> str:
    """scheme://host/path of the endpoint, without query or credentials, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _excerpt(raw: bytes, key: str) -> str:
    text = raw.decode("utf-8", "replace").strip()
    if len(text) > _BODY_EXCERPT:
        text = text[:_BODY_EXCERPT] + "..."
    return _redact(text, key)


@tool
def integrate_with_promptflow(input_data: str, connection: CustomConnection) -> str:
    """POST ``input_data`` to the connection's endpoint and return the model's ``output``."""
    endpoint = str(connection.configs["endpoint"]).strip()
    key = str(connection.secrets["key"]).strip()
    if not endpoint.lower().startswith(("http://", "https://")):
        raise EndpointError(f"connection config 'endpoint' must be an http(s) URL, got {endpoint[:80]!r}")

    request = urllib.request.Request(
        endpoint,
        data=json.dumps(build_payload(input_data)).encode("utf-8"),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    where = _where(endpoint)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            status = response.status
            raw = response.read()
    except urllib.error.HTTPError as e:  # any non-2xx status (urllib follows redirects itself)
        try:
            body = _excerpt(e.read(), key)
        finally:
            e.close()
        raise EndpointError(
            f"Phi-3 endpoint {where} answered HTTP {e.code} {_redact(str(e.reason), key)}: {body}",
            e.code,
        ) from None
    except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, bad responses
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise EndpointError(f"Phi-3 endpoint {where} unreachable: {_redact(str(reason), key)}") from None

    try:
        result = json.loads(raw)
    except ValueError:
        raise EndpointError(
            f"Phi-3 endpoint {where} answered HTTP {status} with non-JSON body: {_excerpt(raw, key)}", status
        ) from None
    if not isinstance(result, dict) or "output" not in result:
        raise EndpointError(
            f'Phi-3 endpoint {where} answered HTTP {status} without "output": {_excerpt(raw, key)}', status
        )
    return result["output"]
