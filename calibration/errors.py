"""The calibration package's exception tree.

Everything the package raises on bad input derives from :class:`CalibrationError`, itself a
``ValueError``, so a caller that only wants "this value could not be calibrated" catches one
class. Messages say what was wrong and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "FitError",
    "InputError",
    "OutOfRangeError",
    "RecordError",
]


class CalibrationError(ValueError):
    """Base class: a value could not be calibrated, indexed, fitted or loaded."""


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
