"""The Function App: a DFApp that only registers blueprints (DESIGN §2)."""

import azure.durable_functions as df
import azure.functions as func

import activities
from orchestrators import finetune
from triggers import blob, http

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (blob.bp, http.bp, finetune.bp, activities.bp):
    app.register_functions(blueprint)
