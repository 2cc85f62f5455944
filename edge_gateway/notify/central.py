"""Central mode: the platform broker's streams into the dispatcher (``cityedge alerts serve``).

Subscriptions (QoS 1, persistent session, each message PUBACKed only after it was recorded,
so a crash of this process loses nothing; a repeat is harmless because incidents are state):

* ``cityedge/v1/site/+/alert/+`` — the gateways' alerts;
* ``cityedge/v1/site/+/+/+/observation`` — peaks of open incidents and place names;
* ``cityedge/v1/site/+/gateway/+/health`` — ``"state": "offline"`` (the gateway's last will,
  or its clean stop) raises ``gateway_offline``; ``online`` clears it;
* ``cityedge/v1/site/+/device/+/status`` — ``last_reading`` and ``report_s`` (else the median
  gap of its last observations, else ``default_report_s``): :func:`silent_nodes` raises
  ``node_silent`` one interval plus ``silent_grace_s`` after the last reading (the status
  page's liveness rule, :func:`edge_gateway.status.liveness.from_status`);
* ``cityedge/v1/site/+/gateway/+/dispatcher`` — a gateway dispatcher's heartbeat; none for
  ``quiet_after_s`` raises ``dispatcher_quiet`` (the dead-man's switch).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from typing import Any

from edge_gateway.notify.dispatcher import Dispatcher
from edge_gateway.notify.incidents import synthetic
from edge_gateway.notify.settings import NotifySettings

log = logging.getLogger(__name__)

TOPICS = (
    "cityedge/v1/site/+/alert/+",
    "cityedge/v1/site/+/+/+/observation",
    "cityedge/v1/site/+/gateway/+/health",
    "cityedge/v1/site/+/device/+/status",
    "cityedge/v1/site/+/gateway/+/dispatcher",
)


class Central:
    def __init__(self, settings: NotifySettings, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.silence = dispatcher.silence  # resumed from the open incidents
        self.heartbeats: dict[tuple[str, str], float] = {}
        self.quiet: set[tuple[str, str]] = set(dispatcher.open_keys("dispatcher"))
        self.offline: set[tuple[str, str]] = set()
        self.obs_times: dict[tuple[str, str], deque[float]] = {}
        self.intervals: dict[tuple[str, str], float] = {}

    async def run(self) -> None:
        import aiomqtt

        s = self.settings
        delay = 0.5
        watch = asyncio.create_task(self._watch())
        try:
            while True:
                try:
                    client = aiomqtt.Client(
                        s.broker_host,
                        s.broker_port,
                        username=s.broker_username,
                        password=s.broker_password.get() if s.broker_password else None,
                        identifier=s.broker_client_id,
                        clean_session=False,
                    )
                    # paho-private: _client (aiomqtt's paho client)
                    client._client.manual_ack_set(True)
                    async with client:
                        for topic in TOPICS:
                            await client.subscribe(topic, qos=1)
                        log.info("central dispatcher on %s:%d", s.broker_host, s.broker_port)
                        delay = 0.5
                        async for message in client.messages:
                            await asyncio.to_thread(
                                self.handle, str(message.topic), message.payload
                            )
                            if message.qos > 0:
                                with contextlib.suppress(Exception):
                                    # paho-private: _client (aiomqtt's paho client)
                                    client._client.ack(message.mid, message.qos)
                except aiomqtt.MqttError as exc:
                    log.warning("platform broker %s:%d: %s", s.broker_host, s.broker_port, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        finally:
            watch.cancel()

    def handle(self, topic: str, payload: Any) -> None:
        try:
            body = json.loads(bytes(payload))
        except (ValueError, TypeError):
            log.warning("not JSON on %s: ignored", topic)
            return
        if not isinstance(body, dict):
            return
        parts = topic.split("/")  # cityedge/v1/site/<site>/<what>/<id>[/<leaf>]
        try:
            site, what, ident = parts[3], parts[4], parts[5]
            if what == "alert":
                self.dispatcher.record([body], [])
            elif parts[-1] == "observation":
                self._interval(site, parts[-2], body)
                self.dispatcher.record([], [body])
            elif what == "gateway" and parts[-1] == "health":
                self._health(site, ident, body)
            elif what == "device" and parts[-1] == "status":
                self.statuses[(site, ident)] = {**body, "site_id": site, "device_id": ident}
            elif parts[-1] == "dispatcher":
                # Retained: after a restart here, the last one says when it was sent.
                sent = body.get("t")
                now = time.time()
                self.heartbeats[(site, ident)] = (
                    min(float(sent), now) if isinstance(sent, (int, float)) else now
                )
        except (IndexError, KeyError, ValueError, TypeError) as exc:
            log.warning("%s: cannot use this message (%s): ignored", topic, exc)

    def _interval(self, site: str, device: str, obs: dict[str, Any]) -> None:
        """A device's report interval, learnt from its observations: the median gap of the last
        few (live ones only: a replayed backlog says nothing about the node's pace)."""
        if obs.get("replay") or not isinstance(obs.get("t"), (int, float)):
            return
        times = self.obs_times.setdefault((site, device), deque(maxlen=6))
        times.append(float(obs["t"]))
        gaps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
        if gaps:
            self.intervals[(site, device)] = gaps[len(gaps) // 2]

    def _health(self, site: str, gateway: str, body: dict[str, Any]) -> None:
        state = body.get("state")
        now = time.time()
        if state == "offline":
            self.offline.add((site, gateway))
            self.dispatcher.record(
                [
                    synthetic(
                        site,
                        gateway,
                        "gateway_offline",
                        "raised",
                        now,
                        f"gateway {gateway} offline",
                    )
                ]
            )
        elif state is not None:
            self.offline.discard((site, gateway))
            self.dispatcher.record(
                [
                    synthetic(
                        site,
                        gateway,
                        "gateway_offline",
                        "cleared",
                        now,
                        f"gateway {gateway} back online",
                    )
                ]
            )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rules_interval_s)
            try:
                await asyncio.to_thread(self.check, time.time())
            except Exception:  # a rule failure must not stop the stream
                log.exception("central rules")

    def check(self, now: float) -> None:
        """The silent-node and quiet-dispatcher rules."""
        # A gateway that is offline has its own incident; its nodes are not reported one by one
        # (and the ones already silent stay so until it is back).
        statuses = [
            {"report_s": self.intervals.get((s["site_id"], s["device_id"])), **s}
            for s in self.statuses.values()
        ]
        alerts = self.silence.evaluate(
            statuses,
            now,
            frozen={
                k for k, s in self.statuses.items() if (k[0], s.get("gateway_id")) in self.offline
            },
        )
        quiet = {k for k, t in self.heartbeats.items() if now - t > self.settings.quiet_after_s}
        for key in quiet - self.quiet:
            alerts.append(synthetic(*key, "dispatcher_quiet", "raised", now, f"{key[1]} quiet"))
        for key in self.quiet - quiet:
            alerts.append(synthetic(*key, "dispatcher_quiet", "cleared", now, f"{key[1]} back"))
        self.quiet = quiet
        if alerts:
            self.dispatcher.record(alerts)
