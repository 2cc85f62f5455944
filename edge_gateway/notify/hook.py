"""The dispatcher inside the gateway (the default): built from ``[notify] config`` of the
gateway TOML. Alerts and observations are recorded on the store thread *before* the gateway's
own commit, so a crash between the two re-processes the reading and records the same alerts
again — which changes nothing (incidents are state, outbox rows are keyed)."""

from __future__ import annotations

import logging
from pathlib import Path

from edge_gateway.config import ConfigError, GatewayConfig
from edge_gateway.notify.dispatcher import Dispatcher
from edge_gateway.notify.settings import load_settings

log = logging.getLogger(__name__)


def start_in_gateway(config: GatewayConfig) -> Dispatcher | None:
    assert config.notify.config is not None
    default_outbox = str(Path(config.store_path).with_name("notify.sqlite"))
    settings = load_settings(config.notify.config, default_outbox=default_outbox)
    if settings.mode != "gateway":
        log.warning("%s has mode = %r: this gateway sends no notifications (the central "
                    "dispatcher does)", config.notify.config, settings.mode)
        return None
    places = {}
    for device in config.inventory.device:
        name = (device.location.name if device.location else None) or device.name
        if name:
            places[device.id] = name
    dispatcher = Dispatcher(settings, places=places, site_id=config.site_id)
    log.info("alert dispatcher in the gateway: outbox %s", settings.outbox)
    return dispatcher


__all__ = ["ConfigError", "start_in_gateway"]
