"""Check a chat JSONL dataset before uploading it: ``python -m core.validation FILE``.

Usage::

    python -m core.validation FILE [--validation FILE] [--json] [--tokenizer PATH]
                                   [--max-tokens 4096] [--max-errors 50]

Runs the same validator as the pipeline's ``validate_dataset`` activity
(:mod:`core.validation`) with the same rules, so exit code 0 means the pipeline will accept the
data. Without ``--validation`` the file must hold at least 2 examples (the pipeline splits it
80/20); with ``--validation`` each file needs 1, and validation examples that repeat a training
example are reported as overlap warnings.

Output: a readable report (errors and warnings with ``file:line``, field and message, then a
summary: examples, tokens total/p50/p95/max, longest line, roles, turns, duplicates, overlap),
or with ``--json`` one JSON object ``{"ok", "exit_code", "reports": [...], "overlap"}`` whose
reports are :class:`core.models.ValidationReport` as JSON.

``--tokenizer PATH`` (a ``tokenizer.json`` or a directory holding one, e.g. a downloaded
``microsoft/Phi-3-mini-4k-instruct`` snapshot) counts tokens exactly in the Phi-3 chat format;
this needs the ``tokenizers`` package and is much slower than the default upper-bound estimate.

Exit codes:

* 0: no errors (warnings allowed);
* 1: at least one error in any file;
* 2: an input cannot be read (missing path, a directory, no permission, I/O error), or the
  tokenizer cannot be loaded, or bad arguments. The reason and what to do go to stderr (and, with
  ``--json``, an ``{"error": ...}`` object to stdout); never a traceback.

What each kind of bad input gives (the corpus in ``tests/data/bad`` plus generated cases):

=========================================  =========  ====  ==========================
input                                      E/W        exit  reported at
=========================================  =========  ====  ==========================
truncated last line                        error      1     its line, "invalid JSON"
invalid UTF-8                              error      1     its line, byte offset
UTF-8 BOM                                  warning    0     line 1
CRLF line endings                          warning    0     first CRLF line + count
blank lines                                warning    0     first blank line + count
non-object line (array, string, null)      error      1     its line
missing ``messages`` / role / content      error      1     line + field
extra fields (top level or per message)    (allowed)  0     --
wrong role name                            error      1     ``messages[i].role``
empty / whitespace-only content            error      1     ``messages[i].content``
same role twice in a row                   error      1     ``messages[i].role``
no assistant turn / not ending with one    error      1     ``messages``
over ``--max-tokens``                      error      1     ``messages``
duplicate conversation                     warning    0     ``messages``, first line
validation example also in training file   warning    0     ``messages``, training line
10 MB single line (limit 8 MiB)            error      1     its line, its size
0-byte file / only blank lines             error      1     line 0, "file is empty"
only one example (without --validation)    error      1     line 0
gzip (or zip, UTF-16) named .jsonl         error      1     line 0, what to upload
directory, missing path, no permission     --         2     no report; stderr: path + fix
=========================================  =========  ====  ==========================
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core import cli
from core.models import ValidationIssue, ValidationReport
from core.validation import validate_file, validate_pair

__all__ = ["EXIT_ERRORS", "EXIT_OK", "EXIT_UNREADABLE", "main"]

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_UNREADABLE = 2


_PIPED_WIDTH = 160  # columns of the readable report when stdout is not a terminal
_MIN_MESSAGE_WIDTH = 40  # narrower terminals get a list instead of an issue table


class _Unreadable(Exception):
    """An input that cannot be read; the message says which and what to do."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        reports, overlap = _run(args)
    except _Unreadable as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "exit_code": EXIT_UNREADABLE, "error": str(exc)}, indent=2))
        return EXIT_UNREADABLE
    code = EXIT_OK if all(r.ok for r in reports) else EXIT_ERRORS
    if args.json:
        document = {
            "ok": code == EXIT_OK,
            "exit_code": code,
            "reports": [r.model_dump(mode="json") for r in reports],
            "overlap": overlap,
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        _render(reports, overlap, code, args.max_errors)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.validation",
        description="Check chat JSONL (ultrachat_200k shape) before uploading it for fine-tuning.",
        epilog="Exit codes: 0 no errors, 1 errors found, 2 an input cannot be read.",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the training (or whole) dataset")
    parser.add_argument(
        "--validation",
        type=Path,
        metavar="FILE",
        help="a separate validation file; also reports validation examples found in FILE",
    )
    parser.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    parser.add_argument("--sha256", action="store_true", help="also print each file's SHA-256")
    parser.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="tokenizer.json (or a directory with one) for exact token counts; slower",
    )
    parser.add_argument(
        "--max-tokens",
        type=cli.positive_int,
        default=4096,
        metavar="N",
        help="per-conversation limit (default 4096)",
    )
    parser.add_argument(
        "--max-errors",
        type=cli.positive_int,
        default=50,
        metavar="N",
        help="errors/warnings listed per kind (default 50)",
    )
    return parser


