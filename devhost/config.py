"""The offline defaults the dev host runs the app with (process environment wins)."""

from __future__ import annotations

import os
from pathlib import Path

# Short polling for a job that takes a minute, not hours; everything else as in Azure.
OFFLINE_DEFAULTS = {
    "BACKEND": "local",
    "TASK_HUB_NAME": "devhost",
    "DATASETS_CONTAINER": "datasets",
    "JOB_POLL_FIRST_S": "2",
    "JOB_POLL_MAX_S": "4",
    "JOB_POLL_BACKOFF": "1.5",
    "JOB_DEADLINE_HOURS": "1",
    "DEPLOY_POLL_FIRST_S": "1",
    "DEPLOY_POLL_MAX_S": "2",
    "DEPLOY_TIMEOUT_MINUTES": "10",
    "ACTIVITY_RETRY_FIRST_INTERVAL_MS": "1000",
    # The tiny model needs a few passes over the sample to answer recognisably (~10 s of CPU).
    "NUM_TRAIN_EPOCHS": "3",
    "LOCAL_MAX_STEPS": "720",
    # The cost guard's sweep (timer trigger): every minute offline, so a short TTL is visible.
    "ENDPOINT_SWEEP_SCHEDULE": "0 * * * * *",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
    "TOKENIZERS_PARALLELISM": "false",
    # Keep promptflow (and its tracing threads / signal handlers) out of the host process.
    "LOCALML_PUBLISH_IN_CHILD": "1",
}


def host_env(run_dir: Path, connection_string: str) -> dict[str, str]:
    env = dict(OFFLINE_DEFAULTS)
    env.update(os.environ)
    env.update(
        {
            "LOCAL_RUN_DIR": str(run_dir),
            "DatasetsStorage": connection_string,
            "AzureWebJobsStorage": connection_string,
        }
    )
    return env
