"""validate_dataset: stream-check the uploaded JSONL; split it 80/20 when no validation file is given
(with one, both files are copied as they were validated to the same `_splits/<run>/` place).

Without a validation file the dataset is validated while it downloads
(:func:`core.validation.validate_stream` over `DatasetStore.open_stream`): the verdict is ready
when the last chunk arrives, and the bytes are on disk for the split by then. The split then
takes one pass (the report's example count is its line count) and writes each output straight
into a streaming upload of its own (:func:`core.splitting.split_streaming` into
`DatasetStore.upload_chunks`): both uploads run while the split is written, and no split file is
kept locally. A failed upload stops the split and raises (the activity is retried). With a
validation file both are downloaded first, then validated together.

With a validation file, both are validated together (:func:`core.validation.validate_pair`), which
also warns about validation examples that repeat a training example (overlap). Duplicates inside a
file are warned about either way; warnings never stop the run, and the 80/20 split is unchanged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from activities.wrapper import activity
from backends.base import BlobChangedError, DatasetStore
from backends.registry import current
from core.contracts import ValidateDataset
from core.models import BlobRef, DatasetOutcome, RunConfig, ValidationIssue, ValidationReport
from core.naming import split_blobs
from core.splitting import split_streaming, validation_count
from core.validation import validate_file, validate_pair, validate_stream

_NOT_FOUND = "blob not found (deleted after upload?)"
_CHANGED = "blob was overwritten after this run started; the new upload starts its own run"
# Each split output is handed to its upload in chunks of this size, at most this many queued.
_UPLOAD_CHUNK = 4 * 1024 * 1024
_UPLOAD_DEPTH = 2


def _unreadable(blob: BlobRef, message: str) -> ValidationReport:
    issue = ValidationIssue(line=0, field="", message=message, file=blob.path)
    return ValidationReport(file=blob.path, ok=False, examples=0, lines=0, error_count=1, errors=[issue])


def _download(store: DatasetStore, blob: BlobRef, dest: Path) -> ValidationReport | None:
    """Fetch the blob to `dest`; a failed report if it cannot be had, else None."""
    try:
        store.download(blob, dest)
    except FileNotFoundError:
        return _unreadable(blob, _NOT_FOUND)
    except BlobChangedError:
        return _unreadable(blob, _CHANGED)
    return None


def _check(
    store: DatasetStore, blob: BlobRef, dest: Path, cfg: RunConfig, min_examples: int
) -> ValidationReport:
    """Validate the blob as it downloads to `dest` (the verdict is ready when the last byte is):
    a failed report if it cannot be had. `dest` holds the blob when the report is ok."""
    try:
        return validate_stream(
            store.open_stream(blob),
            dest,
            display_name=blob.path,
            max_tokens=cfg.max_tokens,
            max_errors=cfg.max_errors,
            min_examples=min_examples,
        )
    except FileNotFoundError:
        return _unreadable(blob, _NOT_FOUND)
    except BlobChangedError:
        return _unreadable(blob, _CHANGED)


def _check_pair(
    store: DatasetStore, dataset: BlobRef, given: BlobRef, work: Path, cfg: RunConfig
) -> list[ValidationReport]:
    """[train report, validation report]; with overlap warnings when both could be downloaded."""
    train_path, val_path = work / "dataset.jsonl", work / "validation.jsonl"
    # Each is a failed report if that blob could not be downloaded, else None until validated.
    train_report = _download(store, dataset, train_path)
    val_report = _download(store, given, val_path)
    if train_report is None and val_report is None:
        train, validation, _overlap = validate_pair(
            train_path,
            val_path,
            train_name=dataset.path,
            validation_name=given.path,
            max_tokens=cfg.max_tokens,
            max_errors=cfg.max_errors,
            min_examples=1,
        )
        return [train, validation]
    limits: dict[str, Any] = {"max_tokens": cfg.max_tokens, "max_errors": cfg.max_errors, "min_examples": 1}
    if train_report is None:
        train_report = validate_file(train_path, display_name=dataset.path, **limits)
    if val_report is None:
        val_report = validate_file(val_path, display_name=given.path, **limits)
    return [train_report, val_report]


@activity
def validate_dataset(inp: ValidateDataset) -> DatasetOutcome:
    run_id, cfg, dataset, given = inp.instance_id, inp.config, inp.dataset, inp.validation
    store = current().datasets

    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        work = Path(tmp)
        # A dataset to split needs 2 examples; with a separate validation file, 1 in each will do.
        if given is None:
            reports = [_check(store, dataset, work / "dataset.jsonl", cfg, 2)]
        else:
            reports = _check_pair(store, dataset, given, work, cfg)
        if not all(r.ok for r in reports):
            return DatasetOutcome(ok=False, reports=reports)

        if given is not None:
            # Snapshot what was validated next to the dataset, as for a split: the job trains and
            # the evaluation gate scores exactly these bytes, even if the user re-uploads either
            # file while the run goes on.
            snapshot = {}
            if not inp.dry_run:
                train_ref, val_ref = split_blobs(dataset, run_id)
                snapshot = {
                    "train": store.upload(work / "dataset.jsonl", train_ref),
                    "validation": store.upload(work / "validation.jsonl", val_ref),
                }
            return DatasetOutcome(
                ok=True,
                reports=reports,
                train_examples=reports[0].examples,
                validation_examples=reports[1].examples,
                **snapshot,
            )

        if inp.dry_run:  # a plan needs the counts, not the files: write nothing
            n_val = validation_count(reports[0].examples, cfg.validation_fraction)
            return DatasetOutcome(
                ok=True,
                reports=reports,
                train_examples=reports[0].examples - n_val,
                validation_examples=n_val,
            )

        train_ref, val_ref = split_blobs(dataset, run_id)
        split = split_streaming(
            work / "dataset.jsonl",
            lambda chunks: store.upload_chunks(chunks, train_ref),
            lambda chunks: store.upload_chunks(chunks, val_ref),
            fraction=cfg.validation_fraction,
            seed=cfg.split_seed,
            examples=reports[0].examples,  # every non-blank line of a valid file: one pass
            chunk_size=_UPLOAD_CHUNK,
            depth=_UPLOAD_DEPTH,
        )
        # Each result is tied to its output (not to which upload finished first): deterministic.
        return DatasetOutcome(
            ok=True,
            reports=reports,
            train=split.train,
            validation=split.validation,
            train_examples=split.train_examples,
            validation_examples=split.validation_examples,
        )
