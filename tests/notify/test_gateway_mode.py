"""The dispatcher inside the gateway (the default): a canal level above its warning level at a
real gateway (real Mosquitto brokers) reaches fake LINE as one message, in Thai and English,
and the gateway's metrics show the notify figures. Secrets never appear in the logs."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import FakeNode, gateway_config, run_async, wait_ready
from tests.gateway.test_basic_path import STAGE
from tests.notify.conftest import HOOK_SECRET, LINE_TOKEN, wait_until
from tests.support.fake_services import FakeLine

pytestmark = pytest.mark.broker


@run_async
async def test_breach_at_the_gateway_reaches_line_once(
    local_broker: MosquittoBroker,
    upstream_broker: MosquittoBroker,
    tmp_path: Path,
    alerts_config: Any,
    line: FakeLine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    records = tmp_path / "stage.toml"
    records.write_text(STAGE)
    device = {
        "id": "ce-0000000d0001",
        "kind": "water",
        "water_warning_m": 2.0,
        "water_critical_m": 3.0,
        "name": "Khlong Saen Saep pier 3",
    }
    config = GatewayConfig.from_dict(
        gateway_config(
            local_broker,
            upstream_broker,
            tmp_path,
            calibration={"records": str(records)},
            inventory={"allow_unknown": False, "device": [device]},
            notify={"config": str(alerts_config())},
            metrics={"enabled": True, "port": 0},
        )
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw)
    node = await FakeNode(local_broker, "ce-0000000d0001", "water").start()
    try:
        await node.publish(3, value=2.5)  # 1.5 m MSL: normal
        await node.publish(3, value=1.8)  # 2.2 m MSL: above the warning level 2.0
        # The bound: at LINE within 30 s of the breach (bench/alerts.py measures it).
        await wait_until(lambda: len(line.delivered) == 1, 30)
        await node.wait_acked()
        await asyncio.sleep(0.5)
        assert len(line.delivered) == 1  # one incident, one message
        text = line.delivered[0]["text"]
        assert "Khlong Saen Saep pier 3" in text and "2.20 m" in text
        assert "เตือนภัย" in text and "WARNING" in text
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics").read()
        )
        assert b'cityedge_notify_sent_total{channel="line"} 1' in body
        assert b"cityedge_gateway_readings_stored_total 6" in body
    finally:
        await node.stop()
        gw.request_stop()
        await task
    logs = caplog.text + (tmp_path / "alerts.toml").read_text()
    assert LINE_TOKEN not in logs and HOOK_SECRET not in logs
    assert LINE_TOKEN not in repr(gw.notify.settings) and LINE_TOKEN not in str(gw.stats())


@run_async
async def test_silent_node_at_the_gateway(
    local_broker: MosquittoBroker,
    upstream_broker: MosquittoBroker,
    tmp_path: Path,
    alerts_config: Any,
    line: FakeLine,
) -> None:
    """Without a central dispatcher, the gateway's own dispatcher tells when a node stops."""
    device = {"id": "ce-0000000a0002", "kind": "air", "report_s": 1.0, "name": "Wat school"}
    config = GatewayConfig.from_dict(
        gateway_config(
            local_broker,
            upstream_broker,
            tmp_path,
            inventory={"device": [device]},
            notify={
                "config": str(
                    alerts_config(extra="silent_grace_s = 1\n[heartbeat]\npublish_s = 0.5\n")
                )
            },
        )
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw)
    node = await FakeNode(local_broker, "ce-0000000a0002", "air").start()
    try:
        for _ in range(2):
            await node.publish(1)
            await asyncio.sleep(1.0)
        await node.wait_acked()
        await node.stop()
        await wait_until(
            lambda: any("Sensor node silent" in m["text"] for m in line.delivered), 2 * 1.0 + 60
        )
        node = await FakeNode(local_broker, "ce-0000000a0002", "air", boot=2).start()
        await node.publish(1)
        await wait_until(lambda: len(line.delivered) == 2, 30)
        assert "[cleared] Sensor node silent at Wat school" in line.delivered[1]["text"]
    finally:
        await node.stop()
        gw.request_stop()
        await task
