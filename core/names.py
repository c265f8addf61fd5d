"""Function names shared by the orchestrator (which calls them) and the activities (which register them)."""

from __future__ import annotations

from enum import StrEnum

ORCHESTRATOR = "finetune_orchestrator"
CANCEL_EVENT = "cancel"  # external event: POST /api/runs/{id}/cancel raises it


class Activity(StrEnum):
    VALIDATE_DATASET = "validate_dataset"
    PREFLIGHT = "preflight"
    SUBMIT_FINETUNE = "submit_finetune"
    GET_JOB_STATUS = "get_job_status"
    CANCEL_JOB = "cancel_job"
    REGISTER_MODEL = "register_model"
    ENSURE_ENDPOINT = "ensure_endpoint"
    GET_ENDPOINT = "get_endpoint"
    CREATE_DEPLOYMENT = "create_deployment"
    GET_DEPLOYMENT_STATE = "get_deployment_state"
    SMOKE_TEST = "smoke_test"
    SET_TRAFFIC = "set_traffic"
    DELETE_DEPLOYMENT = "delete_deployment"
    UPDATE_CONNECTION = "update_connection"
