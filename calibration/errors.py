"""The calibration package's exception tree.

Everything the package raises on bad input derives from :class:`CalibrationError`, itself a
``ValueError``, so a caller that only wants "this value could not be calibrated" catches one
class. Messages say what was wrong and how to fix it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "EXIT_FAILED",
    "CalibrationError",
    "FitError",
    "InputError",
    "OutOfRangeError",
    "RecordError",
    "report",
    "run_reported",
    "user_error",
]

EXIT_FAILED = 1


class CalibrationError(ValueError):
    """Base class: a value could not be calibrated, indexed, fitted or loaded."""

    hint: str | None = None  # what to do; None: the message says it
    exit_code: int = EXIT_FAILED


class InputError(CalibrationError):
    """An input is missing, not a finite number, or physically impossible (e.g. RH > 100)."""


class OutOfRangeError(CalibrationError):
    """An input is a valid number but outside the range a table or formula covers."""


class RecordError(CalibrationError):
    """A calibration record file is malformed or conflicts with another record.

    The message always names the file and the field (``record[2].valid_to``) at fault;
    ``field`` and ``detail`` hold them apart when known.
    """

    def __init__(self, message: str, *, field: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.field = field
        self.detail = detail


class FitError(CalibrationError):
    """Collocation data cannot be read, aligned or fitted; nothing has been written."""


def user_error(exc: BaseException) -> tuple[str, str | None, int] | None:
    """(message, hint, exit code) when `exc` is an error its user can act on, None for a bug.

    The one rule of every CityEdge entry point (`cityedge`, `python -m edge_gateway`,
    `python -m calibration`), duck-typed so no package imports another's exception classes: an
    exception that carries a `hint` attribute (None or empty when the message says it all) is
    the user's to fix, and its `exit_code` (default 1) is the process's. It lives here, in the
    lowest layer, so the gateway and calibration need nothing above them."""
    if not hasattr(exc, "hint"):
        return None
    hint = getattr(exc, "hint", None)
    code = getattr(exc, "exit_code", EXIT_FAILED)
    return (
        str(exc),
        str(hint) if hint else None,
        code if isinstance(code, int) and code > 0 else EXIT_FAILED,
    )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def report(exc: BaseException, write: Callable[[str], None] = _stderr) -> int | None:
    """Write an error its user can act on ("error: …", "what to do: …") and return its exit
    code; None (nothing written) for a bug, which the caller lets through or logs. The `python -m`
    entry points use this; `cityedge` prints the same two lines in colour."""
    known = user_error(exc)
    if known is None:
        return None
    message, hint, code = known
    write(f"error: {message}")
    if hint:
        write(f"what to do: {hint}")
    return code


def run_reported(handler: Callable[[Any], int | None], args: Any) -> int:
    """Run a command's handler under that rule (a `python -m` entry point's boundary): an error
    with a hint is reported and its exit code returned; a bug goes through, traceback and all."""
    try:
        return int(handler(args) or 0)
    except Exception as exc:
        code = report(exc)
        if code is None:
            raise
        return code
