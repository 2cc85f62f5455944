"""Pure tests of the gateway's parts: store bounds and drop policy, processing, alerts, config."""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.records import Registry, parse_records
from edge_gateway import contract
from edge_gateway.config import ConfigError, GatewayConfig, load_config
from edge_gateway.flight import MidAllocator, wire_payload
from edge_gateway.processing import Processor
from edge_gateway.prometheus import render
from edge_gateway.qos2link import ROW_MID_MAX
from edge_gateway.sitelink import custody_ranges
from edge_gateway.store import (
    PRIORITY_ALERT,
    PRIORITY_READING,
    STATE_PUBLISHED,
    STATE_RELEASED,
    Entry,
    Limits,
    SeenRanges,
    Store,
    decode_payload,
    encode_payload,
)
from edge_gateway.zdict import DICTIONARY_V1
from tests.gateway.helpers import reading

WATER = "ce-0000000f0001"
AIR = "ce-0000000a0001"

RECORDS = f"""
[[record]]
id = "stage-{WATER}-2025"
device_id = "{WATER}"
quantity = "level"
unit = "m"
input_channel = "distance"
author = "survey"
valid_from = 2025-01-01T00:00:00Z
valid_to = 2026-06-01T00:00:00Z
[record.model]
form = "stage"
[record.model.coefficients]
z_sensor = 4.0
datum = "MSL"

[[record]]
id = "stage-{WATER}-2026"
device_id = "{WATER}"
quantity = "level"
unit = "m"
input_channel = "distance"
author = "resurvey"
valid_from = 2026-06-01T00:00:00Z
[record.model]
form = "stage"
[record.model.coefficients]
z_sensor = 4.5
datum = "MSL"
"""


def base_config(**sections: Any) -> GatewayConfig:
    cfg: dict[str, Any] = {
        "gateway_id": "gw-unit-01",
        "site_id": "unit-site-01",
        "location": {"lat": 13.0, "lon": 100.0},
    }
    cfg.update(sections)
    return GatewayConfig.from_dict(cfg)


def processor(config: GatewayConfig) -> Processor:
    site = Registry(parse_records(tomllib.loads(RECORDS), "test.toml"))
    return Processor(config, (site, None))


# --- store ---------------------------------------------------------------------------------


def open_store(tmp_path: Path, **limits: Any) -> Store:
    lim = Limits(
        limits.get("max_bytes", 10**9),
        limits.get("max_age_s", 10**6),
        limits.get("min_free_bytes", 0),
        3600.0,
    )
    store = Store(tmp_path / "s.sqlite", lim)
    store.open()
    return store


def entry(
    dev: str,
    seq: int,
    size: int = 100,
    priority: int = PRIORITY_READING,
    received: float | None = None,
) -> Entry:
    return Entry(
        "t/obs",
        b"x" * size,
        time.time() if received is None else received,
        priority,
        None if priority == PRIORITY_ALERT else (dev, 1, seq),
    )


