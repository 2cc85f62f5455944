"""Magnetometer parking detector: hysteresis, baseline tracking, vector distance."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibration.errors import CalibrationError
from calibration.parking import ParkingDetector, field_distance_ut

EMPTY = (20.0, -5.0, 40.0)
CAR = (35.0, 5.0, 30.0)  # about 20.6 µT from EMPTY


def test_vector_distance_not_magnitude() -> None:
    # Same magnitude, different direction: the magnitude would miss this car.
    rotated = (40.0, -5.0, 20.0)
    assert math.hypot(*rotated) == pytest.approx(math.hypot(*EMPTY))
    assert field_distance_ut(rotated, EMPTY) > 25.0


def test_hysteresis_needs_n_on_and_m_off() -> None:
    det = ParkingDetector(t_on_ut=12.0, t_off_ut=6.0, n_on=3, m_off=2, baseline=EMPTY)
    assert not det.update(CAR).occupied
    assert not det.update(CAR).occupied
    state = det.update(CAR)
    assert state.occupied and state.changed
    # One quiet sample is not enough to free the bay, and a sample between the thresholds
    # resets the run.
    assert det.update(EMPTY).occupied
    assert det.update((28.0, -5.0, 40.0)).occupied  # 8 µT: between t_off and t_on
    assert det.update(EMPTY).occupied
    state = det.update(EMPTY)
    assert not state.occupied and state.changed


def test_interrupted_run_does_not_trigger() -> None:
    det = ParkingDetector(n_on=3, baseline=EMPTY)
    for sample in (CAR, CAR, EMPTY, CAR, CAR):
        assert not det.update(sample).occupied


def test_baseline_tracks_drift_only_while_free() -> None:
    det = ParkingDetector(alpha=0.5, baseline=EMPTY)
    drifted = (22.0, -5.0, 40.0)  # 2 µT of temperature drift
    state = det.update(drifted)
    assert state.baseline == pytest.approx((21.0, -5.0, 40.0))
    for _ in range(3):
        det.update(CAR)
    frozen = det.baseline
    for _ in range(10):
        assert det.update(CAR).baseline == frozen  # occupied: baseline untouched


def test_slow_drift_never_looks_like_a_car() -> None:
    det = ParkingDetector(alpha=0.05, baseline=EMPTY)
    for k in range(2000):
        sample = (EMPTY[0] + 0.01 * k, EMPTY[1], EMPTY[2])  # 20 µT drift over the run
        assert not det.update(sample).occupied
    assert det.baseline is not None and det.baseline[0] > 38.0


def test_rezero_and_first_sample_baseline() -> None:
    det = ParkingDetector()
    assert det.update(EMPTY).distance_ut == 0.0
    for _ in range(3):
        det.update(CAR)
    assert det.occupied
    det.rezero(CAR)  # another source says the bay is empty: this field is the new zero
    assert not det.occupied and det.update(CAR).distance_ut == 0.0


def test_invalid_configuration_and_samples() -> None:
    with pytest.raises(CalibrationError):
        ParkingDetector(t_on_ut=5.0, t_off_ut=6.0)
    with pytest.raises(CalibrationError):
        ParkingDetector(n_on=0)
    with pytest.raises(CalibrationError):
        ParkingDetector().update((1.0, math.nan, 2.0))


@given(st.lists(st.floats(0.0, 40.0), min_size=1, max_size=100))
def test_state_changes_only_after_full_runs(distances: list[float]) -> None:
    det = ParkingDetector(
        t_on_ut=12.0, t_off_ut=6.0, n_on=3, m_off=3, alpha=0.0, baseline=(0, 0, 0)
    )
    history: list[bool] = []
    for d in distances:
        state = det.update((d, 0.0, 0.0))
        if state.changed and state.occupied:
            assert all(x > 12.0 for x in distances[len(history) - 2 : len(history) + 1])
        if state.changed and not state.occupied:
            assert all(x < 6.0 for x in distances[len(history) - 2 : len(history) + 1])
        history.append(state.occupied)
