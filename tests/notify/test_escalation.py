"""Escalation when nobody acknowledges (``cityedge alerts ack`` stops it), the daily digest, the
daily alive message and the uptime ping (the dead-man's switch)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from aiohttp import web

from edge_gateway.notify.dispatcher import Dispatcher
from host_tools.cli import main as cli_main
from tests.notify.conftest import settings_of, wait_until, water_alert
from tests.support.fake_services import FakeLine, WebhookReceiver, _Server

ROUTE = """
[[routes]]
channels = ["line"]
escalate_after_s = 0.5
escalate_to = ["hook"]
"""


def test_unacknowledged_incident_escalates_an_acknowledged_one_does_not(
    alerts_config: Any, line: FakeLine, hook: WebhookReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    config = alerts_config(routes=ROUTE)
    d = Dispatcher(settings_of(config))
    t0 = time.time()
    d.record([water_alert("ce-000000000a01", "water_critical", "raised", t0, 3.2)])
    d.record([water_alert("ce-000000000a02", "water_critical", "raised", t0, 3.1)])
    # Incident #2 is acknowledged with the command (its own connection to the same outbox).
    assert cli_main(["alerts", "ack", "2", "--by", "somchai", "--config", str(config)]) == 0
    assert "acknowledged" in capsys.readouterr().out

    async def go() -> None:
        task = asyncio.create_task(d.run())
        try:
            await wait_until(lambda: len(line.delivered) == 2, 20)
            await asyncio.sleep(0.6)  # escalate_after_s = 0.5
            d.tick()  # (the dispatcher's own timer does this every few seconds)
            await wait_until(lambda: len(hook.received) >= 1, 20)
            d.tick()
            await asyncio.sleep(0.3)
        finally:
            d.stop()
            with contextlib.suppress(BaseException):
                await task

    asyncio.run(go())
    assert len(line.delivered) == 2
    assert [m["kind"] for m in hook.received] == ["escalated"]
    assert hook.received[0]["device_id"] == "ce-000000000a01"
    assert "not acknowledged" in hook.received[0]["text"]
    assert cli_main(["alerts", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "acked by somchai" in listing and "2 open incident(s)" in listing
    d.close()


def test_digest_and_alive_message_once_a_day(alerts_config: Any) -> None:
    now = [1_780_000_000.0]  # 2026-05-28 20:26 UTC = 03:26 in Bangkok
    config = alerts_config(extra='digest_hour = 8\n[heartbeat]\nchannels = ["hook"]\nhour = 8\n')
    d = Dispatcher(settings_of(config), clock=lambda: now[0])
    d.record([water_alert("ce-000000000a01", "water_warning", "raised", now[0], 2.1)])
    assert d.tick() == 0  # before 08:00 local
    now[0] += 5 * 3600  # 08:26 local
    assert d.tick() == 2  # the digest and the alive message
    assert d.tick() == 0  # once a day
    rows = d.outbox.db.execute(
        "SELECT kind, message FROM outbox WHERE kind IN ('digest', 'alive') ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == ["digest", "alive"]
    assert "1 incident(s) still open" in rows[0][1] and "#1 Canal water level" in rows[0][1]
    now[0] += 86400
    assert d.tick() == 2
    d.close()


class _Monitor(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    def app(self) -> web.Application:
        app = web.Application()

        async def ping(request: web.Request) -> web.Response:
            self.pings += 1
            return web.Response(text="OK")

        app.router.add_get("/ping/abc", ping)
        return app


def test_uptime_ping(alerts_config: Any) -> None:
    monitor = _Monitor().start()
    try:
        config = alerts_config(
            extra=f'[heartbeat]\nping_url = "{monitor.url}/ping/abc"\nping_interval_s = 0.2\n'
        )
        d = Dispatcher(settings_of(config))

        async def go() -> None:
            task = asyncio.create_task(d.run())
            await wait_until(lambda: monitor.pings >= 3, 10)
            d.stop()
            with contextlib.suppress(BaseException):
                await task

        asyncio.run(go())
        assert d.counters["pings_ok"] >= 3
        d.close()
    finally:
        monitor.stop()


def test_silence_rules_resume_after_a_restart(alerts_config: Any) -> None:
    config = alerts_config()
    now = time.time()
    status = {
        "site_id": "s-site-01",
        "device_id": "ce-000000000b01",
        "gateway_id": "gw-s-01",
        "last_seen": now - 100,
        "report_s": 10,
    }
    d = Dispatcher(settings_of(config))
    d.record(d.silence.evaluate([status], now))
    d.close()
    d2 = Dispatcher(settings_of(config))  # restarted: the node is still silent, then reports
    assert d2.silence.evaluate([status], now) == []
    back = d2.silence.evaluate([{**status, "last_seen": now}], now)
    assert [(a["alert"], a["state"]) for a in back] == [("node_silent", "cleared")]
    d2.record(back)
    kinds = [r[0] for r in d2.outbox.db.execute("SELECT kind FROM outbox ORDER BY id")]
    assert kinds == ["raised", "cleared"]
    d2.close()