def test_store_dedups_on_device_boot_seq_even_after_delivery(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    r = store.commit([entry("a", 0), entry("a", 1), entry("a", 1)])
    assert r.accepted == [("a", 1, 0), ("a", 1, 1)] and r.duplicates == [("a", 1, 1)]
    rows = store.fetch(0, 10)
    assert store.delivered([row.id for row in rows]) == 2
    assert store.depth == 0
    r = store.commit([entry("a", 0)])  # a resend after delivery is still a duplicate
    assert r.accepted == [] and r.duplicates == [("a", 1, 0)]
    assert store.counters["duplicates"] == 2 and store.counters["delivered"] == 2
    store.close()


def test_store_bytes_bound_drops_oldest_readings_and_keeps_alerts(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_bytes=20 * 106)
    store.commit([entry("", 0, priority=PRIORITY_ALERT)])
    dropped = 0
    for seq in range(100):
        dropped += store.commit([entry("a", seq)]).dropped.get("max_bytes", 0)
    assert store.bytes <= 20 * 106
    assert dropped == store.counters["dropped_max_bytes"]
    rows = store.fetch(0, 1000)
    assert any(r.device_id is None for r in rows), "the alert was dropped before readings"
    kept = store.db.execute("SELECT seq FROM queue WHERE seq IS NOT NULL ORDER BY id").fetchall()
    kept_seqs = [k[0] for k in kept]
    assert kept_seqs == list(range(100 - len(kept_seqs), 100)), "not the oldest were dropped"
    assert 100 == len(kept_seqs) + dropped
    store.close()


def test_store_age_bound_and_leased_rows(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_age_s=60)
    store.commit([entry("a", 0), entry("a", 1)])
    leased = store.fetch(0, 1)  # in flight to the platform: never dropped under it
    dropped = store.enforce(now=time.time() + 120)
    assert dropped == {"max_age": 1}
    assert [r.id for r in store.fetch(0, 10, None)] == [leased[0].id]
    store.close()


def test_store_rows_with_a_packet_id_are_in_flight_and_never_dropped(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_age_s=60)
    store.commit([entry("a", seq) for seq in range(4)])
    ids = [r.id for r in store.fetch(0, 10)]
    store.flight_commit([(ids[0], 7, False), (ids[1], 8, True)])
    store.flight_commit(released=[ids[1]])
    store.release_all()  # as after a restart: no leases, only what the store says
    assert [r.id for r in store.fetch(0, 10)] == ids[2:]  # waiting rows only
    flight = store.in_flight()
    assert [(f.id, f.mid, f.replay, f.state) for f in flight] == [
        (ids[0], 7, False, STATE_PUBLISHED),
        (ids[1], 8, True, STATE_RELEASED),
    ]
    assert flight[0].payload == b"x" * 100
    store.release_all()
    assert store.enforce(now=time.time() + 120) == {"max_age": 2}  # those without a packet id
    assert [f.id for f in store.in_flight()] == ids[:2]
    assert store.delivered(ids[:2]) == 2 and store.depth == 0
    store.close()


def test_store_of_an_earlier_version_gets_the_qos2_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE queue(id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL, device_id TEXT, boot INTEGER, seq INTEGER, "
        "received REAL NOT NULL, priority INTEGER NOT NULL DEFAULT 0, "
        "size INTEGER NOT NULL)"
    )
    db.execute(
        "INSERT INTO queue(topic, payload, received, size) VALUES('t', ?, 0, 5)",
        (encode_payload(b"{}"),),
    )
    db.commit()
    db.close()
    store = Store(path, Limits(10**9, 10**12, 0, 3600.0))
    store.open()
    assert [r.payload for r in store.fetch(0, 10)] == [b"{}"] and store.in_flight() == []
    store.close()


def test_mid_allocator_skips_ids_still_held_and_wraps() -> None:
    mids = MidAllocator()
    mids.reset({1: 10, 3: 11})
    assert mids.take(20) == 4  # after the highest held one
    mids.reset({ROW_MID_MAX: 10, 1: 11})
    assert mids.take(20) == 2  # wraps, skipping 1
    mids.free(1)
    assert mids.take(21) == 3 and mids.busy == {ROW_MID_MAX: 10, 2: 20, 3: 21}


def test_wire_payload_is_the_stored_payload_or_its_replay_form() -> None:
    body = b'{"seq":1,"replay":false}'
    assert wire_payload(body, False) == body
    assert wire_payload(body, True) == b'{"seq":1,"replay":true}'
    assert wire_payload(b'{"alert":1}', True) == b'{"alert":1}'


def test_store_disk_floor_stops_growth(tmp_path: Path) -> None:
    store = open_store(tmp_path, min_free_bytes=1 << 62)  # never enough free space
    store.commit([entry("a", 0)])
    store.commit([entry("a", 1), entry("a", 2)])
    assert store.depth == 0 or store.depth == 1
    assert store.counters["dropped_disk_floor"] == 3 - store.depth
    store.close()


def test_store_survives_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.commit([entry("a", i) for i in range(10)])
    store.close()
    again = open_store(tmp_path)
    assert again.depth == 10 and again.counters["readings_stored"] == 10
    assert again.commit([entry("a", 3)]).duplicates == [("a", 1, 3)]
    again.close()


def test_custody_ranges_are_contiguous_per_device_and_boot() -> None:
    keys = [
        ("a", 1, 0),
        ("a", 1, 1),
        ("a", 1, 2),
        ("a", 1, 5),
        ("a", 2, 0),
        ("b", 1, 7),
        ("a", 1, 6),
    ]
    assert custody_ranges(keys) == [("a", 1, 0, 2), ("a", 1, 5, 6), ("a", 2, 0, 0), ("b", 1, 7, 7)]


# --- processing ----------------------------------------------------------------------------


def test_calibration_record_is_chosen_by_sample_time() -> None:
    p = processor(base_config())
    t_2025 = 1_750_000_000.0 - 86400 * 60  # April 2025
    t_2026 = 1_790_000_000.0  # Sept 2026
    a = p.process(WATER, reading(WATER, "water", 1, 0, t=t_2025, value=1.0), t_2025).observation
    b = p.process(WATER, reading(WATER, "water", 1, 1, t=t_2026, value=1.0), t_2026).observation
    assert a["calibrated"]["level"] == {
        "v": 3.0,
        "u": "m",
        "calibration_id": f"stage-{WATER}-2025",
        "datum": "MSL",
    }
    assert b["calibrated"]["level"]["v"] == 3.5
    assert b["calibrated"]["level"]["calibration_id"] == f"stage-{WATER}-2026"
    contract.validate("observation", a)
    contract.validate("observation", b)


def test_air_observation_has_thai_and_us_aqi_quality_and_none_calibration() -> None:
    p = Processor(base_config(calibration={"fleet_defaults": False}), (None, None))
    t0 = 1_790_000_000.0
    obs = {}
    for i in range(5):
        obs = p.process(
            AIR, reading(AIR, "air", 1, i, t=t0 + 60 * i, value=50.0), t0 + 60 * i
        ).observation
    contract.validate("observation", obs)
    assert obs["calibrated"]["pm25"] == {"v": 45.0, "u": "ug/m3", "calibration_id": "none"}
    thai = obs["derived"]["thai_aqi"]
    assert thai["pm25_24h"] == 45.0 and thai["colour"] in ("orange", "yellow")
    assert thai["advice_th"] and thai["completeness_24h"] < 0.01
    assert obs["derived"]["us_aqi"]["value"] > 100
    assert obs["quality"]["pm25"] in (1, 3)
    assert set(obs["quality_tests"]["pm25"]) == {
        "gross_range",
        "spike",
        "rate_of_change",
        "flat_line",
    }
    assert obs["replay"] is False and list(obs)[-1] == "replay"


def test_spike_is_settled_by_the_next_observation() -> None:
    """QARTOD's spike test needs the next value: an observation goes out with spike = 2 and the
    device's next observation settles it in ``settles`` (a 32 -> 400 -> 30 spike fails)."""
    p = Processor(base_config(calibration={"fleet_defaults": False}), (None, None))
    t0 = 1_790_000_000.0
    values = [30.0, 31.0, 32.0, 400.0, 30.0]
    obs = [
        p.process(AIR, reading(AIR, "air", 1, i, t=t0 + 60 * i, value=v), t0 + 60 * i).observation
        for i, v in enumerate(values)
    ]
    for o in obs:
        contract.validate("observation", o)
        assert o["quality_tests"]["pm25"]["spike"] == 2  # provisional
    assert "settles" not in obs[0]
    assert (
        obs[2]["settles"]["seq"] == 1 and obs[2]["settles"]["quality_tests"]["pm25"]["spike"] == 1
    )
    settled = obs[4]["settles"]
    assert (settled["boot"], settled["seq"]) == (1, 3)
    assert settled["quality_tests"]["pm25"]["spike"] == 4
    assert settled["quality"]["pm25"] == 4


def test_fleet_default_calibration_applies_when_no_site_record() -> None:
    p = Processor(base_config())  # fleet defaults from calibration/data/records
    t0 = 1_790_000_000.0
    obs = p.process(AIR, reading(AIR, "air", 1, 0, t=t0, value=20.0), t0).observation
    assert obs["calibrated"]["pm25"]["calibration_id"] == "fleet-pm25-epa-us-2021"
    contract.validate("observation", obs)


def test_water_alerts_do_not_flap_at_the_threshold() -> None:
    cfg = base_config(
        alerts={
            "water_warning_m": 2.0,
            "water_critical_m": 3.0,
            "hold_s": 300,
            "water_hysteresis_m": 0.05,
        }
    )
    p = processor(cfg)
    t0 = 1_790_000_000.0
    alerts: list[dict[str, Any]] = []
    # z_sensor 4.5: level = 4.5 - distance. Hover at 2.00 ± 0.02 m for an hour.
    levels = [1.5] * 5 + [2.0 + (0.02 if i % 2 else -0.02) for i in range(60)] + [1.5] * 10
    for i, level in enumerate(levels):
        t = t0 + 60 * i
        out = p.process(WATER, reading(WATER, "water", 1, i, t=t, value=4.5 - level), t)
        for a in out.alerts:
            contract.validate("alert", a)
        alerts += out.alerts
        contract.validate("observation", out.observation)
    names = [(a["alert"], a["state"]) for a in alerts if a["alert"] != "water_rising_fast"]
    assert names == [("water_warning", "raised"), ("water_warning", "cleared")]
    cleared = next(a for a in alerts if a["state"] == "cleared")
    # cleared only after staying below 2.0 - 0.05 m for hold_s (5 minutes of 1.5 m readings)
    assert cleared["t"] >= "2026-09-21"


def test_water_critical_and_rising_fast() -> None:
    cfg = base_config(
        alerts={
            "water_warning_m": 2.0,
            "water_critical_m": 3.0,
            "hold_s": 60,
            "water_rising_m_per_h": 0.5,
        }
    )
    p = processor(cfg)
    t0 = 1_790_000_000.0
    got = []
    for i in range(50):  # rises 0.05 m a minute = 3 m/h
        t = t0 + 60 * i
        out = p.process(WATER, reading(WATER, "water", 1, i, t=t, value=4.5 - (1.0 + 0.05 * i)), t)
        got += [(a["alert"], a["state"], a["severity"]) for a in out.alerts]
    assert ("water_warning", "raised", "warning") in got
    assert ("water_critical", "raised", "critical") in got
    assert ("water_rising_fast", "raised", "warning") in got
    assert len(got) == 3


def test_pm25_band_change_is_announced_once_after_hold() -> None:
    cfg = base_config(calibration={"fleet_defaults": False}, alerts={"hold_s": 600})
    p = Processor(cfg, (None, None))
    t0 = 1_790_000_000.0
    alerts = []
    values = [5.0] * 10 + [400.0] * 200
    for i, v in enumerate(values):
        t = t0 + 60 * i
        alerts += p.process(AIR, reading(AIR, "air", 1, i, t=t, value=v), t).alerts
    assert alerts, "a band change at a school must raise an alert"
    levels = [a["band"]["level"] for a in alerts]
    assert levels == sorted(levels) and len(levels) == len(set(levels))
    for a in alerts:
        contract.validate("alert", a)
        assert a["alert"] == "pm25_band" and a["state"] == "changed"


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('gateway_id = "gw-a1"\nsite_id = "s-1"\n[upstream]\nprot = 1\n', "upstream.prot"),
        ('gateway_id = "gw-a1"\n', "site_id"),
        ('gateway_id = "GW!"\nsite_id = "s-1"\n', "gateway_id"),
        ('gateway_id = "gw-a1"\nsite_id = "s-1"\n[store]\nmax_bytes = "big"\n', "store.max_bytes"),
        (
            'gateway_id = "gw-a1"\nsite_id = "s-1"\n[upstream]\nhost = "platform.example"\n',
            "upstream.tls",
        ),
        (
            (
                'gateway_id = "gw-a1"\nsite_id = "s-1"\n[[inventory.device]]\n'
                'id = "ce-000000000001"\nkind = "boat"\n'
            ),
            "inventory.device[0].kind",
        ),
        ('gateway_id = "gw-a1"\nsite_id = "s-1"\nsurprise = 1\n', "surprise"),
        (
            'gateway_id = "gw-a1"\nsite_id = "s-1"\n[forward]\nmax_inflight = 0\n',
            "forward.max_inflight",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
    assert key in str(err.value) and str(path) in str(err.value)


def test_unknown_key_error_lists_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('gateway_id = "gw-a1"\nsite_id = "s-1"\n[store]\nmax_bites = 1\n')
    with pytest.raises(ConfigError, match="valid keys in store: path, max_bytes"):
        load_config(path)


def test_example_config_loads_and_hides_secrets() -> None:
    example = Path(__file__).resolve().parents[2] / "edge_gateway" / "examples" / "gateway.toml"
    config = load_config(example)
    assert config.local.password == "change-me"
    assert "change-me" not in repr(config)
    assert len(config.inventory.device) == 2


def test_metrics_render_prometheus_text() -> None:
    text = render(
        {
            "readings_in": 5,
            "queue_depth": 2,
            "oldest_age_s": None,
            "dropped": {"max_bytes": 3},
            "dead_letters_by_reason": {"schema": 1},
        }
    )
    assert "cityedge_gateway_readings_received_total 5" in text
    assert 'cityedge_gateway_dropped_total{reason="max_bytes"} 3' in text
    assert "cityedge_gateway_queue_oldest_age_seconds 0" in text  # an empty queue: no NaN
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), max_size=200))
def test_seen_ranges_behave_like_a_set(seqs: list[int]) -> None:
    ranges, model = SeenRanges(), set()
    for seq in seqs:
        assert (seq in ranges) == (seq in model)
        ranges.add(seq)
        model.add(seq)
    assert all(s in ranges for s in model)
    assert not any(s in ranges for s in range(-2, 305) if s not in model)
    again = SeenRanges(json.loads(ranges.dumps()))
    assert all((s in again) == (s in model) for s in range(-2, 305))
    assert all(ranges.his[i] + 1 < ranges.los[i + 1] for i in range(len(ranges.los) - 1))


