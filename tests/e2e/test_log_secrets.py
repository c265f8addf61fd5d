"""No secret in logs (issue 15, item 4), for real: a whole offline run through the dev host process,
with a webhook URL carrying a random `?token=` and the local endpoint's key, then a grep for both
through everything an operator or an attacker with read access would see: the whole
`devhost.log`, the durable store (`devhost.sqlite` and its WAL, as bytes) and every API answer
(the 409 of a repeated POST, the status with full history, history outputs and input, and
every answer of the runs dashboard: page, JSON API, report files).

httpx logs each request it sends at INFO with the full URL (`HTTP Request: POST
http://…/hook?token=…`); the app's log filter (core/redact.py) must turn the query into `?***`
rather than silence the line, so the test also checks that the redacted line is there.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx

from core.naming import instance_id
from testing.devhost_subprocess import DevHostProcess, Receiver

ENDED = {"Completed", "Failed", "Terminated"}


def _durable_store(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.glob("devhost.sqlite*"))}


def dashboard_answers(base_url: str, run_id: str) -> list[str]:
    """Every answer of the dashboard (page, assets, JSON API, report files) about a finished run."""
    api = f"{base_url}/api/dashboard"
    paths = [
        "", "/static/index.html", "/static/app.js", "/static/app.css",
        "/api/runs", "/api/runs?state=completed", "/api/runs?state=rejected_by_evaluation",
        f"/api/runs/{run_id}", f"/api/runs/{run_id}/loss",
        *(f"/api/runs/{run_id}/report/{name}" for name in ("summary.json", "report.md", "loss.png")),
    ]  # fmt: skip
    answers = []
    for path in paths:
        resp = httpx.get(api + path, timeout=30)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
        answers.append(resp.content.decode("latin-1"))
    listed = json.loads(answers[4])["runs"]
    assert [r["id"] for r in listed] == [run_id] and json.loads(answers[7])["report"], "a real run was read"
    return answers


def test_webhook_token_and_endpoint_key_never_reach_log_store_or_api(tmp_path: Path) -> None:
    token = "tok" + secrets.token_hex(20)
    receiver = Receiver()
    run_dir = tmp_path / "run"
    host = DevHostProcess(
        run_dir,
        {
            "NOTIFY_WEBHOOK_URL": f"{receiver.base_url}/hook?token={token}",
            "NOTIFY_WEBHOOK_SECRET": "log-secrets-signing-key",
            "NOTIFY_FIRST_BACKOFF_S": "0.2",
            # Small: the run may end completed or rejected; what matters is that every step ran.
            "LOCAL_MAX_STEPS": "60",
            "NUM_TRAIN_EPOCHS": "1",
            "EVAL_SAMPLE_SIZE": "10",
            # Poll the job and the deployment every second: no idle backoff inside the budget.
            "JOB_POLL_FIRST_S": "1",
            "JOB_POLL_MAX_S": "1",
            "JOB_POLL_BACKOFF": "1.0",
            "DEPLOY_POLL_FIRST_S": "1",
            "DEPLOY_POLL_MAX_S": "1",
        },
    )
    answers: list[str] = []
    try:
        host.start()
        dataset = host.upload("secrets/chats.jsonl")
        run_id = instance_id(dataset)
        # The same version over HTTP: 409 with the run's links (an API answer to grep too).
        repeat = httpx.post(f"{host.base_url}/api/runs", json={"dataset": dataset.path}, timeout=30)
        assert repeat.status_code in (202, 409), repeat.text
        answers.append(repeat.text)

        body: dict[str, Any] = host.wait(run_id, lambda b: b["runtimeStatus"] in ENDED)
        assert body["runtimeStatus"] == "Completed", body
        out = body["output"]
        assert out["status"] in ("completed", "rejected_by_evaluation"), out
        for params in ({}, {"showHistory": "true", "showHistoryOutput": "true", "showInput": "true"}):
            answers.append(host.status(run_id, **params).text)
        answers.extend(dashboard_answers(host.base_url, run_id))

        # Both secrets were really used: the event went to the tokened URL, the key guards the
        # endpoint the run deployed and scored.
        assert any(path == f"/hook?token={token}" for path, _, _ in receiver.received), receiver.received
        assert out["notification"]["delivered"] is True
        key_file = run_dir / "serving" / "endpoints" / out["endpoint"] / "key"
        key = key_file.read_text().strip()
        assert len(key) >= 16
    finally:
        host.stop()
        receiver.close()

    log = host.log.read_bytes()
    places = {"devhost.log": log, **_durable_store(run_dir), "the API answers": "\n".join(answers).encode()}
    assert "devhost.sqlite" in places and len(places["devhost.sqlite"]) > 0
    for label, secret in (("webhook token", token), ("endpoint key", key)):
        for where, data in places.items():
            assert secret.encode() not in data, f"the {label} is in {where}"
    # Redacted, not silenced: httpx's request line is there, without its query.
    assert f"HTTP Request: POST {receiver.base_url}/hook?*** ".encode() in log, log[-3000:]


def test_the_filter_redacts_every_url_shape_and_keeps_the_line() -> None:
    """The filter on its own (no process): httpx's and urllib3's request lines, a message with a
    known key, and a traceback whose exception text carries a SAS."""
    import logging

    from core import redact

    secret_key = "k3y-" + secrets.token_hex(12)
    redact.remember(secret_key)
    records = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(redact.RedactingFilter())
    logger = logging.getLogger("tests.log_secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning('HTTP Request: %s %s "%s"', "POST", "http://h:1/hook?token=t0ken&x=1", "HTTP/1.1 204")
        logger.warning('%s://%s:%s "%s %s %s" %s', "https", "acct.blob.core.windows.net", 443, "GET",
                       "/datasets/a.jsonl?sv=2024&sig=s1gnature", "HTTP/1.1", 200)  # fmt: skip
        logger.warning("scoring with %s", secret_key)
        try:
            raise ConnectionError("reset by https://acct.blob.core.windows.net/d/a?sig=s1gnature")
        except ConnectionError:
            logger.exception("download failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    for leaked in ("t0ken", "s1gnature", secret_key):
        assert leaked not in text, text
    assert 'POST http://h:1/hook?*** "HTTP/1.1 204"' in records[0]
    assert '"GET /datasets/a.jsonl?*** HTTP/1.1" 200' in records[1]
    assert "ConnectionError: reset by https://acct.blob.core.windows.net/d/a?***" in records[3]


def test_the_app_installs_the_filter() -> None:
    import logging

    import function_app  # noqa: F401  (importing it installs the filter)
    from core.redact import URL_LOGGERS, RedactingFilter

    for name in URL_LOGGERS:
        assert any(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters), name
