"""The Function App: a DFApp that only registers blueprints."""

import logging

import azure.durable_functions as df
import azure.functions as func

import activities
from core import redact
from orchestrators import finetune, sweep
from triggers import blob, dashboard, http, job_events
from triggers import sweep as sweep_triggers

# azure-core logs every request it sends (URL, headers) at INFO: each ARM poll of a job or a
# deployment would be a log line in Application Insights. Its warnings and errors still get through.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
# Query strings never reach the log: httpx logs every request's full URL at INFO (the webhook's
# ?token=…), urllib3 at DEBUG (a SAS); these records, and all the root handlers write, are redacted.
redact.install_log_redaction()

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (
    blob.bp,
    http.bp,
    dashboard.bp,
    job_events.bp,
    sweep_triggers.bp,
    finetune.bp,
    sweep.bp,
    activities.bp,
):
    app.register_functions(blueprint)
