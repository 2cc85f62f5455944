"""The read API over HTTP, run as `cityedge platform api` with the integrators' read-only login
on a database the sink's Store filled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from calibration.aqi import thai_aqi, thai_aqi_detail
from city_platform.db import Store, connect, partition_time
from host_tools.sim.brokers import free_port, wait_for_port
from host_tools.sim.pgserver import PostgresServer
from tests.platform.conftest import SinkDb
from tests.platform.helpers import iso, observation

END = datetime(2026, 11, 22, 5, 0, tzinfo=UTC).timestamp()
AIR = "ce-0000000000a1"
WATER = "ce-0000000000w1"


def _air_docs() -> tuple[list[dict[str, Any]], list[tuple[float, float, int]]]:
    """26 h of 30-min air readings, one flagged FAIL; and their (t, calibrated pm25, flag)."""
    docs: list[dict[str, Any]] = []
    air: list[tuple[float, float, int]] = []
    for n in range(53):
        t = END - (52 - n) * 1800
        o = observation(
            "rayong-school-01", "gw-rayong-school-01", AIR, 3, n, t, pm25_cf1=20.0 + (n * 7) % 41
        )
        flag = 4 if n == 50 else 1
        if flag == 4:
            o["calibrated"]["pm25"]["v"] = 900.0
        o["quality"]["pm25"] = flag
        o.pop("settles", None)
        o["derived"] = {"thai_aqi": {"value": 1, "level": 1, "colour": "blue"}}  # not used
        docs.append(o)
        air.append((t, o["calibrated"]["pm25"]["v"], flag))
    return docs, air


def _water_and_parking_docs() -> list[dict[str, Any]]:
    docs = []
    for n in range(4):
        t = END - (3 - n) * 600
        w = observation("khonkaen-canal-02", "gw-khonkaen-canal-02", WATER, 1, n, t)
        w.pop("settles", None)
        w.update(
            kind="water",
            raw={"distance": {"v": 0.9 - 0.01 * n, "u": "m"}},
            calibrated={
                "level": {
                    "v": round(1.6 + 0.01 * n, 3),
                    "u": "m",
                    "calibration_id": "stage-kk-02",
                    "datum": "MSL",
                }
            },
            quality={"level": 1},
            quality_tests={},
            derived={"level_state": {"state": "normal", "warning_m": 1.8, "critical_m": 2.2}},
        )
        w["location"]["name"] = "Khon Kaen canal 2"
        docs.append(w)
    p = observation("bangsaen-park-01", "gw-bangsaen-park-01", "ce-0000000000p1", 1, 0, END)
    p.pop("settles", None)
    p.update(
        kind="parking",
        raw={"occupied": {"v": True, "u": "/"}},
        calibrated={"occupied": {"v": True, "u": "/", "calibration_id": "none"}},
        quality={"occupied": 1},
        quality_tests={},
        derived={"status": "occupied"},
    )
    docs.append(p)
    return docs


def _fill(db: SinkDb) -> list[tuple[float, float, int]]:
    """26 h of 30-min air readings (one flagged FAIL), a water node, a parking node.
    Returns the air node's (t, calibrated pm25, flag)."""
    air_docs, air = _air_docs()
    docs = [("observation", d) for d in air_docs + _water_and_parking_docs()]
    with connect(db.writer_url) as conn:
        store = Store(conn)
        for table, doc in docs:
            when = partition_time(table, doc)
            assert when is not None
            store.ensure_partition(table, when)
        with conn.transaction():
            for table, doc in docs:
                assert store.write(table, doc)
            store.flush_latest()
    return air


@pytest.fixture(scope="module")
def api(pg_server: PostgresServer) -> Iterator[tuple[str, list[tuple[float, float, int]]]]:
    db = SinkDb(pg_server, f"api{os.getpid()}")
    air = _fill(db)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "city_platform", "api", "--db", db.reader_url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 30), "the API did not start"
        yield f"http://127.0.0.1:{port}", air
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


def get(base: str, path: str, **params: Any) -> tuple[int, Any]:
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_air4thai_document_has_the_thai_aqi_of_the_24h_mean(api: tuple[str, Any]) -> None:
    base, air = api
    status, doc = get(base, "/air4thai/stations")
    assert status == 200
    station = next(s for s in doc["stations"] if s["stationID"] == AIR)
    window = [v for t, v, flag in air if END - 86400 < t <= END and flag not in (4, 9)]
    mean = sum(window) / len(window)
    want = thai_aqi_detail("pm25", mean)
    pm = station["AQILast"]["PM25"]
    assert pm["aqi"] == str(thai_aqi("pm25", mean)) == str(want.aqi)
    assert pm["color_id"] == str(want.band.level)
    assert pm["value"] == f"{want.concentration:.1f}"
    assert station["AQILast"]["date"] == "2026-11-22" and station["AQILast"]["time"] == "12:00"
    assert station["lat"] == "12.68" and station["long"] == "101.27"
    assert all(s["stationID"] != WATER for s in doc["stations"])


