"""The real Function App (function_app.py, every function) plus one anonymous static page, for
bench/dashboard.py's first-paint baseline.

`GET /api/dashboard-snapshot` answers `SNAPSHOT["html"]`: the bench fills it with the dashboard's
own runs list as the browser drew it (its DOM once the 25 rows were in, without the script), so
the baseline is the same pixels served as static HTML by the same host, through the same HTTP
trigger path, with the same headers as the dashboard's page. Its relative stylesheet link
(`dashboard/static/app.css`) resolves to the dashboard's real static function, as the page's does.

The route is registered on `function_app.app` itself, so import this module before anything
indexes that app in the process (the dev host's `FunctionIndex.load` or `testing.app.functions`):
indexing happens once per app (`devhost.functions.app_functions`). Only the bench imports it.
"""

from __future__ import annotations

import azure.functions as func

from function_app import app
from triggers.dashboard import static_file

SNAPSHOT: dict[str, bytes] = {"html": b"<!doctype html><title>no snapshot yet</title>"}
# The dashboard page's own headers (Cache-Control, CSP, nosniff, Referrer-Policy).
HEADERS = {k: v for k, v in static_file("index.html").headers.items() if k.lower() != "content-type"}


@app.route(route="dashboard-snapshot", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def dashboard_snapshot(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        SNAPSHOT["html"], status_code=200, mimetype="text/html", charset="utf-8", headers=HEADERS
    )
