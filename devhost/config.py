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


# The job's end by event, offline: the local backend publishes RunStatusChanged to the host's own
# Event Grid webhook (as Azure ML does to the workspace's system topic), which runs the app's
# Event Grid trigger. Not with `--azure`: the Azure ML emulator does not publish events yet, so
# runs there poll (JOB_POLL_*).
JOB_EVENTS_FUNCTION = "on_job_status_changed"
JOB_EVENT_DEFAULTS = {
    "JOB_STATUS_EVENTS": "true",
    "JOB_EVENT_FALLBACK_S": "60",  # the least Settings allows; polls only if an event is lost
}


def job_events_url(port: int, function: str = JOB_EVENTS_FUNCTION) -> str:
    """The dev host's Event Grid webhook for `function` (no key: the host listens on loopback)."""
    return f"http://127.0.0.1:{port}/runtime/webhooks/eventgrid?functionName={function}"


def job_event_env(port: int) -> dict[str, str]:
    """The offline default settings for job events (process environment wins)."""
    env = {**JOB_EVENT_DEFAULTS, "LOCAL_JOB_EVENTS_URL": job_events_url(port)}
    env.update({k: v for k, v in os.environ.items() if k in env})
    return env


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
