"""Air Quality Index: the Thai AQI (PCD, default) and the US EPA AQI (2024), with NowCast.

Pollutant keys and units (the units each table is published in):

========  ===========================  ==================================
key       Thai AQI (PCD)               US AQI (EPA 2024)
========  ===========================  ==================================
``pm25``  µg/m³, 24-h mean             µg/m³, 24-h mean (or NowCast)
``pm10``  µg/m³, 24-h mean             µg/m³, 24-h mean (or NowCast)
``o3``    ppb, 8-h mean                ppm, 8-h mean
``o3_1h`` —                            ppm, 1-h (only ≥ 0.125 ppm)
``co``    ppm, 8-h mean                ppm, 8-h mean
``no2``   ppb, 1-h                     ppb, 1-h
``so2``   ppb, 1-h                     ppb, 1-h (only ≤ 304 ppb)
``so2_24h`` —                          ppb, 24-h mean (only ≥ 305 ppb)
========  ===========================  ==================================

Rounding (calibration reference §2):

* Thai: the concentration is rounded half up to the table's resolution (PM2.5 and CO to
  0.1, the others to 1) before banding; the index is rounded half up to an integer.
* US: the concentration is **truncated** (PM2.5 to 0.1 µg/m³, PM10 to 1, O₃ to 0.001 ppm,
  CO to 0.1 ppm, NO₂/SO₂ to 1 ppb), the index is rounded half up (never Python's banker's
  ``round``).
* Exactness: a float concentration means the decimal number it prints as (``repr``: 35.9 is
  35.9, not 35.899999…). The interpolation ``(I_hi − I_lo)·(C − C_lo)/(C_hi − C_lo) + I_lo``
  is evaluated in exact rational arithmetic (:class:`fractions.Fraction`) and only then
  rounded, so an exact x.5 rounds up (CO 3.3 ppm is exactly 37.5 → 38), and
  :func:`nowcast` computes its weighted mean exactly before truncating.

SO₂ (US): EPA's table footnote — 1-hour SO₂ concentrations do not define index values of 200
or above; those come from the 24-hour mean. ``us_aqi("so2", c)`` therefore raises
:class:`~calibration.errors.OutOfRangeError` above 304 ppb, naming the rule; pass the 24-hour
mean as ``us_aqi("so2_24h", mean)`` (defined for 305–1004 ppb, AQI 201–500). Report the
higher of the two indices when both are available.

Above Thai AQI 200 (the project's choice; PCD publishes no upper breakpoint): the index
continues the 101–200 segment's straight line — the same concentration per index point — so
it stays continuous and monotonic and shows *how far* past 200 the air is; every index above
200 is the red "affects health" band (and the index there is at least 201, as the table
puts every concentration past the last breakpoint above 200). :func:`thai_aqi_detail` reports ``extrapolated=True``
for such values. Above the US table's top breakpoint the US AQI is undefined ("beyond the
AQI") and :class:`~calibration.errors.OutOfRangeError` is raised.

Negative, NaN or infinite concentrations raise :class:`~calibration.errors.InputError`.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Literal

from calibration._checks import non_negative
from calibration.errors import CalibrationError, InputError, OutOfRangeError

__all__ = [
    "POLLUTANTS",
    "THAI_BANDS",
    "US_BANDS",
    "AqiBand",
    "AqiResult",
    "Rolling24h",
    "RollingMean",
    "nowcast",
    "thai_aqi",
    "thai_aqi_band",
    "thai_aqi_detail",
    "thai_aqi_overall",
    "thai_band",
    "us_aqi",
    "us_band",
]

POLLUTANTS = ("pm25", "pm10", "o3", "co", "no2", "so2")

# (C_lo, C_hi, I_lo, I_hi) rows as strings so Decimal holds them exactly.
_Row = tuple[Decimal, Decimal, int, int]


def _rows(*rows: tuple[str, str, int, int]) -> tuple[_Row, ...]:
    return tuple((Decimal(a), Decimal(b), lo, hi) for a, b, lo, hi in rows)


# Thai AQI, Pollution Control Department; PM2.5 bands in force since 1 June 2023
# (calibration reference §2 table). Each table: rows, resolution the concentration is rounded to.
_THAI: dict[str, tuple[tuple[_Row, ...], Decimal]] = {
    "pm25": (
        _rows(("0", "15.0", 0, 25), ("15.1", "25.0", 26, 50), ("25.1", "37.5", 51, 100),
              ("37.6", "75.0", 101, 200)),
        Decimal("0.1"),
    ),
    "pm10": (
        _rows(("0", "50", 0, 25), ("51", "80", 26, 50), ("81", "120", 51, 100),
              ("121", "180", 101, 200)),
        Decimal(1),
    ),
    "o3": (
        _rows(("0", "35", 0, 25), ("36", "50", 26, 50), ("51", "70", 51, 100),
              ("71", "120", 101, 200)),
        Decimal(1),
    ),
    "co": (
        _rows(("0", "4.4", 0, 25), ("4.5", "6.4", 26, 50), ("6.5", "9.0", 51, 100),
              ("9.1", "30.0", 101, 200)),
        Decimal("0.1"),
    ),
    "no2": (
        _rows(("0", "60", 0, 25), ("61", "106", 26, 50), ("107", "170", 51, 100),
              ("171", "340", 101, 200)),
        Decimal(1),
    ),
    "so2": (
        _rows(("0", "100", 0, 25), ("101", "200", 26, 50), ("201", "300", 51, 100),
              ("301", "400", 101, 200)),
        Decimal(1),
    ),
}  # fmt: skip

# Thai PM2.5 bands before 1 June 2023 (0–25 / 26–37 / 38–50 / 51–90 / ≥ 91): reprocessing only.
_THAI_PM25_2018 = _rows(("0", "25", 0, 25), ("26", "37", 26, 50), ("38", "50", 51, 100),
                        ("51", "90", 101, 200))  # fmt: skip

# US EPA AQI, 2024 revision (Technical Assistance Document, EPA-454/B-24-002); truncation step.
_US: dict[str, tuple[tuple[_Row, ...], Decimal]] = {
    "pm25": (
        _rows(("0.0", "9.0", 0, 50), ("9.1", "35.4", 51, 100), ("35.5", "55.4", 101, 150),
              ("55.5", "125.4", 151, 200), ("125.5", "225.4", 201, 300),
              ("225.5", "325.4", 301, 500)),
        Decimal("0.1"),
    ),
    "pm10": (
        _rows(("0", "54", 0, 50), ("55", "154", 51, 100), ("155", "254", 101, 150),
              ("255", "354", 151, 200), ("355", "424", 201, 300), ("425", "604", 301, 500)),
        Decimal(1),
    ),
    "o3": (
        _rows(("0.000", "0.054", 0, 50), ("0.055", "0.070", 51, 100),
              ("0.071", "0.085", 101, 150), ("0.086", "0.105", 151, 200),
              ("0.106", "0.200", 201, 300)),
        Decimal("0.001"),
    ),
    "o3_1h": (
        _rows(("0.125", "0.164", 101, 150), ("0.165", "0.204", 151, 200),
              ("0.205", "0.404", 201, 300), ("0.405", "0.604", 301, 500)),
        Decimal("0.001"),
    ),
    "co": (
        _rows(("0.0", "4.4", 0, 50), ("4.5", "9.4", 51, 100), ("9.5", "12.4", 101, 150),
              ("12.5", "15.4", 151, 200), ("15.5", "30.4", 201, 300), ("30.5", "50.4", 301, 500)),
        Decimal("0.1"),
    ),
    "no2": (
        _rows(("0", "53", 0, 50), ("54", "100", 51, 100), ("101", "360", 101, 150),
              ("361", "649", 151, 200), ("650", "1249", 201, 300), ("1250", "2049", 301, 500)),
        Decimal(1),
    ),
    "so2": (
        # 1-hour SO2 defines no index >= 200 (EPA-454/B-24-002, table 6 footnote): see so2_24h.
        _rows(("0", "35", 0, 50), ("36", "75", 51, 100), ("76", "185", 101, 150),
              ("186", "304", 151, 200)),
        Decimal(1),
    ),
    "so2_24h": (
        _rows(("305", "604", 201, 300), ("605", "1004", 301, 500)),
        Decimal(1),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class AqiBand:
    """One index band: its level (1 = best), names, colour and the published advice."""

    level: int
    aqi_lo: int
    aqi_hi: int | None
    name_en: str
    name_th: str
    colour: str
    colour_hex: str
    advice_en: str
    advice_th: str


# Thai bands: names and advice after PCD (air4thai.pcd.go.th); colours as Air4Thai shows them.
THAI_BANDS: tuple[AqiBand, ...] = (
    AqiBand(
        1, 0, 25, "Very good", "ดีมาก", "blue", "#3BCCFF",
        "Air quality is very good; suitable for outdoor activities and travel.",
        "คุณภาพอากาศดีมาก เหมาะสำหรับกิจกรรมกลางแจ้งและการท่องเที่ยว",
    ),
    AqiBand(
        2, 26, 50, "Good", "ดี", "green", "#92D050",
        "Air quality is good; outdoor activities and travel as normal.",
        "คุณภาพอากาศดี สามารถทำกิจกรรมกลางแจ้งและการท่องเที่ยวได้ตามปกติ",
    ),
    AqiBand(
        3, 51, 100, "Moderate", "ปานกลาง", "yellow", "#FFFF00",
        "General public: outdoor activities as normal. Sensitive groups (children, elderly, "
        "people with heart or lung disease): if you have symptoms such as coughing, "
        "difficulty breathing or eye irritation, spend less time outdoors.",
        "ประชาชนทั่วไป: สามารถทำกิจกรรมกลางแจ้งได้ตามปกติ "
        "ผู้ที่ต้องดูแลสุขภาพเป็นพิเศษ: หากมีอาการเบื้องต้น เช่น ไอ หายใจลำบาก ระคายเคืองตา "
        "ควรลดระยะเวลาการทำกิจกรรมกลางแจ้ง",
    ),
    AqiBand(
        4, 101, 200, "Starting to affect health", "เริ่มมีผลกระทบต่อสุขภาพ", "orange", "#FFA200",
        "General public: watch for symptoms such as coughing, difficulty breathing or eye "
        "irritation; reduce outdoor activity or wear a protective mask if needed. Sensitive "
        "groups, including children: reduce outdoor activity; see a doctor if symptoms appear.",
        "ประชาชนทั่วไป: ควรเฝ้าระวังสุขภาพ ถ้ามีอาการเบื้องต้น เช่น ไอ หายใจลำบาก ระคายเคืองตา "
        "ควรลดระยะเวลาการทำกิจกรรมกลางแจ้ง หรือใช้อุปกรณ์ป้องกันตนเองหากมีความจำเป็น "
        "ผู้ที่ต้องดูแลสุขภาพเป็นพิเศษ: ควรลดระยะเวลาการทำกิจกรรมกลางแจ้ง "
        "หากมีอาการทางสุขภาพควรปรึกษาแพทย์",
    ),
    AqiBand(
        5, 201, None, "Affects health", "มีผลกระทบต่อสุขภาพ", "red", "#F04646",
        "Everyone should avoid outdoor activities, stay away from areas with high air "
        "pollution, and wear a protective mask if they must go out; see a doctor if symptoms "
        "appear.",
        "ทุกคนควรหลีกเลี่ยงกิจกรรมกลางแจ้ง หลีกเลี่ยงพื้นที่ที่มีมลพิษทางอากาศสูง "
        "หรือใช้อุปกรณ์ป้องกันตนเองหากมีความจำเป็น หากมีอาการทางสุขภาพควรปรึกษาแพทย์",
    ),
)  # fmt: skip

# US AQI categories and colours: EPA Technical Assistance Document (2024), table 4.
US_BANDS: tuple[AqiBand, ...] = (
    AqiBand(1, 0, 50, "Good", "ดี", "green", "#00E400",
            "Air quality is satisfactory; enjoy outdoor activities.",
            "คุณภาพอากาศเป็นที่น่าพอใจ ทำกิจกรรมกลางแจ้งได้"),
    AqiBand(2, 51, 100, "Moderate", "ปานกลาง", "yellow", "#FFFF00",
            "Unusually sensitive people should consider reducing prolonged or heavy exertion.",
            "ผู้ที่ไวต่อมลพิษเป็นพิเศษควรลดการออกแรงหนักหรือนานกลางแจ้ง"),
    AqiBand(3, 101, 150, "Unhealthy for sensitive groups", "มีผลต่อกลุ่มเสี่ยง", "orange",
            "#FF7E00",
            "Sensitive groups, including children, should reduce prolonged or heavy exertion.",
            "กลุ่มเสี่ยง รวมถึงเด็ก ควรลดการออกแรงหนักหรือนานกลางแจ้ง"),
    AqiBand(4, 151, 200, "Unhealthy", "มีผลต่อสุขภาพ", "red", "#FF0000",
            "Everyone should reduce prolonged or heavy exertion; sensitive groups avoid it.",
            "ทุกคนควรลดการออกแรงกลางแจ้ง กลุ่มเสี่ยงควรหลีกเลี่ยง"),
    AqiBand(5, 201, 300, "Very unhealthy", "มีผลต่อสุขภาพมาก", "purple", "#8F3F97",
            "Everyone should avoid prolonged or heavy exertion; sensitive groups stay indoors.",
            "ทุกคนควรหลีกเลี่ยงการออกแรงกลางแจ้ง กลุ่มเสี่ยงควรอยู่ในอาคาร"),
    AqiBand(6, 301, 500, "Hazardous", "อันตราย", "maroon", "#7E0023",
            "Everyone should avoid all physical activity outdoors.",
            "ทุกคนควรงดกิจกรรมกลางแจ้งทั้งหมด"),
)  # fmt: skip


@dataclass(frozen=True)
class AqiResult:
    """An index with how it was obtained."""

    aqi: int
    pollutant: str
    concentration: float
    """The concentration after rounding (Thai) or truncation (US) to the table's resolution."""
    band: AqiBand
    extrapolated: bool = False
    """True above the Thai table's last breakpoint (AQI > 200), see the module docs."""


