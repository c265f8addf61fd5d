"""The evaluation gate's rule, kept apart from the orchestrator so it is tested on its own.

Promote the new deployment only if ``new >= floor`` and, when a live deployment answered the same
prompts, ``new >= live - tolerance``. Pure arithmetic on the two mean scores: deterministic, so the
orchestrator may call it.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.evaluation import mean
from core.models import EvaluationPolicy, EvaluationSide, ExampleScore


def side(deployment: str, scores: Sequence[ExampleScore]) -> EvaluationSide:
    """One deployment's result: the mean example score (failed calls count as 0)."""
    return EvaluationSide(
        deployment=deployment,
        score=mean([s.score for s in scores]),
        examples=len(scores),
        failures=sum(1 for s in scores if not s.ok),
    )


def verdict(new: float, live: float | None, policy: EvaluationPolicy) -> tuple[bool, str]:
    """(passed, reason) for a new mean score against the live one (None: first deployment)."""
    if new < policy.floor:
        return False, f"new score {new:.4f} is below the floor {policy.floor:.4f}"
    if live is None:
        return True, f"new score {new:.4f} >= floor {policy.floor:.4f} (no live deployment to compare)"
    bar = round(live - policy.tolerance, 4)
    if new < bar:
        return False, (
            f"new score {new:.4f} is below the live score {live:.4f} minus tolerance "
            f"{policy.tolerance:.4f} (= {bar:.4f})"
        )
    return True, f"new score {new:.4f} >= live {live:.4f} - tolerance {policy.tolerance:.4f}"
