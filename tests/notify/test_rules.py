"""Incidents from the gateway's real processor (calibration, QARTOD flags, hysteresis, hold):
flapping gives one raised and one cleared message, a single spike gives none, a fast rise is
announced with its trend, a PM2.5 band change carries the Thai AQI colour and advice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from pathlib import Path
from typing import Any

from edge_gateway.config import GatewayConfig
from edge_gateway.notify.dispatcher import Dispatcher
from edge_gateway.processing import Processor
from tests.gateway.helpers import reading
from tests.gateway.test_basic_path import STAGE
from tests.notify.conftest import settings_of, wait_until
from tests.support.fake_services import FakeLine

DEVICE = "ce-0000000d0001"
T0 = 1_780_000_000.0


def _processor(tmp_path: Path, **alerts: Any) -> Processor:
    records = tmp_path / "stage.toml"
    records.write_text(STAGE)
    device = {
        "id": DEVICE,
        "kind": "water",
        "water_warning_m": 2.0,
        "water_critical_m": 3.0,
        "name": "Khlong Lat Phrao gauge 2",
        "report_s": 1.0,
        "location": {"lat": 13.8237, "lon": 100.6105, "name": "Khlong Lat Phrao gauge 2"},
    }
    cfg = GatewayConfig.from_dict(
        {
            "gateway_id": "gw-bkk-canal-01",
            "site_id": "bkk-canal-01",
            "data_dir": str(tmp_path),
            "calibration": {"records": str(records)},
            "alerts": alerts,
            "inventory": {"device": [device]},
        }
    )
    return Processor(cfg)


def _noise(i: int) -> float:
    return 0.002 * ((i * 7) % 5 - 2)


def _feed(
    d: Dispatcher,
    proc: Processor,
    levels: list[tuple[float, float]],
    batch: int = 10,
    device: str = DEVICE,
    kind: str = "water",
) -> list[dict[str, Any]]:
    """Levels (t, m MSL) through the processor into the dispatcher, in group commits."""
    alerts: list[dict[str, Any]] = []
    pending: tuple[list[Any], list[Any]] = ([], [])
    for seq, (t, level) in enumerate(levels):
        body = reading(device, kind, 1, seq, t=t, value=4.0 - level if kind == "water" else level)
        out = proc.process(device, body, t)
        alerts.extend(out.alerts)
        pending[0].extend(out.alerts)
        pending[1].append(out.observation)
        if len(pending[1]) >= batch:
            d.record(*pending)
            pending = ([], [])
    d.record(*pending)
    return alerts


async def _drain(d: Dispatcher, line: FakeLine, n: int) -> None:
    task = asyncio.create_task(d.run())
    try:
        await wait_until(lambda: d.outbox.pending()[0] == 0 and len(line.delivered) >= n, 20)
        await asyncio.sleep(0.2)
    finally:
        d.stop()
        with contextlib.suppress(BaseException):
            await task


def test_flapping_canal_level_gives_one_raised_and_one_cleared(
    tmp_path: Path, alerts_config: Any, line: FakeLine
) -> None:
    proc = _processor(tmp_path)
    d = Dispatcher(
        settings_of(alerts_config(routes='[[routes]]\nchannels = ["line"]\n')),
        places={DEVICE: "Khlong Lat Phrao gauge 2"},
    )
    # 30 simulated minutes oscillating ±0.08 m around the 2.0 m warning level at 0.1 Hz (one
    # reading a second), dipping below warning − hysteresis (1.95 m) every 10 s; then 10 min
    # at 1.5 m (with a few mm of sensor noise: a perfectly constant level fails QC's flat-line
    # test, and a failed reading neither raises nor clears), longer than hold_s (300 s).
    levels = [(T0 + i, 2.0 + 0.08 * math.sin(2 * math.pi * 0.1 * i)) for i in range(1800)]
    levels += [(T0 + 1800 + i, 1.5 + _noise(i)) for i in range(600)]
    alerts = _feed(d, proc, levels)
    crossings = sum(1 for a, b in itertools.pairwise(levels) if (a[1] < 2.0) != (b[1] < 2.0))
    assert crossings > 300  # it really flapped
    asyncio.run(_drain(d, line, 2))
    assert [(a["alert"], a["state"]) for a in alerts] == [
        ("water_warning", "raised"),
        ("water_warning", "cleared"),
    ]
    texts = [m["text"] for m in line.delivered]
    assert len(texts) == 2
    assert "[WARNING] Canal water level at Khlong Lat Phrao gauge 2" in texts[0]
    cleared = texts[1]
    assert "is over" in cleared and "Lasted 35 min, peak 2.08 m" in cleared
    assert "ระยะเวลา 35 นาที ค่าสูงสุด 2.08 m" in cleared
    d.close()


def test_a_single_spike_is_not_a_flood(tmp_path: Path, alerts_config: Any, line: FakeLine) -> None:
    proc = _processor(tmp_path)
    d = Dispatcher(settings_of(alerts_config(routes='[[routes]]\nchannels = ["line"]\n')))
    levels = [(T0 + 60 * i, 1.5 + _noise(i)) for i in range(10)] + [(T0 + 600, 3.5)]
    levels += [(T0 + 660 + 60 * i, 1.5 + _noise(i)) for i in range(12)]
    alerts = _feed(d, proc, levels, batch=1)
    assert ("water_critical", "raised") in [(a["alert"], a["state"]) for a in alerts]
    asyncio.run(_drain(d, line, 0))
    assert line.delivered == [] and d.incidents.suppressed == 1
    d.close()


def test_fast_rise_is_announced_with_its_trend(
    tmp_path: Path, alerts_config: Any, line: FakeLine
) -> None:
    proc = _processor(tmp_path, water_rising_m_per_h=0.3)
    d = Dispatcher(settings_of(alerts_config(routes='[[routes]]\nchannels = ["line"]\n')))
    # 0.5 m/h from 1.0 m, one reading a minute for 40 minutes (stays below the warning level).
    levels = [(T0 + 60 * i, 1.0 + 0.5 * i / 60) for i in range(40)]
    alerts = _feed(d, proc, levels, batch=1)
    assert [(a["alert"], a["state"]) for a in alerts] == [("water_rising_fast", "raised")]
    asyncio.run(_drain(d, line, 1))
    text = line.delivered[0]["text"]
    assert "[WATCH] Water rising fast" in text and "rising 0.50 m/h" in text
    assert "กำลังขึ้น 0.50 ม./ชม." in text
    d.close()


def test_pm25_band_on_thai_aqi_carries_colour_and_advice(
    tmp_path: Path, alerts_config: Any, line: FakeLine
) -> None:
    cfg = GatewayConfig.from_dict(
        {
            "gateway_id": "gw-school-01",
            "site_id": "school-01",
            "data_dir": str(tmp_path),
            "inventory": {
                "device": [
                    {
                        "id": "ce-0000000a0001",
                        "kind": "air",
                        "report_s": 3600.0,
                        "name": "Wat Suthi school",
                    }
                ]
            },
        }
    )
    proc = Processor(cfg)
    d = Dispatcher(
        settings_of(alerts_config(routes='[[routes]]\nchannels = ["line"]\n')),
        places={"ce-0000000a0001": "Wat Suthi school"},
    )
    # Hourly readings: a clean day (bands 1-2, no incident), then smoke: the 24-h mean climbs
    # into Moderate (yellow: watch), then Starting to affect health (orange: warning).
    values = [(T0 + 3600 * i, 20.0 if i < 30 else 90.0) for i in range(49)]
    alerts = _feed(d, proc, values, batch=1, device="ce-0000000a0001", kind="air")
    assert [a["band"]["level"] for a in alerts] == [2, 3, 4]
    asyncio.run(_drain(d, line, 2))
    texts = [m["text"] for m in line.delivered]
    assert len(texts) == 2  # level 2 is no incident; 3 raises it, 4 upgrades it
    assert "[WATCH] PM2.5 (Thai AQI) at Wat Suthi school" in texts[0] and "yellow" in texts[0]
    assert "สีเหลือง" in texts[0]
    assert "now WARNING" in texts[1] and "orange" in texts[1] and "สีส้ม" in texts[1]
    assert "ควรเฝ้าระวังสุขภาพ" in texts[1] and "reduce outdoor activity" in texts[1]
    d.close()


def test_three_tiers_per_gauge_watch_warning_danger(
    tmp_path: Path, alerts_config: Any, line: FakeLine
) -> None:
    records = tmp_path / "stage.toml"
    records.write_text(STAGE)
    cfg = GatewayConfig.from_dict(
        {
            "gateway_id": "gw-bkk-canal-01",
            "site_id": "bkk-canal-01",
            "data_dir": str(tmp_path),
            "calibration": {"records": str(records)},
            "alerts": {"hold_s": 120, "water_rising_m_per_h": 5.0},
            "inventory": {
                "device": [
                    {
                        "id": DEVICE,
                        "kind": "water",
                        "water_watch_m": 1.8,
                        "water_warning_m": 2.0,
                        "water_critical_m": 2.4,
                    }
                ]
            },
        }
    )
    proc = Processor(cfg)
    routes = (
        '[[routes]]\nchannels = ["line"]\n[[routes]]\nchannels = ["hook"]\ntiers = ["critical"]\n'
    )
    d = Dispatcher(settings_of(alerts_config(routes=routes)))
    # Up 1 cm a minute from 1.7 m to 2.5 m, then down again the same way.
    up = [1.7 + 0.01 * i for i in range(81)]
    levels = [(T0 + 60 * i, v + _noise(i) / 4) for i, v in enumerate(up + up[::-1])]
    alerts = _feed(d, proc, levels, batch=1)
    raised = [a["alert"] for a in alerts if a["state"] == "raised"]
    assert raised[:3] == ["water_watch", "water_warning", "water_critical"]
    asyncio.run(_drain(d, line, 4))
    kinds = [m["text"].split("\n\n")[1].split("\n")[0] for m in line.delivered]
    assert len(kinds) == 4, kinds  # raised (watch), now WARNING, now DANGER, cleared
    assert kinds[0].startswith("[WATCH]") and "now WARNING" in kinds[1]
    assert "now DANGER" in kinds[2] and kinds[3].startswith("[cleared]")
    assert "peak 2.50 m" in line.delivered[3]["text"]


def test_watch_level_must_be_the_lowest_tier(tmp_path: Path) -> None:
    from edge_gateway.config import ConfigError

    device = {"id": DEVICE, "kind": "water", "water_watch_m": 2.1, "water_warning_m": 2.0}
    try:
        GatewayConfig.from_dict(
            {
                "gateway_id": "gw-bkk-canal-01",
                "site_id": "bkk-canal-01",
                "inventory": {"device": [device]},
            }
        )
    except ConfigError as exc:
        assert exc.key == "inventory.device[0].water_watch_m" and "below water_warning_m" in str(
            exc
        )
    else:
        raise AssertionError("watch above warning must be refused")
