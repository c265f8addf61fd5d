"""Training activities: submit the fine-tune, read its status, cancel it, register its model."""

from __future__ import annotations

from activities.wrapper import activity
from backends.registry import current
from core.contracts import CancelJob, GetJobStatus, RegisterModel, SubmitFinetune
from core.models import FineTuneSpec, JobInfo, ModelRef
from core.naming import job_name, lineage_tags


@activity
def submit_finetune(inp: SubmitFinetune) -> str:
    """Start the job (named after the run, so a re-run of this activity finds the same job)."""
    run_id, cfg = inp.instance_id, inp.config
    if inp.train is None or inp.validation is None:
        raise ValueError("submit_finetune: the validated train and validation files are needed")
    training = current().training
    spec = FineTuneSpec(
        job_name=job_name(run_id),
        base_model_name=cfg.base_model_name,
        base_model_version=cfg.base_model_version,
        model_registry=cfg.model_registry,
        task=cfg.task,
        training_data=training.data_uri(inp.train),
        validation_data=training.data_uri(inp.validation),
        hyperparameters=cfg.hyperparameters,
        instance_type=cfg.training_instance_type,
        output_model_prefix=cfg.output_model_prefix,
        tags=lineage_tags(run_id, inp.dataset),
    )
    return training.submit_finetune(spec)


@activity
def get_job_status(inp: GetJobStatus) -> JobInfo:
    return current().training.get_job(inp.job)


@activity
def cancel_job(inp: CancelJob) -> None:
    current().training.cancel_job(inp.job)


@activity
def register_model(inp: RegisterModel) -> ModelRef:
    return current().training.register_model(inp.job, inp.model_name, dict(inp.tags))