def test_latest_and_series_with_the_water_standards_parameters(api: tuple[str, Any]) -> None:
    base, air = api
    status, doc = get(base, "/api/v1/latest", kind="air")
    assert status == 200 and [d["device_id"] for d in doc["devices"]] == [AIR]
    assert doc["devices"][0]["seq"] == 52
    status, entity = get(base, f"/api/v1/devices/{AIR}/latest", format="ngsi-ld")
    assert status == 200, entity
    assert entity["type"] == "AirQualityObserved"
    assert entity["pm25"]["calibrationId"]["value"] == "test-linear-2026"
    status, pack = get(base, f"/api/v1/devices/{AIR}/latest", format="senml")
    assert status == 200, pack
    assert pack[0]["bn"] == f"{AIR}:"

    start = iso(END - 6 * 3600 + 1)
    end = iso(END)
    status, s = get(
        base,
        f"/api/v1/devices/{AIR}/series",
        quantity="pm25",
        interval="raw",
        latest="false",
        startDatetime=start,
        endDatetime=end,
    )
    assert status == 200
    assert [p["seq"] for p in s["data"]] == list(range(41, 53))
    assert s["data"][0]["calibration_id"] == "test-linear-2026"
    status, s = get(
        base,
        f"/api/v1/devices/{AIR}/series",
        quantity="pm25",
        interval="1h",
        latest="false",
        startDatetime="2026-11-22T09:00:00+07:00",
        endDatetime="2026-11-22T12:00:00+07:00",
    )
    hours = {p["datetime"]: p for p in s["data"]}
    by_hour: dict[str, list[float]] = {}
    for t, v, flag in air:
        when = datetime.fromtimestamp(t, UTC)
        if END - 3 * 3600 <= t <= END and flag != 4:
            key = when.replace(minute=0).isoformat().replace("+00:00", "Z")
            by_hour.setdefault(key, []).append(v)
    assert set(hours) == set(by_hour)
    for key, values in by_hour.items():
        assert hours[key]["value"] == pytest.approx(sum(values) / len(values), abs=1e-4)
        assert hours[key]["count"] == len(values)
    status, s = get(
        base, f"/api/v1/devices/{AIR}/series", quantity="pm25", interval="1h", latest="true"
    )
    assert [p["seq"] for p in s["data"]] == [52]
    status, err = get(base, f"/api/v1/devices/{AIR}/series", quantity="pm25", interval="weekly")
    assert status == 400 and "interval" in err["error"]
    status, err = get(
        base, f"/api/v1/devices/{AIR}/series", quantity="pm25", interval="1h", latest="false"
    )
    assert status == 400 and "startDatetime" in err["error"]
    assert get(base, "/api/v1/devices/ce-nothing/latest")[0] == 404


def test_water_stations_and_levels(api: tuple[str, Any]) -> None:
    base, _ = api
    status, doc = get(base, "/water/StationInfo")
    assert status == 200, doc
    assert doc["result"] == "OK"
    assert doc["data"] == [
        {
            "station_id": WATER,
            "station_name": "Khon Kaen canal 2",
            "site_id": "khonkaen-canal-02",
            "lat": 12.68,
            "long": 101.27,
            "datum": "MSL",
            "warning_level": 1.8,
            "critical_level": 2.2,
        }
    ]
    status, doc = get(
        base,
        "/water/WaterLevel",
        station_id=WATER,
        interval="raw",
        latest="false",
        startDatetime=iso(END - 3600),
        endDatetime=iso(END),
    )
    assert [p["water_level"] for p in doc["data"]] == [1.6, 1.61, 1.62, 1.63]
    assert {p["calibration_id"] for p in doc["data"]} == {"stage-kk-02"}
    status, doc = get(base, "/water/WaterLevel", station_id=WATER, interval="1d", latest="true")
    assert status == 200, doc
    assert [p["water_level"] for p in doc["data"]] == [1.63]


def test_sensorthings_reads(api: tuple[str, Any]) -> None:
    base, _ = api
    status, things = get(base, "/sta/v1.1/Things")
    assert status == 200, things
    assert {t["@iot.id"] for t in things["value"]} == {AIR, WATER, "ce-0000000000p1"}
    status, ds = get(base, f"/sta/v1.1/Things('{AIR}')/Datastreams")
    assert status == 200, ds
    ids = {d["@iot.id"] for d in ds["value"]}
    assert f"{AIR}:pm25" in ids and f"{AIR}:raw:pm25_cf1" in ids
    status, obs = get(base, f"/sta/v1.1/Datastreams('{AIR}:pm25')/Observations", **{"$top": "3"})
    assert status == 200, obs
    assert len(obs["value"]) == 3
    first = obs["value"][0]
    assert first["parameters"]["calibration_id"] == "test-linear-2026"
    assert first["parameters"]["seq"] == 52 and first["resultQuality"]["qartod"] == 1
    assert first["phenomenonTime"] == "2026-11-22T05:00:00.000000Z"
