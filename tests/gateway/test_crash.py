"""The gateway process killed with SIGKILL at random moments under load and restarted: nothing a
node got custody for is lost, nothing reaches the platform twice (QoS 2 with the packet ids kept
in the store: edge_gateway/upstream.py), and per device the live and the replayed stream each
arrive in sample order."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_gateway import contract
from host_tools.brokers import MosquittoBroker
from tests.gateway.helpers import FakeNode, Platform, gateway_config, run_async
from tests.support.tools import REPO

pytestmark = pytest.mark.broker

KILLS = 5


def write_toml(path: Path, cfg: dict) -> None:
    """A tiny TOML writer for the flat tables the tests use."""
    lines: list[str] = []
    tables = {k: v for k, v in cfg.items() if isinstance(v, dict)}
    for k, v in cfg.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {json.dumps(v)}")
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for k, v in table.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@run_async
async def test_sigkill_at_random_moments_loses_nothing_acknowledged(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    upstream = broker_factory("upstream")
    cfg = gateway_config(local, upstream, tmp_path)
    write_toml(tmp_path / "gateway.toml", cfg)
    log = tmp_path / "gateway.log"
    rng = random.Random(20261122)
    platform = await Platform(upstream).start()
    nodes = [await FakeNode(local, f"ce-00000000d00{i}", "water", resend_after_s=1.5).start()
             for i in range(3)]
    proc = start_gateway(tmp_path / "gateway.toml", log)
    # Custody for a first reading: the gateway's session on the site broker exists from here on
    # (a reading published before it ever subscribed reaches it only as the node's resend).
    await nodes[0].publish(1)
    await nodes[0].wait_acked(20)
    stop_load = asyncio.Event()

    async def load() -> None:
        while not stop_load.is_set():
            for node in nodes:
                await node.publish(1)
            await asyncio.sleep(0.01)  # ~300 readings/s in all

    loader = asyncio.create_task(load())
    try:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.8, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            proc = start_gateway(tmp_path / "gateway.toml", log)
        await asyncio.sleep(1.5)
        stop_load.set()
        await loader
        produced = {n.device_id: n.next_seq for n in nodes}
        total = sum(produced.values())
        for node in nodes:
            await node.wait_acked(30)
        await platform.wait_for(
            lambda: len({(o["device_id"], o["seq"]) for o in platform.observations()}) >= total,
            timeout_s=40,
        )
        await asyncio.sleep(0.5)
        obs = platform.observations()
        keys = Counter((o["device_id"], o["boot"], o["seq"]) for o in obs)
        for dev, n in produced.items():
            got = {seq for (d, _b, seq) in keys if d == dev}
            assert got == set(range(n)), f"{dev}: lost {sorted(set(range(n)) - got)[:10]}"
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
        print(f"crash test: {total} readings, {KILLS} kills, {dups} upstream duplicates, "
              f"{replayed} replayed, order kept")
    finally:
        stop_load.set()
        loader.cancel()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        for node in nodes:
            await node.stop()
        await platform.stop()
    assert proc.returncode == 0, log.read_text()[-3000:]
