"""The node's pure parts on CPython (they import on MicroPython and CPython alike): config
validation and safe-mode salvage, the robust filters, parking hysteresis, water alarms."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.tools import FIRMWARE

sys.path.insert(0, str(FIRMWARE))
from node import config, filters, parking, state, water  # type: ignore[import-not-found]  # type: ignore[import-not-found]

GOOD = {
    "device_id": "ce-a1b2c3d4e5f6",
    "kind": "water",
    "mqtt": {"host": "10.0.0.2", "port": 1883, "username": "ce-a1b2c3d4e5f6", "password": "pw"},
}


def _load(tmp_path: Path, raw: Any) -> tuple[dict[str, Any], str | None]:
    p = tmp_path / "config.json"
    p.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    cfg: dict[str, Any]
    cfg, err = config.load(str(p))
    return cfg, err


def test_good_config_merges_over_defaults(tmp_path: Path) -> None:
    cfg, err = _load(tmp_path, GOOD)
    assert err is None
    assert cfg["kind"] == "water" and cfg["mqtt"]["host"] == "10.0.0.2"
    assert cfg["mqtt"]["keepalive_s"] == 60 and cfg["intervals"]["report_s"] == 60.0


@pytest.mark.parametrize(
    ("raw", "word"),
    [
        ("{not json", "not valid JSON"),
        ({**GOOD, "device_id": ""}, "device_id: must be"),
        ({k: v for k, v in GOOD.items() if k != "device_id"}, "device_id: missing"),
        ({**GOOD, "device_id": "CE_BAD"}, "device_id: must be"),
        ({**GOOD, "colour": "red"}, "colour: unknown key"),
        ({**GOOD, "kind": "weather"}, "kind: must be one of"),
        ({**GOOD, "intervals": {"sample_s": 0}}, "intervals.sample_s: must be > 0"),
        ({**GOOD, "intervals": {"report_s": 1000}}, "at most 30 samples"),
        ({**GOOD, "intervals": {"report_s": True}}, "intervals.report_s: expected a number"),
        ({**GOOD, "thresholds": {"on_count": 2.5}}, "thresholds.on_count: expected a whole number"),
        ({**GOOD, "thresholds": {"on_ut": 1, "off_ut": 2}}, "hysteresis"),
        ({**GOOD, "mqtt": {**GOOD["mqtt"], "port": 70000}}, "mqtt.port"),
        ({**GOOD, "wifi": {"ssid": 5}}, "wifi.ssid: expected a string"),
        ({**GOOD, "mqtt": {**GOOD["mqtt"], "tls": True}}, "mqtt.tls: not supported"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, raw: Any, word: str) -> None:
    _cfg, err = _load(tmp_path, raw)
    assert err is not None and word in err and len(err) <= 200


def test_safe_mode_keeps_what_is_valid(tmp_path: Path) -> None:
    """A typo in one key must not cost the broker address: the node still connects."""
    raw = {**GOOD, "mqtt": {**GOOD["mqtt"], "keepalive_s": "60"}, "thresholds": {"on_ut": "x"}}
    cfg, err = _load(tmp_path, raw)
    assert err == "mqtt.keepalive_s: expected a number"
    assert cfg["mqtt"]["host"] == "10.0.0.2" and cfg["mqtt"]["keepalive_s"] == 60
    assert cfg["thresholds"]["on_ut"] == 12.0


def test_set_is_validated_whole_then_persisted(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(GOOD))
    cfg, _ = config.load(str(path))
    assert (
        state.apply_set(cfg, {"intervals": {"report_s": 120}, "thresholds": {"on_ut": "x"}})
        == "thresholds.on_ut: expected a number"
    )
    assert cfg["intervals"]["report_s"] == 60.0, "nothing changes when any part is bad"
    assert state.apply_set(cfg, {"wifi": {"ssid": "x"}}).startswith("set: only intervals")
    assert (
        state.apply_set(cfg, {"intervals": {"report_s": 5}})
        == "intervals.report_s: must be >= sample_s"
    )
    args = {"intervals": {"report_s": 120}}
    assert state.apply_set(cfg, args) is None and cfg["intervals"]["report_s"] == 120
    state.save_set(args, str(path))
    again, err = config.load(str(path))
    assert err is None and again["intervals"]["report_s"] == 120
    assert not (tmp_path / "config.json.tmp").exists()


def test_pending_set_is_applied_once_at_boot_and_its_ack_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """node.state.pending_set: the `set` App.command stored before its restart is applied
    (all or nothing), removed before it is applied, and its ack kept until it is sent."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    Path("config.json").write_text(json.dumps(GOOD))
    cfg, _ = config.load()
    pending = tmp_path / "data" / "set_cmd.json"
    ackfile = tmp_path / "data" / "set_ack.json"
    assert state.pending_set(cfg) is False, "nothing stored, nothing to send"
    cmd = {"v": 1, "id": "s-1", "cmd": "set", "args": {"intervals": {"report_s": 120}}}
    pending.write_text(json.dumps(cmd))
    assert state.pending_set(cfg) is True and not pending.exists()
    assert cfg["intervals"]["report_s"] == 120
    assert json.loads(Path("config.json").read_text())["intervals"]["report_s"] == 120
    ack = json.loads(f'{ackfile.read_text()}, "t": 1234}}')  # as App.on_connect
    assert ack == {
        "v": 1,
        "device_id": cfg["device_id"],
        "id": "s-1",
        "ok": True,
        "error": None,
        "t": 1234,
    }
    assert state.pending_set(cfg) is True, "the ack waits until it is sent"
    ackfile.unlink()
    bad = {"v": 1, "id": "s-2%", "cmd": "set", "args": {"intervals": {"report_s": 1}}}
    pending.write_text(json.dumps(bad))
    assert state.pending_set(cfg) is True and cfg["intervals"]["report_s"] == 120
    ack = json.loads(ackfile.read_text() + "}")
    assert ack["id"] == "s-2%" and ack["ok"] is False and "report_s" in ack["error"]
    for raw, word in (("{not json", "id"), ('{"v": 1, "id": "s-3", "cmd": "set", "x": 1}', "x")):
        pending.write_text(raw)
        state.pending_set(cfg)
        assert word in json.loads(ackfile.read_text() + "}")["error"]


