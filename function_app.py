"""The Function App: a DFApp that only registers blueprints (DESIGN §2)."""

import azure.durable_functions as df
import azure.functions as func

import activities
from orchestrators import finetune, sweep
from triggers import blob, http
from triggers import sweep as sweep_triggers

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (blob.bp, http.bp, sweep_triggers.bp, finetune.bp, sweep.bp, activities.bp):
    app.register_functions(blueprint)