def _decimal(pollutant: str, concentration: float) -> Decimal:
    value = non_negative(f"{pollutant} concentration", concentration)
    return Decimal(repr(value))  # repr keeps 35.9 as 35.9, not 35.899999…


def _table(
    tables: Mapping[str, tuple[tuple[_Row, ...], Decimal]], pollutant: str, index: str
) -> tuple[tuple[_Row, ...], Decimal]:
    try:
        return tables[pollutant]
    except KeyError:
        raise InputError(
            f"unknown pollutant {pollutant!r} for the {index}; use one of {', '.join(tables)}"
        ) from None


def _interpolate(c: Decimal, row: _Row) -> Fraction:
    c_lo, c_hi, i_lo, i_hi = row
    # I = (I_hi − I_lo)/(X_hi − X_lo)·(X − X_lo) + I_lo (PCD and EPA alike), exactly: a
    # limited-precision division first would turn an exact 37.5 into 37.4999….
    return Fraction(i_hi - i_lo) * Fraction(c - c_lo) / Fraction(c_hi - c_lo) + i_lo


def _half_up(value: Fraction | Decimal) -> int:
    """Round half up (EPA's and PCD's rounding of the index), exactly."""
    return math.floor(Fraction(value) + Fraction(1, 2))


def _band_row(rows: Sequence[_Row], c: Decimal) -> _Row | None:
    for row in rows:
        if c <= row[1]:
            return row
    return None


