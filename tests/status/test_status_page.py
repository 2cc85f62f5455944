"""The gateway's status page on real brokers: liveness from data, the counts and table, the
JSON API, maintenance behind the token (HTTP and the CLI), XSS-safe names, no secret shown."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from edge_gateway import contract
from edge_gateway.app import Gateway
from edge_gateway.config import ConfigError, GatewayConfig
from edge_gateway.status import StatusFeed, liveness
from edge_gateway.status.history import REC_SIZE, History
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import FakeNode, gateway_config, run_async, wait_ready

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
AIR = "ce-00000000c001"
WATER = "ce-00000000c002"
SILENT = "ce-00000000c003"


def test_liveness_rule_is_one_cadence_plus_grace_then_two_plus_margin() -> None:
    assert liveness.cadence_s("air", {"report_s": 60, "status_s": 300}, None, 60) == 60
    assert liveness.cadence_s("air", {"report_s": 60, "batch_s": 900}, None, 60) == 900
    assert liveness.cadence_s("parking", {"report_s": 60, "heartbeat_s": 600}, None, 60) == 600
    assert liveness.cadence_s("parking", {"report_s": 60}, 300.0, 60) == 300
    assert liveness.cadence_s("water", None, 120.0, 60) == 120
    j = liveness.judge
    assert j(None, 1000, 60, 30, 60, False) == "never"
    assert j(1000 - 90, 1000, 60, 30, 60, False) == "online"
    assert j(1000 - 91, 1000, 60, 30, 60, False) == "late"
    assert j(1000 - 180, 1000, 60, 30, 60, False) == "late"
    assert j(1000 - 181, 1000, 60, 30, 60, False) == "offline"
    assert j(1000 - 181, 1000, 60, 30, 60, True) == "maintenance"
    assert liveness.battery_percent(4.2) == 100 and liveness.battery_percent(3.0) == 0


def test_history_stays_within_its_byte_bound() -> None:
    h = History(max_bytes=64 * 1024)
    now = time.time()
    for dev in range(4):
        for i in range(20_000):
            h.add(f"ce-0000000000{dev:02d}", now - 20_000 + i, float(i), 3.9, -70, 0, now)
    assert h.total_bytes() <= 64 * 1024
    kept = h.samples("ce-000000000001", 0)
    assert len(kept) >= (64 * 1024 // 4 // REC_SIZE) - 1
    assert kept[-1].value == 19_999.0  # the newest are kept, the oldest went
    assert (
        h.day_counts(
            "ce-000000000001",
            __import__("edge_gateway.status.history", fromlist=["local_day"]).local_day(now - 1),
        )
        is not None
    )


@run_async
async def test_a_damaged_history_is_moved_aside_and_the_page_still_starts(tmp_path: Path) -> None:
    (tmp_path / "history.sqlite").write_bytes(b"this is not a database" * 100)
    feed = StatusFeed(
        GatewayConfig.from_dict(
            {
                "gateway_id": "gw-x-01",
                "site_id": "site-x-01",
                "data_dir": str(tmp_path),
                "status": {"port": 0},
            }
        )
    )
    await feed.start()
    try:
        assert feed.port and feed.active
        assert list(tmp_path.glob("history.sqlite.damaged-*"))
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{feed.port}/api/summary") as r,
        ):
            assert r.status == 200 and (await r.json())["devices"] == 0
    finally:
        await feed.stop()


def test_lan_bind_needs_a_token_file() -> None:
    with pytest.raises(ConfigError, match="status.token_file"):
        GatewayConfig.from_dict(
            {"gateway_id": "gw-x-01", "site_id": "site-x-01", "status": {"host": "0.0.0.0"}}
        )


async def _status(client: aiomqtt.Client, device_id: str, **over: Any) -> None:
    body = contract.example("node_status") | {"device_id": device_id, "t": time.time()} | over
    await client.publish(contract.node_topic(device_id, "status"), json.dumps(body), qos=1)


INVENTORY = {
    "device": [
        {
            "id": AIR,
            "kind": "air",
            "name": EVIL,
            "location": {"lat": 13.7, "lon": 100.5, "name": "<b>roof</b>"},
        },
        {"id": WATER, "kind": "water", "name": "canal gauge"},
        {"id": SILENT, "kind": "air", "name": "never installed"},
    ]
}


@dataclass
class Page:
    """The running status page, read over HTTP."""

    http: aiohttp.ClientSession
    base: str
    port: int
    token: str

    async def get_json(self, path: str) -> Any:
        async with self.http.get(self.base + path) as r:
            assert r.status == 200, path
            return await r.json()

    async def until(self, pred: Any, timeout: float = 15.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                devs = {d["device_id"]: d for d in await self.get_json("/api/devices")}
                if pred(devs):
                    return devs
                await asyncio.sleep(0.2)


async def _page_started(gw: Gateway) -> int:
    await wait_ready(gw)
    async with asyncio.timeout(15):  # the page starts after READY
        while not gw.status_feed.port:
            await asyncio.sleep(0.05)
    port = gw.status_feed.port
    assert port
    return port


async def _node_statuses(local_broker: MosquittoBroker) -> None:
    async with aiomqtt.Client(local_broker.host, local_broker.port) as c:
        # Both say they report every 2 s; the water node's status alone must not make it
        # online (liveness is data, not a status or a session).
        await _status(c, AIR, kind="air", intervals={"report_s": 2.0}, rssi_dbm=-91)
        await _status(c, WATER, kind="water", intervals={"report_s": 2.0}, battery_v=3.3)
        await c.publish(
            contract.node_topic(WATER, "state"),
            json.dumps({"v": 1, "device_id": WATER, "state": "online", "boot": 1, "fw": "0.1.0"}),
            qos=1,
            retain=True,
        )


async def _check_counts(page: Page) -> None:
    devs = await page.until(lambda d: d.get(AIR, {}).get("state") == "online")
    assert devs[WATER]["state"] == "never"
    assert devs[SILENT]["state"] == "never"
    assert devs[AIR]["rssi_dbm"] == -91 and devs[AIR]["fw"] == "0.1.0"
    assert devs[WATER]["low_battery"] is True
    summary = await page.get_json("/api/summary")
    assert summary["online"] == 1 and summary["never"] == 2
    assert summary["low_battery"] == 1 and summary["devices"] == 3


async def _check_offline_and_table(page: Page, air: FakeNode) -> None:
    http, base = page.http, page.base
    # The air node stops: late after 2 s + 1 s, offline after 2 × 2 s + 2 s.
    await air.stop()
    devs = await page.until(lambda d: d[AIR]["state"] == "offline", timeout=20)
    assert "no reading for" in devs[AIR]["reason"]
    assert "WiFi RSSI -91 dBm" in devs[AIR]["reason"]
    assert "ไม่มีข้อมูลมา" in devs[AIR]["reason_th"]
    async with http.get(base + "/api/devices?state=bogus") as r:
        assert r.status == 400 and "state must be one of" in (await r.json())["error"]
    # The table filters and sorts on the server (works without the script).
    async with http.get(base + "/?lang=en&q=canal") as r:
        page_text = await r.text()
    assert f"row-{WATER}" in page_text and f"row-{AIR}" not in page_text
    for desc, first in (("", AIR), ("1", SILENT)):  # "<script…" < "canal" < "never"
        async with http.get(base + f"/?lang=en&sort=name&desc={desc}") as r:
            page_text = await r.text()
        order = sorted((page_text.index(f"row-{d}"), d) for d in (AIR, WATER, SILENT))
        assert order[0][1] == first, order
    offline = await page.get_json("/api/devices?state=offline&site=test-site-01")
    assert [d["device_id"] for d in offline] == [AIR]
    assert await page.get_json("/api/devices?state=offline&site=other-site") == []


async def _check_maintenance_needs_the_token(page: Page) -> None:
    http, base = page.http, page.base
    # Changing requests without the token are refused; with it, they work.
    url = f"{base}/api/devices/{SILENT}/maintenance"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with http.post(url, json={"hours": 24, "reason": "x"}, headers=headers) as r:
            assert r.status == 401
    async with http.post(
        f"{base}/device/{SILENT}/maintenance", data={"action": "start", "hours": "24"}
    ) as r:
        assert r.status == 401
    assert (await page.get_json(f"/api/devices/{SILENT}"))["state"] == "never"
    async with http.post(
        f"{base}/device/{SILENT}/maintenance",
        allow_redirects=False,
        data={"action": "start", "hours": "24", "reason": "mast", "token": page.token},
    ) as r:
        assert r.status == 303
    d = await page.get_json(f"/api/devices/{SILENT}")
    assert d["state"] == "maintenance" and "mast" in d["reason"]


async def _check_maintenance_cli(page: Page, tmp_path: Path) -> None:
    # The CLI (as a technician runs it on the Pi) uses the token file.
    cfg_path = tmp_path / "gw.toml"
    cfg_path.write_text(
        f'gateway_id = "gw-test-01"\nsite_id = "test-site-01"\ndata_dir = "{tmp_path}"\n'
        f"[status]\nport = {page.port}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "host_tools.cli",
        "gateway",
        "maintenance",
        "--config",
        str(cfg_path),
        "start",
        AIR,
        "--hours",
        "2",
        "--reason",
        "sensor swap",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    assert "maintenance" in stdout.decode()
    d = await page.get_json(f"/api/devices/{AIR}")
    assert d["state"] == "maintenance"
    summary = await page.get_json("/api/summary")
    assert summary["offline"] == 0 and summary["maintenance"] == 2


async def _check_nothing_leaks(page: Page) -> None:
    # Every page and API answer: the name escaped, never the token or a password.
    pages = {}
    for path in (
        "/",
        "/?lang=en",
        f"/device/{AIR}",
        f"/device/{AIR}?lang=en",
        "/live?view=site",
        f"/live?view=device&id={AIR}",
        "/api/summary",
        "/api/devices",
        f"/api/devices/{AIR}",
        "/healthz",
        f"/?q={EVIL}",
        f"/device/{EVIL}",
    ):
        async with page.http.get(page.base + path) as r:
            pages[path] = (r.status, r.headers.get("Content-Type", ""), await r.text())
    for path, (status, ctype, text) in pages.items():
        assert page.token not in text, path
        assert "site-broker-secret-pw" not in text, path
        if "text/html" in ctype or path.startswith("/live"):
            assert "<script>alert" not in text, path
            assert "<img src=x" not in text, path
            assert "<b>roof</b>" not in text, path
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in pages["/"][2]
    async with page.http.get(page.base + "/") as r:
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert (await page.get_json("/healthz"))["state"] == "online"


@pytest.mark.broker
@run_async
async def test_status_page_counts_table_api_maintenance_and_security(
    local_broker: MosquittoBroker, upstream_broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg_dict = gateway_config(
        local_broker,
        upstream_broker,
        tmp_path,
        inventory=INVENTORY,
        status={"port": 0, "late_grace_s": 1, "offline_margin_s": 2},
    )
    cfg_dict["local"]["password"] = "site-broker-secret-pw"
    cfg_dict["local"]["username"] = "gw"
    cfg_dict["local"].pop("password")
    cfg_dict["local"].pop("username")
    gw = Gateway(GatewayConfig.from_dict(cfg_dict))
    task = asyncio.create_task(gw.run())
    air = water = None
    try:
        port = await _page_started(gw)
        token = gw.status_feed.token
        assert len(token) >= 24
        air = await FakeNode(local_broker, AIR, "air").start()
        water = await FakeNode(local_broker, WATER, "water").start()
        await _node_statuses(local_broker)
        await air.publish(3)
        await air.wait_acked()
        async with aiohttp.ClientSession() as http:
            page = Page(http, f"http://127.0.0.1:{port}", port, token)
            await _check_counts(page)
            await _check_offline_and_table(page, air)
            await _check_maintenance_needs_the_token(page)
            await _check_maintenance_cli(page, tmp_path)
            await _check_nothing_leaks(page)
    finally:
        for n in (air, water):
            if n is not None:
                await n.stop()
        gw.request_stop()
        await asyncio.wait_for(task, 20)
