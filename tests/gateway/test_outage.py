"""Platform broker down for a while under steady load: afterwards every reading has arrived
exactly once, in order per device within the live and the replayed stream, replayed ones marked.
The platform broker runs with persistence, so the QoS 2 state of the messages in flight when it
stopped survives its restart (docs/gateway.md, delivery guarantee)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_gateway import contract
from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import (
    AS_INVOKER,
    FakeNode,
    Platform,
    gateway_config,
    run_async,
    wait_ready,
)

pytestmark = pytest.mark.broker


def check_complete_in_order(obs: list[dict], produced: dict[str, int]) -> tuple[int, int]:
    """Every (device, seq) arrived exactly once; order kept per device within each stream."""
    keys = [(o["device_id"], o["boot"], o["seq"]) for o in obs]
    repeats = len(keys) - len(set(keys))
    assert repeats == 0, f"{repeats} repeats"
    for dev, n in produced.items():
        got = sorted(o["seq"] for o in obs if o["device_id"] == dev)
        assert got == list(range(n)), f"{dev}: missing {sorted(set(range(n)) - set(got))[:10]}"
        for replay in (False, True):
            seqs = [o["seq"] for o in obs if o["device_id"] == dev and o["replay"] is replay]
            assert seqs == sorted(seqs), f"{dev}: replay={replay} stream out of order"
    live = sum(1 for o in obs if not o["replay"])
    return live, len(obs) - live


@run_async
async def test_upstream_outage_under_load_loses_and_duplicates_nothing(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    # Persistence: the platform consumer's queued messages survive the broker's restart.
    upstream = broker_factory("upstream", persistence=True, extra_config=AS_INVOKER)
    config = GatewayConfig.from_dict(
        gateway_config(local, upstream, tmp_path, forward={"drain_rate_per_s": 400.0})
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw)
    platform = await Platform(upstream).start()
    nodes = [await FakeNode(local, f"ce-00000000c00{i}", "air").start() for i in range(3)]

    async def load(seconds: float, rate_per_node: float) -> None:
        for _ in range(int(seconds * rate_per_node)):
            for node in nodes:
                await node.publish(1)
            await asyncio.sleep(1.0 / rate_per_node)

    try:
        await load(1.0, 40)
        upstream.stop()  # the platform goes away for a while; nodes keep sending
        await load(2.5, 40)
        stored_during_outage = gw.stats()["queue_depth"]
        assert stored_during_outage > 0
        for node in nodes:  # custody does not depend on the platform
            await node.wait_acked(10)
        upstream.start()
        await load(1.5, 40)
        produced = {n.device_id: n.next_seq for n in nodes}
        total = sum(produced.values())
        await platform.wait_for(
            lambda: len({(o["device_id"], o["seq"]) for o in platform.observations()}) >= total,
            timeout_s=40,
        )
        await asyncio.sleep(0.5)  # let any duplicate show up
        obs = platform.observations()
        for o in obs[:50]:
            contract.validate("observation", o)
        live, replayed = check_complete_in_order(obs, produced)
        assert replayed >= stored_during_outage - 5
        assert live > 0
        s = gw.stats()
        assert s["dropped_total"] == 0
        assert s["upstream_offline_s"] >= 2.0
        assert s["replayed_out"] == sum(1 for o in obs if o["replay"])
    finally:
        for node in nodes:
            await node.stop()
        await platform.stop()
        gw.request_stop()
        await task


@run_async
async def test_strict_order_when_live_first_is_off(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    upstream = broker_factory("upstream", persistence=True, extra_config=AS_INVOKER)
    platform = await Platform(upstream).start()  # a persistent session, kept across the restart
    upstream.stop()
    config = GatewayConfig.from_dict(
        gateway_config(
            local, upstream, tmp_path, forward={"live_first": False, "drain_rate_per_s": 5.0}
        )
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw, upstream=False)
    node = await FakeNode(local, "ce-00000000c0f0", "parking").start()
    try:
        await node.publish(30)
        await node.wait_acked(10)
        upstream.start()
        await wait_ready(gw)
        await node.publish(10)
        await platform.wait_for(lambda: len(platform.observations()) >= 40, timeout_s=20)
        obs = platform.observations()
        assert [o["seq"] for o in obs] == list(range(40))  # store order, not live first
        assert [o["replay"] for o in obs] == [True] * 30 + [False] * 10
    finally:
        await platform.stop()
        await node.stop()
        gw.request_stop()
        await task
