"""A reading that kills the gateway process is quarantined after its second death alone, instead of
crash-looping the site's gateway: the service is restarted (as systemd does), the reading is
dead-lettered as ``quarantined``, custody confirms it to the node, and the readings around it
are forwarded."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import FakeNode, Platform, gateway_config, run_async
from tests.gateway.rig import GatewayProcess, stop_all
from tests.support.tools import REPO

pytestmark = pytest.mark.broker

# The gateway as the service runs it, with one fault injected the way a bug in a C extension
# would behave: the process dies (no exception to catch) on a reading with a "poison" channel.
FAULTY = """
import os, sys
from edge_gateway import processing
_process = processing.Processor.process
def process(self, device_id, reading, received):
    if "poison" in reading["raw"]:
        os._exit(70)
    return _process(self, device_id, reading, received)
processing.Processor.process = process
from edge_gateway.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def start_faulty(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", FAULTY, "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def poison_reading(node: FakeNode) -> bytes:
    """A reading with the channel that kills the faulty gateway, as the node's next seq."""
    return json.dumps(
        {
            "v": 1,
            "device_id": node.device_id,
            "kind": "air",
            "fw": "0.1.0",
            "boot": node.boot,
            "seq": node.next_seq,
            "t": 1.7e9,
            "synced": True,
            "raw": {"poison": {"v": 1.0, "u": "V"}, "temp": {"v": 30.0, "u": "Cel"}},
        }
    ).encode()


async def restart_until_acked(gwp: GatewayProcess, node: FakeNode) -> int:
    """A service manager: restart the gateway whenever it dies, until the node has custody for
    all it sent; returns the number of deaths."""
    deaths = 0
    async with asyncio.timeout(60):
        while node.unacked:
            if gwp.proc.poll() is not None:
                deaths += 1
                assert deaths <= 3, gwp.log_tail()
                gwp.start()
            await asyncio.sleep(0.1)
    return deaths


@run_async
async def test_a_reading_that_kills_the_process_is_quarantined_not_crash_looped(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    upstream = broker_factory("upstream")
    gwp = GatewayProcess(tmp_path, gateway_config(local, upstream, tmp_path), start_faulty)
    platform = await Platform(upstream).start()
    node = await FakeNode(local, "ce-00000000dead", "air", resend_after_s=1.0).start()
    gwp.start()
    try:
        await node.publish(3)
        await node.wait_acked(20)
        # The poison reading, then more good ones from the same node.
        node_reading = poison_reading(node)
        body = json.loads(node_reading)
        poison_seq = node.next_seq
        node.next_seq += 1
        await node._send(poison_seq, node_reading, new=True)
        await node.publish(3)
        async with aiomqtt.Client(local.host, local.port, identifier="dl-watch") as watch:
            await watch.subscribe(contract.deadletter_topic("gw-test-01"), qos=0)
            deaths = await restart_until_acked(gwp, node)
            async with asyncio.timeout(20):
                async for m in watch.messages:
                    dead = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                    if dead["reason"].startswith("quarantined"):
                        break
        # Death 1: in a group, its readings become suspects, processed one by one. Death 2: alone
        # (could be a coincidence, a SIGKILL at that moment). Death 3: alone again: quarantined.
        assert deaths == 3
        assert gwp.proc.poll() is None
        contract.validate("deadletter", dead)
        assert body["seq"] == poison_seq
        want = set(range(node.next_seq)) - {poison_seq}
        await platform.wait_for(
            lambda: {o["seq"] for o in platform.observations()} >= want, timeout_s=30
        )
        assert {o["seq"] for o in platform.observations()} == want
        saved = json.loads((tmp_path / "quarantine.json").read_text())
        assert [(q["device_id"], q["seq"]) for q in saved["quarantined"]] == [
            (node.device_id, poison_seq)
        ]
        assert saved["quarantined"][0]["payload_b64"]
        # Once quarantined it stays so: a resend is confirmed again without processing.
        await node._send(poison_seq, node_reading, new=True)
        await node.wait_acked(20)
        await asyncio.sleep(0.5)
        assert gwp.proc.poll() is None
        assert "quarantined" in gwp.log.read_text()
    finally:
        await stop_all([node], platform)
        gwp.stop()
