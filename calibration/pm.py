"""Corrections for optical PM2.5 sensors (Plantower PMS5003/PMS7003 and similar).

Feed each formula the channel it was fitted on: the US-wide 2021 correction takes the
``cf_1`` channel (``pm25_cf1``), the Fire-and-Smoke piecewise correction takes ``cf_atm``
(``pm25_atm``). ``rh_pct`` is always the PM sensor's own, uncorrected humidity reading.

These were fitted in the USA on PMS5003s in PurpleAir housings; in Thailand they are priors
until a local collocation against a PCD station replaces them with a fitted record.

A corrected concentration is floored at 0 µg/m³: at low concentration and high humidity the
linear formulas go negative, which is physically impossible (documented, not silent).
"""

from __future__ import annotations

from calibration._checks import finite, non_negative, relative_humidity
from calibration.errors import InputError

__all__ = [
    "DEFAULT_DENSITY_GCM3",
    "DEFAULT_RH_MAX_PCT",
    "fire_smoke_2021",
    "kohler_correct",
    "kohler_factor",
    "us_wide_2021",
]

DEFAULT_DENSITY_GCM3 = 1.65
"""Dry particle density ρ for the κ-Köhler mass form (calibration reference §1)."""

DEFAULT_RH_MAX_PCT = 95.0
"""RH is clamped to this before κ-Köhler: the growth factor diverges at 100 %."""


def _us_wide(x: float, rh: float) -> float:
    # Barkjohn, Gantt, Clements, Atmos. Meas. Tech. 14, 4617 (2021): 0.524·cf_1 − 0.0862·RH + 5.75
    return 0.524 * x - 0.0862 * rh + 5.75


def us_wide_2021(pm25_cf1_ugm3: float, rh_pct: float) -> float:
    """US-wide PM2.5 correction (2021) from the ``cf_1`` channel and the sensor's RH, in µg/m³."""
    x = non_negative("pm25_cf1", pm25_cf1_ugm3)
    rh = relative_humidity("rh", rh_pct)
    return max(0.0, _us_wide(x, rh))


def fire_smoke_2021(pm25_atm_ugm3: float, rh_pct: float) -> float:
    """EPA Fire and Smoke Map piecewise PM2.5 correction (2021) from the ``cf_atm`` channel.

    Joints at 30, 50, 210 and 260 µg/m³; every segment meets its neighbours (continuous).

    Channel: ``cf_atm``. Primary source: K. Barkjohn, A. Holder, S. Frederick, A. Clements,
    "Sensor data cleaning and correction: Application on the AirNow Fire and Smoke Map",
    US EPA Office of Research and Development (2021), EPA Science Inventory record 353088,
    the correction equation slide: the US EPA / USFS AirNow Fire and Smoke Map receives the
    PurpleAir ``cf_atm`` (ATM) feed, so the map's piecewise equation is written in
    ``PA_cf_atm``. Its slopes show it: below ~30 µg/m³ the two Plantower channels are equal,
    and above ~50 µg/m³ ``cf_atm`` ≈ ⅔·``cf_1``, so 0.786 = 1.5 × 0.524 carries the US-wide
    ``cf_1`` slope of Barkjohn et al. (AMT 14, 4617, 2021) over to ``cf_atm``. PurpleAir's
    EPA conversion likewise applies this equation to ATM data for outdoor sensors. Do not feed
    it ``cf_1`` (that is :func:`us_wide_2021`, and the 2022 smoke extension, both ``cf_1``).
    """
    # EPA "Sensor data cleaning and correction" (2021), fire-and-smoke map documentation.
    x = non_negative("pm25_atm", pm25_atm_ugm3)
    rh = relative_humidity("rh", rh_pct)
    if x < 30.0:
        y = _us_wide(x, rh)
    elif x < 50.0:
        w = x / 20.0 - 3.0 / 2.0  # slope blends 0.524 → 0.786 across 30–50
        y = (0.786 * w + 0.524 * (1.0 - w)) * x - 0.0862 * rh + 5.75
    elif x < 210.0:
        y = 0.786 * x - 0.0862 * rh + 5.75
    elif x < 260.0:
        v = x / 50.0 - 21.0 / 5.0  # blend of the 50–210 line and the smoke quadratic
        y = (
            (0.69 * v + 0.786 * (1.0 - v)) * x
            - 0.0862 * rh * (1.0 - v)
            + 2.966 * v
            + 5.75 * (1.0 - v)
            + 8.84e-4 * x * x * v
        )
    else:
        y = 2.966 + 0.69 * x + 8.84e-4 * x * x
    return max(0.0, y)


def kohler_factor(
    rh_pct: float,
    kappa: float,
    density_gcm3: float = DEFAULT_DENSITY_GCM3,
    rh_max_pct: float = DEFAULT_RH_MAX_PCT,
) -> float:
    """κ-Köhler hygroscopic mass growth factor ``C = 1 + (κ/ρ)/(1/a_w − 1)``, ``a_w = RH/100``.

    RH is clamped to ``rh_max_pct`` (default 95 %) first, because C diverges at 100 %.
    """
    rh = relative_humidity("rh", rh_pct)
    k = finite("kappa", kappa)
    rho = finite("density", density_gcm3)
    rh_max = finite("rh_max", rh_max_pct)
    if k < 0.0:
        raise InputError(f"kappa must be >= 0, got {k!r}")
    if rho <= 0.0:
        raise InputError(f"density must be > 0 g/cm³, got {rho!r}")
    if not 0.0 < rh_max < 100.0:
        raise InputError(f"rh_max must be within (0, 100) %, got {rh_max!r}")
    a_w = min(rh, rh_max) / 100.0
    if a_w == 0.0:
        return 1.0
    # κ-Köhler mass form, calibration reference §1 (Petters & Kreidenweis 2007 hygroscopicity).
    return 1.0 + (k / rho) / (1.0 / a_w - 1.0)


def kohler_correct(
    pm_ugm3: float,
    rh_pct: float,
    kappa: float,
    density_gcm3: float = DEFAULT_DENSITY_GCM3,
    rh_max_pct: float = DEFAULT_RH_MAX_PCT,
) -> float:
    """Dry PM mass ``PM_raw / C`` for any PM channel, RH clamped as in :func:`kohler_factor`."""
    x = non_negative("pm", pm_ugm3)
    return x / kohler_factor(rh_pct, kappa, density_gcm3, rh_max_pct)
