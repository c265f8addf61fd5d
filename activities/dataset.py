"""validate_dataset: stream-check the uploaded JSONL; split it 80/20 when no validation file is given."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from activities.blueprint import Payload, activity
from backends.base import DatasetStore
from backends.blob_store import BlobChangedError
from backends.registry import current
from core.models import BlobRef, DatasetOutcome, RunConfig, ValidationIssue, ValidationReport
from core.naming import split_blobs
from core.splitting import split_file
from core.validation import validate_file


def _unreadable(blob: BlobRef, message: str) -> ValidationReport:
    issue = ValidationIssue(line=0, field="", message=message, file=blob.path)
    return ValidationReport(file=blob.path, ok=False, examples=0, lines=0, error_count=1, errors=[issue])


def _check(
    store: DatasetStore, blob: BlobRef, dest: Path, cfg: RunConfig, min_examples: int
) -> ValidationReport:
    try:
        store.download(blob, dest)
    except FileNotFoundError:
        return _unreadable(blob, "blob not found (deleted after upload?)")
    except BlobChangedError:
        return _unreadable(
            blob, "blob was overwritten after this run started; the new upload starts its own run"
        )
    return validate_file(
        dest,
        display_name=blob.path,
        max_tokens=cfg.max_tokens,
        max_errors=cfg.max_errors,
        min_examples=min_examples,
    )


@activity
def validate_dataset(payload: Payload) -> dict[str, Any]:
    run_id: str = payload["instance_id"]
    cfg = RunConfig.model_validate(payload["config"])
    dataset = BlobRef.model_validate(payload["dataset"])
    given = BlobRef.model_validate(payload["validation"]) if payload.get("validation") else None
    store = current().datasets

    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        work = Path(tmp)
        # A dataset to split needs 2 examples; with a separate validation file, 1 in each will do.
        reports = [_check(store, dataset, work / "dataset.jsonl", cfg, 1 if given else 2)]
        if given is not None:
            reports.append(_check(store, given, work / "validation.jsonl", cfg, 1))
        if not all(r.ok for r in reports):
            return DatasetOutcome(ok=False, reports=reports).model_dump(mode="json")

        if given is not None:
            outcome = DatasetOutcome(
                ok=True,
                reports=reports,
                train=dataset,
                validation=given,
                train_examples=reports[0].examples,
                validation_examples=reports[1].examples,
            )
            return outcome.model_dump(mode="json")

        train_path, val_path = work / "train.jsonl", work / "validation.jsonl"
        n_train, n_val = split_file(
            work / "dataset.jsonl",
            train_path,
            val_path,
            fraction=cfg.validation_fraction,
            seed=cfg.split_seed,
        )
        train_ref, val_ref = split_blobs(dataset, run_id)
        outcome = DatasetOutcome(
            ok=True,
            reports=reports,
            train=store.upload(train_path, train_ref),
            validation=store.upload(val_path, val_ref),
            train_examples=n_train,
            validation_examples=n_val,
        )
        return outcome.model_dump(mode="json")
