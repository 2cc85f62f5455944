"""Parking-bay occupancy from a 3-axis magnetometer (QMC5883L, HMC5883L), calibration ref §4.

A parked car distorts the Earth's field; the detector uses the 3-axis *vector distance* from
a baseline (some positions leave the field magnitude unchanged), a baseline that follows slow
temperature drift only while the bay is free, and a hysteresis state machine:

* free → occupied after ``n_on`` consecutive samples with distance > ``t_on_ut``;
* occupied → free after ``m_off`` consecutive samples with distance < ``t_off_ut``
  (``t_off_ut`` < ``t_on_ut``).

Baseline update (exponential forgetting, ``b ← b + alpha·(s − b)``) happens only while the
bay is free *and* the sample is below ``t_off_ut``, so a car that is arriving (distance rising
but not yet confirmed) does not drag the baseline towards itself. :meth:`rezero` sets the
baseline from a sample another source confirmed as an empty bay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calibration._checks import finite
from calibration.errors import CalibrationError

__all__ = ["ParkingDetector", "ParkingState", "field_distance_ut"]

Vector = tuple[float, float, float]


def field_distance_ut(sample: Vector, baseline: Vector) -> float:
    """Euclidean distance between two field vectors (µT): ``‖s − b‖``."""
    return math.dist(sample, baseline)


@dataclass(frozen=True)
class ParkingState:
    """Detector output after one sample."""

    occupied: bool
    distance_ut: float
    baseline: Vector
    changed: bool
    """True if this sample flipped the state."""


class ParkingDetector:
    """Hysteresis occupancy detector for one bay; pure, time-free, one small state object.

    ``ParkingDetector(t_on_ut=12.0, t_off_ut=6.0, n_on=3, m_off=3, alpha=0.01)``; call
    :meth:`update` with each ``(mag_x, mag_y, mag_z)`` sample in µT. Without a ``baseline``
    the first sample becomes the baseline (install while the bay is empty).
    """

    def __init__(
        self,
        t_on_ut: float = 12.0,
        t_off_ut: float = 6.0,
        n_on: int = 3,
        m_off: int = 3,
        alpha: float = 0.01,
        baseline: Vector | None = None,
    ) -> None:
        if not 0.0 < t_off_ut < t_on_ut:
            raise CalibrationError(f"need 0 < t_off_ut < t_on_ut, got {t_off_ut}, {t_on_ut}")
        if n_on < 1 or m_off < 1:
            raise CalibrationError("n_on and m_off must be >= 1")
        if not 0.0 <= alpha <= 1.0:
            raise CalibrationError(f"alpha must be within [0, 1], got {alpha}")
        self.t_on_ut = t_on_ut
        self.t_off_ut = t_off_ut
        self.n_on = n_on
        self.m_off = m_off
        self.alpha = alpha
        self.baseline: Vector | None = _vector(baseline) if baseline is not None else None
        self.occupied = False
        self._run = 0

    def rezero(self, sample: Vector) -> None:
        """Take ``sample`` as the empty-bay baseline and mark the bay free."""
        self.baseline = _vector(sample)
        self.occupied = False
        self._run = 0

    def update(self, sample: Vector) -> ParkingState:
        """Feed one magnetometer sample (µT); returns the state after it."""
        s = _vector(sample)
        if self.baseline is None:
            self.baseline = s
        d = field_distance_ut(s, self.baseline)
        changed = False
        if self.occupied:
            self._run = self._run + 1 if d < self.t_off_ut else 0
            if self._run >= self.m_off:
                self.occupied, self._run, changed = False, 0, True
        else:
            self._run = self._run + 1 if d > self.t_on_ut else 0
            if self._run >= self.n_on:
                self.occupied, self._run, changed = True, 0, True
            elif d < self.t_off_ut:
                # Exponential forgetting only while free and quiet (module docs).
                b, a = self.baseline, self.alpha
                self.baseline = (
                    b[0] + a * (s[0] - b[0]),
                    b[1] + a * (s[1] - b[1]),
                    b[2] + a * (s[2] - b[2]),
                )
        return ParkingState(self.occupied, d, self.baseline, changed)


def _vector(v: Vector) -> Vector:
    if len(v) != 3:
        raise CalibrationError(f"a field sample has 3 axes, got {len(v)}")
    return (finite("mag_x", v[0]), finite("mag_y", v[1]), finite("mag_z", v[2]))
