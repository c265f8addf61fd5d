"""The evaluation gate's activities: score one batch of the held-out sample against one
deployment, and tag the registered model version with the verdict.

A batch re-reads the validation split and re-draws the same seeded sample (cheap next to the
scoring calls), so the orchestrator passes only numbers and names and the history never holds
the dataset's text beyond the shortened snippets the report shows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from activities.blueprint import Payload, activity
from backends.registry import current
from core.evaluation import load_sample, score, shorten
from core.models import BlobRef, ExampleScore, ModelRef
from core.payload import chat_payload


@activity
def evaluate_batch(payload: Payload) -> list[dict[str, Any]]:
    """Ask `deployment` (pinned by header, whatever its traffic) the prompts of batch number
    `batch` of the seeded sample, with the Prompt flow tool's payload; score each answer against
    the reference. A failed call scores 0 and is counted; an unreachable endpoint raises
    (transient: the orchestrator retries the batch)."""
    validation = BlobRef.model_validate(payload["validation"])
    size, batch = int(payload["batch_size"]), int(payload["batch"])
    with tempfile.TemporaryDirectory(prefix="eval-") as tmp:
        path = Path(tmp) / "validation.jsonl"
        current().datasets.download(validation, path)
        sample = load_sample(path, int(payload["sample_size"]), int(payload["seed"]))
    serving = current().serving
    scores = []
    for example in sample[batch * size : (batch + 1) * size]:
        result = serving.score(payload["endpoint"], payload["deployment"], chat_payload(example.messages))
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
            ).model_dump(mode="json")
        )
    return scores


@activity
def tag_model(payload: Payload) -> None:
    """Record the evaluation scores on the registered model version."""
    model = ModelRef.model_validate(payload["model"])
    current().training.set_model_tags(model, {str(k): str(v) for k, v in payload["tags"].items()})