def thai_aqi_detail(
    pollutant: str, concentration: float, *, pm25_edition: Literal["2023", "2018"] = "2023"
) -> AqiResult:
    """Thai AQI sub-index with its band; see the module docs for units and rounding.

    ``pm25_edition="2018"`` uses the PM2.5 bands in force before 1 June 2023 (reprocessing old
    data only). PM2.5 should be the rolling 24-hour mean (:class:`Rolling24h`).
    """
    rows, step = _table(_THAI, pollutant, "Thai AQI")
    if pollutant == "pm25" and pm25_edition == "2018":
        rows, step = _THAI_PM25_2018, Decimal(1)
    elif pm25_edition not in ("2023", "2018"):
        raise InputError(f"pm25_edition must be '2023' or '2018', got {pm25_edition!r}")
    # Calibration reference §2: round the concentration to the table's resolution first.
    c = _decimal(pollutant, concentration).quantize(step, rounding=ROUND_HALF_UP)
    row = _band_row(rows, c)
    extrapolated = row is None
    if row is None:
        # Project choice above 200: continue the 101–200 line (module docs).
        row = rows[-1]
    index = _half_up(_interpolate(c, row))
    if extrapolated:
        # The table puts every concentration past the last breakpoint above 200 (red).
        index = max(index, row[3] + 1)
    return AqiResult(index, pollutant, float(c), thai_band(index), extrapolated)