@given(st.text(max_size=50))
def test_device_id_rule_matches_the_contract(s: str) -> None:
    import re

    assert config.valid_device_id(s) == bool(re.fullmatch(r"[a-z0-9][a-z0-9-]{2,40}", s))


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@given(st.lists(finite, min_size=1, max_size=30))
def test_median_matches_statistics(values: list[float]) -> None:
    a = array("f", values)
    assert filters.median(a, len(values)) == pytest.approx(
        statistics.median(array("f", values)), rel=1e-6, abs=1e-6
    )


@given(st.lists(finite, min_size=1, max_size=30))
def test_robust_mean_stays_within_the_samples(values: list[float]) -> None:
    a = array("f", values)
    mean, used = filters.robust_mean(a, len(values), 3.5, array("f", bytes(4 * 30)))
    assert 1 <= used <= len(values)
    assert min(a) - 1e-3 <= mean <= max(a) + 1e-3


@settings(max_examples=50)
@given(
    st.floats(min_value=5, max_value=50),
    st.lists(st.floats(min_value=-0.1, max_value=0.1), min_size=5, max_size=20),
    st.floats(min_value=10, max_value=30),
)
def test_one_spike_does_not_move_the_mean(base: float, noise: list[float], factor: float) -> None:
    """A single optical-sensor spike (an insect, a puff of smoke) is dropped."""
    values = [base * (1 + e) for e in noise]
    n = len(values)
    clean, used_clean = filters.robust_mean(array("f", values), n, 3.5, array("f", bytes(4 * 30)))
    spiked, used = filters.robust_mean(
        array("f", values + [base * factor]), n + 1, 3.5, array("f", bytes(4 * 30))
    )
    assert used == used_clean == n
    assert spiked == pytest.approx(clean, rel=1e-5)