def test_seen_ranges_persist_across_reopen_and_prune(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.commit([entry("a", s) for s in (0, 1, 2, 5, 7, 6)])
    store.close()
    again = open_store(tmp_path)
    assert again.is_new([("a", 1, s) for s in range(9)]) == [
        False,
        False,
        False,
        True,
        True,
        False,
        False,
        False,
        True,
    ]
    assert again.prune_seen(time.time() + 10_000) == 1  # beyond the 3600 s horizon
    assert again.is_new([("a", 1, 0)]) == [True]
    again.close()


def test_store_payload_dictionary_is_frozen() -> None:
    # Rows on every gateway's SD card were compressed with these bytes: never edit them.
    assert hashlib.sha256(DICTIONARY_V1).hexdigest() == (
        "561a0cb9a34ce5877f23e91827af4c57aeb0902046c207ee2c3171da99fb9671"
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_stored_payloads_round_trip(payload: bytes) -> None:
    assert decode_payload(encode_payload(payload)) == payload


def test_observations_are_stored_compressed() -> None:
    p = Processor(base_config())
    t0 = 1_790_000_000.0
    payload = p.process(AIR, reading(AIR, "air", 1, 0, t=t0, value=20.0), t0).payload
    assert len(encode_payload(payload)) * 8 < len(payload)


def test_alert_state_survives_a_restart() -> None:
    cfg = base_config(alerts={"water_warning_m": 2.0, "water_critical_m": 3.0, "hold_s": 60})
    t0 = 1_790_000_000.0
    first = processor(cfg)
    raised = first.process(WATER, reading(WATER, "water", 1, 0, t=t0, value=4.5 - 2.2), t0).alerts
    assert [(a["alert"], a["state"]) for a in raised] == [("water_warning", "raised")]
    saved = json.loads(json.dumps(first.alert_state()))
    again = processor(cfg)  # a new process after a power cut
    again.restore_alert_state(saved)
    t1 = t0 + 600
    out = again.process(WATER, reading(WATER, "water", 2, 0, t=t1, value=4.5 - 2.25), t1)
    assert out.alerts == []  # still above the warning: not announced twice
    assert out.observation["derived"]["level_state"]["state"] == "warning"


def test_sd_notify_never_blocks_on_a_reader_that_lags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog ping runs on the event loop: with nobody reading the socket (its queue is
    full after net.unix.max_dgram_qlen datagrams) a ping is dropped, it must not block."""
    import socket

    from edge_gateway import sdnotify

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reader:
        reader.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        t0 = time.monotonic()
        sent = [sdnotify.notify("WATCHDOG=1") for _ in range(200)]
        assert time.monotonic() - t0 < 2.0
        assert sent[0] and not all(sent)
