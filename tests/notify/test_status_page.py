"""The alert dispatcher and the status page of one gateway together: open incidents on the
device page and in the counts, acknowledged there behind the token (as `cityedge alerts ack`);
a device in maintenance raises no silent-node alert (one liveness rule, the page's); the
message's link to the device's page comes from `[status]`."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from edge_gateway import contract
from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from edge_gateway.notify import hook
from edge_gateway.notify.incidents import open_incidents
from edge_gateway.notify.silence import SilenceRules
from edge_gateway.status.fleet import FleetModel, FleetSettings
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import FakeNode, gateway_config, run_async, wait_ready
from tests.gateway.test_basic_path import STAGE
from tests.notify.conftest import wait_until, water_alert
from tests.support.fake_services import FakeLine

WATER, SILENT, MAINT = "ce-0000000d0001", "ce-0000000a0011", "ce-0000000a0012"
EVIL = '<script>alert("x")</script>'
PAGE = "http://gw.school.example:9180"


def _no_status_url(path: Path) -> Path:
    text = "\n".join(
        line for line in path.read_text().splitlines() if not line.startswith("status_url")
    )
    path.write_text(text)
    return path


INVENTORY = {
    "allow_unknown": False,
    "device": [
        {
            "id": WATER,
            "kind": "water",
            "water_warning_m": 2.0,
            "water_critical_m": 3.0,
            "name": "Khlong pier 3",
        },
        {"id": SILENT, "kind": "air", "report_s": 1.0, "name": "Wat school"},
        {"id": MAINT, "kind": "air", "report_s": 1.0, "name": "Mast under repair"},
    ],
}


@dataclass
class Page:
    """The gateway's status page, read and posted to over HTTP."""

    gw: Gateway
    http: aiohttp.ClientSession
    base: str
    token: str

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path) as r:
            assert r.status == 200, path
            return await r.json() if path.startswith("/api") else await r.text()

    async def post_status(self, path: str, **kw: Any) -> int:
        async with self.http.post(self.base + path, **kw) as r:
            return r.status


def _config(
    local_broker: MosquittoBroker,
    upstream_broker: MosquittoBroker,
    tmp_path: Path,
    alerts_config: Any,
) -> GatewayConfig:
    records = tmp_path / "stage.toml"
    records.write_text(STAGE)
    routes = '[[routes]]\nchannels = ["line"]\nescalate_after_s = 3600\nescalate_to = ["hook"]\n'
    alerts = _no_status_url(alerts_config(extra="silent_grace_s = 1\n", routes=routes))
    return GatewayConfig.from_dict(
        gateway_config(
            local_broker,
            upstream_broker,
            tmp_path,
            calibration={"records": str(records)},
            inventory=INVENTORY,
            notify={"config": str(alerts)},
            status={"port": 0, "late_grace_s": 1, "offline_margin_s": 2, "url": PAGE},
        )
    )


async def _check_incident_shown(page: Page, no: int) -> None:
    summary = await page.get("/api/summary")
    assert summary["incidents"] == 1 and summary["incidents_unacked"] == 1
    rows = {r["device_id"]: r for r in await page.get("/api/devices")}
    assert rows[WATER]["incidents"] == 1 and rows[SILENT]["incidents"] == 0
    html = await page.get(f"/device/{WATER}?lang=en")
    assert f'data-incident="{no}"' in html and "not acknowledged" in html
    assert f'action="/device/{WATER}/ack"' in html
    assert 'data-count="incidents">1<' in await page.get("/?lang=en")


async def _check_ack_needs_the_token(page: Page, no: int) -> None:
    # Refused without the token (form and API); nothing acknowledged.
    ack = f"/device/{WATER}/ack"
    assert await page.post_status(ack, data={"incident": str(no), "by": "x"}) == 401
    assert (
        await page.post_status(ack, data={"incident": str(no), "by": "x", "token": "wrong"}) == 401
    )
    assert await page.post_status(f"/api/incidents/{no}/ack", json={"by": "x"}) == 401
    assert open_incidents(page.gw.notify.outbox)[0]["acked_by"] is None


