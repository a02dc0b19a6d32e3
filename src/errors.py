"""User-facing errors: one exception class, raised anywhere, reported once at the script boundary.

A ``UserError`` is bad input or a bad environment the user can fix (a list line, an image, an
annotation file, a checkpoint, a full disk, a flag); its message names the culprit. The scripts run
their work inside ``report_user_errors()``, which prints ``error: <message>`` on stderr and exits with
status 2, as argparse does for a bad flag, with no traceback. Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

__all__ = ["UserError", "UserErrorExit", "message_of", "report_user_errors"]

EXIT_STATUS = 2  # argparse's status for a usage error


class UserError(Exception):
    """Bad input the user can fix; the message (one or two lines) names the file, line or flag."""


class UserErrorExit(SystemExit):
    """SystemExit with status 2 whose str() is the printed message (so callers and tests can read it)."""

    def __init__(self, message: str):
        super().__init__(EXIT_STATUS)
        self.message = message

    def __str__(self) -> str:
        return f"error: {self.message}"


def message_of(error: BaseException) -> str:
    """The error's message, at most two lines.

    A DataLoader worker re-raises an exception with the worker's whole traceback as its message; the
    original message is then its last line, after ``module.ClassName: ``.
    """
    text = str(error).strip()
    if "\nOriginal Traceback" in text:
        last = text.splitlines()[-1]
        marker = type(error).__name__ + ": "
        text = last.split(marker, 1)[1] if marker in last else last
    lines = text.splitlines() or [type(error).__name__]
    return "\n".join(lines[:2])


@contextmanager
def report_user_errors() -> Iterator[None]:
    """Turn a UserError raised inside into ``error: <message>`` on stderr and exit status 2."""
    try:
        yield
    except UserError as e:
        message = message_of(e)
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise UserErrorExit(message) from None
