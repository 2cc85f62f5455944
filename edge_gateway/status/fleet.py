"""`cityedge fleet serve`: the whole city's status from the platform broker.

It subscribes (with its own, read-only account) to the retained device status and gateway
health of every site, ``cityedge/v1/site/+/device/+/status`` and
``cityedge/v1/site/+/gateway/+/health``, and serves the same pages: sites, then a site, then a
device. A gateway whose health says ``offline`` (its last will: the broker sends it within
1.5 × the gateway's keepalive, at once when the socket closes) or whose last health is older
than ``stale_s`` by its own timestamp is *down*, and its devices are *unknown*, whatever their
last retained status said. A device's liveness comes from its ``last_reading`` (else ``last_seen``)
against its own cadence (``report_s``, else ``86400 / expected_24h``), with the same rule as
on the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from edge_gateway import contract
from edge_gateway.status import liveness

log = logging.getLogger(__name__)

STATUS_TOPIC = f"{contract.ROOT}/site/+/device/+/status"
HEALTH_TOPIC = f"{contract.ROOT}/site/+/gateway/+/health"


_ts = liveness.timestamp  # ISO 8601 (or epoch seconds) -> epoch seconds, None if neither


@dataclass
class Site:
    site_id: str
    gateways: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> health + rx
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> status + rx


@dataclass
class FleetSettings:
    late_grace_s: float = 30.0
    offline_margin_s: float = 60.0
    stale_s: float = 180.0  # a gateway health older than this (its own "t") counts as down
    low_battery_v: float = 3.5


class FleetModel:
    """Fed by :meth:`on_message`; read by :class:`edge_gateway.status.web.App`."""

    def __init__(self, settings: FleetSettings | None = None) -> None:
        self.settings = settings or FleetSettings()
        self.site_map: dict[str, Site] = {}
        self._cache: tuple[tuple[int, int], list[dict[str, Any]]] | None = None
        self.connected = False
        self.messages = 0
        self.refused = 0

    def on_message(self, topic: str, payload: bytes, now: float) -> None:
        self.messages += 1
        parts = topic.split("/")
        if len(parts) != 7 or parts[2] != "site":
            self.refused += 1
            return
        site_id, what, ident = parts[3], parts[4], parts[5]
        if not payload:  # a cleared retained message
            site = self.site_map.get(site_id)
            if site is not None:
                (site.devices if what == "device" else site.gateways).pop(ident, None)
            return
        try:
            body = json.loads(payload)
            contract.validate("device_status" if what == "device" else "gateway_health", body)
        except Exception:  # noqa: BLE001 - anything a publisher sends must not stop the view
            self.refused += 1
            return
        if body.get("site_id") != site_id:
            self.refused += 1
            return
        site = self.site_map.setdefault(site_id, Site(site_id))
        body["_rx"] = now
        if what == "device" and body.get("device_id") == ident:
            site.devices[ident] = body
        elif what == "gateway" and body.get("gateway_id") == ident:
            site.gateways[ident] = body
        else:
            self.refused += 1

    # -- views --------------------------------------------------------------------------------

    def _gateway(self, site: Site, gateway_id: str | None, now: float) -> dict[str, Any] | None:
        gw = site.gateways.get(gateway_id or "") if gateway_id else None
        if gw is None and site.gateways:
            gw = max(site.gateways.values(), key=lambda g: g.get("_rx", 0))
        if gw is None:
            return None
        t = _ts(gw.get("t"))
        state = str(gw.get("state"))
        stale = t is not None and now - t > self.settings.stale_s
        return {
            "gateway_id": gw.get("gateway_id"),
            "site_id": site.site_id,
            "state": "online" if state == "online" and not stale else "offline",
            "stale": stale,
            "rx": gw.get("_rx"),
            "t": t,
            "queue_depth": gw.get("queue_depth"),
            "upstream_offline_s": gw.get("upstream_offline_s"),
        }

    def site_health(self, site_id: str) -> dict[str, Any] | None:
        site = self.site_map.get(site_id)
        return None if site is None else self._gateway(site, None, time.time())

    def _row(self, site: Site, body: dict[str, Any], now: float) -> dict[str, Any]:
        s = self.settings
        gw = self._gateway(site, body.get("gateway_id"), now)
        # Liveness is data: the last reading; last_seen also counts status heartbeats (a
        # gateway too old to send last_reading falls back to it).
        state, last, cadence = liveness.from_status(body, now, s.late_grace_s, s.offline_margin_s)
        gw_up = gw is not None and gw["state"] == "online"
        if not gw_up:
            state = "unknown"
            why = f"gateway {gw['gateway_id']} is down" if gw else "no gateway health yet"
            why_th = f"เกตเวย์ {gw['gateway_id']} ล่ม" if gw else "ยังไม่มีสถานะเกตเวย์"
        else:
            facts = {
                "last_rx": last,
                "cadence_s": cadence,
                "status": {
                    "rssi_dbm": body.get("rssi_dbm"),
                    "battery_v": body.get("battery_v"),
                    "outbox": {"depth": body.get("outbox_depth")},
                },
            }
            why = liveness.reason(state, facts, now, "en")
            why_th = liveness.reason(state, facts, now, "th")
        bat = body.get("battery_v")
        errors = 0
        for counts in (body.get("sensor_errors") or {}).values():
            if isinstance(counts, dict):
                errors += sum(v for v in counts.values() if isinstance(v, int))
        return {
            "device_id": body["device_id"],
            "site_id": site.site_id,
            "gateway_id": body.get("gateway_id"),
            "name": None,
            "place": None,
            "kind": body.get("kind"),
            "state": state,
            "reason": why,
            "reason_th": why_th,
            "cadence_s": cadence,
            "last_reading": last,
            "value": None,
            "unit": "",
            "battery_v": bat,
            "battery_pct": liveness.battery_percent(bat),
            "low_battery": isinstance(bat, (int, float)) and bat < s.low_battery_v,
            "rssi_dbm": body.get("rssi_dbm"),
            "fw": body.get("fw"),
            "outbox_depth": body.get("outbox_depth"),
            "outbox_dropped": body.get("outbox_dropped"),
            "sensor_errors": errors,
            "qc": None,
            "calibration_id": None,
            "calibration": "unknown",
            "calibration_age_s": None,
            "completeness_today": body.get("completeness"),
            "completeness_7d": None,
            "completeness_30d": None,
            "gateway_state": "online" if gw_up else "down",
        }

    def rows(self, now: float) -> list[dict[str, Any]]:
        """Every device's row; computed at most once a second while nothing new arrived
        (states are judged to the second; 5 000 rows take ~0.1 s on a slow core)."""
        key = (self.messages, int(now))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        rows = [
            self._row(site, body, now)
            for site in list(self.site_map.values())
            for body in list(site.devices.values())
        ]
        self._cache = (key, rows)
        return rows

    def sites(self, now: float) -> list[dict[str, Any]]:
        from edge_gateway.status.render import counts

        by_site: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows(now):
            by_site.setdefault(r["site_id"], []).append(r)
        return [
            {
                "site_id": site_id,
                "gateway": self._gateway(self.site_map[site_id], None, now),
                "counts": counts(by_site.get(site_id, [])),
            }
            for site_id in sorted(self.site_map)
        ]

    def detail(self, device_id: str, site_id: str | None) -> dict[str, Any] | None:
        now = time.time()
        for site in list(self.site_map.values()):
            if site_id and site.site_id != site_id:
                continue
            body = site.devices.get(device_id)
            if body is not None:
                return self._row(site, body, now) | {"events": []}
        return None

    def health(self) -> dict[str, Any]:
        return {
            "state": "serving" if self.connected else "broker_down",
            "broker_connected": self.connected,
            "sites": len(self.site_map),
            "messages": self.messages,
            "refused": self.refused,
        }


async def subscribe(
    model: FleetModel,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    tls: ssl.SSLContext | None,
    client_id: str,
    keepalive_s: int = 30,
) -> None:
    """Keep a subscription to the platform broker, reconnecting with back-off."""
    import aiomqtt

    delay = 0.5
    while True:
        try:
            async with aiomqtt.Client(
                host,
                port,
                username=username,
                password=password,
                tls_context=tls,
                identifier=client_id,
                clean_session=True,
                keepalive=keepalive_s,
                timeout=10,
            ) as client:
                await client.subscribe([(HEALTH_TOPIC, 1), (STATUS_TOPIC, 1)])  # gateways first
                model.connected = True
                delay = 0.5
                log.info("fleet: subscribed on %s:%d", host, port)
                async for msg in client.messages:
                    payload = msg.payload if isinstance(msg.payload, bytes) else b""
                    model.on_message(str(msg.topic), payload, time.time())
        except aiomqtt.MqttError as exc:
            log.warning("fleet: platform broker %s:%d: %s (retrying)", host, port, exc)
        finally:
            model.connected = False
        await asyncio.sleep(delay)
        delay = min(30.0, delay * 2)


async def serve(
    model: FleetModel,
    broker: tuple[str, int],
    http: tuple[str, int],
    username: str | None,
    password: str | None,
    tls: ssl.SSLContext | None,
    lang: str,
    client_id: str,
) -> None:
    from edge_gateway.status.web import start_site

    task = asyncio.create_task(
        subscribe(model, broker[0], broker[1], username, password, tls, client_id)
    )
    runner, port = await start_site(model, http[0], http[1], lang)
    print(
        f"fleet status on http://{http[0]}:{port}/ (platform broker {broker[0]}:{broker[1]})",
        flush=True,
    )
    try:
        await task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await runner.cleanup()