async def _check_ack_with_the_token(page: Page, no: int) -> None:
    # With the token: acknowledged; the name (typed by a person) is escaped.
    gw = page.gw
    status = await page.post_status(
        f"/device/{WATER}/ack",
        allow_redirects=False,
        data={"incident": str(no), "by": EVIL, "token": page.token},
    )
    assert status == 303
    assert open_incidents(gw.notify.outbox)[0]["acked_by"] == EVIL
    html = await page.get(f"/device/{WATER}?lang=en")
    assert "acknowledged by" in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert (await page.get("/api/summary"))["incidents_unacked"] == 0
    status = await page.post_status(
        f"/api/incidents/{no}/ack",
        json={"by": "again"},
        headers={"Authorization": f"Bearer {page.token}"},
    )
    assert status == 404  # acknowledged already

    # Acknowledged: it no longer escalates, even long after its escalate_after_s.
    def escalate() -> int:
        with gw.notify.outbox.transaction() as db:
            return int(gw.notify.incidents.escalate(db, time.time() + 7200))

    assert await asyncio.to_thread(escalate) == 0


async def _check_no_silent_alert_in_maintenance(
    page: Page, local_broker: MosquittoBroker, line: FakeLine, nodes: list[FakeNode]
) -> None:
    # Two nodes stop together; the one in maintenance raises no silent-node alert.
    status = await page.post_status(
        f"/api/devices/{MAINT}/maintenance",
        json={"action": "start", "hours": 1, "reason": "mast"},
        headers={"Authorization": f"Bearer {page.token}"},
    )
    assert status == 200
    for dev in (SILENT, MAINT):
        node = await FakeNode(local_broker, dev, "air").start()
        nodes.append(node)
        await node.publish(2)
        await node.wait_acked()
    for node in nodes[1:]:
        await node.stop()
    await wait_until(lambda: any("Wat school" in m["text"] for m in line.delivered), 2 * 1.0 + 60)
    rows = {r["device_id"]: r for r in await page.get("/api/devices")}
    assert rows[SILENT]["state"] in ("late", "offline")
    assert rows[MAINT]["state"] == "maintenance"
    await asyncio.sleep(1.0)  # the rule runs every few seconds: one more round
    assert not any("Mast under repair" in m["text"] for m in line.delivered)
    assert not [i for i in open_incidents(page.gw.notify.outbox) if i["device"] == MAINT]


async def _platform_device_statuses(
    upstream_broker: MosquittoBroker, site_id: str
) -> dict[str, Any]:
    """The retained device statuses on the platform, until MAINT's and SILENT's are in."""
    async with aiomqtt.Client(upstream_broker.host, upstream_broker.port) as c:
        await c.subscribe(contract.device_status_topic(site_id, "+"), qos=1)
        seen: dict[str, Any] = {}
        async with asyncio.timeout(15):
            async for msg in c.messages:
                body = json.loads(bytes(msg.payload))
                seen[body["device_id"]] = body
                if MAINT in seen and SILENT in seen:
                    break
    return seen


@pytest.mark.broker
@run_async
async def test_ack_on_the_status_page_and_no_silent_alert_in_maintenance(
    local_broker: MosquittoBroker,
    upstream_broker: MosquittoBroker,
    tmp_path: Path,
    alerts_config: Any,
    line: FakeLine,
) -> None:
    config = _config(local_broker, upstream_broker, tmp_path, alerts_config)
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    nodes: list[FakeNode] = []
    try:
        await wait_ready(gw)
        async with asyncio.timeout(15):  # the page starts after READY
            while not gw.status_feed.port:
                await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{gw.status_feed.port}"
        water = await FakeNode(local_broker, WATER, "water").start()
        nodes.append(water)
        await water.publish(3, value=2.5)  # 1.5 m MSL: normal
        await water.publish(3, value=1.8)  # 2.2 m MSL: above the warning level
        await wait_until(lambda: len(line.delivered) == 1, 30)
        # The link to the device's page, from [status] url (alerts.toml has no status_url).
        assert f"{PAGE}/device/{WATER}" in line.delivered[0]["text"]
        [inc] = open_incidents(gw.notify.outbox)
        no = inc["no"]
        async with aiohttp.ClientSession() as http:
            page = Page(gw, http, base, gw.status_feed.token)
            await _check_incident_shown(page, no)
            await _check_ack_needs_the_token(page, no)
            await _check_ack_with_the_token(page, no)
            await _check_no_silent_alert_in_maintenance(page, local_broker, line, nodes)
            # The retained device status on the platform says so (city view, central alerts).
            seen = await _platform_device_statuses(upstream_broker, config.site_id)
            assert seen[MAINT]["maintenance"] is True and "maintenance" not in seen[SILENT]
    finally:
        for node in nodes:
            await node.stop()
        gw.request_stop()
        await asyncio.wait_for(task, 20)