def _run(args: argparse.Namespace) -> tuple[list[ValidationReport], int | None]:
    inputs = [args.file] if args.validation is None else [args.file, args.validation]
    for path in inputs:  # fail fast, before a slow tokenizer load or a long first file
        _check_readable(path)
    limits: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "max_errors": args.max_errors,
        "checksum": args.sha256,
    }
    try:
        if args.validation is None:
            report = validate_file(args.file, display_name=str(args.file), tokenizer=args.tokenizer, **limits)
            return [report], None
        train, validation, overlap = validate_pair(
            args.file,
            args.validation,
            train_name=str(args.file),
            validation_name=str(args.validation),
            tokenizer=args.tokenizer,
            **limits,
        )
        return [train, validation], overlap
    except OSError as exc:
        raise _Unreadable(_describe(exc, inputs, args.tokenizer)) from None
    except ValueError as exc:  # only the tokenizer: bad data never raises
        raise _Unreadable(f"--tokenizer {args.tokenizer}: {exc}") from None
    except ImportError:
        raise _Unreadable(
            "--tokenizer needs the 'tokenizers' package: pip install tokenizers "
            "(or leave out --tokenizer to use the token estimate)"
        ) from None


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise _Unreadable(_describe(exc, [path], None)) from None


def _describe(exc: OSError, inputs: Sequence[Path], tokenizer: str | None) -> str:
    """Which path, what is wrong, what to do."""
    name = os.fsdecode(exc.filename) if exc.filename is not None else str(inputs[0])
    is_tokenizer = (
        tokenizer is not None
        and name.startswith(os.fspath(tokenizer))
        and not any(name == str(p) for p in inputs)
    )
    if is_tokenizer:
        what, do = (
            "tokenizer",
            "pass --tokenizer a tokenizer.json file or a directory containing one "
            "(e.g. a downloaded microsoft/Phi-3-mini-4k-instruct snapshot), or leave it out",
        )
    else:
        what, do = "dataset", "pass the path of a .jsonl file"
    if isinstance(exc, FileNotFoundError):
        if is_tokenizer and tokenizer is not None and Path(tokenizer).is_dir():
            return f"tokenizer directory {tokenizer} has no tokenizer.json; {do}."
        return f"{what} {name}: no such file. Check the path (relative to {Path.cwd()}); {do}."
    if isinstance(exc, IsADirectoryError) or exc.errno == errno.EISDIR:
        inside = sorted(p.name for p in Path(name).glob("*.jsonl"))[:5] if not is_tokenizer else []
        found = f" (it contains: {', '.join(inside)})" if inside else ""
        return f"{what} {name}: is a directory, not a file{found}; {do}."
    if isinstance(exc, PermissionError):
        return (
            f"{what} {name}: permission denied. Make it readable (e.g. chmod u+r {name}) "
            "or run as a user who can read it."
        )
    reason = exc.strerror or str(exc)
    return f"{what} {name}: cannot be read ({reason}). Check the file and the disk, then retry."


# --- readable report -----------------------------------------------------------------------------


