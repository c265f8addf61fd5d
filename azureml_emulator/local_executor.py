"""Jobs and deployments of the emulator run for real, on the offline stack (localml).

With `World(executor=LocalExecutor(settings))` a fine-tuning job PUT through the REST API starts
the local trainer (a tiny Phi-3 fine-tuned on CPU, `localml.training`) on the job's training and
validation data, its status is the trainer's, and its loss curve is the trainer's MLflow metrics.
A deployment PUT starts a local scoring server for the job's model (`localml.serving`), and the
endpoint's scoring route forwards to it. Everything the Azure code path sees stays the emulator's
REST surface: keys, traffic, provisioning states, operations and errors are the World's.

Data references are resolved as the service resolves them: `azureml://datastores/<name>/paths/<p>`
through the workspace's datastores (name -> container of the datasets account), an `https://` or
Azurite blob URL as is. The trainer downloads the data with the datasets storage settings of the
`Settings` it is given (Azurite offline).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from core.models import DeploymentSpec, FineTuneSpec, Hyperparameters, JobState, ModelRef, ProvisioningState
from core.settings import Settings

log = logging.getLogger(__name__)

Json = dict[str, Any]

# Local provisioning states as the service's deployment provisioningState.
_DEPLOYMENT_STATES = {
    ProvisioningState.CREATING: "Creating",
    ProvisioningState.UPDATING: "Creating",
    ProvisioningState.SUCCEEDED: "Succeeded",
    ProvisioningState.FAILED: "Failed",
    ProvisioningState.DELETING: "Deleting",
    ProvisioningState.CANCELED: "Canceled",
    ProvisioningState.NOT_FOUND: "Failed",
}
SCORE_TIMEOUT_S = 120.0


class LocalExecutor:
    """The World's executor (`world.Executor`) on `localml`: LocalTraining + LocalServing over
    `settings.LOCAL_RUN_DIR`. Every method is called with the World's lock held, except `score`."""

    def __init__(self, settings: Settings) -> None:
        from localml.serving import LocalServing
        from localml.training import LocalTraining

        self.training = LocalTraining(settings)
        self.serving = LocalServing(settings)

    # ------------------------------------------------------------------ jobs

    def start_job(self, name: str, props: Json, training_data: str, validation_data: str) -> None:
        details = props.get("fineTuningDetails") or {}
        model_uri = str((details.get("model") or {}).get("uri") or "")
        # azureml://registries/<registry>/models/<name>/versions/<version>
        parts = model_uri.split("/")
        registry, base_name, version = (parts[3], parts[5], parts[7]) if len(parts) >= 8 else ("", "", None)
        hyper = {k: v for k, v in (details.get("hyperParameters") or {}).items()}
        outputs = props.get("outputs") or {}
        spec = FineTuneSpec(
            job_name=name,
            base_model_name=base_name,
            base_model_version=version,
            model_registry=registry,
            task=str(details.get("taskType") or "chatCompletion"),
            training_data=training_data,
            validation_data=validation_data,
            hyperparameters=Hyperparameters.model_validate(hyper),
            instance_type=str(((props.get("resources") or {}).get("instanceTypes") or [""])[0]),
            output_model_prefix=str((outputs.get("registered_model") or {}).get("assetName") or name),
            tags={str(k): str(v) for k, v in (props.get("tags") or {}).items()},
        )
        self.training.submit_finetune(spec)

    def job_status(self, name: str) -> tuple[str, str | None]:
        """(the service's JobStatus, the error of a failed job)."""
        info = self.training.get_job(name)
        return info.state.value, info.error

    def cancel_job(self, name: str) -> None:
        self.training.cancel_job(name)

    def job_metrics(self, name: str) -> dict[str, list[tuple[int, float]]]:
        """The job's MLflow metrics, as the service's trainer names them (`loss`, `eval_loss`)."""
        history = self.training.loss_history(name)
        return {
            "loss": [(p.step, p.value) for p in history.train],
            "eval_loss": [(p.step, p.value) for p in history.validation],
        }

    def job_model(self, job_name: str, model_name: str) -> ModelRef:
        """The job's model in the local registry (registered once, on first use)."""
        if self.training.get_job(job_name).state is not JobState.COMPLETED:
            raise RuntimeError(f"job {job_name} has not completed: it has no model")
        return self.training.register_model(job_name, model_name, {})

    # ------------------------------------------------------------------ serving

    def create_endpoint(self, name: str) -> None:
        self.serving.begin_create_endpoint(name, {})

    def delete_endpoint(self, name: str) -> None:
        self.serving.delete_endpoint(name)

    def start_deployment(self, endpoint: str, deployment: str, model: ModelRef, instance_type: str) -> None:
        self.create_endpoint(endpoint)  # idempotent: restores a front a restart lost
        spec = DeploymentSpec(
            endpoint_name=endpoint,
            deployment_name=deployment,
            model=model,
            instance_type=instance_type,
            instance_count=1,
            tags={},
        )
        self.serving.begin_create_deployment(spec)

    def deployment_state(self, endpoint: str, deployment: str) -> tuple[str, str | None]:
        """(the service's provisioningState, the error of a failed deployment)."""
        state = self.serving.get_deployment_state(endpoint, deployment)
        error = None
        if state is ProvisioningState.FAILED:
            error = self.serving.deployment_error(endpoint, deployment) or "the scoring container exited"
        elif state is ProvisioningState.NOT_FOUND:
            error = "the scoring container is gone"
        return _DEPLOYMENT_STATES[state], error

    def delete_deployment(self, endpoint: str, deployment: str) -> None:
        self.serving.delete_deployment(endpoint, deployment)

    def score(self, endpoint: str, deployment: str, payload: Json) -> tuple[int, Json]:
        """The deployment's own answer (status and JSON body), as the service relays it."""
        uri = self.serving.deployment_scoring_uri(endpoint, deployment)
        if uri is None:
            return 404, {"message": f"deployment {deployment} has no scoring container"}
        try:
            with httpx.Client(timeout=SCORE_TIMEOUT_S, trust_env=False) as client:
                response = client.post(uri, json=payload)
        except httpx.HTTPError as e:
            return 502, {
                "message": f"the scoring container of {deployment} did not answer: {type(e).__name__}"
            }
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:500]}
        return response.status_code, body if isinstance(body, dict) else {"output": body}