def thai_aqi(
    pollutant: str, concentration: float, *, pm25_edition: Literal["2023", "2018"] = "2023"
) -> int:
    """Thai AQI (PCD) sub-index for one pollutant, e.g. ``thai_aqi("pm25", 50.0) == 134``."""
    return thai_aqi_detail(pollutant, concentration, pm25_edition=pm25_edition).aqi


def thai_band(aqi: int) -> AqiBand:
    """The Thai AQI band (level, colour, Thai/English advice) an index falls in."""
    if isinstance(aqi, bool) or not isinstance(aqi, numbers.Integral):
        raise InputError(f"aqi must be an integer index, got {aqi!r}")
    aqi = int(aqi)
    if aqi < 0:
        raise InputError(f"aqi must be >= 0, got {aqi}")
    for band in THAI_BANDS:
        if band.aqi_hi is None or aqi <= band.aqi_hi:
            return band
    raise CalibrationError("unreachable: the last Thai band is open-ended")


def thai_aqi_band(pollutant: str, concentration: float) -> AqiBand:
    """Shortcut: the Thai band of ``thai_aqi(pollutant, concentration)``."""
    return thai_aqi_detail(pollutant, concentration).band


def thai_aqi_overall(concentrations: Mapping[str, float]) -> AqiResult:
    """The Thai AQI of several pollutants: the highest sub-index, with its pollutant."""
    if not concentrations:
        raise InputError("give at least one pollutant concentration")
    results = [thai_aqi_detail(p, c) for p, c in concentrations.items()]
    return max(results, key=lambda r: r.aqi)


