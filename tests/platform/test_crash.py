"""Consumers SIGKILLed every few seconds under load: 0 readings lost, 0 duplicated, per-device
order reconstructable by (boot, seq) and sample time."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from tests.platform.conftest import SinkDb, children
from tests.platform.helpers import Publisher, observation, wait_until

pytestmark = [pytest.mark.broker]


class Killer:
    """SIGKILLs one of the sink's consumers every ``every_s`` (±40 %), in a thread."""

    def __init__(self, sink_pid: int, every_s: float) -> None:
        self.kills: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sink_pid, every_s), daemon=True)

    def _run(self, sink_pid: int, every_s: float) -> None:
        rng = random.Random(15)
        while not self._stop.wait(every_s * rng.uniform(0.6, 1.4)):
            pids = children(sink_pid)
            if pids:
                pid = rng.choice(pids)
                os.kill(pid, signal.SIGKILL)
                self.kills.append(pid)

    def start(self) -> Killer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _load(
    pubs: list[Publisher], duration_s: float, rate_per_s: float, devices: int
) -> dict[str, int]:
    """Devices spread over the two brokers (two districts); each device's readings in order.
    Returns how many each device sent."""
    t0 = time.time() - 86400
    sent: dict[str, int] = {}
    per_tick = max(1, int(rate_per_s / 10))
    start = time.monotonic()
    seq = 0
    while time.monotonic() - start < duration_s:
        tick = time.monotonic()
        for _ in range(per_tick):
            d = seq % devices
            device = f"ce-{d:012x}"
            site = f"site-{d % 2}-load"
            n = sent.get(device, 0)
            obs = observation(site, f"gw-{site}", device, 2, n, t0 + 30 * n, pm25_cf1=float(n % 97))
            pubs[d % 2].send(contract.observation_topic(site, "air", device), obs)
            sent[device] = n + 1
            seq += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    for p in pubs:
        p.flush(120)
    return sent


def _wait_stored(sink_db: SinkDb, sent: dict[str, int]) -> None:
    total = sum(sent.values())
    stored = wait_until(
        lambda: sink_db.query("SELECT count(*) FROM cityedge.observation")[0][0] >= total, 120
    )
    if not stored:
        have = {
            (str(d), int(s))
            for d, s in sink_db.query("SELECT device_id, seq FROM cityedge.observation")
        }
        missing = sorted({(d, s) for d, n in sent.items() for s in range(n)} - have)
        raise AssertionError(f"{len(have)} of {total} stored; missing {missing[:20]}")


def _check_once_in_order_settled(sink_db: SinkDb, sent: dict[str, int]) -> None:
    total = sum(sent.values())
    rows = sink_db.query(
        "SELECT device_id, boot, seq, extract(epoch FROM t), quality_settled "
        "FROM cityedge.observation ORDER BY device_id, boot, seq"
    )
    assert len(rows) == total, f"{len(rows)} rows for {total} readings sent"
    keys = {(r[0], r[1], r[2]) for r in rows}
    assert len(keys) == len(rows), "a reading was stored twice"
    by_device: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_device.setdefault(str(r[0]), []).append(r)
    assert set(by_device) == set(sent)
    for device, rs in by_device.items():
        assert [r[2] for r in rs] == list(range(sent[device])), f"{device}: a reading is missing"
        times = [float(r[3]) for r in rs]
        assert times == sorted(times), f"{device}: (boot, seq) order and sample time disagree"
        # The final QC flags of every reading but the last reached it, in whatever order the
        # redeliveries came.
        assert all(r[4] for r in rs[:-1]), f"{device}: a settle was lost"
    latest = dict(sink_db.query("SELECT device_id, seq FROM cityedge.device_latest"))
    assert latest == {d: n - 1 for d, n in sent.items()}


def _run(
    brokers: list[MosquittoBroker],
    sink_db: SinkDb,
    sink_process: Callable[..., Any],
    *,
    duration_s: float,
    rate_per_s: float,
    kill_every_s: float,
    devices: int,
) -> None:
    sink = sink_process(
        [b.address for b in brokers], sink_db.writer_url, consumers=3, batch_max="50"
    )
    pubs = [Publisher(b.host, b.port, f"gw-load-{i}") for i, b in enumerate(brokers)]
    killer = Killer(sink.pid, kill_every_s).start()
    try:
        sent = _load(pubs, duration_s, rate_per_s, devices)
        _wait_stored(sink_db, sent)
    finally:
        killer.stop()
        for p in pubs:
            p.close()
    time.sleep(1.0)
    kills = killer.kills
    assert len(kills) >= max(3, int(duration_s / kill_every_s) - 3), kills
    _check_once_in_order_settled(sink_db, sent)
    total = sum(sent.values())
    print(f"\ncrash test: {total} readings, {len(kills)} consumers SIGKILLed, 0 lost, 0 duplicated")


def test_consumers_killed_every_few_seconds_lose_and_duplicate_nothing(
    broker_factory: Callable[..., MosquittoBroker],
    sink_db: SinkDb,
    sink_process: Callable[..., Any],
) -> None:
    brokers = [broker_factory("district-a"), broker_factory("district-b")]
    _run(
        brokers, sink_db, sink_process, duration_s=18, rate_per_s=200, kill_every_s=2.5, devices=12
    )


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("duration_s", [int(os.environ.get("CITYEDGE_SOAK_S", "240"))])
def test_soak_consumers_killed_for_minutes(
    broker_factory: Callable[..., MosquittoBroker],
    sink_db: SinkDb,
    sink_process: Callable[..., Any],
    duration_s: int,
) -> None:
    brokers = [broker_factory("district-a"), broker_factory("district-b")]
    _run(
        brokers,
        sink_db,
        sink_process,
        duration_s=duration_s,
        rate_per_s=300,
        kill_every_s=4,
        devices=40,
    )
