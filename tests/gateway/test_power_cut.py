"""A power cut of the Pi: the gateway process and the site broker SIGKILLed together, at random
moments under load, again and again. The site broker runs with the generated site settings
(persistence, autosave on changes), so each cut loses what it had queued since its last save;
the nodes send those readings again when they rewind their outbox. Nothing is lost, nothing
reaches the platform twice, and per device the observations arrive in ``(boot, seq)`` order
within the live and the replayed stream — except readings the gateway gave up waiting for,
which say ``"late": true`` (edge_gateway/order.py)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_gateway.order import HOLD_S
from edge_gateway.store import Entry, Limits, Store
from host_tools.field.broker_auth import SITE_AUTOSAVE_CHANGES
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import AS_INVOKER, Platform, gateway_config, run_async
from tests.gateway.rig import (
    GatewayProcess,
    Load,
    assert_none_lost,
    start_nodes,
    stop_all,
    wait_all_forwarded,
)

pytestmark = pytest.mark.broker

CUTS = 10
SITE_PERSISTENCE = ["autosave_on_changes true", f"autosave_interval {SITE_AUTOSAVE_CHANGES}"]


def order_violations(obs: list[dict[str, Any]]) -> tuple[int, int]:
    """(unmarked violations, late ones): per device and stream (live / replayed), an
    observation behind one that arrived before it is a violation unless it says late."""
    bad = late = 0
    last: dict[tuple[str, bool], tuple[int, int]] = {}
    for o in obs:
        stream = (o["device_id"], bool(o["replay"]))
        key = (o["boot"], o["seq"])
        if o.get("late"):
            late += 1
            continue
        if stream in last and key < last[stream]:
            bad += 1
        last[stream] = max(key, last.get(stream, key))
    return bad, late


@run_async
async def test_power_cuts_keep_each_devices_order(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local", persistence=True, extra_config=AS_INVOKER + SITE_PERSISTENCE)
    upstream = broker_factory("upstream", persistence=True, extra_config=AS_INVOKER)
    gwp = GatewayProcess(tmp_path, gateway_config(local, upstream, tmp_path))
    rng = random.Random(20261203)
    platform = await Platform(upstream).start()
    nodes = await start_nodes(local, [f"ce-00000000c0{i:02x}" for i in range(5)], "air", 2.0)
    gwp.start()
    await nodes[0].publish(1)
    await nodes[0].wait_acked(20)

    async def four_each() -> None:  # ~200 readings/s in all
        await asyncio.gather(*(node.publish(4) for node in nodes), asyncio.sleep(0.1))

    loader = Load(four_each).start()
    try:
        for _ in range(CUTS):
            await asyncio.sleep(rng.uniform(0.7, 1.5))
            gwp.proc.send_signal(signal.SIGKILL)  # the power goes: both at once
            local.stop(kill=True)
            gwp.proc.wait(timeout=10)
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            local.start()  # the power comes back: the broker first, as systemd orders them
            gwp.start()
        await asyncio.sleep(2.0)
        await loader.stop()
        produced = await wait_all_forwarded(nodes, platform, 60, 90)
        await asyncio.sleep(0.5)
        obs = platform.observations()
        keys = Counter((o["device_id"], o["boot"], o["seq"]) for o in obs)
        assert_none_lost(keys, produced)
        assert max(keys.values()) == 1, [k for k, c in keys.items() if c > 1][:10]
        bad, late = order_violations(obs)
        print(
            f"{CUTS} power cuts, {sum(produced.values())} readings: {bad} order violations, {late} late"
        )
        assert bad == 0
        assert gwp.proc.poll() is None
    finally:
        loader.cancel()
        await stop_all(nodes, platform)
        gwp.stop()


def test_store_holds_a_gap_then_releases_in_order_or_marks_late(tmp_path: Path) -> None:
    dev = "ce-0000000c0c01"

    def entry(seq: int, boot: int = 1) -> Entry:
        body = json.dumps(
            {"device_id": dev, "boot": boot, "seq": seq, "replay": False}, separators=(",", ":")
        ).encode()
        return Entry(f"t/{dev}", body, 1000.0, 0, (dev, boot, seq))

    store = Store(tmp_path / "s.sqlite", Limits(1 << 30, 1e9, 0, 1e9))
    store.open()
    t0 = 1000.0
    store.commit([entry(0), entry(1), entry(3), entry(4)], now=t0)
    assert store.depth == 4
    assert [json.loads(r.payload)["seq"] for r in store.fetch(0, 100)] == [0, 1]  # 3, 4 held
    store.commit([entry(2)], now=t0 + 1)
    rows = store.fetch(0, 100)
    assert [json.loads(r.payload)["seq"] for r in rows] == [0, 1, 2, 3, 4]
    # A gap nobody fills: released after HOLD_S; what fills it afterwards is late.
    store.commit([entry(7)], now=t0 + 2)
    assert store.release_expired(t0 + 2 + HOLD_S - 1) == 0
    store.close()
    store.open()  # the held row and the frontier survive a restart
    assert store.release_expired(t0 + 2 + HOLD_S) == 1
    store.commit([entry(5), entry(8), entry(0, boot=2)], now=t0 + 100)
    got = [json.loads(r.payload) for r in store.fetch(rows[-1].id, 100)]
    assert [(o["boot"], o["seq"], o.get("late", False)) for o in got] == [
        (1, 7, False),
        (1, 5, True),
        (1, 8, False),
        (2, 0, False),
    ]
    assert store.counters["late"] == 1
    store.close()
