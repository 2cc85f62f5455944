"""EPA's arithmetic rules checked against exact references written here in Fraction arithmetic.

The references below are independent of ``calibration.aqi``: their own breakpoint tables (typed
from EPA-454/B-24-002 and PCD's table), their own truncation and half-up rounding. A float
argument means the decimal number it prints as (``repr``), as in the module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration import aqi
from calibration.errors import OutOfRangeError

F = Fraction

# (C_lo, C_hi, I_lo, I_hi) per pollutant, and the truncation step: US EPA AQI (2024).
US_REF: dict[str, tuple[Fraction, list[tuple[str, str, int, int]]]] = {
    "pm25": (F(1, 10), [("0.0", "9.0", 0, 50), ("9.1", "35.4", 51, 100),
                        ("35.5", "55.4", 101, 150), ("55.5", "125.4", 151, 200),
                        ("125.5", "225.4", 201, 300), ("225.5", "325.4", 301, 500)]),
    "pm10": (F(1), [("0", "54", 0, 50), ("55", "154", 51, 100), ("155", "254", 101, 150),
                    ("255", "354", 151, 200), ("355", "424", 201, 300),
                    ("425", "604", 301, 500)]),
    "o3": (F(1, 1000), [("0", "0.054", 0, 50), ("0.055", "0.070", 51, 100),
                        ("0.071", "0.085", 101, 150), ("0.086", "0.105", 151, 200),
                        ("0.106", "0.200", 201, 300)]),
    "co": (F(1, 10), [("0", "4.4", 0, 50), ("4.5", "9.4", 51, 100), ("9.5", "12.4", 101, 150),
                      ("12.5", "15.4", 151, 200), ("15.5", "30.4", 201, 300),
                      ("30.5", "50.4", 301, 500)]),
    "no2": (F(1), [("0", "53", 0, 50), ("54", "100", 51, 100), ("101", "360", 101, 150),
                   ("361", "649", 151, 200), ("650", "1249", 201, 300),
                   ("1250", "2049", 301, 500)]),
    # 1-hour SO2 stops at 304 ppb: EPA's footnote, index >= 200 only from the 24-hour mean.
    "so2": (F(1), [("0", "35", 0, 50), ("36", "75", 51, 100), ("76", "185", 101, 150),
                   ("186", "304", 151, 200)]),
    "so2_24h": (F(1), [("305", "604", 201, 300), ("605", "1004", 301, 500)]),
}  # fmt: skip

# Thai AQI (PCD, PM2.5 bands since 1 June 2023): rounding step and rows.
THAI_REF: dict[str, tuple[Fraction, list[tuple[str, str, int, int]]]] = {
    "pm25": (F(1, 10), [("0", "15.0", 0, 25), ("15.1", "25.0", 26, 50),
                        ("25.1", "37.5", 51, 100), ("37.6", "75.0", 101, 200)]),
    "pm10": (F(1), [("0", "50", 0, 25), ("51", "80", 26, 50), ("81", "120", 51, 100),
                    ("121", "180", 101, 200)]),
    "o3": (F(1), [("0", "35", 0, 25), ("36", "50", 26, 50), ("51", "70", 51, 100),
                  ("71", "120", 101, 200)]),
    "co": (F(1, 10), [("0", "4.4", 0, 25), ("4.5", "6.4", 26, 50), ("6.5", "9.0", 51, 100),
                      ("9.1", "30.0", 101, 200)]),
    "no2": (F(1), [("0", "60", 0, 25), ("61", "106", 26, 50), ("107", "170", 51, 100),
                   ("171", "340", 101, 200)]),
    "so2": (F(1), [("0", "100", 0, 25), ("101", "200", 26, 50), ("201", "300", 51, 100),
                   ("301", "400", 101, 200)]),
}  # fmt: skip


def exact(x: float) -> Fraction:
    """The decimal a float prints as, exactly."""
    return Fraction(repr(float(x)))


def half_up(x: Fraction) -> int:
    return math.floor(x + F(1, 2))


def interpolate(c: Fraction, row: tuple[str, str, int, int]) -> Fraction:
    lo, hi, i_lo, i_hi = F(row[0]), F(row[1]), row[2], row[3]
    return F(i_hi - i_lo) * (c - lo) / (hi - lo) + i_lo


def ref_us(pollutant: str, x: float) -> int | None:
    """Exact US index, or None where EPA defines none for this averaging period."""
    step, rows = US_REF[pollutant]
    c = math.floor(exact(x) / step) * step  # truncate
    for row in rows:
        if F(row[0]) <= c <= F(row[1]):
            return half_up(interpolate(c, row))
    return None


def ref_thai(pollutant: str, x: float) -> int:
    step, rows = THAI_REF[pollutant]
    c = half_up(exact(x) / step) * step  # round the concentration half up to the step
    for row in rows:
        if c <= F(row[1]):
            return half_up(interpolate(c, row))
    return max(half_up(interpolate(c, rows[-1])), rows[-1][3] + 1)


def ref_nowcast(hours: Sequence[float | None]) -> Fraction | None:
    present = [(i, exact(v)) for i, v in enumerate(hours[:12]) if v is not None]
    if sum(1 for i, _ in present if i < 3) < 2:
        return None
    c_max = max(c for _, c in present)
    c_min = min(c for _, c in present)
    if c_max == 0:
        return F(0)
    w = max(1 - (c_max - c_min) / c_max, F(1, 2))
    value = sum(w**i * c for i, c in present) / sum(w**i for i, _ in present)
    return F(math.floor(value * 10), 10)  # truncate to 0.1 µg/m³


def grid(top: Fraction, step: Fraction) -> list[float]:
    """Every step from 0 to top, and the midpoint after each (truncation/rounding edges)."""
    n = int(top / step)
    out: list[float] = []
    for k in range(n + 1):
        out.append(float(k * step))
        out.append(float(k * step + step / 2))
    return out


# --- 1. NowCast: exact weighted mean, then EPA's truncation -------------------------------


def test_nowcast_twelve_hours_of_9_1_is_9_1_and_moderate() -> None:
    assert aqi.nowcast([9.1] * 12) == 9.1
    assert aqi.us_aqi("pm25", aqi.nowcast([9.1] * 12) or 0.0) == 51


@pytest.mark.parametrize("length", [2, 3, 5, 12])
def test_nowcast_constant_series_dense(length: int) -> None:
    wrong = []
    for k in range(5001):  # 0.0 … 500.0 µg/m³ in 0.1 steps
        value = k / 10
        got = aqi.nowcast([value] * length)
        if got != float(value):
            wrong.append((value, got))
    assert not wrong, f"{len(wrong)} constant series lose 0.1: {wrong[:5]}"


def test_nowcast_two_value_series_grid() -> None:
    values = [k / 10 for k in range(0, 401, 11)] + [k / 2 for k in range(0, 201, 13)]
    wrong = []
    for a in values:
        for b in values:
            series: list[float | None] = [a, b] * 6
            expected = ref_nowcast(series)
            got = aqi.nowcast(series)
            if got != (None if expected is None else float(expected)):
                wrong.append((a, b, got, expected))
    assert not wrong, f"{len(wrong)} alternating series differ: {wrong[:5]}"


hour = st.one_of(
    st.none(),
    st.integers(0, 5000).map(lambda n: n / 10),
    st.integers(0, 500_000).map(lambda n: n / 1000),
    st.floats(0.0, 1000.0),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(hour, min_size=0, max_size=14))
def test_nowcast_random_series_match_exact_reference(hours: list[float | None]) -> None:
    expected = ref_nowcast(hours)
    assert aqi.nowcast(hours) == (None if expected is None else float(expected))


# --- 2. 1-hour SO2 above 304 ppb: no index; the 24-hour mean defines AQI >= 200 ------------


def test_so2_one_hour_above_304_is_refused_naming_the_24_hour_rule() -> None:
    assert aqi.us_aqi("so2", 304.0) == 200
    assert aqi.us_aqi("so2", 304.9) == 200  # truncated to 304
    for c in (305.0, 400.0, 604.0, 1004.0, 2000.0):
        with pytest.raises(OutOfRangeError, match="24-hour") as err:
            aqi.us_aqi("so2", c)
        assert "so2_24h" in str(err.value)


def test_so2_24_hour_table() -> None:
    assert aqi.us_aqi("so2_24h", 305.0) == 201
    assert aqi.us_aqi("so2_24h", 1004.0) == 500
    with pytest.raises(OutOfRangeError, match="'so2'"):
        aqi.us_aqi("so2_24h", 304.0)  # below 305 the 1-hour value defines the index
    with pytest.raises(OutOfRangeError, match="beyond the AQI"):
        aqi.us_aqi("so2_24h", 1005.0)


@pytest.mark.parametrize("pollutant", ["so2", "so2_24h"])
def test_so2_dense_grid(pollutant: str) -> None:
    for x in grid(F(1100), F(1)):
        expected = ref_us(pollutant, x)
        if expected is None:
            with pytest.raises(OutOfRangeError):
                aqi.us_aqi(pollutant, x)
        else:
            assert aqi.us_aqi(pollutant, x) == expected, x


# --- 3. Exact interpolation, index rounded half up ------------------------------------------


def test_co_3_3_ppm_is_exactly_37_5_and_rounds_up() -> None:
    assert interpolate(F("3.3"), US_REF["co"][1][0]) == F(75, 2)
    assert aqi.us_aqi("co", 3.3) == 38


@pytest.mark.parametrize("pollutant", ["pm25", "pm10", "o3", "co", "no2"])
def test_us_dense_grid_matches_exact_reference(pollutant: str) -> None:
    step, rows = US_REF[pollutant]
    wrong = []
    for x in grid(F(rows[-1][1]) + 2 * step, step):
        expected = ref_us(pollutant, x)
        try:
            got: int | None = aqi.us_aqi(pollutant, x)
        except OutOfRangeError:
            got = None
        if got != expected:
            wrong.append((x, got, expected))
    assert not wrong, f"{len(wrong)} concentrations differ: {wrong[:5]}"


@pytest.mark.parametrize("pollutant", sorted(THAI_REF))
def test_thai_dense_grid_matches_exact_reference(pollutant: str) -> None:
    step, rows = THAI_REF[pollutant]
    wrong = [
        (x, aqi.thai_aqi(pollutant, x), ref_thai(pollutant, x))
        for x in grid(F(rows[-1][1]) * 2, step)
        if aqi.thai_aqi(pollutant, x) != ref_thai(pollutant, x)
    ]
    assert not wrong, f"{len(wrong)} concentrations differ: {wrong[:5]}"


@settings(max_examples=300, deadline=None)
@given(
    pollutant=st.sampled_from(sorted(US_REF)),
    x=st.one_of(st.floats(0.0, 2100.0), st.integers(0, 2_100_000).map(lambda n: n / 1000)),
)
def test_us_random_concentrations_match_exact_reference(pollutant: str, x: float) -> None:
    expected = ref_us(pollutant, x)
    if expected is None:
        with pytest.raises(OutOfRangeError):
            aqi.us_aqi(pollutant, x)
    else:
        assert aqi.us_aqi(pollutant, x) == expected


@settings(max_examples=300, deadline=None)
@given(pollutant=st.sampled_from(sorted(THAI_REF)), x=st.floats(0.0, 1000.0))
def test_thai_random_concentrations_match_exact_reference(pollutant: str, x: float) -> None:
    assert aqi.thai_aqi(pollutant, x) == ref_thai(pollutant, x)
