"""Generic calibration models: pure functions from a raw reading to a corrected value.

Each function checks its inputs and raises :class:`~calibration.errors.InputError` on NaN,
infinities or non-numbers, so a bad reading never turns silently into a plausible number.
The models here know nothing about units; records (``calibration.records``) attach them.
"""

from __future__ import annotations

from collections.abc import Sequence

from calibration._checks import finite
from calibration.errors import CalibrationError, InputError

__all__ = [
    "check_piecewise_points",
    "least_squares_line",
    "linear",
    "linear_rh",
    "piecewise_linear",
    "polynomial",
]


def linear(x: float, slope: float, intercept: float) -> float:
    """``y = slope·x + intercept``."""
    return slope * finite("x", x) + intercept


def linear_rh(x: float, rh: float, slope: float, rh_coef: float, intercept: float) -> float:
    """``y = slope·x + rh_coef·RH + intercept`` (the form of Barkjohn et al. 2021, refitted locally).

    ``rh`` is the sensor's own humidity reading in %RH; it is checked for being finite only,
    the caller (a record) checks the 0–100 span.
    """
    return slope * finite("x", x) + rh_coef * finite("rh", rh) + intercept


def polynomial(x: float, coefficients: Sequence[float]) -> float:
    """``y = c0 + c1·x + c2·x² + …`` with ``coefficients`` in ascending powers (Horner's rule)."""
    if len(coefficients) == 0:
        raise CalibrationError("polynomial needs at least one coefficient")
    xv = finite("x", x)
    acc = 0.0
    for c in reversed(coefficients):
        acc = acc * xv + c
    return acc


def check_piecewise_points(points: Sequence[tuple[float, float]]) -> None:
    """Raise :class:`CalibrationError` unless there are ≥ 2 points with strictly rising ``measured``."""
    if len(points) < 2:
        raise CalibrationError("piecewise_linear needs at least 2 (measured, true) points")
    for i, (m, t) in enumerate(points):
        finite(f"points[{i}].measured", m)
        finite(f"points[{i}].true", t)
        if i and m <= points[i - 1][0]:
            raise CalibrationError(
                f"piecewise_linear points must have strictly increasing measured values; "
                f"points[{i}] = {m!r} follows {points[i - 1][0]!r}"
            )


def piecewise_linear(x: float, points: Sequence[tuple[float, float]]) -> float:
    """Interpolate ``x`` through (measured → true) points sorted by measured value.

    Outside the points the first or last segment is extended (linear extrapolation), which is
    what a two-point calibration does; a record's ``ranges`` say where the fit was supported.
    """
    check_piecewise_points(points)
    xv = finite("x", x)
    # Pick the segment: the first whose right end is >= x, or the last one.
    k = len(points) - 2
    for i in range(len(points) - 1):
        if xv <= points[i + 1][0]:
            k = i
            break
    (x0, y0), (x1, y1) = points[k], points[k + 1]
    return y0 + (y1 - y0) * (xv - x0) / (x1 - x0)


def least_squares_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Ordinary least-squares ``(slope, intercept)`` of ys on xs, in pure Python.

    Centred sums (slope = Sxy/Sxx) avoid the cancellation of the textbook one-pass formula.
    """
    if len(xs) != len(ys):
        raise InputError(f"xs and ys differ in length ({len(xs)} vs {len(ys)})")
    if len(xs) < 2:
        raise InputError("a line needs at least 2 points")
    fx = [finite(f"xs[{i}]", v) for i, v in enumerate(xs)]
    fy = [finite(f"ys[{i}]", v) for i, v in enumerate(ys)]
    mx = sum(fx) / len(fx)
    my = sum(fy) / len(fy)
    sxx = sum((v - mx) ** 2 for v in fx)
    if sxx == 0.0:
        raise InputError("all x values are equal: the slope is undefined")
    sxy = sum((a - mx) * (b - my) for a, b in zip(fx, fy, strict=True))
    slope = sxy / sxx
    return slope, my - slope * mx
