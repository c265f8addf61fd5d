"""The evaluation gate's activities: score one batch of the held-out sample against one
deployment, and tag the registered model version with the verdict.

A batch re-reads the validation split and re-draws the same seeded sample (cheap next to the
scoring calls), so the orchestrator passes only numbers and names and the history never holds
the dataset's text beyond the shortened snippets the report shows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from activities.wrapper import activity
from backends.registry import current
from core.contracts import EvaluateBatch, TagModel
from core.evaluation import load_sample, score, shorten
from core.models import ExampleScore, ScoreResult
from core.payload import chat_payload
from core.scoring import Scorer
from core.settings import EVAL_BUSY_BACKOFF_S, get_settings

BUSY = frozenset({408, 429, 503})  # the endpoint is saturated (Azure: "too many pending requests")


def _ask(scorer: Scorer, deployment: str, payload: dict[str, Any], attempts: int) -> ScoreResult:
    """One scoring call, retried (up to `attempts` in all) while the endpoint says it is busy; an
    unreachable endpoint or a timeout is a failed call (scored 0), not an error of the batch."""

    def once() -> ScoreResult:
        try:
            return scorer(deployment, payload)
        except ConnectionError as exc:
            return ScoreResult(ok=False, error=str(exc)[:300])

    result = once()
    for wait in EVAL_BUSY_BACKOFF_S[: attempts - 1]:
        if result.ok or result.status_code not in BUSY:
            break
        time.sleep(wait)
        result = once()
    return result


@activity
def evaluate_batch(inp: EvaluateBatch) -> list[ExampleScore]:
    """Ask `deployment` (pinned by header, whatever its traffic) the prompts of batch number
    `batch` of the seeded sample, with the Prompt flow tool's payload; score each answer against
    the reference. A busy answer (408/429/503) is retried with backoff; a call that still fails,
    times out or cannot connect scores 0 and is counted as failed (the gate rejects a new
    deployment with too many of those)."""
    size, batch = inp.batch_size, inp.batch
    with tempfile.TemporaryDirectory(prefix="eval-") as tmp:
        path = Path(tmp) / "validation.jsonl"
        current().datasets.download(inp.validation, path)
        sample = load_sample(path, inp.sample_size, inp.seed)
    settings = get_settings()
    # The endpoint's key and scoring URI are read once for the whole batch. The batch's worst case
    # (every call timing out on every attempt) fits the host's functionTimeout: Settings checks it.
    scorer = current().serving.scorer(inp.endpoint, timeout_s=settings.EVAL_SCORE_TIMEOUT_S)
    scores = []
    for example in sample[batch * size : (batch + 1) * size]:
        messages = chat_payload(example.messages)
        result = _ask(scorer, inp.deployment, messages, settings.EVAL_SCORE_ATTEMPTS)
        answer = result.output or ""
        combined, rouge_l, token_f1 = score(answer, example.reference) if result.ok else (0.0, 0.0, 0.0)
        last_user = next((m["content"] for m in reversed(example.messages) if m["role"] == "user"), "")
        scores.append(
            ExampleScore(
                index=example.index,
                score=combined,
                rouge_l=rouge_l,
                token_f1=token_f1,
                ok=result.ok,
                error=result.error,
                prompt=shorten(last_user),
                reference=shorten(example.reference),
                answer=shorten(answer),
            )
        )
    return scores


@activity
def tag_model(inp: TagModel) -> None:
    """Record the evaluation scores on the registered model version."""
    current().training.set_model_tags(inp.model, dict(inp.tags))
