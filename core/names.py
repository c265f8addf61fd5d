"""Function names shared by the orchestrator (which calls them) and the activities (which register them)."""

from __future__ import annotations

from enum import StrEnum

ORCHESTRATOR = "finetune_orchestrator"
SWEEPER = "endpoint_sweeper"  # deletes expired endpoints this app created (cost guard)
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
    EVALUATE_BATCH = "evaluate_batch"
    TAG_MODEL = "tag_model"
    UPDATE_ENDPOINT_TAGS = "update_endpoint_tags"
    WRITE_REPORT = "write_report"
    NOTIFY = "notify"
    LIST_EXPIRED_ENDPOINTS = "list_expired_endpoints"
    DELETE_ENDPOINT = "delete_endpoint"
    TAKE_ENDPOINT_TURN = "take_endpoint_turn"
    GIVE_BACK_ENDPOINT_TURN = "give_back_endpoint_turn"
    LIST_ORPHAN_DEPLOYMENTS = "list_orphan_deployments"