def us_band(aqi: int) -> AqiBand:
    """The US AQI category (Good … Hazardous) an index 0–500 falls in."""
    if isinstance(aqi, bool) or not isinstance(aqi, numbers.Integral):
        raise InputError(f"aqi must be an integer index, got {aqi!r}")
    aqi = int(aqi)
    if not 0 <= aqi <= 500:
        raise OutOfRangeError(f"US AQI is defined for 0–500, got {aqi}")
    for band in US_BANDS:
        if band.aqi_hi is not None and aqi <= band.aqi_hi:
            return band
    raise CalibrationError("unreachable: US bands cover 0–500")


def us_aqi(pollutant: str, concentration: float) -> int:
    """US EPA AQI (2024) for one pollutant: truncate the concentration, round the index half up.

    Raises :class:`OutOfRangeError` above the top breakpoint ("beyond the AQI"), for 8-hour
    ozone above 0.200 ppm (use ``"o3_1h"``) and for 1-hour ozone below 0.125 ppm (use ``"o3"``),
    for 1-hour SO₂ above 304 ppb (EPA: an index of 200 or above comes from the 24-hour mean;
    use ``"so2_24h"``) and for a 24-hour SO₂ mean below 305 ppb (use ``"so2"``).
    """
    rows, step = _table(_US, pollutant, "US AQI")
    # Calibration reference §2: truncate, not round, before banding.
    c = _decimal(pollutant, concentration).quantize(step, rounding=ROUND_DOWN)
    if c < rows[0][0]:
        if pollutant == "so2_24h":
            raise OutOfRangeError(
                f"24-hour SO2 below {rows[0][0]} ppb defines no US AQI (the 24-hour table "
                "covers AQI 201–500 only); use the 1-hour 'so2' table"
            )
        raise OutOfRangeError(
            f"1-hour ozone below {rows[0][0]} ppm has no US AQI; use the 8-hour 'o3' table"
        )
    row = _band_row(rows, c)
    if row is None and pollutant == "so2":
        raise OutOfRangeError(
            f"1-hour SO2 {c} ppb is above 304 ppb: EPA's 24-hour rule says 1-hour SO2 does "
            "not define an AQI of 200 or above; compute it from the 24-hour mean with 'so2_24h'"
        )
    if row is None:
        hint = "; use the 1-hour 'o3_1h' table" if pollutant == "o3" else ""
        raise OutOfRangeError(
            f"{pollutant} {c} is above the US AQI table's top breakpoint {rows[-1][1]} "
            f"(beyond the AQI){hint}"
        )
    return _half_up(_interpolate(c, row))


