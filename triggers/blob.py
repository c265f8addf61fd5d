"""Blob trigger: a `.jsonl` landing in the datasets container starts a run."""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func

from backends.registry import current
from core.models import BlobRef, RunRequest
from core.naming import instance_id, is_dataset_blob
from core.settings import get_settings
from storage.blob_urls import check_blob_path, normalize_etag, quote_prefix, split_blob_url
from triggers.start import StartOutcome, start_once

bp = df.Blueprint()
log = logging.getLogger("triggers")


def blob_ref(blob: func.InputStream) -> BlobRef:
    """The blob version that fired: name from the trigger, ETag from its properties (or a lookup)."""
    if not blob.name:
        raise ValueError("blob trigger fired without a blob name")
    container, name = split_blob_url(blob.name)
    props = blob.blob_properties or {}
    etag = props.get("ETag") or props.get("Etag") or props.get("etag")
    ref = BlobRef(container=container, name=name, etag=normalize_etag(etag) if etag else None, url=blob.uri)
    return ref if etag else current().datasets.describe(ref)


async def handle_blob(blob: func.InputStream, client: df.DurableOrchestrationClient) -> StartOutcome | None:
    container, name = split_blob_url(blob.name or "")
    try:
        check_blob_path(container, name)
    except ValueError as exc:  # `a/../b.jsonl`, control characters, ...: no run, no retry
        log.warning("ignoring blob %s: %s", quote_prefix(f"{container}/{name}"), exc)
        return None
    if not is_dataset_blob(name):
        log.info("ignoring %s/%s: not a dataset (*.jsonl outside _splits/ and reports/)", container, name)
        return None
    dataset = blob_ref(blob)
    request = RunRequest(dataset=dataset, config=get_settings().run_config(), source="blob")
    return await start_once(client, instance_id(dataset), request)


@bp.blob_trigger(
    arg_name="blob",
    path="%DATASETS_CONTAINER%/{name}",
    connection="DatasetsStorage",
    source=func.BlobSource.EVENT_GRID,
)
@bp.durable_client_input(client_name="client")
async def on_dataset_uploaded(blob: func.InputStream, client: df.DurableOrchestrationClient) -> None:
    await handle_blob(blob, client)
