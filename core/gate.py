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


MAX_FAILED_SHARE = 0.1
"""More failed scoring calls than this share of the sample and a side's score means little."""


def verdict(
    new_side: EvaluationSide, live_side: EvaluationSide | None, policy: EvaluationPolicy
) -> tuple[bool, str]:
    """(passed, reason) for the new deployment against the live one (None: first deployment).

    A new deployment that failed more than MAX_FAILED_SHARE of its calls is rejected whatever
    its score (a floor of 0 must not promote a model that never answered). A live deployment
    that did is not compared against (a broken live model must not block every fix): the floor
    alone decides, and the reason says why.
    """
    if new_side.failures > MAX_FAILED_SHARE * new_side.examples:
        return False, (
            f"the new deployment failed {new_side.failures} of {new_side.examples} evaluation calls"
        )
    note = ""
    if live_side is not None and live_side.failures > MAX_FAILED_SHARE * live_side.examples:
        note = f" (live deployment failed {live_side.failures} of {live_side.examples} calls: not compared)"
        live_side = None
    passed, reason = _compare(new_side.score, live_side.score if live_side else None, policy)
    return passed, reason + note


def _compare(new: float, live: float | None, policy: EvaluationPolicy) -> tuple[bool, str]:
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
