"""The simulated board's signal models are plausible, seeded and the same on both runtimes."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from tests.support.tools import SIM_MODELS, micropython, mpy_cross

signals: Any = importlib.import_module("host_tools.sim.models.signals")

HOUR = 3600.0
DAY = 86400.0
TZ = 7 * HOUR  # Asia/Bangkok


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def local_midnight(date: str) -> float:
    return epoch(date) - TZ


def test_pm_daily_cycle_peaks_at_rush_hours_and_dips_in_the_afternoon() -> None:
    # Averaged over 10 dry-season days (Nov), so haze and showers do not decide the answer.
    m = signals.Model({"seed": 11})
    by_hour = np.zeros(24)
    for d in range(10):
        t0 = local_midnight(f"2025-11-{10 + d:02d}")
        for h in range(24):
            by_hour[h] += m.true_pm25(t0 + h * HOUR) / 10
    morning, evening, afternoon = by_hour[7:10].max(), by_hour[19:22].max(), by_hour[14:17].min()
    assert morning > 1.4 * afternoon
    assert evening > 1.4 * afternoon
    assert 5 < afternoon < 30 and evening < 90


def test_burning_season_has_multi_day_haze_episodes_above_100() -> None:
    m = signals.Model({"seed": 3})
    t0 = local_midnight("2026-02-01")
    hourly = np.array([m.true_pm25(t0 + h * HOUR) for h in range(24 * 59)])  # Feb-Mar
    assert hourly.max() > 100
    above = hourly > 75  # Thai AQI red band
    runs, run = [], 0
    for flag in above:
        run = run + 1 if flag else 0
        runs.append(run)
    assert max(runs) >= 24, "an episode lasts more than a day"
    wet = np.array([m.true_pm25(local_midnight("2026-07-01") + h * HOUR) for h in range(24 * 30)])
    assert wet.max() < 60, "no haze in the monsoon"


def test_pms_channels_keep_their_relationships() -> None:
    m = signals.Model({"seed": 5})
    t0 = local_midnight("2026-03-01")
    for h in range(0, 24 * 20, 5):
        t = t0 + h * HOUR
        w = m.weather(t)
        p = m.pm(t, w["rh"])
        assert 1.2 <= p["pm10_cf1"] / p["pm25_cf1"] <= 1.6
        assert p["pm1_cf1"] < p["pm25_cf1"] < p["pm10_cf1"]
        for ch in ("pm1", "pm25", "pm10"):
            cf1, atm = p[ch + "_cf1"], p[ch]
            if cf1 <= 30:
                assert atm == cf1
            else:
                assert 2 / 3 * cf1 - 1e-9 <= atm < cf1
        # The US-wide correction applied to CF=1 gives back the true value (within noise).
        if p["pm25_cf1"] > p["true_pm25"] * 0.85:
            corrected = (
                0.524 * p["pm25_cf1"] / (1 + m.jitter(t, 9, 0.06))
                - 0.0862 * min(w["rh"], 95)
                + 5.75
            )
            assert corrected == pytest.approx(p["true_pm25"], rel=1e-6, abs=1e-6)


def test_temperature_and_humidity_follow_the_thai_day() -> None:
    m = signals.Model({"seed": 2})
    temps, rhs = [], []
    for day in range(365):
        t0 = local_midnight("2026-01-01") + day * DAY
        for h in range(0, 24, 3):
            w = m.weather(t0 + h * HOUR)
            temps.append(w["temp"])
            rhs.append(w["rh"])
            assert 980 < w["pressure"] < 1025
    assert 19 < min(temps) and max(temps) < 40
    assert 30 < min(rhs) and max(rhs) > 95
    # One clear April day: coolest near dawn, hottest mid-afternoon, humid at night.
    m = signals.Model({"seed": 4})
    t0 = local_midnight("2026-04-10")
    day = [m.weather(t0 + h * HOUR) for h in range(24)]
    assert all(m.rain(t0 + h * HOUR) == 0 for h in range(24))
    hot = max(range(24), key=lambda h: day[h]["temp"])
    cold = min(range(24), key=lambda h: day[h]["temp"])
    assert 13 <= hot <= 16 and 4 <= cold <= 7
    assert day[hot]["temp"] - day[cold]["temp"] > 6
    assert day[cold]["rh"] > day[hot]["rh"] + 20


def test_rain_cools_the_air_and_saturates_it() -> None:
    m = signals.Model({"seed": 9})
    start = local_midnight("2026-08-01")
    for day in range(30):
        ev = m.rain_event(signals.local_day(start) + day)
        if ev is not None and ev[2] > 10:
            break
    else:
        pytest.fail("no shower in 30 August days")
    t_rain = ev[0] + ev[1] * 0.9
    assert m.weather(t_rain)["rh"] > 90
    assert m.temperature(t_rain) < m.temperature(ev[0] - 60) - 1.5


def test_canal_tide_is_semi_diurnal() -> None:
    m = signals.Model({"seed": 1})
    t0 = local_midnight("2026-01-05")  # dry season: few surges
    levels = np.array([m.level(t0 + k * 600.0) for k in range(6 * 24 * 30)])
    spectrum = np.abs(np.fft.rfft(levels - levels.mean()))
    freqs = np.fft.rfftfreq(len(levels), d=600.0)
    period_h = 1 / freqs[1:][np.argmax(spectrum[1:])] / HOUR
    assert 12.0 < period_h < 12.9
    assert 0.3 < levels.max() - levels.min() < 1.5


def test_flash_flood_rises_fast_and_recedes() -> None:
    at = epoch("2026-09-01T03:00:00")
    m = signals.Model(
        {"seed": 6, "events": [{"type": "flash_flood", "at": at, "rise_m": 1.5, "rise_s": 1200}]}
    )
    calm = signals.Model({"seed": 6})
    before = m.canal(at - 60)["distance_m"]
    peak = m.canal(at + 1200)["distance_m"]
    assert before - peak > 1.3, "the water came up by ~1.5 m in 20 minutes"
    assert m.level(at + 600) - calm.level(at + 600) > 0.5
    assert m.level(at + 12 * HOUR) - calm.level(at + 12 * HOUR) < 0.3, "and went down within hours"
    for dt in (0, 300, 600, 900, 1200):
        assert m.level(at + dt) <= m.level(at + dt + 300) + 0.05


def test_distance_stays_in_the_sensor_range() -> None:
    m = signals.Model({"seed": 8, "water": {"sensor_height_m": 4.0}})
    t0 = local_midnight("2026-09-01")
    for k in range(30 * 24 * 6):
        d = m.canal(t0 + k * 600.0)["distance_m"]
        assert 0.25 < d < 4.5


def test_parking_bay_changes_and_field_shift() -> None:
    m = signals.Model({"seed": 21})
    t0 = local_midnight("2026-05-12")  # a Tuesday
    ex, ey, ez = m.earth_field()
    assert 38 < math.hypot(ex, ey, ez) < 48
    changes, prev, day_occ, night_occ = 0, None, 0, 0
    for k in range(24 * 60):
        t = t0 + k * 60.0
        b = m.bay(t)
        occ = b["occupied"]
        if prev is not None and occ != prev:
            changes += 1
        prev = occ
        if 9 <= k // 60 < 16:
            day_occ += occ
        if k // 60 < 5:
            night_occ += occ
        age = m.occupancy(t)[2]
        if age > 10:  # settled, not mid-manoeuvre
            delta = math.hypot(b["x"] - ex, b["y"] - ey, b["z"] - ez)
            if occ:
                assert 20 < delta < 70
            else:
                assert delta < 4
    assert 4 <= changes <= 60
    assert day_occ / (7 * 60) > night_occ / (5 * 60) + 0.3


def test_seeded_signals_repeat_and_differ_by_seed() -> None:
    t = epoch("2026-02-20T01:00:00")
    a, b, c = signals.Model({"seed": 7}), signals.Model({"seed": 7}), signals.Model({"seed": 8})
    for f in ("weather", "canal", "bay"):
        assert getattr(a, f)(t) == getattr(b, f)(t)
        assert getattr(a, f)(t) != getattr(c, f)(t)
    assert a.pm(t, 60.0) == b.pm(t, 60.0) != c.pm(t, 60.0)


@pytest.mark.micropython
def test_micropython_computes_the_same_signals(tmp_path: Any) -> None:
    times = [epoch("2026-02-20T01:00:00") + k * 7777.7 for k in range(12)]
    script = tmp_path / "sig.py"
    script.write_text(
        "import json, signals\n"
        "m = signals.Model({'seed': 12})\n"
        f"for t in {times!r}:\n"
        "    w = m.weather(t)\n"
        "    print(json.dumps([w['temp'], w['rh'], m.pm(t, w['rh'])['pm25'], m.canal(t)['distance_m'], m.bay(t)['z']]))\n"
    )
    subprocess.run(
        [mpy_cross(), "-o", str(tmp_path / "signals.mpy"), str(SIM_MODELS / "signals.py")],
        check=True,
        timeout=60,
    )
    out = subprocess.run(
        [micropython(), "-X", "heapsize=64k", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"MICROPYPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    m = signals.Model({"seed": 12})
    for t, line in zip(times, out.stdout.splitlines(), strict=True):
        w = m.weather(t)
        want = [
            w["temp"],
            w["rh"],
            m.pm(t, w["rh"])["pm25"],
            m.canal(t)["distance_m"],
            m.bay(t)["z"],
        ]
        assert json.loads(line) == pytest.approx(want, rel=1e-9)