def _render(reports: list[ValidationReport], overlap: int | None, code: int, cap: int) -> None:
    try:
        from rich.console import Console
    except ImportError:  # rich is a CLI nicety, not a runtime dependency: fall back to plain text
        _render_plain(reports, code, cap)
        return
    from rich.table import Table
    from rich.text import Text

    console = Console(markup=False, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPED_WIDTH  # logs and pipes: keep file:line and messages on one line
    for report in reports:
        status = (
            Text(f"OK: {report.examples} examples", style="bold green")
            if report.ok
            else Text(f"FAILED: {report.error_count} error(s)", style="bold red")
        )
        console.print(Text.assemble(Text(report.file, style="bold"), "  ", status))
        for title, issues, total, style in _issue_sections(report):
            wheres = [_where(issue) for issue in issues]
            widest = max(map(len, wheres), default=0) + max((len(i.field) for i in issues), default=0)
            if console.width >= widest + _MIN_MESSAGE_WIDTH:
                table = Table(title=title, title_justify="left", title_style=style)
                table.add_column("Where", no_wrap=True)
                table.add_column("Field", no_wrap=True)
                table.add_column("Message", overflow="fold")
                for where, issue in zip(wheres, issues, strict=True):
                    table.add_row(where, issue.field or "-", issue.message)
                console.print(table)
            else:  # too narrow for a table that keeps file:line whole: one issue per line
                console.print(Text(title, style=style))
                for where, issue in zip(wheres, issues, strict=True):
                    console.print(f"  {where}  {issue.field or '-'}  {issue.message}", soft_wrap=True)
            if total > len(issues):
                console.print(
                    f"  ... {total - len(issues)} more error(s) not listed (raise --max-errors, now {cap})"
                )
        summary = Table(title="Summary", title_justify="left", show_header=False)
        summary.add_column("", style="bold", no_wrap=True)
        summary.add_column("", overflow="fold")
        for key, value in _summary_rows(report):
            summary.add_row(key, value)
        console.print(summary)
        console.print()
    if overlap is not None:
        console.print(f"Train/validation overlap: {overlap} validation example(s) also in the training file")
    verdict = "no errors" if code == EXIT_OK else "errors found, fix them before uploading"
    console.print(Text(f"Result: {verdict} (exit {code})", style="green" if code == EXIT_OK else "red"))


def _render_plain(reports: list[ValidationReport], code: int, cap: int) -> None:
    for report in reports:
        print(f"{report.file}: {'OK' if report.ok else 'FAILED'}")
        for title, issues, total, _ in _issue_sections(report):
            print(f"{title}:")
            for issue in issues:
                print(f"  {_where(issue)}  {issue.field or '-'}  {issue.message}")
            if total > len(issues):
                print(f"  ... {total - len(issues)} more not listed (raise --max-errors, now {cap})")
        for key, value in _summary_rows(report):
            print(f"  {key}: {value}")
    print(f"Result: {'no errors' if code == EXIT_OK else 'errors found'} (exit {code})")


def _issue_sections(report: ValidationReport) -> list[tuple[str, list[ValidationIssue], int, str]]:
    sections = []
    if report.errors or report.error_count:
        sections.append((f"Errors ({report.error_count})", report.errors, report.error_count, "bold red"))
    if report.warnings:
        count = len(report.warnings)
        sections.append((f"Warnings ({count})", report.warnings, count, "bold yellow"))
    return sections


def _where(issue: ValidationIssue) -> str:
    return f"{issue.file}:{issue.line}" if issue.line else f"{issue.file} (whole file)"


def _summary_rows(report: ValidationReport) -> list[tuple[str, str]]:
    rows = [("Examples", f"{report.examples:,} valid in {report.lines:,} line(s)")]
    t = report.tokens
    if report.examples:
        rows.append(
            (
                "Tokens",
                f"total {t.total:,}, p50 {t.p50:,}, p95 {t.p95:,}, max {t.max:,} (line {t.max_line})",
            )
        )
    counted = "estimate (an upper bound)" if report.token_method == "estimate" else report.token_method
    rows.append(("Token counts", counted))
    if report.longest_line:
        rows.append(("Longest line", f"{report.longest_line_bytes:,} bytes (line {report.longest_line})"))
    if report.role_counts:
        rows.append(("Roles", ", ".join(f"{r} {n:,}" for r, n in report.role_counts.items())))
    if report.turns:
        rows.append(("Turns per example", _turns(report.turns)))
    rows.append(("Duplicates", f"{report.duplicates:,}"))
    if report.overlap:
        rows.append(("Also in training file", f"{report.overlap:,}"))
    if report.sha256:
        rows.append(("SHA-256", report.sha256))
    return rows


def _turns(histogram: dict[int, int]) -> str:
    """min/p50/max of user turns per example, and the histogram (first 8 sizes)."""
    sizes = sorted(histogram)
    total = sum(histogram.values())
    half = (total + 1) // 2
    seen = 0
    p50 = sizes[-1]
    for size in sizes:
        seen += histogram[size]
        if seen >= half:
            p50 = size
            break
    shown = ", ".join(f"{s}: {histogram[s]:,}" for s in sizes[:8])
    more = ", ..." if len(sizes) > 8 else ""
    return f"min {sizes[0]}, p50 {p50}, max {sizes[-1]}; examples by turns {shown}{more}"


if __name__ == "__main__":
    sys.exit(cli.run(main))
