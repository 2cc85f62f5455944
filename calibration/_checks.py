"""Input checks shared by the pure conversion modules (private)."""

from __future__ import annotations

import math

from calibration.errors import InputError


def finite(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise :class:`InputError` if it is NaN, ±inf or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise InputError(f"{name} must be a finite number, got {out!r}")
    return out


def non_negative(name: str, value: object) -> float:
    """A finite number ≥ 0 (concentrations, distances, echo times)."""
    out = finite(name, value)
    if out < 0.0:
        raise InputError(f"{name} must be >= 0, got {out!r}")
    return out


def relative_humidity(name: str, value: object) -> float:
    """A finite relative humidity in 0–100 %; anything else is a sensor fault, not a clamp."""
    out = finite(name, value)
    if not 0.0 <= out <= 100.0:
        raise InputError(f"{name} must be within 0–100 %RH, got {out!r}")
    return out