def _gateway(tmp_path: Path, alerts: Path, status: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig.from_dict(
        {
            "gateway_id": "gw-bkk-canal-01",
            "site_id": "bkk-canal-01",
            "data_dir": str(tmp_path),
            "notify": {"config": str(alerts)},
            "status": status,
        }
    )


def test_the_link_to_the_device_page_comes_from_the_status_config(
    tmp_path: Path,
    alerts_config: Any,
) -> None:
    alerts = _no_status_url(alerts_config())
    token = tmp_path / "token"
    token.write_text("t" * 32)
    cases: list[tuple[dict[str, Any], str | None]] = [
        (
            {"url": "https://status.city.example/rayong/"},
            "https://status.city.example/rayong/device/{device_id}",
        ),
        (
            {"host": "192.168.1.10", "port": 9180, "token_file": str(token)},
            "http://192.168.1.10:9180/device/{device_id}",
        ),
        ({}, None),  # loopback only: a link to 127.0.0.1 would not open on anyone's phone
        ({"enabled": False, "url": "https://status.city.example"}, None),
    ]
    for status, expected in cases:
        d = hook.start_in_gateway(_gateway(tmp_path, alerts, status))
        assert d is not None
        assert d.settings.status_url == expected, status
        d.close()
    # The message carries it, filled in for the device.
    d = hook.start_in_gateway(_gateway(tmp_path, alerts, cases[0][0]))
    assert d is not None
    try:
        assert d.record([water_alert(WATER, "water_warning", "raised", time.time(), 2.2)]) >= 1
        with d.outbox.lock:
            msgs = [json.loads(m) for (m,) in d.outbox.db.execute("SELECT message FROM outbox")]
        assert any(f"https://status.city.example/rayong/device/{WATER}" in m["text"] for m in msgs)
    finally:
        d.close()
    # alerts.toml's own status_url wins.
    d = hook.start_in_gateway(_gateway(tmp_path, alerts_config(), cases[0][0]))
    assert (
        d is not None and d.settings.status_url == "https://status.example.go.th/device/{device_id}"
    )
    d.close()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def test_city_view_and_central_silent_rule_judge_a_status_by_one_rule() -> None:
    """The same device status message: the city view says late/offline exactly when the
    central dispatcher's silent-node rule fires, and neither in maintenance."""
    now = float(int(time.time()))
    health = contract.example("gateway_health") | {"t": _iso(now)}
    base = contract.example("device_status") | {"report_s": 10}
    topic = f"cityedge/v1/site/{base['site_id']}/device/{base['device_id']}/status"
    gw_topic = f"cityedge/v1/site/{base['site_id']}/gateway/{base['gateway_id']}/health"
    grace = 30.0
    for maintenance in (False, True):
        for age in range(0, 200, 5):
            body = base | {"last_reading": _iso(now - age), "last_seen": _iso(now)}
            if maintenance:
                body["maintenance"] = True
            view = FleetModel(FleetSettings(late_grace_s=grace, offline_margin_s=60))
            view.on_message(gw_topic, json.dumps(health).encode(), now)
            view.on_message(topic, json.dumps(body).encode(), now)
            [row] = view.rows(now)
            silent = SilenceRules(grace, 60.0).evaluate([body], now)
            expected = (
                "maintenance"
                if maintenance
                else "online"
                if age <= 10 + grace
                else "late"
                if age <= 2 * 10 + 60
                else "offline"
            )
            assert row["state"] == expected, (age, maintenance)
            # last_seen (a status heartbeat just now) does not keep it alive: data does.
            assert bool(silent) == (row["state"] in ("late", "offline")), (age, maintenance)
