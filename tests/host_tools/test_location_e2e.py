"""End to end: the location and name given at provisioning are in the node's observations at
the platform, not the gateway's site location — also after the gateway restarts (issue 19.3).

A virtual water board is provisioned with the `cityedge` CLI (--lat/--lon/--elev-m/--name),
runs the real firmware under MicroPython, and talks to a real Mosquitto with the generated
password file; the gateway forwards to a platform broker where a consumer reads the result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge_gateway import contract
from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from host_tools.cli import main as cityedge
from host_tools.sim.brokers import MosquittoBroker
from host_tools.sim.virtual_board import VirtualBoard
from tests.gateway.helpers import Platform, gateway_config, wait_ready
from tests.host_tools.mqtt_helpers import ROOT_SAFE
from tests.host_tools.site_rig import (
    SITE,
    inventory_with_gateway,
    place,
    provision_for_site,
    site_broker,
)

pytestmark = [pytest.mark.broker, pytest.mark.micropython, pytest.mark.slow]
NAME = "canal gate, ประตูน้ำ 2"
SITE_LOCATION = {"lat": 13.75, "lon": 100.5}  # the gateway's own (tests.gateway.helpers)


def test_provisioned_location_and_name_reach_the_platform(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    broker_factory: Callable[..., MosquittoBroker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inv_path, gw_password = inventory_with_gateway(tmp_path)
    mac = "246f28000091"
    vb = vboard_factory(mac, mac, "water")
    local = site_broker(tmp_path)
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    argv = provision_for_site(
        tmp_path,
        local,
        inv_path,
        "--deploy",
        *place("water", lat="12.680123", lon="101.275046"),
        "--elev-m",
        "2.5",
        "--name",
        NAME,
        "--port",
        vb.device,
        # No status between the two gateway runs: the second must know the place already.
        sample_s=1,
        report_s=2,
        status_s=3600,
    )
    assert cityedge(argv) == 0
    local.start()
    try:
        upstream = broker_factory("platform", extra_config=ROOT_SAFE)
        config = GatewayConfig.from_dict(
            gateway_config(
                local,
                upstream,
                tmp_path / "gw",
                site_id=SITE,
                local={"username": "gw-rayong-01", "password": gw_password},
            )
        )
        expected = {"lat": 12.680123, "lon": 101.275046, "elev_m": 2.5, "name": NAME}
        first = asyncio.run(_observations(config, upstream, f"ce-{mac}", 2))
        assert [o["location"] for o in first] == [expected] * len(first)
        # The gateway restarts while the node stays connected (no new status for an hour).
        again = asyncio.run(_observations(config, upstream, f"ce-{mac}", 2))
        assert [o["location"] for o in again] == [expected] * len(again)
        for o in first + again:
            contract.validate("observation", o)
            assert o["location"] != SITE_LOCATION
    finally:
        local.stop(kill=True)


async def _observations(
    config: GatewayConfig, upstream: MosquittoBroker, device_id: str, n: int
) -> list[dict[str, Any]]:
    """Run the gateway until `n` observations of the device it received reached the platform."""
    started = datetime.now(UTC)
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    platform = await Platform(upstream).start()
    try:
        await wait_ready(gw)

        def mine() -> list[dict[str, Any]]:
            return [
                o
                for o in platform.observations()
                if o["device_id"] == device_id
                and datetime.fromisoformat(o["received_time"]) >= started
            ]

        await platform.wait_for(lambda: len(mine()) >= n, timeout_s=45)
        return mine()[:n]
    finally:
        await platform.stop()
        gw.request_stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 15)
