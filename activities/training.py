"""Training activities: submit the fine-tune, read its status, cancel it, register its model."""

from __future__ import annotations

from typing import Any

from activities.blueprint import Payload, activity
from backends.registry import current
from core.models import BlobRef, FineTuneSpec, RunConfig
from core.naming import job_name, lineage_tags


@activity
def submit_finetune(payload: Payload) -> str:
    """Start the job (named after the run, so a re-run of this activity finds the same job)."""
    run_id: str = payload["instance_id"]
    cfg = RunConfig.model_validate(payload["config"])
    dataset = BlobRef.model_validate(payload["dataset"])
    train = BlobRef.model_validate(payload["train"])
    validation = BlobRef.model_validate(payload["validation"])
    training = current().training
    spec = FineTuneSpec(
        job_name=job_name(run_id),
        base_model_name=cfg.base_model_name,
        base_model_version=cfg.base_model_version,
        model_registry=cfg.model_registry,
        task=cfg.task,
        training_data=training.data_uri(train),
        validation_data=training.data_uri(validation),
        hyperparameters=cfg.hyperparameters,
        instance_type=cfg.training_instance_type,
        output_model_prefix=cfg.output_model_prefix,
        tags=lineage_tags(run_id, dataset),
    )
    return training.submit_finetune(spec)


@activity
def get_job_status(payload: Payload) -> dict[str, Any]:
    return current().training.get_job(payload["job"]).model_dump(mode="json")


@activity
def cancel_job(payload: Payload) -> None:
    current().training.cancel_job(payload["job"])


@activity
def register_model(payload: Payload) -> dict[str, Any]:
    model = current().training.register_model(payload["job"], payload["model_name"], dict(payload["tags"]))
    return model.model_dump(mode="json")
