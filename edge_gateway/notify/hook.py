"""The dispatcher inside the gateway (the default): built from ``[notify] config`` of the
gateway TOML. Alerts and observations are recorded on the store thread *before* the gateway's
own commit, so a crash between the two re-processes the reading and records the same alerts
again — which changes nothing (incidents are state, outbox rows are keyed)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_gateway import contract
from edge_gateway.config import ConfigError, GatewayConfig
from edge_gateway.notify.dispatcher import Dispatcher
from edge_gateway.notify.settings import load_settings

log = logging.getLogger(__name__)


def start_in_gateway(config: GatewayConfig) -> Dispatcher | None:
    assert config.notify.config is not None
    default_outbox = str(Path(config.store_path).with_name("notify.sqlite"))
    settings = load_settings(config.notify.config, default_outbox=default_outbox)
    if settings.mode != "gateway":
        log.warning(
            "%s has mode = %r: this gateway sends no notifications (the central dispatcher does)",
            config.notify.config,
            settings.mode,
        )
        return None
    page = config.status.page_url()
    if settings.status_url is None and page is not None:  # the link to the device's page
        settings = dataclasses.replace(settings, status_url=page + "/device/{device_id}")
    places = {}
    for device in config.inventory.device:
        name = (device.location.name if device.location else None) or device.name
        if name:
            places[device.id] = name
    dispatcher = Dispatcher(settings, places=places, site_id=config.site_id)
    log.info("alert dispatcher in the gateway: outbox %s", settings.outbox)
    return dispatcher


async def supervise(dispatcher: Dispatcher) -> None:
    """Run the dispatcher for as long as the gateway runs: a failure (aiohttp missing, a bug)
    is logged and retried; it never stops the gateway, and the outbox keeps recording."""
    while True:
        try:
            await dispatcher.run()
            return
        except asyncio.CancelledError:
            raise
        except ConfigError as exc:
            log.error("alert dispatcher: %s (%s); notifications wait in the outbox", exc, exc.hint)
        except Exception:
            log.exception(
                "alert dispatcher failed; restarting it in 30 s (the outbox keeps "
                "every notification)"
            )
        await asyncio.sleep(30.0)


def device_statuses(gateway: Any) -> Callable[[], list[dict[str, Any]]]:
    """The gateway's own view of its devices for the silent-node rule, judged by the status
    page's liveness (:func:`edge_gateway.status.liveness.from_status`): when the page runs,
    its facts (the last new reading, the device's own cadence, maintenance windows, so a
    device in maintenance never alerts); else the device tracker's last reading and report
    interval (inventory, else what the node announced, else ``inventory.default_report_s``)."""

    def get() -> list[dict[str, Any]]:
        cfg = gateway.config
        base = {"site_id": cfg.site_id, "gateway_id": cfg.gateway_id}
        feed = getattr(gateway, "status_feed", None)
        if feed is not None and feed.active:
            return [base | fact for fact in feed.liveness_facts()]
        out = []
        for dev, state in list(gateway.devices.devices.items()):
            entry = cfg.device(dev)
            report = (
                (entry.report_s if entry and entry.report_s else None)
                or state.report_s
                or cfg.inventory.default_report_s
            )
            out.append(
                base | {"device_id": dev, "last_reading": state.last_reading, "report_s": report}
            )
        return out

    return get


def heartbeat_publisher(gateway: Any) -> Callable[[dict[str, Any]], None]:
    """The dead-man's switch towards the platform: every few seconds the dispatcher's figures
    go to ``cityedge/v1/site/<site>/gateway/<gw>/dispatcher`` (QoS 0, retained, with the time
    it was sent), which the central side watches (``dispatcher_quiet``), also across its own
    restarts. Nothing is sent while the platform is away."""
    cfg = gateway.config
    topic = f"{contract.ROOT}/site/{cfg.site_id}/gateway/{cfg.gateway_id}/dispatcher"

    def publish(stats: dict[str, Any]) -> None:
        client = gateway.upstream_client
        if client is None:
            return
        body = {
            "v": 1,
            "gateway_id": cfg.gateway_id,
            "t": time.time(),
            "pending": stats.get("pending"),
            "oldest_pending_age_s": stats.get("oldest_pending_age_s"),
            "sent": sum((stats.get("sent") or {}).values()),
        }
        gateway.spawn(
            gateway.publish_quietly(client, topic, json.dumps(body).encode(), 0, retain=True)
        )

    return publish
