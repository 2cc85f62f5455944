"""Generate the synthetic Chiang Mai collocation data set shipped for tests and docs.

    python calibration/data/make_collocation.py        # rewrites the two CSVs beside this file

It is *synthetic*, not measured: three weeks (20 Feb – 13 Mar 2026) of the burning season in
Chiang Mai, a PMS5003 node (``ce-cm0000000001``) beside a PCD reference station (code 35t,
Chiang Mai City Hall, used here only as a label). The stated model:

* True PM2.5 (µg/m³) = a slow haze level (30–110, with three multi-day fire episodes) × a
  diurnal factor (night inversion peak around 07:00 local, afternoon minimum) + small noise.
* RH (%) follows the dry season's diurnal cycle: ≈ 85 % before dawn, ≈ 30 % mid-afternoon,
  with a wetter spell in the last week. Temperature runs 17–36 °C, opposite to RH.
* The node's ``pm25_cf1`` over-reads and grows with humidity:
  ``cf1 = (1.55·true + 1.5) · (1 + (κ/1.65)/(100/min(RH, 95) − 1)) · (1 + N(0, 0.05)) + N(0, 1.5)``
  (κ-Köhler growth with κ = KAPPA = 0.08, calibration reference §1), floored at 0.
* ``pm25_atm`` equals ``cf1`` below 30 µg/m³ and rises with slope 0.66 above (Plantower's
  indoor/outdoor channel split, approximately).
* The node (its id is not in the file; pass ``--device``) samples every 5 minutes (UTC timestamps) with a 9-hour power cut and scattered
  lost samples; the reference is hourly, hour-ending, in Asia/Bangkok local time, with a
  6-hour maintenance gap written as "-" the way PCD exports show it.

Fixed seed: the output is byte-identical on every run.
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

HERE = Path(__file__).resolve().parent
BKK = ZoneInfo("Asia/Bangkok")
STATION = "35t"
START_LOCAL = datetime(2026, 2, 20, 0, 0, tzinfo=BKK)
DAYS = 21
SAMPLE_S = 300
KAPPA = 0.08


def haze_level(day: float) -> float:
    """Slow haze level in µg/m³ with three fire episodes (day = days since start)."""
    level = 38.0 + 6.0 * math.sin(day / 3.1)
    for centre, height, width in ((4.0, 45.0, 1.6), (11.5, 70.0, 2.2), (17.0, 35.0, 1.2)):
        level += height * math.exp(-(((day - centre) / width) ** 2))
    return level


def diurnal_pm(hour_local: float) -> float:
    """Night inversion: higher around 07:00, lowest mid-afternoon."""
    return 1.0 + 0.35 * math.cos(2 * math.pi * (hour_local - 7.0) / 24.0)


def rh_pct(hour_local: float, day: float) -> float:
    wet = 10.0 if day > 15.0 else 0.0
    return min(97.0, 57.0 + wet + 27.0 * math.cos(2 * math.pi * (hour_local - 5.0) / 24.0))


def temp_c(hour_local: float) -> float:
    return 26.5 - 9.5 * math.cos(2 * math.pi * (hour_local - 5.0) / 24.0)


def main() -> None:
    rng = np.random.default_rng(20260220)
    n = DAYS * 24 * 3600 // SAMPLE_S
    start_utc = START_LOCAL.astimezone(UTC)
    times = [start_utc + timedelta(seconds=SAMPLE_S * i) for i in range(n)]
    true_5min: list[float] = []
    sensor_rows: list[list[str]] = []
    cut_start = start_utc + timedelta(days=8, hours=3)
    cut_end = cut_start + timedelta(hours=9)
    for t in times:
        local = t.astimezone(BKK)
        day = (t - start_utc).total_seconds() / 86400.0
        hour = local.hour + local.minute / 60.0
        true = haze_level(day) * diurnal_pm(hour) * (1.0 + rng.normal(0.0, 0.04))
        true_5min.append(true)
        rh = rh_pct(hour, day) + rng.normal(0.0, 1.0)
        rh = min(max(rh, 5.0), 99.0)
        growth = 1.0 + (KAPPA / 1.65) / (100.0 / min(rh, 95.0) - 1.0)
        cf1 = (1.55 * true + 1.5) * growth * (1.0 + rng.normal(0.0, 0.05))
        cf1 = max(0.0, cf1 + rng.normal(0.0, 1.5))
        atm = cf1 if cf1 < 30.0 else 30.0 + 0.66 * (cf1 - 30.0)
        if cut_start <= t < cut_end or rng.random() < 0.03:
            continue  # power cut or a lost sample
        sensor_rows.append(
            [
                t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                f"{cf1:.1f}",
                f"{atm:.1f}",
                f"{rh:.1f}",
                f"{temp_c(hour) + rng.normal(0.0, 0.3):.1f}",
            ]
        )
    with (HERE / "collocation_sensor.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "pm25_cf1", "pm25_atm", "rh", "temp"])
        w.writerows(sensor_rows)

    per_hour = 3600 // SAMPLE_S
    gap_start = 24 * 13 + 9  # hour index of a maintenance gap
    with (HERE / "collocation_reference.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["date", "time", "station", "pm25"])
        for h in range(DAYS * 24):
            chunk = true_5min[h * per_hour : (h + 1) * per_hour]
            # Hour-ending local label: the mean of 00:00–01:00 is written "01:00".
            end_local = (start_utc + timedelta(hours=h + 1)).astimezone(BKK)
            value = "-" if gap_start <= h < gap_start + 6 else f"{float(np.mean(chunk)):.1f}"
            w.writerow(
                [end_local.strftime("%Y-%m-%d"), end_local.strftime("%H:%M"), STATION, value]
            )


if __name__ == "__main__":
    main()
