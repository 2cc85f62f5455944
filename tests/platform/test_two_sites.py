"""Two sites, two gateways (run as processes), two platform brokers, one sink: every reading
lands in PostgreSQL once, and its calibrated value re-derives from raw + the record id.

The gateways are fed by a publisher that speaks the node's contract (real `reading` payloads
on `cityedge/v1/node/{device_id}/reading`, QoS 1, with retransmissions as a node makes after a
lost custody acknowledgement) instead of MicroPython nodes, to stay within the test budget; the
firmware → gateway leg is covered by tests/e2e/test_walking_skeleton.py.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from calibration.records import Registry
from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from tests.platform.conftest import SinkDb
from tests.platform.helpers import Publisher, wait_until
from tests.support.calibrated_gateway import (
    linear_pm25_record,
    start_gateway_process,
    write_gateway_toml,
)

pytestmark = [pytest.mark.broker]

RECORDS = linear_pm25_record("city-fleet-linear-2026", "*", "platform test", 0.613, 1.27)


def gateway_config(
    tmp: Path, site: str, local: MosquittoBroker, up: MosquittoBroker, records: Path
) -> Path:
    return write_gateway_toml(
        tmp / f"{site}.toml",
        gateway_id=f"gw-{site}",
        site_id=site,
        data_dir=tmp / site,
        location=(18.79, 98.98, f"{site} test school"),
        local=local,
        upstream=up,
        records=records,
    )


@pytest.fixture
def gateways() -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        proc = start_gateway_process(config)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


PROBES = ("ce-0000000000c1", "ce-0000000000c2")


def reading(device: str, boot: int, seq: int, t: float, cf1: float) -> dict[str, Any]:
    r = copy.deepcopy(contract.example("reading"))
    r.update(device_id=device, boot=boot, seq=seq, t=t)
    r["raw"]["pm25_cf1"]["v"] = cf1
    r["raw"]["pm25_atm"]["v"] = round(cf1 * 0.9, 1)
    contract.validate("reading", r)
    return r


def _count(sink_db: SinkDb, sql: str, params: tuple[object, ...] = ()) -> Any:
    return sink_db.query(sql, params)[0][0]


def _wait_path_up(sink_db: SinkDb, nodes: list[Publisher], now: float) -> None:
    """Like a node, resend a first reading until it is stored: then the gateway is
    subscribed on its site broker and the whole path is up."""
    for i, n in enumerate(nodes):
        probe = PROBES[i]

        def arrived(probe: str = probe) -> bool:
            return bool(
                _count(
                    sink_db,
                    "SELECT count(*) FROM cityedge.observation WHERE device_id = %s",
                    (probe,),
                )
            )

        deadline = time.monotonic() + 60
        while not arrived():
            assert time.monotonic() < deadline, "the path site -> gateway -> sink never came up"
            n.send(
                contract.node_topic(probe, "reading"),
                reading(probe, 1, 0, now - 3600, 12.0),
                qos=1,
            )
            n.flush()
            wait_until(arrived, 1.0, 0.1)


def _send_readings(
    nodes: list[Publisher], devices: dict[int, list[str]], per_device: int, now: float
) -> None:
    for seq in range(per_device):
        for i, devs in devices.items():
            for d in devs:
                r = reading(d, 4, seq, now - 60 * (per_device - seq), 10.0 + 3 * seq)
                nodes[i].send(contract.node_topic(d, "reading"), r, qos=1)
                if seq % 5 == 2:  # a node's retransmission after a lost custody ack
                    nodes[i].send(contract.node_topic(d, "reading"), r, qos=1)
        time.sleep(0.05)
    for n in nodes:
        n.flush()


def _check_landed_once_and_rederive(
    sink_db: SinkDb,
    registry: Registry,
    sites: list[str],
    devices: dict[int, list[str]],
    per_device: int,
    want: int,
) -> None:
    rows = sink_db.query(
        "SELECT site_id, device_id, boot, seq, extract(epoch FROM t), raw, calibrated "
        "FROM cityedge.observation ORDER BY device_id, boot, seq"
    )
    assert len(rows) == want
    assert len({(r[1], r[2], r[3]) for r in rows}) == want
    assert sorted(r[1] for r in rows if r[1] in PROBES) == sorted(PROBES)  # each probe once
    for site_index, devs in devices.items():
        for d in devs:
            mine = [r for r in rows if r[1] == d]
            assert [r[3] for r in mine] == list(range(per_device)), d
            assert {r[0] for r in mine} == {sites[site_index]}
    for r in rows:
        raw, cal = r[5], r[6]["pm25"]
        when = datetime.fromtimestamp(float(r[4]), UTC)
        record = registry.get(cal["calibration_id"])
        assert record is not None and registry.find(r[1], "pm25", when) == record
        assert cal["v"] == round(record.apply({"pm25_cf1": raw["pm25_cf1"]["v"]}), 4)
        assert cal["v"] == pytest.approx(0.613 * raw["pm25_cf1"]["v"] + 1.27, abs=1e-4)
    assert {r[0] for r in sink_db.query("SELECT site_id FROM cityedge.gateway_health")} == set(
        sites
    )


def test_readings_from_two_sites_land_once_and_rederive(
    tmp_path: Path,
    broker_factory: Callable[..., MosquittoBroker],
    sink_db: SinkDb,
    sink_process: Callable[..., Any],
    gateways: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    records = tmp_path / "calibration.toml"
    records.write_text(RECORDS)
    registry = Registry.load(records)
    sites = ["chiangmai-school-01", "chiangmai-school-02"]
    local = [broker_factory(f"site{i}") for i in range(2)]
    platform = [broker_factory(f"district{i}", persistence=True) for i in range(2)]
    sink_process([b.address for b in platform], sink_db.writer_url, consumers=2)
    for i, site in enumerate(sites):
        gateways(gateway_config(tmp_path, site, local[i], platform[i], records))

    per_device = 15
    devices = {0: ["ce-0000000000a1", "ce-0000000000a2"], 1: ["ce-0000000000b1", "ce-0000000000b2"]}
    nodes = [Publisher(b.host, b.port, f"nodes-{i}") for i, b in enumerate(local)]
    now = time.time()
    try:
        _wait_path_up(sink_db, nodes, now)
        _send_readings(nodes, devices, per_device, now)
        want = per_device * 4 + len(PROBES)
        assert wait_until(
            lambda: _count(sink_db, "SELECT count(*) FROM cityedge.observation") >= want, 90
        ), sink_db.query("SELECT count(*) FROM cityedge.observation")
        assert wait_until(
            lambda: (
                _count(sink_db, "SELECT count(DISTINCT gateway_id) FROM cityedge.gateway_health")
                == 2
            ),
            30,
        )
        time.sleep(1.5)
    finally:
        for n in nodes:
            n.close()
    _check_landed_once_and_rederive(sink_db, registry, sites, devices, per_device, want)


def _check_rows(sink_db: SinkDb, registry: Registry) -> list[tuple[Any, ...]]:
    rows = sink_db.query(
        "SELECT site_id, device_id, boot, seq, extract(epoch FROM t), raw, calibrated "
        "FROM cityedge.observation ORDER BY device_id, boot, seq"
    )
    assert len({(r[1], r[2], r[3]) for r in rows}) == len(rows)
    for r in rows:
        cal = r[6]["pm25"]
        record = registry.get(cal["calibration_id"])
        assert record is not None
        assert registry.find(r[1], "pm25", datetime.fromtimestamp(float(r[4]), UTC)) == record
        assert cal["v"] == round(record.apply({"pm25_cf1": r[5]["pm25_cf1"]["v"]}), 4)
    return rows


def _integrators(platform: list[MosquittoBroker], seen: set[tuple[str, int, int]]) -> list[Any]:
    """An integrator subscribed on each platform broker, adding each observation's key to
    ``seen``."""
    import json as _json
    import threading

    import paho.mqtt.client as mqtt

    lock = threading.Lock()
    watchers = []
    for i, b in enumerate(platform):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{i}")

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            o = _json.loads(msg.payload)
            with lock:
                seen.add((o["device_id"], o["boot"], o["seq"]))

        c.on_message = on_message
        c.on_connect = lambda c_, u, f, rc, p: c_.subscribe("cityedge/v1/site/+/+/+/observation", 2)
        c.connect(b.host, b.port)
        c.loop_start()
        watchers.append(c)
    return watchers


@pytest.mark.soak
@pytest.mark.micropython
@pytest.mark.timeout(600)
def test_micropython_nodes_through_two_gateways_land_once(
    tmp_path: Path,
    broker_factory: Callable[..., MosquittoBroker],
    sink_db: SinkDb,
    sink_process: Callable[..., Any],
    gateways: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    """The same with the real firmware under the MicroPython unix port, one air node per site
    (slower: a soak test). The sink's rows equal what an integrator subscribed on both platform
    brokers received."""
    from host_tools.sim.simnode import SimNode

    records = tmp_path / "calibration.toml"
    records.write_text(RECORDS)
    registry = Registry.load(records)
    sites = ["chiangmai-school-01", "chiangmai-school-02"]
    local = [broker_factory(f"site{i}") for i in range(2)]
    platform = [broker_factory(f"district{i}") for i in range(2)]
    sink_process([b.address for b in platform], sink_db.writer_url, consumers=2)
    seen: set[tuple[str, int, int]] = set()
    watchers = _integrators(platform, seen)
    for i, site in enumerate(sites):
        gateways(gateway_config(tmp_path, site, local[i], platform[i], records))
    nodes = [
        SimNode(
            "air",
            broker=local[i].address,
            speed=30,
            seed=100 + i,
            flash_dir=tmp_path / f"node{i}",
            site_id=site,
        )
        for i, site in enumerate(sites)
    ]
    try:
        for n in nodes:
            n.start()
        assert wait_until(
            lambda: (
                min(
                    sink_db.query(
                        "SELECT count(*) FROM cityedge.observation WHERE device_id = %s",
                        (n.device_id,),
                    )[0][0]
                    for n in nodes
                )
                >= 6
            ),
            240,
        ), "\n".join(nodes[0].log[-20:])
    finally:
        for n in nodes:
            n.stop()
    time.sleep(5.0)
    for c in watchers:
        c.loop_stop()
        c.disconnect()
    rows = _check_rows(sink_db, registry)
    assert {(str(r[1]), int(r[2]), int(r[3])) for r in rows} == seen
    assert {r[0] for r in rows} == set(sites)
