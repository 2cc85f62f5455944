"""The gateway process killed with SIGKILL at random moments under load and restarted: nothing a
node got custody for is lost, nothing reaches the platform twice (QoS 2 with the packet ids kept
in the store: edge_gateway/flight.py), and per device the live and the replayed stream each
arrive in sample order."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from edge_gateway import contract
from edge_gateway.app import Gateway, _limits
from edge_gateway.config import GatewayConfig
from edge_gateway.flight import wire_payload
from edge_gateway.qos2link import Qos2Link
from edge_gateway.store import Entry, Store
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import Platform, gateway_config, run_async, wait_ready
from tests.gateway.rig import (
    GatewayProcess,
    Load,
    assert_none_lost,
    one_each,
    start_nodes,
    stop_all,
    wait_all_forwarded,
)
from tests.gateway.rig import start_gateway as start_gateway  # re-exported: other tests import it
from tests.gateway.rig import write_toml as write_toml

pytestmark = pytest.mark.broker

KILLS = 5


@run_async
async def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    upstream = broker_factory("upstream")
    gwp = GatewayProcess(tmp_path, gateway_config(local, upstream, tmp_path))
    rng = random.Random(20261122)
    platform = await Platform(upstream).start()
    nodes = await start_nodes(local, [f"ce-00000000d00{i}" for i in range(3)], "water", 1.5)
    proc = gwp.start().proc
    # Custody for a first reading: the gateway's session on the site broker exists from here on
    # (a reading published before it ever subscribed reaches it only as the node's resend).
    await nodes[0].publish(1)
    await nodes[0].wait_acked(20)
    loader = Load(one_each(nodes, 0.01)).start()  # ~300 readings/s in all
    try:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.8, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            proc = gwp.start().proc
        await asyncio.sleep(1.5)
        await loader.stop()
        produced = await wait_all_forwarded(nodes, platform, 30, 40)
        await asyncio.sleep(0.5)
        _check_once_and_in_order(platform, upstream, produced)
    finally:
        loader.cancel()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        await stop_all(nodes, platform)
    assert proc.returncode == 0, gwp.log_tail()


def _check_once_and_in_order(
    platform: Platform, upstream: MosquittoBroker, produced: dict[str, int]
) -> None:
    """None lost, none twice, each device's live and replayed stream in order, no packet id
    reused with other bytes, the last will sent."""
    total = sum(produced.values())
    obs = platform.observations()
    keys = Counter((o["device_id"], o["boot"], o["seq"]) for o in obs)
    assert_none_lost(keys, produced)
    dups = sum(c - 1 for c in keys.values())
    assert dups == 0, f"{dups} duplicates: {[k for k, c in keys.items() if c > 1][:10]}"
    for dev in produced:
        for replay in (False, True):
            seqs = [o["seq"] for o in obs if o["device_id"] == dev and o["replay"] is replay]
            assert seqs == sorted(seqs), f"{dev}: replay={replay} stream out of order"
    # Every resend after a kill was byte-identical to the first PUBLISH of that packet id.
    assert "Reused message ID" not in upstream.log_path.read_text(errors="replace")
    for o in obs[:20]:
        contract.validate("observation", o)
    healths = [b for t, b in platform.messages if t.endswith("/health")]
    assert any(h["state"] == "offline" for h in healths), "no last will after a SIGKILL"
    replayed = sum(1 for o in obs if o["replay"])
    print(
        f"crash test: {total} readings, {KILLS} kills, {dups} upstream duplicates, "
        f"{replayed} replayed, order kept"
    )


@run_async
async def test_rows_left_at_each_step_of_the_qos2_handshake_are_delivered_once(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    """The states a crash can leave, set up exactly: the store as the dead gateway left it, the
    platform broker's session as the dead connection left it. The restarted gateway finishes
    each row, and the platform gets every observation once."""
    local = broker_factory("local")
    upstream = broker_factory("upstream")
    platform = await Platform(upstream).start()
    config = GatewayConfig.from_dict(gateway_config(local, upstream, tmp_path))
    dev = "ce-00000000e001"
    topic = contract.observation_topic(config.site_id, "air", dev)

    def payload(seq: int) -> bytes:
        return json.dumps(
            {"device_id": dev, "boot": 1, "seq": seq, "replay": False}, separators=(",", ":")
        ).encode()

    _store_as_the_dead_gateway_left_it(config, dev, topic, payload)
    await _session_as_the_dead_connection_left_it(upstream, config, topic, payload)
    await platform.wait_for(lambda: len(platform.observations()) == 1, timeout_s=5)

    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    try:
        await wait_ready(gw)
        await platform.wait_for(lambda: len(platform.observations()) >= 5, timeout_s=15)
        async with asyncio.timeout(10):
            while gw.stats()["queue_depth"]:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let any duplicate show up
        obs = platform.observations()
        assert sorted(o["seq"] for o in obs) == [0, 1, 2, 3, 4]
        assert [o["replay"] for o in sorted(obs, key=lambda o: o["seq"])] == [
            False,
            True,
            False,
            False,
            True,
        ]  # seq 4 was stored before this connection began
        assert "Reused message ID" not in upstream.log_path.read_text(errors="replace")
    finally:
        gw.request_stop()
        await task
        await platform.stop()


def _store_as_the_dead_gateway_left_it(
    config: GatewayConfig, dev: str, topic: str, payload: Callable[[int], bytes]
) -> None:
    store = Store(config.store_path, _limits(config))
    store.open()
    store.commit([Entry(topic, payload(seq), time.time(), key=(dev, 1, seq)) for seq in range(5)])
    ids = [row.id for row in store.fetch(0, 10)]
    # seq 0: PUBLISHed, the broker sent PUBREC, the gateway died before committing "released".
    # seq 1: sent as backlog (replay), PUBREC committed as released, died before the PUBREL.
    # seq 2: released, PUBREL sent and PUBCOMP received, died before the (lazy) delete.
    # seq 3: packet id committed, died before the PUBLISH left.   seq 4: never sent.
    store.flight_commit(
        [(ids[0], 1, False), (ids[1], 2, True), (ids[2], 3, False), (ids[3], 4, False)]
    )
    store.flight_commit(released=[ids[1], ids[2]])
    store.close()


async def _session_as_the_dead_connection_left_it(
    upstream: MosquittoBroker, config: GatewayConfig, topic: str, payload: Callable[[int], bytes]
) -> None:
    recs: set[int] = set()
    comps: set[int] = set()
    dead = aiomqtt.Client(
        upstream.host,
        upstream.port,
        identifier=f"cityedge-{config.gateway_id}-up",
        clean_session=False,
        timeout=5,
    )
    link = Qos2Link(dead, recs.add, comps.add)
    async with dead:
        for seq, mid, replay in ((0, 1, False), (1, 2, True), (2, 3, False)):
            link.publish(mid, topic, wire_payload(payload(seq), replay), dup=False)
        async with asyncio.timeout(5):
            while recs != {1, 2, 3}:
                await asyncio.sleep(0.01)
        link.pubrel(3)
        async with asyncio.timeout(5):
            while comps != {3}:
                await asyncio.sleep(0.01)


@run_async
async def test_a_platform_broker_that_lost_the_session_is_reported(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows the broker had acknowledged (released) cannot be checked once the broker has lost the
    gateway's session (restarted without persistence): the gateway says so, and counts it."""
    local = broker_factory("local")
    upstream = broker_factory("upstream")  # fresh: no session for the gateway
    platform = await Platform(upstream).start()
    config = GatewayConfig.from_dict(gateway_config(local, upstream, tmp_path))
    dev = "ce-00000000e002"
    topic = contract.observation_topic(config.site_id, "air", dev)
    store = Store(config.store_path, _limits(config))
    store.open()
    store.commit(
        [
            Entry(
                topic,
                json.dumps({"device_id": dev, "boot": 1, "seq": seq, "replay": False}).encode(),
                time.time(),
                key=(dev, 1, seq),
            )
            for seq in range(3)
        ]
    )
    ids = [row.id for row in store.fetch(0, 10)]
    store.flight_commit([(ids[0], 1, False), (ids[1], 2, False)])
    store.flight_commit(released=[ids[0]])
    store.close()

    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    try:
        with caplog.at_level(logging.WARNING, logger="edge_gateway"):
            await wait_ready(gw)
            await platform.wait_for(lambda: len(platform.observations()) >= 2, timeout_s=15)
        assert gw.stats()["upstream_sessions_lost"] == 1
        assert any(
            "no longer has this gateway's session" in r.getMessage()
            and "persistence true" in r.getMessage()
            for r in caplog.records
        )
        # the released row is not sent again (that could duplicate it); the others arrive
        await asyncio.sleep(0.5)
        assert sorted(o["seq"] for o in platform.observations()) == [1, 2]
    finally:
        gw.request_stop()
        await task
        await platform.stop()
