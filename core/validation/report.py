"""Assembling a file's :class:`ValidationReport`: errors (the first ``max_errors`` kept, all
counted), token statistics, and the report itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from core.models import TokenStats, ValidationIssue, ValidationReport


class Collector:
    """Keeps the first `max_errors` errors and counts all of them."""

    __slots__ = ("count", "errors", "file", "max_errors")

    def __init__(self, file: str, max_errors: int) -> None:
        self.file = file
        self.max_errors = max_errors
        self.errors: list[ValidationIssue] = []
        self.count = 0

    def add(self, line: int, field: str, message: str) -> None:
        self.count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(ValidationIssue(line=line, field=field, message=message, file=self.file))


def build_report(
    name: str,
    errs: Collector,
    warnings: list[ValidationIssue],
    lines: int,
    examples: int,
    sha256: str,
    *,
    tokens: TokenStats | None = None,
    role_counts: dict[str, int] | None = None,
    **summary: Any,
) -> ValidationReport:
    return ValidationReport(
        file=name,
        ok=errs.count == 0,
        examples=examples,
        lines=lines,
        error_count=errs.count,
        errors=errs.errors,
        warnings=warnings,
        sha256=sha256,
        tokens=tokens or TokenStats(),
        role_counts=role_counts or {},
        **summary,
    )


def _percentile(histogram: Counter[int], pct: int) -> int:
    """Nearest-rank percentile of the values counted in a non-empty ``histogram``: the smallest
    value with at least ``pct`` % of the values at or below it."""
    rank = max(-(-pct * histogram.total() // 100), 1)  # ceil(pct * n / 100), exact in integers
    below = 0
    for value in sorted(histogram):
        below += histogram[value]
        if below >= rank:
            return value
    raise AssertionError("unreachable: the last value has all the values at or below it")


def token_stats(counts: list[int], lines: Sequence[int]) -> TokenStats:
    """Token statistics of the valid examples; ``lines[i]`` is the line of ``counts[i]``.

    Percentiles come from a histogram (counted in C; at most ``max_tokens`` distinct values), not
    a sort: 4 ms instead of 12 ms for 110k examples."""
    if not counts:
        return TokenStats()
    tok_max = max(counts)
    tok_max_line = lines[counts.index(tok_max)]
    histogram = Counter(counts)
    return TokenStats(
        total=sum(counts),
        p50=_percentile(histogram, 50),
        p95=_percentile(histogram, 95),
        max=tok_max,
        max_line=tok_max_line,
    )
