"""Water level: ultrasonic time of flight, stage against a datum, pressure → depth.

All functions are pure; time and readings are passed in. Units are in the names.
"""

from __future__ import annotations

from calibration._checks import finite, non_negative
from calibration.errors import InputError

__all__ = [
    "G_STANDARD_MS2",
    "echo_distance_m",
    "hydrostatic_depth_m",
    "speed_of_sound_ms",
    "stage_level_m",
    "water_density_kgm3",
]

G_STANDARD_MS2 = 9.80665
"""Standard gravity (CGPM 1901), used by :func:`hydrostatic_depth_m`."""


def speed_of_sound_ms(air_temp_c: float) -> float:
    """Speed of sound in air ``c = 331.3 + 0.606·T`` m/s (linearised, T in °C).

    Kept on purpose (the project's documented choice, docs/calibration.md): against Cramer's
    formula for real air (J. Acoust. Soc. Am. 93, 2510 (1993)) this line is at most 0.27 %
    fast in *dry* air over 0–45 °C, and the square-root form ``331.3·√(1 + T/273.15)`` is
    closer there; but canal air in Thailand is humid, and water vapour speeds sound up by more
    than that (about +0.5 % at 30 °C, 80 % RH), so in the air the nodes measure the linear form
    is the closer of the two (−0.4 % against −0.6 % at 30 °C, 80 % RH). The firmware uses the
    same line; the surveyed sensor height is a dated record re-checked against a staff gauge.
    """
    t = finite("air_temp", air_temp_c)
    if not -60.0 <= t <= 80.0:
        raise InputError(f"air_temp {t!r} °C is outside the −60…80 °C the linear formula covers")
    # Calibration reference §3: c = 331.3 + 0.606·T.
    return 331.3 + 0.606 * t


def echo_distance_m(echo_us: float, air_temp_c: float) -> float:
    """Distance to the target from a round-trip echo time, ``d = c(T)·t/2``.

    Only for sensors that report raw echo time (JSN-SR04T, HC-SR04). A sensor that
    compensates internally (MaxBotix HRXL) already reports distance: do not pass its output
    through here, or temperature is compensated twice (the board definition says which).
    """
    t_s = non_negative("echo_us", echo_us) * 1e-6
    # Calibration reference §3: d = c·t_echo/2.
    return speed_of_sound_ms(air_temp_c) * t_s / 2.0


def stage_level_m(z_sensor_m: float, distance_m: float) -> float:
    """Water level ``z_sensor − d`` against the datum ``z_sensor`` is surveyed in (MSL or staff gauge)."""
    z = finite("z_sensor", z_sensor_m)
    d = non_negative("distance", distance_m)
    return z - d


def water_density_kgm3(water_temp_c: float) -> float:
    """Density of air-free pure water at 0–40 °C (Tanaka et al., Metrologia 38, 301 (2001))."""
    t = finite("water_temp", water_temp_c)
    if not 0.0 <= t <= 40.0:
        raise InputError(f"water_temp {t!r} °C is outside 0–40 °C the formula covers")
    a1, a2, a3, a4, a5 = -3.983035, 301.797, 522528.9, 69.34881, 999.974950
    return a5 * (1.0 - (t + a1) ** 2 * (t + a2) / (a3 * (t + a4)))


def hydrostatic_depth_m(
    pressure_kpa: float,
    baro_kpa: float,
    density_kgm3: float = 997.0,
    g_ms2: float = G_STANDARD_MS2,
) -> float:
    """Depth of water above a pressure transducer, ``h = (P_abs − P_baro)/(ρ·g)``.

    ``baro_kpa`` is *station* pressure (not reduced to sea level). A small negative result
    means the transducer is above the water or has drifted; it is returned as is, not hidden.
    """
    p = non_negative("pressure", pressure_kpa)
    b = non_negative("baro", baro_kpa)
    rho = finite("density", density_kgm3)
    g = finite("g", g_ms2)
    if rho <= 0.0 or g <= 0.0:
        raise InputError("density and g must be > 0")
    # Calibration reference §3: h = ΔP/(ρ·g), ΔP in Pa.
    return (p - b) * 1000.0 / (rho * g)