def nowcast(hourly_newest_first: Sequence[float | None], *, decimals: int = 1) -> float | None:
    """EPA NowCast for PM from hourly means, newest first (index 0 = the latest full hour).

    Uses up to 12 hours; ``None`` or NaN marks a missing hour. Returns ``None`` unless at
    least 2 of the 3 most recent hours are present. ``w = max(1 − (c_max − c_min)/c_max, 0.5)``,
    ``NowCast = Σ wⁱ·cᵢ / Σ wⁱ`` over present hours (calibration reference §2), truncated to
    ``decimals`` (0.1 µg/m³ for PM2.5, use 0 for PM10) ready for :func:`us_aqi`.

    The mean is computed exactly (each hour as the decimal it prints as, ``w`` as the exact
    ratio ``c_min/c_max`` or ½, sums of :class:`~fractions.Fraction`) and only then truncated:
    twelve hours of 9.1 µg/m³ give 9.1, never 9.0999… → 9.0.
    """
    if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
        raise InputError(f"decimals must be an integer >= 0, got {decimals!r}")
    hours: list[tuple[int, Fraction]] = []
    for i, value in enumerate(list(hourly_newest_first)[:12]):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        hours.append((i, Fraction(_decimal(f"hour[{i}]", value))))
    if sum(1 for i, _ in hours if i < 3) < 2:
        return None
    c_max = max(c for _, c in hours)
    c_min = min(c for _, c in hours)
    if c_max == 0:
        return 0.0
    # 1 − (c_max − c_min)/c_max is exactly c_min/c_max; EPA floors the weight at 0.5.
    w = max(c_min / c_max, Fraction(1, 2))
    mean = sum(w**i * c for i, c in hours) / sum(w**i for i, _ in hours)
    # Calibration reference §2: truncate (never round) to the reporting resolution.
    scale = 10**decimals
    return float(Fraction(math.floor(mean * scale), scale))


@dataclass(frozen=True)
class RollingMean:
    """State of a rolling mean after a sample: the mean, how many samples, how complete."""

    mean: float | None
    """Mean of the samples in the window; ``None`` if the window is empty."""
    n: int
    completeness: float
    """Samples present ÷ samples expected in a full window, capped at 1.0."""
    complete: bool
    """``completeness`` ≥ the required fraction (default 0.75): the mean may be published."""
    window_start: datetime | None
    window_end: datetime | None


class Rolling24h:
    """Rolling 24-hour mean over a stream, for the Thai PM2.5 index (use on hourly means or raw).

    ``add(timestamp, value)`` returns the current :class:`RollingMean`. The window is
    ``(newest − window, newest]``; a sample older than that is ignored (still reported), a
    sample with a timestamp already held replaces the old value (a replayed reading counts
    once). Completeness is ``n / (window / expected_interval)``; the mean is ``complete`` when
    that is ≥ ``min_completeness`` — by default 75 %, i.e. 18 of 24 hourly means.
    """

    def __init__(
        self,
        expected_interval: timedelta = timedelta(hours=1),
        *,
        window: timedelta = timedelta(hours=24),
        min_completeness: float = 0.75,
    ) -> None:
        if expected_interval <= timedelta(0) or window < expected_interval:
            raise CalibrationError("need 0 < expected_interval <= window")
        if not 0.0 < min_completeness <= 1.0:
            raise CalibrationError("min_completeness must be in (0, 1]")
        self.expected_interval = expected_interval
        self.window = window
        self.min_completeness = min_completeness
        self._times: list[datetime] = []
        self._values: list[float] = []
        self._sum = 0.0

    @property
    def expected(self) -> float:
        """Samples a full window holds."""
        return self.window / self.expected_interval

    def add(self, timestamp: datetime, value: float) -> RollingMean:
        """Add one sample (timezone-aware timestamp, finite non-negative value)."""
        if timestamp.tzinfo is None or timestamp.utcoffset() is None:
            raise InputError(f"timestamp must be timezone-aware, got {timestamp!r}")
        v = non_negative("value", value)
        newest = self._times[-1] if self._times else timestamp
        if timestamp > newest - self.window:
            k = bisect.bisect_left(self._times, timestamp)
            if k < len(self._times) and self._times[k] == timestamp:
                self._sum += v - self._values[k]
                self._values[k] = v
            else:
                self._times.insert(k, timestamp)
                self._values.insert(k, v)
                self._sum += v
            self._expire()
        return self.current()

    def _expire(self) -> None:
        cutoff = self._times[-1] - self.window
        drop = bisect.bisect_right(self._times, cutoff)
        if drop:
            del self._times[:drop]
            del self._values[:drop]
            self._sum = math.fsum(self._values)  # re-sum: no drift over months of streaming

    def current(self) -> RollingMean:
        """The rolling mean now, without adding a sample."""
        n = len(self._values)
        completeness = min(1.0, n / self.expected)
        return RollingMean(
            mean=self._sum / n if n else None,
            n=n,
            completeness=completeness,
            complete=completeness >= self.min_completeness,
            window_start=(self._times[-1] - self.window) if n else None,
            window_end=self._times[-1] if n else None,
        )
