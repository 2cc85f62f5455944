"""Every test vector of section 8 of the calibration reference."""

from __future__ import annotations

import pytest

from calibration import aqi, models, pm, water


def test_us_wide_2021() -> None:
    assert pm.us_wide_2021(20.0, 50.0) == pytest.approx(11.92, abs=5e-3)


@pytest.mark.parametrize(("cf_atm", "expected"), [(40.0, 27.64), (100.0, 80.04)])
def test_fire_smoke_piecewise(cf_atm: float, expected: float) -> None:
    assert pm.fire_smoke_2021(cf_atm, 50.0) == pytest.approx(expected, abs=5e-3)


@pytest.mark.parametrize(
    ("pm25", "expected"), [(10.0, 17), (20.0, 38), (37.5, 100), (50.0, 134), (75.0, 200)]
)
def test_thai_aqi_pm25(pm25: float, expected: int) -> None:
    assert aqi.thai_aqi("pm25", pm25) == expected


@pytest.mark.parametrize(("pm25", "expected"), [(5.0, 28), (35.9, 102)])
def test_us_aqi_pm25(pm25: float, expected: int) -> None:
    assert aqi.us_aqi("pm25", pm25) == expected


def test_speed_of_sound_and_echo() -> None:
    assert water.speed_of_sound_ms(30.0) == pytest.approx(349.48, abs=5e-3)
    assert water.echo_distance_m(5000.0, 30.0) == pytest.approx(0.8737, abs=5e-5)


def test_stage() -> None:
    assert water.stage_level_m(2.500, 0.874) == pytest.approx(1.626, abs=5e-4)


def test_hydrostatic() -> None:
    assert water.hydrostatic_depth_m(111.325, 101.325, 997.05) == pytest.approx(1.0227, abs=5e-5)


def test_least_squares_line() -> None:
    slope, intercept = models.least_squares_line([0.0, 10.0, 13.0], [0.0, 12.1, 14.0])
    assert slope == pytest.approx(1.11043, abs=5e-6)
    assert intercept == pytest.approx(0.18669, abs=5e-6)


def test_kohler_factor() -> None:
    assert pm.kohler_factor(60.0, 0.4, 1.65) == pytest.approx(1.3636, abs=5e-5)
