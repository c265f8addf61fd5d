"""Every orchestration instance of the task hub, page by page, through the durable HTTP API.

`DurableOrchestrationClient.get_status_by` (azure-functions-durable 1.x) returns only the first
page: the extension answers at most 100 instances and a continuation token in the
`x-ms-continuation-token` header, which the SDK drops (Azure/azure-functions-durable-python#580).
So the dashboard asks the same RPC endpoint itself and follows the token, with the same query
parameters the SDK would send (`createdTimeFrom`, `showInput`, `top`).
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

CONTINUATION = "x-ms-continuation-token"
NULL_TOKEN = "bnVsbA=="  # base64 "null": some extension versions send it after the last page
PAGE_SIZE = 100
MAX_INSTANCES = 5000  # a bound on one listing; beyond it the answer says it is truncated
MAX_PAGES = 200
TIMEOUT_S = 15.0


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: httpx builds a new one (tens of ms) for every client."""
    return ssl.create_default_context()


class ListingFailed(Exception):
    """The task hub did not answer the listing (status code or transport error; no URL, no key)."""


def rpc_base_url(client: object) -> str:
    """The durable extension's RPC base URL from a `DurableOrchestrationClient`'s binding (the
    SDK keeps it private)."""
    url = getattr(getattr(client, "_orchestration_bindings", None), "rpc_base_url", None)
    if not isinstance(url, str) or not url:
        raise ListingFailed("the durable client binding has no rpcBaseUrl")
    return url


@dataclass(frozen=True)
class Listing:
    instances: list[dict[str, Any]]
    truncated: bool  # more instances matched than `limit` (which ones were left out is the provider's order)


async def list_instances(
    client: object,
    *,
    created_from: datetime | None = None,
    show_input: bool = True,
    limit: int | None = None,
) -> Listing:
    """Every instance created at or after `created_from` (all when None), at most `limit`
    (`MAX_INSTANCES` when None), in
    the order the provider answers (callers sort). A page may be empty and still carry a token
    (Azure Table queries can), so the token alone decides whether to go on, for at most
    `MAX_PAGES` pages."""
    limit = MAX_INSTANCES if limit is None else limit
    params: dict[str, str] = {"top": str(PAGE_SIZE), "showInput": "true" if show_input else "false"}
    if created_from is not None:
        params["createdTimeFrom"] = created_from.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    url = f"{rpc_base_url(client)}instances/"
    found: list[dict[str, Any]] = []
    headers: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=TIMEOUT_S, verify=_tls()) as http:
        for _ in range(MAX_PAGES):
            try:
                response = await http.get(url, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise ListingFailed(f"the task hub could not be reached ({type(exc).__name__})") from None
            if response.status_code != 200:
                raise ListingFailed(f"the task hub answered HTTP {response.status_code} to the listing")
            try:
                page = response.json()
            except ValueError:
                raise ListingFailed("the task hub's listing is not JSON") from None
            if not isinstance(page, list):
                raise ListingFailed("the task hub's listing is not a JSON array")
            found.extend(i for i in page if isinstance(i, dict))
            token = response.headers.get(CONTINUATION)
            if not token or token == NULL_TOKEN:
                return Listing(found[:limit], len(found) > limit)
            if len(found) > limit:
                break
            headers = {CONTINUATION: token}
    return Listing(found[:limit], True)
