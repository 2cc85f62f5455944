"""The basic path on real Mosquitto brokers: node → site broker → gateway → platform broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge_gateway import contract
from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import FakeNode, Platform, gateway_config, run_async, wait_ready
from tests.support.calibrated_gateway import linear_pm25_record

pytestmark = pytest.mark.broker

CAL = linear_pm25_record("test-pm25-linear-1", "ce-00000000a001", "test", 0.5, 1.0)


def _check_observations(obs: list[dict[str, Any]], air_id: str, parking_id: str) -> None:
    for o in obs:
        contract.validate("observation", o)
    air = [o for o in obs if o["device_id"] == air_id]
    assert [o["seq"] for o in air] == list(range(20))
    assert all(o["replay"] is False for o in air)
    pm = air[0]["calibrated"]["pm25"]
    assert pm == {"v": 16.0, "u": "ug/m3", "calibration_id": "test-pm25-linear-1"}
    assert air[0]["calibrated"]["temp"]["calibration_id"] == "none"
    assert air[0]["raw"]["pm25_cf1"]["v"] == 30.0
    assert air[0]["derived"]["thai_aqi"]["colour"]
    park = [o for o in obs if o["device_id"] == parking_id]
    assert [o["derived"]["status"] for o in park] == [
        "free",
        "occupied",
        "free",
        "occupied",
        "free",
    ]


async def _check_device_status(
    local_broker: MosquittoBroker, platform: Platform, device_id: str
) -> None:
    # Node status → retained device status with battery, RSSI, outbox and completeness.
    status = contract.example("node_status")
    status.update(
        device_id=device_id,
        rssi_dbm=-71,
        battery_v=3.91,
        outbox={"depth": 4, "capacity": 512, "dropped": 2},
    )
    async with aiomqtt.Client(local_broker.host, local_broker.port) as c:
        await c.publish(contract.node_topic(device_id, "status"), json.dumps(status), qos=1)
    topic = contract.device_status_topic("test-site-01", device_id)

    def latest() -> dict | None:
        found = [b for t, b in platform.messages if t == topic and b.get("rssi_dbm") == -71]
        return found[-1] if found else None

    await platform.wait_for(lambda: latest() is not None, timeout_s=10)
    dev = latest()
    assert dev is not None
    contract.validate("device_status", dev)
    assert dev["battery_v"] == 3.91 and dev["outbox_depth"] == 4 and dev["outbox_dropped"] == 2
    assert dev["received_24h"] == 20 and dev["state"] == "online"
    assert dev["completeness"] == round(20 / dev["expected_24h"], 3)


@run_async
async def test_readings_are_calibrated_forwarded_acked_and_deleted(
    local_broker: MosquittoBroker, upstream_broker: MosquittoBroker, tmp_path: Path
) -> None:
    records = tmp_path / "cal.toml"
    records.write_text(CAL)
    config = GatewayConfig.from_dict(
        gateway_config(
            local_broker, upstream_broker, tmp_path, calibration={"records": str(records)}
        )
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw)
    platform = await Platform(upstream_broker).start()
    node = await FakeNode(local_broker, "ce-00000000a001", "air").start()
    other = await FakeNode(local_broker, "ce-00000000b002", "parking").start()
    try:
        await node.publish(20, value=30.0)
        await other.publish(5)
        await node.wait_acked()
        await other.wait_acked()
        await platform.wait_for(lambda: len(platform.observations()) == 25)
        _check_observations(platform.observations(), node.device_id, other.device_id)
        # Deleted after PUBACK: the store drains to empty.
        async with asyncio.timeout(10):
            while gw.stats()["queue_depth"] or gw.stats()["delivered"] < 25:
                await asyncio.sleep(0.05)
        s = gw.stats()
        assert s["readings_stored"] == 25 and s["delivered"] == 25 and s["readings_out"] == 25
        await _check_device_status(local_broker, platform, node.device_id)
    finally:
        await node.stop()
        await other.stop()
        await platform.stop()
        gw.request_stop()
        await task


STAGE = """
[[record]]
id = "stage-ce-0000000d0001"
device_id = "ce-0000000d0001"
quantity = "level"
unit = "m"
input_channel = "distance"
author = "survey"
valid_from = 2020-01-01T00:00:00Z
[record.model]
form = "stage"
[record.model.coefficients]
z_sensor = 4.0
datum = "MSL"
"""


@run_async
async def test_canal_level_alert_reaches_the_platform(
    local_broker: MosquittoBroker, upstream_broker: MosquittoBroker, tmp_path: Path
) -> None:
    records = tmp_path / "stage.toml"
    records.write_text(STAGE)
    device = {
        "id": "ce-0000000d0001",
        "kind": "water",
        "water_warning_m": 2.0,
        "water_critical_m": 3.0,
    }
    config = GatewayConfig.from_dict(
        gateway_config(
            local_broker,
            upstream_broker,
            tmp_path,
            calibration={"records": str(records)},
            inventory={"allow_unknown": False, "device": [device]},
        )
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw)
    platform = await Platform(upstream_broker).start()
    node = await FakeNode(local_broker, "ce-0000000d0001", "water").start()
    try:
        await node.publish(3, value=2.5)  # level 1.5 m MSL: normal
        await node.publish(3, value=1.8)  # level 2.2 m MSL: above the warning level
        await node.wait_acked()
        alert_topic = contract.alert_topic("test-site-01", node.device_id)
        await platform.wait_for(lambda: any(t == alert_topic for t, _ in platform.messages))
        await platform.wait_for(lambda: len(platform.observations()) == 6)
        alerts = [b for t, b in platform.messages if t == alert_topic]
        assert len(alerts) == 1
        contract.validate("alert", alerts[0])
        assert (alerts[0]["alert"], alerts[0]["state"], alerts[0]["threshold"]) == (
            "water_warning",
            "raised",
            2.0,
        )
        states = [o["derived"]["level_state"]["state"] for o in platform.observations()]
        assert states == ["normal"] * 3 + ["warning"] * 3
        assert platform.observations()[-1]["calibrated"]["level"]["v"] == 2.2
    finally:
        await node.stop()
        await platform.stop()
        gw.request_stop()
        await task