class _Mag:
    """A fake sensor adapter: one field value per sample."""

    def __init__(self, fields: list[tuple[float, float, float] | None]) -> None:
        self.fields = fields
        self.i = 0

    async def read(self, out: dict[str, Any], app: Any) -> bool:
        f = self.fields[self.i]
        self.i += 1
        if f is None:
            return False
        out["mag_x"], out["mag_y"], out["mag_z"] = f
        return True


class _App:
    def __init__(self, sensor: Any) -> None:
        cfg, _ = config.load("/nonexistent")
        cfg["intervals"]["heartbeat_s"] = 1000.0
        self.cfg = cfg
        self.sensors = [sensor]


def _run_kind(kind_cls: Any, sensor: Any, n: int) -> list[Any]:
    kind = kind_cls(_App(sensor))
    return [asyncio.run(kind.sample(i * 10)) for i in range(n)]


def test_parking_hysteresis_needs_n_above_and_m_below() -> None:
    free, car, edge = (20.0, 0.0, -40.0), (20.0, 30.0, -40.0), (20.0, 9.0, -40.0)
    seq = [free, free, car, car, car, car, edge, free, free, edge, free, free, free, free]
    out = _run_kind(parking.Kind, _Mag(seq), len(seq))
    changes = [(i, r[0]["occupied"]) for i, r in enumerate(out) if r is not None]
    # occupied after the 3rd sample above on_ut (index 4); the edge value (9 uT, between
    # off_ut 6 and on_ut 12) resets the count below, so free only after 3 in a row (index 12).
    assert changes == [(4, True), (12, False)]
    assert out[4][0]["field_delta"] == pytest.approx(30.0)


def test_parking_baseline_tracks_drift_only_while_free() -> None:
    drift = [(20.0, 0.1 * i, -40.0) for i in range(40)]
    out = _run_kind(parking.Kind, _Mag(drift), len(drift))
    assert all(r is None for r in out), "slow drift (temperature) never reads as a car"


class _Range:
    def __init__(self, distances: list[float]) -> None:
        self.d = distances
        self.i = 0

    async def read(self, out: dict[str, Any], app: Any) -> bool:
        out["distance"] = self.d[self.i]
        self.i += 1
        return True


def test_water_reports_at_once_when_rising_fast_then_faster() -> None:
    # 10 s samples: 2 m, steady, then the water rises 0.05 m per sample = 0.3 m/min.
    d = [2.0] * 8 + [2.0 - 0.05 * i for i in range(1, 8)]
    out = _run_kind(water.Kind, _Range(d), len(d))
    reports = [(i, r[3]) for i, r in enumerate(out) if r is not None]
    assert reports[0] == (5, False), "a normal report after report_s (6 samples)"
    alarm_reports = [i for i, a in reports if a]
    # The second rising sample moves the 3-sample median: alarm at once, then every
    # alarm_report_s (every sample here) while it lasts.
    assert alarm_reports == list(range(9, 15))
    assert all(not a for i, a in reports if i < 9)


def test_water_single_bad_echo_raises_no_alarm() -> None:
    d = [2.0] * 8 + [0.6] + [2.0] * 8
    out = _run_kind(water.Kind, _Range(d), len(d))
    assert not any(r[3] for r in out if r is not None)


def test_water_level_from_pressure() -> None:
    assert water.level_of({"pressure": 101.325 + 9.80665}) == pytest.approx(1.0)
    assert water.level_of({"pressure": 111.0, "baro": 101.0}) == pytest.approx(
        10.0 * 1000 / 9806.65
    )
    assert water.level_of({}) is None
