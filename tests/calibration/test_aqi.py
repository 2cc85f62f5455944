"""Thai and US AQI, bands, NowCast and the rolling 24-hour mean."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibration import aqi
from calibration.errors import InputError, OutOfRangeError

US_TOP = {"pm25": 325.4, "pm10": 604.0, "o3": 0.2, "co": 50.4, "no2": 2049.0, "so2": 304.0}


@pytest.mark.parametrize("pollutant", aqi.POLLUTANTS)
@given(a=st.floats(0.0, 600.0), b=st.floats(0.0, 600.0))
def test_thai_index_monotonic(pollutant: str, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert aqi.thai_aqi(pollutant, lo) <= aqi.thai_aqi(pollutant, hi)


@pytest.mark.parametrize("pollutant", aqi.POLLUTANTS)
@given(frac_a=st.floats(0.0, 1.0), frac_b=st.floats(0.0, 1.0))
def test_us_index_monotonic(pollutant: str, frac_a: float, frac_b: float) -> None:
    lo, hi = sorted((frac_a * US_TOP[pollutant], frac_b * US_TOP[pollutant]))
    assert aqi.us_aqi(pollutant, lo) <= aqi.us_aqi(pollutant, hi)


def test_thai_band_edges_and_content() -> None:
    assert aqi.thai_aqi("pm25", 15.0) == 25 and aqi.thai_aqi("pm25", 15.1) == 26
    assert aqi.thai_aqi("pm25", 15.04) == 25  # rounded to 0.1 first
    assert aqi.thai_aqi("pm25", 15.05) == 26
    band = aqi.thai_aqi_band("pm25", 50.0)
    assert (band.level, band.colour, band.colour_hex) == (4, "orange", "#FFA200")
    assert "children" in band.advice_en and band.advice_th
    assert aqi.thai_band(25).colour == "blue"
    assert aqi.thai_band(26).colour == "green"
    assert aqi.thai_band(100).colour == "yellow"
    assert aqi.thai_band(201).colour == "red"
    assert "Everyone" in aqi.thai_band(500).advice_en
    with pytest.raises(InputError):
        aqi.thai_band(-1)


def test_thai_above_200_is_project_extrapolation() -> None:
    r = aqi.thai_aqi_detail("pm25", 75.1)
    assert r.extrapolated and r.aqi == 201 and r.band.colour == "red"
    r2 = aqi.thai_aqi_detail("pm25", 112.5)
    # Continues the 101–200 line: 99/37.4 index points per µg/m³.
    assert r2.aqi == round(101 + 99 / 37.4 * (112.5 - 37.6))
    assert not aqi.thai_aqi_detail("pm25", 75.0).extrapolated


def test_thai_other_pollutants_and_overall() -> None:
    assert aqi.thai_aqi("pm10", 80.0) == 50
    assert aqi.thai_aqi("o3", 70.0) == 100
    assert aqi.thai_aqi("co", 30.0) == 200
    assert aqi.thai_aqi("no2", 60.0) == 25
    assert aqi.thai_aqi("so2", 300.0) == 100
    overall = aqi.thai_aqi_overall({"pm25": 50.0, "pm10": 80.0})
    assert (overall.pollutant, overall.aqi) == ("pm25", 134)


def test_thai_legacy_pm25_table() -> None:
    assert aqi.thai_aqi("pm25", 50.0, pm25_edition="2018") == 100
    assert aqi.thai_aqi("pm25", 90.0, pm25_edition="2018") == 200


def test_us_truncates_and_rounds_half_up() -> None:
    assert aqi.us_aqi("pm25", 9.09) == 50  # truncated to 9.0, not rounded to 9.1
    assert aqi.us_aqi("pm25", 9.1) == 51
    assert aqi.us_aqi("pm10", 54.9) == 50
    assert aqi.us_aqi("o3", 0.0709) == 100
    # CO 4.5→51 … 9.4→100 is 10 index points per ppm: 6.95 truncates to 6.9 → exactly 75.
    assert aqi.us_aqi("co", 6.95) == 75
    assert aqi.us_aqi("pm25", 35.45) == 100  # truncated to 35.4 (top of 51–100)


def test_us_half_up_not_bankers() -> None:
    # The rounding helper itself on values that end in .5 (an exact case: CO 3.3 ppm → 37.5
    # → 38, in test_aqi_exact.py).
    from decimal import Decimal

    assert aqi._half_up(Decimal("50.5")) == 51
    assert aqi._half_up(Decimal("51.5")) == 52
    assert round(50.5) == 50  # Python's banker's rounding, which the module must not use


def test_us_out_of_range() -> None:
    with pytest.raises(OutOfRangeError, match="beyond the AQI"):
        aqi.us_aqi("pm25", 325.5)
    with pytest.raises(OutOfRangeError, match="o3_1h"):
        aqi.us_aqi("o3", 0.25)
    assert aqi.us_aqi("o3_1h", 0.25) == aqi.us_aqi("o3_1h", 0.2509)
    with pytest.raises(OutOfRangeError):
        aqi.us_aqi("o3_1h", 0.1)
    assert aqi.us_band(102).name_en == "Unhealthy for sensitive groups"


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_invalid_concentrations_rejected(bad: float) -> None:
    with pytest.raises(InputError):
        aqi.thai_aqi("pm25", bad)
    with pytest.raises(InputError):
        aqi.us_aqi("pm25", bad)


def test_unknown_pollutant() -> None:
    with pytest.raises(InputError, match="pm25"):
        aqi.thai_aqi("pm2.5", 10.0)


def test_nowcast() -> None:
    # c_max 40, c_min 20 → w = 0.5; (20 + 0.25·30 + 0.125·40)/(1 + 0.25 + 0.125) = 23.636…
    assert aqi.nowcast([20.0, None, 30.0, 40.0]) == 23.6
    assert aqi.nowcast([None, None, 30.0, 40.0]) is None
    assert aqi.nowcast([10.0]) is None
    assert aqi.nowcast([12.0] * 12) == 12.0
    # Steady air: w = 1 → plain mean over the 12 newest hours (the 13th is ignored).
    assert aqi.nowcast([10.0, 10.0, 10.0] + [10.0] * 9 + [1000.0]) == 10.0
    # Rapid change: w floors at 0.5.
    assert aqi.nowcast([100.0, 10.0]) == pytest.approx(int((100 + 5) / 1.5 * 10) / 10)
    assert aqi.nowcast([0.0, 0.0, 0.0]) == 0.0
    assert aqi.nowcast([math.nan, 5.0, 5.0]) == 5.0
    with pytest.raises(InputError):
        aqi.nowcast([-1.0, 5.0])


def test_rolling_24h() -> None:
    r = aqi.Rolling24h()
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    state = r.add(t0, 10.0)
    assert state.mean == 10.0 and state.n == 1 and not state.complete
    for h in range(1, 24):
        state = r.add(t0 + timedelta(hours=h), 10.0 + h)
    assert state.n == 24 and state.completeness == 1.0 and state.complete
    assert state.mean == pytest.approx(sum(10.0 + h for h in range(24)) / 24)
    state = r.add(t0 + timedelta(hours=24), 100.0)  # the t0 sample leaves the window
    assert state.n == 24
    assert state.mean == pytest.approx((sum(10.0 + h for h in range(1, 24)) + 100.0) / 24)
    # A replayed reading (same timestamp) replaces, it does not count twice.
    again = r.add(t0 + timedelta(hours=24), 100.0)
    assert again == state
    # Too old for the window: ignored.
    assert r.add(t0 - timedelta(hours=5), 1000.0).mean == state.mean
    # A 10-hour gap: completeness drops below 75 % and the mean is not complete.
    gap = r.add(t0 + timedelta(hours=40), 20.0)
    assert gap.n == 9 and not gap.complete
    with pytest.raises(InputError):
        r.add(datetime(2026, 3, 3), 5.0)


@given(st.lists(st.floats(0.0, 500.0), min_size=1, max_size=80))
def test_rolling_matches_direct_mean(values: list[float]) -> None:
    r = aqi.Rolling24h(timedelta(minutes=30))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    state = None
    for i, v in enumerate(values):
        state = r.add(t0 + timedelta(minutes=30 * i), v)
    assert state is not None
    window = values[-48:]
    assert state.mean == pytest.approx(sum(window) / len(window))
    assert state.completeness == pytest.approx(len(window) / 48)
