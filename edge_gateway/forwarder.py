"""Where a reading is forwarded: the platform session, the live-first scheduler, deletes.

:class:`Forwarder` keeps a persistent session on the platform broker (``clean_session =
False``, the last will says ``offline``). On each connection it finishes what already has a
packet id, then sends rows oldest first: live rows (stored after this connection began) go
first and the backlog drains at ``forward.drain_rate_per_s``, at most ``forward.max_inflight``
unfinished (:class:`edge_gateway.flight.FlightWindow`: exactly once, QoS 2 with packet ids kept
in the store). A row is deleted after its PUBCOMP, lazily, in batches. It also publishes the
retained gateway health and the retained device status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import aiomqtt

from edge_gateway import __version__, contract, metrics
from edge_gateway.config import GatewayConfig
from edge_gateway.flight import FlightWindow, MidAllocator, Slot
from edge_gateway.ingest import iso_utc
from edge_gateway.qos2link import Reconnect, make_client
from edge_gateway.store import STATE_RELEASED, Row, Store

if TYPE_CHECKING:
    from edge_gateway.app import Gateway

log = logging.getLogger("edge_gateway")


def health_payload(
    config: GatewayConfig,
    stats: dict[str, Any],
    state: str,
    reason: str | None,
    online_since: float | None,
) -> bytes:
    """The retained health message. ``online`` carries the figures; ``offline`` a reason:
    ``stopped`` (a clean stop, ``t`` = the stop time) or ``connection_lost`` (the last
    will: no ``t``, since the broker sends it when it notices the loss, but
    ``online_since``, when the lost connection began)."""
    body: dict[str, Any] = {
        "v": 1,
        "site_id": config.site_id,
        "gateway_id": config.gateway_id,
        "state": state,
        "version": __version__,
    }
    if reason != "connection_lost":
        body["t"] = iso_utc(time.time())
    if reason is not None:
        body["reason"] = reason
    if online_since is not None:
        body["online_since"] = iso_utc(online_since)
    if state == "online" or reason == "stopped":
        body.update(metrics.health(stats))  # the metrics marked health in the table
    return json.dumps(body, separators=(",", ":")).encode()


class OfflineClock:
    """How long the platform link has been down, in total (since the gateway was made)."""

    def __init__(self) -> None:
        self.since: float | None = time.monotonic()
        self.total = 0.0

    def online(self) -> None:
        if self.since is not None:
            self.total += time.monotonic() - self.since
            self.since = None

    def offline(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def seconds(self) -> float:
        return self.total + (time.monotonic() - self.since if self.since is not None else 0.0)


class _Schedule:
    """The live-first scheduler's state on one connection: the live and backlog cursors either
    side of ``boundary`` (the newest row when the connection began) and the drain tokens."""

    def __init__(self, boundary: int) -> None:
        self.boundary = boundary
        self.live_cursor = boundary
        self.backlog_cursor = 0
        self.tokens = 0.0
        self.last_refill = time.monotonic()

    def refill(self, rate_per_s: float) -> None:
        now = time.monotonic()
        self.tokens = min(self.tokens + (now - self.last_refill) * rate_per_s, max(1.0, rate_per_s))
        self.last_refill = now

    @property
    def backlog_left(self) -> bool:
        return self.backlog_cursor < self.boundary


class Forwarder:
    """The platform side of one gateway run: :meth:`run` until cancelled."""

    def __init__(self, gw: Gateway, store: Store) -> None:
        self.gw = gw
        self.store = store
        self.new_rows = asyncio.Event()  # set when rows were stored (or released)
        self.reconnect = asyncio.Event()  # set when the upstream settings changed
        self.client: aiomqtt.Client | None = None  # while connected
        self.online_since: float | None = None  # when the current platform connection began
        self.stopping = False  # the final offline health was sent: no more online ones
        self._health_topic: str | None = None
        self._acked: list[tuple[int, int]] = []  # (row id, mid): PUBCOMP received, not deleted
        self._mids = MidAllocator()

    # -- the session ----------------------------------------------------------------------

    async def run(self) -> None:
        gw, store = self.gw, self.store
        delay = gw.config.upstream.reconnect_min_s
        while True:
            gw.check_stop()
            section = gw.config.upstream
            self.reconnect.clear()
            again_now = False
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                log.warning(
                    "platform broker %s:%d: %s",
                    section.host,
                    section.port,
                    "; ".join(str(e) for e in group.exceptions),
                )
            except* Reconnect:
                log.info("reconnecting to the platform broker with new settings")
                again_now = True
            except* (sqlite3.Error, OSError) as group:
                # The store could not record the QoS 2 state (a full disk): start the link again;
                # what has a packet id is finished first, nothing is sent twice.
                for exc in group.exceptions:
                    if not await store.call(gw.disk.failed, exc):
                        raise
                gw.reasons(
                    logging.ERROR,
                    "upstream_store",
                    "forwarding paused, the store cannot write: %s",
                    "; ".join(str(e) for e in group.exceptions),
                )
            finally:
                self.online_since = None
                if self.client is not None:  # it was connected: the backoff starts again
                    delay = section.reconnect_min_s
                    self.client = None
                    gw.offline.offline()
            if again_now:
                delay = 0.0
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, section.reconnect_min_s), section.reconnect_max_s)

    async def _session(self) -> None:
        """One connection to the platform broker, until it breaks or must be made again."""
        gw, store, cfg = self.gw, self.store, self.gw.config
        section = cfg.upstream
        topic = contract.gateway_health_topic(cfg.site_id, cfg.gateway_id)
        self.online_since = time.time()
        will = aiomqtt.Will(topic, gw.health("offline", "connection_lost"), qos=1, retain=True)
        # Before connecting: finish pending deletes, then read the rows that have packet
        # ids — the broker may hold them; they are finished first (PUBREL or PUBLISH).
        await self.flush_deletes()
        await store.call(store.release_all)
        flight = await store.call(store.in_flight)
        self._mids.reset({f.mid: f.id for f in flight})
        client = make_client(
            section,
            f"cityedge-{cfg.gateway_id}-up",
            clean_session=False,  # the broker keeps the QoS 2 state of our packet ids
            will=will,
            max_inflight_messages=cfg.forward.max_inflight,
        )
        conn = FlightWindow(
            client, store, flight, cfg.forward.max_inflight, self._mids, self._completed
        )
        async with client:
            log.info("connected to the platform broker %s:%d", section.host, section.port)
            if flight:
                log.info(
                    "finishing %d messages in flight before the restart or reconnect", len(flight)
                )
            released = sum(1 for f in flight if f.state == STATE_RELEASED)
            if released and conn.link.session_present is False:
                gw.counters["upstream_sessions_lost"] += 1
                log.warning(
                    "the platform broker no longer has this gateway's session (it was "
                    "restarted without persistence, or the session expired): %d readings "
                    "it had already acknowledged may not have reached its subscribers. "
                    "Set 'persistence true' on the platform broker (docs/gateway.md, What "
                    "the platform broker needs)",
                    released,
                )
            gw.offline.online()
            self.client = client
            self._health_topic = topic
            await self._publish_online(client, topic)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._forward(conn))
                tg.create_task(conn.committer())
                tg.create_task(conn.watchdog(section.timeout_s))
                tg.create_task(self.status_publisher(client, topic))
                tg.create_task(self._watch_reconnect())
                tg.create_task(self._watch_disconnect(client))

    @staticmethod
    async def _watch_disconnect(client: aiomqtt.Client) -> None:
        """Raise as soon as the link drops, instead of when a PUBREC or PUBCOMP times out. The
        gateway subscribes to nothing upstream, so the iterator only ends with a disconnect."""
        async for _message in client.messages:
            pass
        raise aiomqtt.MqttError("platform broker connection closed")

    async def _watch_reconnect(self) -> None:
        await self.reconnect.wait()
        raise Reconnect()

    # -- health and status ----------------------------------------------------------------

    async def _publish_online(self, client: aiomqtt.Client, topic: str) -> None:
        if not self.stopping:  # once the final offline health is out, never say online again
            await client.publish(topic, self.gw.health("online"), qos=1, retain=True)

    async def publish_stopped(self, why: str) -> None:
        """Before a clean disconnect (which discards the last will): the final retained health,
        ``offline`` with the stop time, so the platform does not keep the last ``online``."""
        self.stopping = True
        client, topic = self.client, self._health_topic
        if client is None or topic is None:
            return  # not connected: the broker already published the will (connection_lost)
        try:
            async with asyncio.timeout(min(5.0, self.gw.config.upstream.timeout_s)):
                await client.publish(
                    topic, self.gw.health("offline", "stopped"), qos=1, retain=True
                )
            log.info("final health sent to the platform broker: offline (%s)", why)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning(
                "could not send the final offline health (%s): %s; the platform keeps "
                "the last online message until the broker's keepalive ends",
                why,
                exc,
            )

    async def status_publisher(self, client: aiomqtt.Client, health_topic: str) -> None:
        gw = self.gw
        while True:
            await asyncio.sleep(gw.config.health.interval_s)
            if self.stopping:
                return
            await self._publish_online(client, health_topic)
            gw.check_stop()
            now = time.time()
            for dev in list(gw.devices.devices):
                status = gw.devices.payload(dev, now)
                if gw.status_feed.active and gw.status_feed.in_maintenance(dev, now):
                    status["maintenance"] = True  # the city view and central alerts know too
                body = json.dumps(status, separators=(",", ":"))
                await client.publish(
                    contract.device_status_topic(gw.config.site_id, dev),
                    body.encode(),
                    qos=1,
                    retain=True,
                )
                gw.check_stop()

    # -- deletes --------------------------------------------------------------------------

    async def flush_deletes(self) -> None:
        """Delete the rows whose PUBCOMP came; their packet ids are free once that commits."""
        if not self._acked:
            return
        done, self._acked = self._acked, []
        store = self.store
        await store.call(store.delivered, [rid for rid, _ in done])
        for rid, mid in done:
            if self._mids.busy.get(mid) == rid:
                self._mids.free(mid)

    def _completed(self, slot: Slot) -> None:
        """PUBCOMP: the platform broker delivered the row's message; delete the row (lazily)."""
        counters = self.gw.counters
        self._acked.append((slot.row_id, slot.mid))
        if slot.topic.endswith("/observation"):
            counters["readings_out"] += 1
            if slot.replay:
                counters["replayed_out"] += 1
        else:
            counters["alerts_out"] += 1

    # -- the live-first scheduler ---------------------------------------------------------

    async def _forward(self, conn: FlightWindow) -> None:
        """Send rows oldest first; live rows (stored after this connection began) go first and
        the backlog drains at ``drain_rate_per_s``. Rows that already have a packet id (from
        before a restart or reconnect) are finished first. A row is deleted after its PUBCOMP."""
        store = self.store
        sched = _Schedule(await store.call(store.max_id))
        last_delete = time.monotonic()
        await conn.resume()
        while True:
            fwd = self.gw.config.forward
            sched.refill(fwd.drain_rate_per_s)
            self.new_rows.clear()
            rows, replay = await self._next_rows(sched)
            for row in rows:
                # One place in the window per row; the flight committer gives the queued rows
                # their packet ids in one transaction, together with the PUBRECs that came.
                if replay:
                    await conn.backlog_window.acquire()
                await conn.window.acquire()
                conn.enqueue(row, replay or row.id <= sched.boundary, replay)
            if self._acked and (
                len(self._acked) >= fwd.batch
                or time.monotonic() - last_delete >= fwd.delete_max_ms / 1000.0
            ):
                last_delete = time.monotonic()
                await self.flush_deletes()
            if not rows:
                wait = 0.05 if not self._acked else fwd.delete_max_ms / 1000.0
                if sched.backlog_left and fwd.live_first:
                    wait = min(wait, max(0.001, (1.0 - sched.tokens) / fwd.drain_rate_per_s))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self.new_rows.wait()

    async def _next_rows(self, sched: _Schedule) -> tuple[list[Row], bool]:
        """The next rows to send, and whether they are backlog (sent as replay)."""
        store, fwd = self.store, self.gw.config.forward
        if not fwd.live_first:
            cursor = max(sched.live_cursor if not sched.backlog_left else 0, sched.backlog_cursor)
            rows = await store.call(store.fetch, cursor, fwd.batch)
            if rows:
                sched.backlog_cursor = sched.live_cursor = rows[-1].id
            return rows, False
        rows = await store.call(store.fetch, sched.live_cursor, fwd.batch)
        if rows:
            sched.live_cursor = rows[-1].id
            return rows, False
        if not (sched.backlog_left and sched.tokens >= 1.0):
            return [], False
        size = min(int(sched.tokens), fwd.batch, max(1, fwd.max_inflight // 2))
        rows = await store.call(store.fetch, sched.backlog_cursor, size, sched.boundary)
        if rows:
            sched.backlog_cursor = rows[-1].id
            sched.tokens -= len(rows)
        else:
            sched.backlog_cursor = sched.boundary
        return rows, True
