"""What the project's command-line tools share: an argparse type and the process entry point."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(main: Callable[[], int]) -> int:
    """`main()`'s exit code; Ctrl-C is exit 130 with one line instead of a traceback, and a closed
    pipe (output piped into `head`) ends quietly."""
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
        return 0
