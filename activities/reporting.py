"""write_report: the run report (summary.json, loss.png, report.md) uploaded next to the dataset
under reports/<instance_id>/, a prefix the blob trigger ignores."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from activities.wrapper import activity
from backends.registry import current
from core.contracts import WriteReport
from core.models import BlobRef, LossHistory
from core.naming import report_prefix
from core.redact import scrub
from core.report import write_report as render

log = logging.getLogger("activities.reporting")


@activity
def write_report(inp: WriteReport) -> str:
    """Render and upload the report; return its folder as `container/path/`. The loss curve comes
    from the job's MLflow metrics (none for a run whose job never started)."""
    summary, config, examples = inp.summary, inp.config, inp.examples
    backends = current()
    history = LossHistory()
    if summary.job:
        try:
            history = backends.training.loss_history(summary.job)
        except Exception as exc:  # a report without its curve beats no report
            log.warning("loss history of %s unavailable: %s", summary.job, scrub(str(exc)))
    prefix = report_prefix(summary.dataset, summary.instance_id)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        for path in render(Path(tmp), summary, history, config, examples or None):
            backends.datasets.upload(
                path, BlobRef(container=summary.dataset.container, name=prefix + path.name)
            )
    return f"{summary.dataset.container}/{prefix}"
