"""The gateway service: site broker → validate → store (group commit) → custody → platform.

    from edge_gateway.app import Gateway
    gw = Gateway(config)            # a GatewayConfig
    task = asyncio.create_task(gw.run())
    ...
    gw.stats()                      # counters, queue depth, drops by reason
    gw.request_stop()               # run() returns after a clean shutdown

Tasks inside ``run()``:

* **local**: subscribes to the node topics on the site broker; validates each message (bad
  ones go to the dead-letter topic, counted by reason) and queues readings for the committer.
* **committer**: takes up to ``store.commit_max_readings`` readings or waits at most
  ``store.commit_max_ms``; on the store thread it de-duplicates, processes (calibration, QC,
  indices, alerts) and commits them in one transaction; then it sends custody ranges to nodes.
* **upstream**: keeps a persistent session on the platform broker; sends live rows first and
  drains the backlog at ``forward.drain_rate_per_s``, at most ``forward.max_inflight``
  unfinished, exactly once with QoS 2 and packet ids kept in the store
  (:mod:`edge_gateway.upstream`); deletes a row after its PUBCOMP. Publishes retained gateway
  health (last will: offline) and retained device status.
* **metrics** (optional) and the **systemd watchdog**.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from edge_gateway import __version__, contract, metrics, sdnotify
from edge_gateway.backpressure import BoundedQueue, InboundGate, TokenBucket
from edge_gateway.bounds import ReasonLog
from edge_gateway.config import BrokerSection, ConfigError, GatewayConfig, load_config
from edge_gateway.devices import DeviceTracker
from edge_gateway.diskguard import RETRY_S, DiskGuard
from edge_gateway.ingest import Accepted, classify, deadletter_payload, iso_utc
from edge_gateway.metrics import MetricsServer
from edge_gateway.processing import Processor, load_registries
from edge_gateway.quarantine import Quarantine
from edge_gateway.status import StatusFeed
from edge_gateway.store import (
    PRIORITY_ALERT,
    PRIORITY_ALERT_READING,
    PRIORITY_READING,
    STATE_RELEASED,
    CommitResult,
    Entry,
    InFlight,
    Limits,
    Row,
    Store,
    open_store,
)
from edge_gateway.upstream import MidAllocator, Qos2Link, wire_payload

log = logging.getLogger("edge_gateway")

# Memory bounds (edge_gateway/backpressure.py): readings waiting for the committer, in messages
# and payload bytes; devices tracked beyond the inventory; dead letters published per second.
QUEUE_MESSAGES = 1024
QUEUE_BYTES = 2 << 20
MAX_DEVICES = 1000
DEAD_LETTERS_PER_S = 200.0  # on average; bursts of up to DEAD_LETTERS_BURST
DEAD_LETTERS_BURST = 500.0


@dataclass
class _Incoming:
    device_id: str
    body: dict[str, Any]
    received: float
    ack: tuple[aiomqtt.Client, int, int] | None = None  # (site client, mid, qos): PUBACK later
    size: int = 0  # payload bytes (the committer queue is bounded in bytes too)


@dataclass
class _PipelineResult:
    commit: CommitResult
    dead: list[tuple[str, bytes, str, str]] = field(
        default_factory=list
    )  # topic, payload, code, reason
    alerts: int = 0
    samples: list[tuple[str, float]] = field(default_factory=list)  # (device, sample time)


@dataclass
class _Slot:
    """A row on its way through the QoS 2 handshake on the current connection."""

    row_id: int
    mid: int
    topic: str
    replay: bool
    backlog: bool  # holds a permit of the backlog half of the window
    released: bool = False  # PUBREC received and committed, PUBREL sent
    recorded: bool = False  # PUBREC received (commit pending or done)
    since: float = field(default_factory=time.monotonic)


class _Reconnect(Exception):
    """Leave the current broker connection and connect again (settings changed or link broken)."""


def _limits(config: GatewayConfig) -> Limits:
    s = config.store
    return Limits(s.max_bytes, s.max_age_s, s.min_free_bytes, s.dedup_horizon_s)


def _tls_context(section: BrokerSection) -> ssl.SSLContext | None:
    if not section.tls:
        return None
    ctx = ssl.create_default_context(cafile=section.ca_file)
    if section.cert_file and section.key_file:
        ctx.load_cert_chain(section.cert_file, section.key_file)
    if section.tls_insecure:
        ctx.check_hostname = False
    return ctx


def _puback(ack: tuple[aiomqtt.Client, int, int] | None) -> None:
    """PUBACK a site-broker message (manual ack). On a connection that is gone this does
    nothing: the broker sends the message again on the next connection."""
    if ack is None:
        return
    client, mid, qos = ack
    if qos > 0:
        with contextlib.suppress(Exception):
            client._client.ack(mid, qos)


def sample_time(body: dict[str, Any], received: float) -> float:
    """When a reading was sampled, for completeness: its ``t`` when the node's clock is synced
    and ``t`` is not in the future (5 min of clock skew allowed), else the receive time."""
    t = body.get("t")
    if body.get("synced") is True and isinstance(t, (int, float)) and 0 < t <= received + 300:
        return float(t)
    return received


def custody_ranges(keys: list[tuple[str, int, int]]) -> list[tuple[str, int, int, int]]:
    """Collapse (device, boot, seq) keys into (device, boot, from, to) contiguous ranges."""
    by: dict[tuple[str, int], set[int]] = defaultdict(set)
    for dev, boot, seq in keys:
        by[(dev, boot)].add(seq)
    out: list[tuple[str, int, int, int]] = []
    for (dev, boot), seqs in sorted(by.items()):
        ordered = sorted(seqs)
        start = prev = ordered[0]
        for s in ordered[1:]:
            if s != prev + 1:
                out.append((dev, boot, start, prev))
                start = s
            prev = s
        out.append((dev, boot, start, prev))
    return out


class Gateway:
    """One site's gateway. ``await run()`` until cancelled or :meth:`request_stop`."""

    def __init__(self, config: GatewayConfig, config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path is not None else None
        self.store: Store | None = None
        self.processor: Processor | None = None
        self.devices = DeviceTracker(config)
        # Event-loop counters (edge_gateway.metrics: the "process" and "saved" ones); the saved
        # ones are written to the store by _save_counters, _saved is what it holds of them.
        self.status_feed = StatusFeed(config)  # the status page (edge_gateway/status)
        self.counters: dict[str, int] = defaultdict(int)
        self._saved: dict[str, int] = {}
        self._queue: BoundedQueue[_Incoming] | None = None
        self._stop: asyncio.Event | None = None
        self._new_rows: asyncio.Event | None = None
        self._local: aiomqtt.Client | None = None
        self._upstream: aiomqtt.Client | None = None
        self._local_reconnect: asyncio.Event | None = None
        self._upstream_reconnect: asyncio.Event | None = None
        self._acked: list[tuple[int, int]] = []  # (row id, mid): PUBCOMP received, not deleted
        self._mids = MidAllocator()
        self._offline_since: float | None = time.monotonic()
        self._offline_total = 0.0
        self._last_commit_s = 0.0
        self._metrics: MetricsServer | None = None
        self.metrics_port: int | None = None
        self.ready = False
        self._reload_requested = False
        self._background: set[asyncio.Task[Any]] = set()
        self._upstream_task: asyncio.Task[None] | None = None
        self._store_failures = 0
        self._stopping = False  # the final offline health was sent: no more online ones
        self._online_since: float | None = None  # when the current platform connection began
        self._upstream_health_topic: str | None = None
        self.notify: Any = None  # the alert dispatcher (edge_gateway.notify), when configured
        self.ota: Any = None  # the OTA rollout service (edge_gateway.ota), once running
        self._reasons = ReasonLog(log)  # bad input: one log line per reason and minute
        self.quarantine: Quarantine | None = None
        self.disk = DiskGuard(config.store_path.parent)
        self._dead_letter_rate = TokenBucket(DEAD_LETTERS_PER_S, DEAD_LETTERS_BURST)

    def _spawn(self, coro: Any) -> None:
        """Run a fire-and-forget coroutine, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- public API ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask ``run()`` to finish: pending deletes are flushed and the store closed."""
        if self._stop is not None:
            self._stop.set()

    def _check_stop(self) -> None:
        """End a loop that runs until cancelled once the gateway stops, cancelled or not.

        Python 3.11's asyncio.wait_for, which aiomqtt's publish(), subscribe() and disconnect
        await, returns the result instead of raising when the operation completes in the same
        loop pass as the cancel (CPython gh-86296; 3.12's raises). A loop that carried on after
        that lost cancel never ended, and the gateway's stop waited for it for ever (seen under
        CPU load at the end of the demo). ``run()`` sets the stop event before it cancels."""
        if self._stop is not None and self._stop.is_set():
            raise asyncio.CancelledError

    def request_reload(self) -> None:
        """Re-read the config file (as on SIGHUP); the store and its contents are kept."""
        self._reload_requested = True
        if self._stop is not None:
            self._spawn(self.reload())

    def stats(self) -> dict[str, Any]:
        """Every figure of :data:`edge_gateway.metrics.METRICS` (also what the metrics endpoint
        and the health message show)."""
        store = self.store
        offline = self._offline_total
        if self._offline_since is not None:
            offline += time.monotonic() - self._offline_since
        given = {
            "queue_depth": store.depth if store is not None else 0,
            "queue_bytes": store.bytes if store is not None else 0,
            "store_file_bytes": store.file_bytes() if store is not None else 0,
            "oldest_age_s": self._oldest_age,
            "upstream_offline_s": round(offline, 3),
            "upstream_connected": self._upstream is not None,
            "local_connected": self._local is not None,
            "last_commit_s": self._last_commit_s,
            "devices": len(self.devices.devices),
            "ready": self.ready,
            "disk_full": self.disk.full,
        }
        stored = dict(store.counters) if store is not None else {}
        return metrics.collect(self.counters, stored, given)

    def _load_saved_counters(self) -> None:
        """At start: the saved counters continue from what the store holds."""
        assert self.store is not None
        for name, value in self.store.counters.items():
            if metrics.saved_counter(name):
                self.counters[name] += value
                self._saved[name] = value

    async def _save_counters(self) -> None:
        """Write what the saved counters gained since the last time (one small transaction)."""
        store = self.store
        if store is None:
            return
        gained = {
            name: n - self._saved.get(name, 0)
            for name, n in list(self.counters.items())
            if metrics.saved_counter(name) and n != self._saved.get(name, 0)
        }
        if not gained:
            return
        try:
            await store.call(store.add_counters, gained)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not save counters (kept in memory, tried again): %s", exc)
            return
        for name, n in gained.items():
            self._saved[name] = self._saved.get(name, 0) + n

    _oldest_age: float | None = None

    # -- run ----------------------------------------------------------------------------------

    async def run(self, handle_signals: bool = False) -> None:
        """Run until :meth:`request_stop` or cancellation. ``handle_signals`` installs SIGTERM,
        SIGINT (stop) and SIGHUP (reload) handlers — for the service, not for embedding."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._new_rows = asyncio.Event()
        self._local_reconnect = asyncio.Event()
        self._upstream_reconnect = asyncio.Event()
        self._queue = BoundedQueue(QUEUE_MESSAGES, QUEUE_BYTES, lambda item: item.size)
        cfg = self.config
        registries = await asyncio.to_thread(load_registries, cfg)
        self.store = await asyncio.to_thread(
            open_store, cfg.store_path, _limits(cfg), cfg.store.synchronous
        )
        store = self.store
        await store.call(self.disk.open)
        self.quarantine = Quarantine(cfg.store_path.parent)
        for key in await store.call(self.quarantine.open):
            self.counters["quarantined_new"] += 1
            log.error(
                "reading %s/%d/%d made the gateway stop twice: quarantined (it will be "
                "dead-lettered and confirmed to the node, not processed)",
                *key,
            )
        self.processor = Processor(cfg, registries)
        self.devices.restore(*await store.call(store.sample_counts, time.time()))
        self._load_saved_counters()
        self.processor.node_location = self.devices.location  # provisioned, from node state
        saved = await store.call(store.get_meta, "alert_state")
        if saved:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                self.processor.restore_alert_state(json.loads(saved))
        if cfg.notify.config:
            from edge_gateway.notify import hook

            self.notify = await asyncio.to_thread(hook.start_in_gateway, cfg)
            if self.notify is not None:
                self.notify.on_heartbeat = hook.heartbeat_publisher(self)
                self.notify.statuses = hook.device_statuses(self)
                self.status_feed.alerts = self.notify  # the page shows and acks its incidents
        log.info(
            "gateway %s (site %s) store %s: %d rows waiting",
            cfg.gateway_id,
            cfg.site_id,
            cfg.store_path,
            store.depth,
        )
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(self._local_loop(), name="local"),
            asyncio.create_task(self._committer(), name="committer"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        if cfg.upstream.enabled:
            self._upstream_task = asyncio.create_task(self._upstream_loop(), name="upstream")
        from edge_gateway.ota import service as ota  # rollouts over the site broker (docs/ota.md)

        tasks.append(asyncio.create_task(ota.run(self), name="ota"))
        if self.notify is not None:
            from edge_gateway.notify.hook import supervise

            tasks.append(asyncio.create_task(supervise(self.notify), name="notify"))
        try:
            if cfg.metrics.enabled:
                self._metrics = MetricsServer(
                    cfg.metrics.host,
                    cfg.metrics.port,
                    self.stats,
                    self.notify.metrics_text if self.notify else None,
                )
                self.metrics_port = await self._metrics.start()
            self.ready = True
            sdnotify.notify(f"READY=1\nSTATUS=store {store.depth} rows waiting")
            if cfg.status.enabled:  # the page (edge_gateway/status), after READY: not needed for it
                self.status_feed.gateway_stats = self.stats
                self.status_feed.calibration = self._calibration_record
                await self.status_feed.start()
            stop_wait = asyncio.create_task(self._stop.wait(), name="stop-wait")
            while not stop_wait.done():
                watched = [stop_wait, *tasks]
                if self._upstream_task is not None:
                    watched.append(self._upstream_task)
                # Wake at least every second: a reload may have started or stopped forwarding.
                done, _ = await asyncio.wait(
                    watched, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    if t is not stop_wait and not t.cancelled() and t.exception() is not None:
                        raise RuntimeError(f"gateway task {t.get_name()} failed") from t.exception()
        finally:
            sdnotify.notify("STOPPING=1")
            self.ready = False
            with contextlib.suppress(Exception):
                await self._publish_stopped("gateway stopped")
            self._stop.set()  # for the loops' _check_stop: a cancel can get lost (see there)
            if self._upstream_task is not None:
                tasks.append(self._upstream_task)
            tasks.extend(self._background)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            if self._metrics is not None:
                with contextlib.suppress(BaseException):
                    await self._metrics.stop()
            with contextlib.suppress(BaseException):
                await self.status_feed.stop()
            with contextlib.suppress(BaseException):
                await self._flush_deletes()
            with contextlib.suppress(BaseException):
                await self._save_counters()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            with contextlib.suppress(BaseException):
                await store.call(self.quarantine.close)
            await asyncio.to_thread(store.shutdown)
            if self.notify is not None:
                self.notify.close()
            log.info("gateway stopped; %d rows kept in the store", store.depth)

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Apply the config file again. Returns False (and keeps running unchanged) on errors."""
        self._reload_requested = False
        if self.config_path is None:
            log.warning("reload asked for, but the gateway was not started from a config file")
            return False
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
            registries = await asyncio.to_thread(load_registries, new)
        except (ConfigError, ValueError, OSError) as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return False
        return await self.apply_config(new, registries)

    async def apply_config(self, new: GatewayConfig, registries: Any = None) -> bool:
        old = self.config
        if new.store_path != old.store_path:
            log.error(
                "reload refused: store path changed (%s -> %s); restart the service to move it",
                old.store_path,
                new.store_path,
            )
            return False
        if registries is None:
            registries = await asyncio.to_thread(load_registries, new)
        self.config = new
        self.devices.config = new
        self.status_feed.config = new
        store, processor = self.store, self.processor
        if store is not None:
            store_ = store
            await store_.call(store_.set_limits, _limits(new))
            if processor is not None:
                await store_.call(processor.reconfigure, new, registries)
            dropped = await store_.call(store_.enforce)
            if dropped:
                log.warning("new store bounds dropped %s", dropped)
        if new.upstream.enabled and self._upstream_task is None:
            self._stopping = False
            self._upstream_task = asyncio.create_task(self._upstream_loop(), name="upstream")
        elif not new.upstream.enabled and self._upstream_task is not None:
            await self._publish_stopped("forwarding disabled by a reload")
            self._upstream_task.cancel()
            with contextlib.suppress(BaseException):
                await self._upstream_task
            self._upstream_task = None
        if new.local != old.local and self._local_reconnect is not None:
            self._local_reconnect.set()
        if new.upstream != old.upstream and self._upstream_reconnect is not None:
            self._upstream_reconnect.set()
        if new.metrics != old.metrics and self._metrics is not None:
            await self._metrics.stop()
            self._metrics = None
            if new.metrics.enabled:
                self._metrics = MetricsServer(new.metrics.host, new.metrics.port, self.stats)
                self.metrics_port = await self._metrics.start()
        log.info("config reloaded from %s", self.config_path)
        return True

    # -- site broker --------------------------------------------------------------------------

    def _client(self, section: BrokerSection, default_id: str, **kwargs: Any) -> aiomqtt.Client:
        client = aiomqtt.Client(
            section.host,
            section.port,
            username=section.username,
            password=section.password,
            identifier=section.client_id or default_id,
            keepalive=section.keepalive_s,
            tls_context=_tls_context(section),
            tls_insecure=section.tls_insecure if section.tls else None,
            timeout=section.timeout_s,
            **kwargs,
        )
        # Many concurrent QoS 1 publishes are the design (bounded by forward.max_inflight and
        # the custody fan-out), not a leak: raise aiomqtt's warning threshold accordingly.
        client.pending_calls_threshold = 100_000
        return client

    async def _local_loop(self) -> None:
        assert self._local_reconnect is not None
        delay = self.config.local.reconnect_min_s
        while True:
            self._check_stop()
            section = self.config.local
            self._local_reconnect.clear()
            try:
                client = self._client(
                    section, f"cityedge-{self.config.gateway_id}", clean_session=False
                )
                # A reading is PUBACKed to the site broker only after its group commit: until
                # then the broker keeps it in our persistent session and, after a crash, sends
                # it again *before* newer readings — so a crash does not reorder a device's
                # readings (a node's own resend would arrive after newer ones).
                client._client.manual_ack_set(True)
                gate = InboundGate(client)  # stop reading the socket while behind
                async with client:
                    for topic in contract.NODE_SUBSCRIPTIONS:
                        await client.subscribe(topic, qos=1)
                    self._local = client
                    log.info("connected to the site broker %s:%d", section.host, section.port)
                    delay = section.reconnect_min_s
                    await self._receive(client, gate)
            except aiomqtt.MqttError as exc:
                log.warning("site broker %s:%d: %s", section.host, section.port, exc)
            except _Reconnect:
                log.info("reconnecting to the site broker with new settings")
                delay = 0.0
            finally:
                self._local = None
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, section.reconnect_min_s), section.reconnect_max_s)

    async def _receive(self, client: aiomqtt.Client, gate: InboundGate | None = None) -> None:
        assert self._queue is not None and self._local_reconnect is not None
        reconnect = asyncio.create_task(self._local_reconnect.wait())
        messages = aiter(client.messages)
        nxt: asyncio.Future[aiomqtt.Message] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(anext(messages))
                done, _ = await asyncio.wait([nxt, reconnect], return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    raise _Reconnect()
                message = nxt.result()
                nxt = None
                if gate is not None:
                    gate.check()
                await self._on_message(
                    client, str(message.topic), message.payload, (client, message.mid, message.qos)
                )
        finally:
            reconnect.cancel()
            if nxt is not None:
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt

    async def _on_message(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: Any,
        ack: tuple[aiomqtt.Client, int, int] | None = None,
    ) -> None:
        self.counters["messages_in"] += 1
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        try:
            await self._handle_message(client, topic, data, ack)
        except Exception as exc:  # noqa: BLE001 - that message's problem, never the gateway's
            self._reasons(
                logging.ERROR,
                "ingest",
                "handling a message from %s failed: %s: %s",
                topic[:120],
                type(exc).__name__,
                exc,
            )
            self._dead_letter(
                client,
                topic,
                data,
                "processing",
                f"processing failed: {type(exc).__name__}: {exc}"[:500],
            )
            _puback(ack)

    async def _handle_message(
        self,
        client: aiomqtt.Client,
        topic: str,
        data: bytes,
        ack: tuple[aiomqtt.Client, int, int] | None,
    ) -> None:
        assert self._queue is not None
        cfg = self.config
        known = None if cfg.inventory.allow_unknown else self._known_kind
        result = classify(topic, data, cfg.store.max_payload_bytes, known)
        now = time.time()
        if not isinstance(result, Accepted):
            self._dead_letter(client, topic, data, result.reason_code, result.reason)
            _puback(ack)
            return
        if (
            result.device_id not in self.devices.devices
            and len(self.devices.devices) >= MAX_DEVICES
            and cfg.device(result.device_id) is None
        ):
            self._dead_letter(
                client,
                topic,
                data,
                "too_many_devices",
                f"more than {MAX_DEVICES} devices not in the inventory",
            )
            _puback(ack)
            return
        self.status_feed.message(result.leaf, result.device_id, result.body, now)
        if result.leaf == "reading":
            self.counters["readings_in"] += 1
            self.devices.reading(result.device_id, result.body, now)
            await self._queue.put(_Incoming(result.device_id, result.body, now, ack, len(data)))
            return
        elif result.leaf == "status":
            self.devices.status(result.device_id, result.body, now)
        elif result.leaf == "state":
            self.devices.presence(result.device_id, result.body, now)
        else:
            self.counters["command_acks"] += 1
            self.devices.seen(result.device_id, now)
        _puback(ack)

    def _calibration_record(self, record_id: str) -> Any:
        processor = self.processor
        for reg in (processor.site_registry, processor.fleet_registry) if processor else ():
            if reg is not None and (rec := reg.get(record_id)) is not None:
                return rec
        return None

    def _known_kind(self, device_id: str) -> str | None:
        entry = self.config.device(device_id)
        return entry.kind if entry is not None else None

    def _dead_letter(
        self, client: aiomqtt.Client | None, topic: str, data: bytes, code: str, reason: str
    ) -> None:
        self.counters[f"dead_letter_{code}"] += 1
        self.status_feed.dead_letter(topic, code, reason, time.time())
        self._reasons(
            logging.WARNING, code, "dead letter (%s) from %s: %s", code, topic[:120], reason[:200]
        )
        if client is None:
            return
        if not self._dead_letter_rate.allow():  # a flood is counted, not echoed
            self.counters["dead_letters_unpublished"] += 1
            return
        body = deadletter_payload(self.config.gateway_id, topic, data, reason)
        self._spawn(
            self._publish_quietly(
                client, contract.deadletter_topic(self.config.gateway_id), body, 0
            )
        )

    async def _publish_quietly(
        self, client: aiomqtt.Client, topic: str, payload: bytes, qos: int, retain: bool = False
    ) -> bool:
        try:
            await client.publish(topic, payload, qos=qos, retain=retain)
            return True
        except aiomqtt.MqttError as exc:
            log.debug("publish to %s failed: %s", topic, exc)
            return False

    # -- committer ----------------------------------------------------------------------------

    async def _committer(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            batch = [first]
            cfg = self.config.store
            deadline = time.monotonic() + cfg.commit_max_ms / 1000.0
            while len(batch) < cfg.commit_max_readings:
                while not queue.empty() and len(batch) < cfg.commit_max_readings:
                    batch.append(queue.get_nowait())
                remaining = deadline - time.monotonic()
                if len(batch) >= cfg.commit_max_readings or remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await queue.get())
                except TimeoutError:
                    break
            result = await self._commit_batch(batch)
            for item in batch:
                _puback(item.ack)
            self._after_commit(result)

    async def _commit_batch(self, batch: list[_Incoming]) -> _PipelineResult:
        """Commit one batch, trying again until it is stored. Until then nothing of it is
        PUBACKed (the site broker keeps it) and no custody is sent (the nodes keep it). A full
        disk is a state (:mod:`edge_gateway.diskguard`), never a reason to exit; any other store
        error ends the process after 10 failures in a row (systemd restarts it)."""
        assert self.store is not None
        store, disk = self.store, self.disk
        while True:
            # Shielded: once the batch is on the store thread, let the commit finish even if the
            # gateway is being stopped, then ack what was committed.
            try:
                result = await asyncio.shield(store.call(self._pipeline, batch))
            except (sqlite3.Error, OSError) as exc:
                self.counters["store_errors"] += 1
                if await store.call(disk.failed, exc):
                    self._reasons(
                        logging.ERROR,
                        "disk_full",
                        "disk full: %d readings wait at the site broker, not acknowledged: %s",
                        len(batch),
                        exc,
                    )
                    await asyncio.sleep(RETRY_S)
                    while not await store.call(self._may_retry):
                        await asyncio.sleep(RETRY_S)
                    continue
                self._store_failures += 1
                log.error(
                    "store write failed (%d in a row), %d readings not acknowledged: %s",
                    self._store_failures,
                    len(batch),
                    exc,
                )
                if self._store_failures >= 10:
                    raise
                await asyncio.sleep(1.0)
                continue
            self._store_failures = 0
            if disk.full or not disk.reserve_ok:
                await store.call(disk.committed)
            return result

    def _may_retry(self) -> bool:
        """On the store thread: room for a group, with the disk full (:mod:`diskguard`)."""
        assert self.store is not None
        return self.disk.may_retry(self.store.free_pages_bytes())

    def _pipeline(self, batch: list[_Incoming]) -> _PipelineResult:
        """On the store thread: commit the batch in processing groups — one, unless readings
        that were in hand when the process died before come again (:mod:`quarantine`)."""
        quarantine = self.quarantine
        keys = [(i.device_id, int(i.body["boot"]), int(i.body["seq"])) for i in batch]
        if quarantine is None:
            return self._commit_group(batch)
        total: _PipelineResult | None = None
        for group in quarantine.groups(keys):
            group_keys = [keys[i] for i in group]
            quarantine.begin(group_keys)
            try:
                part = self._commit_group([batch[i] for i in group])
            except BaseException:
                quarantine.abort()  # an error, not a death: nothing was in hand at a crash
                raise
            quarantine.end(group_keys)
            if total is None:
                total = part
                continue
            total.commit.accepted += part.commit.accepted
            total.commit.duplicates += part.commit.duplicates
            for reason, n in part.commit.dropped.items():
                total.commit.dropped[reason] = total.commit.dropped.get(reason, 0) + n
            total.commit.commit_s += part.commit.commit_s
            total.dead += part.dead
            total.alerts += part.alerts
            total.samples += part.samples
        assert total is not None
        return total

    def _commit_group(self, batch: list[_Incoming]) -> _PipelineResult:
        """On the store thread: de-duplicate, process, commit one group."""
        store, processor = self.store, self.processor
        assert store is not None and processor is not None
        cfg = processor.config
        entries: list[Entry] = []
        duplicates: list[tuple[str, int, int]] = []
        dead: list[tuple[str, bytes, str, str]] = []
        quarantine = self.quarantine
        in_batch: set[tuple[str, int, int]] = set()
        keys = [(i.device_id, int(i.body["boot"]), int(i.body["seq"])) for i in batch]
        fresh = store.is_new(keys)
        remember: list[tuple[str, int, int, float]] = []
        alerts = 0
        errors = 0
        samples: list[tuple[str, float]] = []
        calibration_errors = processor.calibration_errors
        to_notify: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        for item, key, new in zip(batch, keys, fresh, strict=True):
            if not new or key in in_batch:
                duplicates.append(key)
                continue
            in_batch.add(key)
            if quarantine is not None and quarantine.is_quarantined(key):
                raw = json.dumps(item.body, separators=(",", ":")).encode()
                quarantine.record_payload(key, raw)
                dead.append(
                    (
                        contract.node_topic(item.device_id, "reading"),
                        raw,
                        "quarantined",
                        "quarantined: the gateway stopped twice while processing it",
                    )
                )
                remember.append((*key, item.received))
                continue
            samples.append((item.device_id, sample_time(item.body, item.received)))
            try:
                processed = processor.process(item.device_id, item.body, item.received)
            except Exception as exc:  # noqa: BLE001 - a processing bug must not lose or block the reading
                self._reasons(
                    logging.ERROR,
                    "processing",
                    "processing %s failed: %s: %s",
                    key,
                    type(exc).__name__,
                    exc,
                )
                errors += 1
                raw = json.dumps(item.body, separators=(",", ":")).encode()
                dead.append(
                    (
                        contract.node_topic(item.device_id, "reading"),
                        raw,
                        "processing",
                        f"processing failed: {type(exc).__name__}: {exc}"[:500],
                    )
                )
                # Remember the key so a resend is a duplicate; the dead letter holds the payload.
                remember.append((*key, item.received))
                continue
            self.status_feed.observation(processed.observation, item.received)
            kind = str(item.body["kind"])
            priority = PRIORITY_ALERT_READING if processed.alerts else PRIORITY_READING
            entries.append(
                Entry(
                    contract.observation_topic(cfg.site_id, kind, item.device_id),
                    processed.payload,
                    item.received,
                    priority,
                    key,
                )
            )
            to_notify[0].extend(processed.alerts)
            to_notify[1].append(processed.observation)
            for alert in processed.alerts:
                alerts += 1
                entries.append(
                    Entry(
                        contract.alert_topic(cfg.site_id, item.device_id),
                        json.dumps(alert, separators=(",", ":"), ensure_ascii=False).encode(),
                        item.received,
                        PRIORITY_ALERT,
                        None,
                    )
                )
        # Alert states change only with alerts; they are committed with the rows that caused them.
        meta = {"alert_state": json.dumps(processor.alert_state())} if alerts else None
        if self.notify is not None:  # recorded (fsync) before this commit: see notify/hook.py
            try:
                self.notify.record(*to_notify)
            except Exception:  # the alerts still go to the platform with the readings
                log.exception("alert dispatcher: recording %d alerts failed", len(to_notify[0]))
        result = store.commit(
            entries,
            duplicates,
            remember=remember,
            counters={
                "processing_errors": errors,
                "calibration_errors": processor.calibration_errors - calibration_errors,
            },
            meta=meta,
            samples=samples,
        )
        result.accepted.extend(k[:3] for k in remember)  # custody: the dead letter holds them
        return _PipelineResult(result, dead, alerts, samples)

    def _after_commit(self, result: _PipelineResult) -> None:
        assert self._new_rows is not None
        c = result.commit
        self._last_commit_s = c.commit_s
        self.counters["alerts_raised"] += result.alerts
        now = time.time()
        for dev, t in result.samples:
            self.devices.counted(dev, t, now)
        for topic, payload, code, reason in result.dead:  # processing_errors: counted by the commit
            if code != "processing":
                self.counters[code] += 1  # quarantined
            self._dead_letter(self._local, topic, payload, code, reason)
        if c.dropped:
            log.warning("store bound reached, dropped %s", c.dropped)
        self._new_rows.set()
        client = self._local
        if client is None:
            return  # nodes resend what was not acknowledged; those are duplicates then, re-acked
        for dev, boot, lo, hi in custody_ranges(c.accepted + c.duplicates):
            body = json.dumps({"v": 1, "boot": boot, "from": lo, "to": hi}, separators=(",", ":"))
            self.counters["custody_acks"] += 1
            self._spawn(
                self._publish_quietly(client, contract.node_topic(dev, "custody"), body.encode(), 1)
            )

    # -- platform broker ----------------------------------------------------------------------

    def _health(self, state: str, reason: str | None = None) -> bytes:
        """The retained health message. ``online`` carries the figures; ``offline`` a reason:
        ``stopped`` (a clean stop, ``t`` = the stop time) or ``connection_lost`` (the last
        will: no ``t``, since the broker sends it when it notices the loss, but
        ``online_since``, when the lost connection began)."""
        s = self.stats()
        body: dict[str, Any] = {
            "v": 1,
            "site_id": self.config.site_id,
            "gateway_id": self.config.gateway_id,
            "state": state,
            "version": __version__,
        }
        if reason != "connection_lost":
            body["t"] = iso_utc(time.time())
        if reason is not None:
            body["reason"] = reason
        if self._online_since is not None:
            body["online_since"] = iso_utc(self._online_since)
        if state == "online" or reason == "stopped":
            body.update(metrics.health(s))  # the metrics marked health in the table
        return json.dumps(body, separators=(",", ":")).encode()

    async def _upstream_loop(self) -> None:
        assert self._upstream_reconnect is not None and self.store is not None
        store = self.store
        delay = self.config.upstream.reconnect_min_s
        while True:
            self._check_stop()
            section = self.config.upstream
            self._upstream_reconnect.clear()
            topic = contract.gateway_health_topic(self.config.site_id, self.config.gateway_id)
            self._online_since = time.time()
            will = aiomqtt.Will(
                topic, self._health("offline", "connection_lost"), qos=1, retain=True
            )
            try:
                # Before connecting: finish pending deletes, then read the rows that have packet
                # ids — the broker may hold them; they are finished first (PUBREL or PUBLISH).
                await self._flush_deletes()
                await store.call(store.release_all)
                flight = await store.call(store.in_flight)
                self._mids.reset({f.mid: f.id for f in flight})
                client = self._client(
                    section,
                    f"cityedge-{self.config.gateway_id}-up",
                    clean_session=False,  # the broker keeps the QoS 2 state of our packet ids
                    will=will,
                    max_inflight_messages=self.config.forward.max_inflight,
                )
                conn = _Connection(self, flight)
                conn.link = Qos2Link(client, conn.on_pubrec, conn.on_pubcomp)
                async with client:
                    log.info("connected to the platform broker %s:%d", section.host, section.port)
                    if flight:
                        log.info(
                            "finishing %d messages in flight before the restart or reconnect",
                            len(flight),
                        )
                    released = sum(1 for f in flight if f.state == STATE_RELEASED)
                    if released and conn.link.session_present is False:
                        self.counters["upstream_sessions_lost"] += 1
                        log.warning(
                            "the platform broker no longer has this gateway's session (it was "
                            "restarted without persistence, or the session expired): %d readings "
                            "it had already acknowledged may not have reached its subscribers. "
                            "Set 'persistence true' on the platform broker (docs/gateway.md, What "
                            "the platform broker needs)",
                            released,
                        )
                    if self._offline_since is not None:
                        self._offline_total += time.monotonic() - self._offline_since
                        self._offline_since = None
                    self._upstream = client
                    self._upstream_health_topic = topic
                    delay = section.reconnect_min_s
                    await self._publish_online(client, topic)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._forward(conn))
                        tg.create_task(conn.committer())
                        tg.create_task(conn.watchdog(section.timeout_s))
                        tg.create_task(self._status_publisher(client, topic))
                        tg.create_task(self._watch_upstream_reconnect())
                        tg.create_task(self._watch_disconnect(client))
            except* aiomqtt.MqttError as group:
                log.warning(
                    "platform broker %s:%d: %s",
                    section.host,
                    section.port,
                    "; ".join(str(e) for e in group.exceptions),
                )
            except* _Reconnect:
                log.info("reconnecting to the platform broker with new settings")
                delay = 0.0
            except* (sqlite3.Error, OSError) as group:
                # The store could not record the QoS 2 state (a full disk): start the link again;
                # what has a packet id is finished first, nothing is sent twice.
                for exc in group.exceptions:
                    if not await store.call(self.disk.failed, exc):
                        raise
                self._reasons(
                    logging.ERROR,
                    "upstream_store",
                    "forwarding paused, the store cannot write: %s",
                    "; ".join(str(e) for e in group.exceptions),
                )
            finally:
                self._online_since = None
                if self._upstream is not None:
                    self._upstream = None
                    self._offline_since = time.monotonic()
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, section.reconnect_min_s), section.reconnect_max_s)

    @staticmethod
    async def _watch_disconnect(client: aiomqtt.Client) -> None:
        """Raise as soon as the link drops, instead of when a PUBREC or PUBCOMP times out. The
        gateway subscribes to nothing upstream, so the iterator only ends with a disconnect."""
        async for _message in client.messages:
            pass
        raise aiomqtt.MqttError("platform broker connection closed")

    async def _watch_upstream_reconnect(self) -> None:
        assert self._upstream_reconnect is not None
        await self._upstream_reconnect.wait()
        raise _Reconnect()

    async def _publish_online(self, client: aiomqtt.Client, topic: str) -> None:
        if not self._stopping:  # once the final offline health is out, never say online again
            await client.publish(topic, self._health("online"), qos=1, retain=True)

    async def _publish_stopped(self, why: str) -> None:
        """Before a clean disconnect (which discards the last will): the final retained health,
        ``offline`` with the stop time, so the platform does not keep the last ``online``."""
        self._stopping = True
        client, topic = self._upstream, self._upstream_health_topic
        if client is None or topic is None:
            return  # not connected: the broker already published the will (connection_lost)
        try:
            async with asyncio.timeout(min(5.0, self.config.upstream.timeout_s)):
                await client.publish(topic, self._health("offline", "stopped"), qos=1, retain=True)
            log.info("final health sent to the platform broker: offline (%s)", why)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning(
                "could not send the final offline health (%s): %s; the platform keeps "
                "the last online message until the broker's keepalive ends",
                why,
                exc,
            )

    async def _status_publisher(self, client: aiomqtt.Client, health_topic: str) -> None:
        while True:
            await asyncio.sleep(self.config.health.interval_s)
            if self._stopping:
                return
            await self._publish_online(client, health_topic)
            self._check_stop()
            now = time.time()
            for dev in list(self.devices.devices):
                status = self.devices.payload(dev, now)
                if self.status_feed.active and self.status_feed.in_maintenance(dev, now):
                    status["maintenance"] = True  # the city view and central alerts know too
                body = json.dumps(status, separators=(",", ":"))
                await client.publish(
                    contract.device_status_topic(self.config.site_id, dev),
                    body.encode(),
                    qos=1,
                    retain=True,
                )
                self._check_stop()

    async def _flush_deletes(self) -> None:
        """Delete the rows whose PUBCOMP came; their packet ids are free once that commits."""
        if not self._acked or self.store is None:
            return
        done, self._acked = self._acked, []
        store = self.store
        await store.call(store.delivered, [rid for rid, _ in done])
        self._free_mids(done)

    def _free_mids(self, done: list[tuple[int, int]]) -> None:
        for rid, mid in done:
            if self._mids.busy.get(mid) == rid:
                self._mids.free(mid)

    def _completed(self, slot: _Slot) -> None:
        """PUBCOMP: the platform broker delivered the row's message; delete the row (lazily)."""
        self._acked.append((slot.row_id, slot.mid))
        if slot.topic.endswith("/observation"):
            self.counters["readings_out"] += 1
            if slot.replay:
                self.counters["replayed_out"] += 1
        else:
            self.counters["alerts_out"] += 1

    async def _forward(self, conn: _Connection) -> None:
        """Send rows oldest first; live rows (stored after this connection began) go first and
        the backlog drains at ``drain_rate_per_s``. Rows that already have a packet id (from
        before a restart or reconnect) are finished first. A row is deleted after its PUBCOMP."""
        assert self.store is not None and self._new_rows is not None
        store, new_rows = self.store, self._new_rows
        boundary = await store.call(store.max_id)
        live_cursor = boundary
        backlog_cursor = 0
        tokens = 0.0
        last_refill = time.monotonic()
        last_delete = time.monotonic()
        window, backlog_window = conn.window, conn.backlog_window

        await conn.resume()
        while True:
            fwd = self.config.forward
            now = time.monotonic()
            tokens = min(
                tokens + (now - last_refill) * fwd.drain_rate_per_s, max(1.0, fwd.drain_rate_per_s)
            )
            last_refill = now
            new_rows.clear()
            rows: list[Row] = []
            replay = False
            if fwd.live_first:
                rows = await store.call(store.fetch, live_cursor, fwd.batch)
                if rows:
                    live_cursor = rows[-1].id
                elif backlog_cursor < boundary and tokens >= 1.0:
                    size = min(int(tokens), fwd.batch, max(1, fwd.max_inflight // 2))
                    rows = await store.call(store.fetch, backlog_cursor, size, boundary)
                    if rows:
                        backlog_cursor = rows[-1].id
                        tokens -= len(rows)
                    else:
                        backlog_cursor = boundary
                    replay = True
            else:
                cursor = max(live_cursor if backlog_cursor >= boundary else 0, backlog_cursor)
                rows = await store.call(store.fetch, cursor, fwd.batch)
                if rows:
                    backlog_cursor = live_cursor = rows[-1].id
            for row in rows:
                # One place in the window per row; the flight committer gives the queued rows
                # their packet ids in one transaction, together with the PUBRECs that came.
                if replay:
                    await backlog_window.acquire()
                await window.acquire()
                conn.enqueue(row, replay or row.id <= boundary, replay)
            if self._acked and (
                len(self._acked) >= fwd.batch
                or time.monotonic() - last_delete >= fwd.delete_max_ms / 1000.0
            ):
                last_delete = time.monotonic()
                await self._flush_deletes()
            if not rows:
                wait = 0.05 if not self._acked else fwd.delete_max_ms / 1000.0
                if backlog_cursor < boundary and fwd.live_first:
                    wait = min(wait, max(0.001, (1.0 - tokens) / fwd.drain_rate_per_s))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await new_rows.wait()

    # -- housekeeping -------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Watchdog pings (only while the store thread answers), oldest-age gauge, age bound."""
        assert self.store is not None
        store = self.store
        interval = sdnotify.watchdog_interval_s()
        period = min(interval or 5.0, 5.0)
        while True:
            try:
                async with asyncio.timeout(max(period, 10.0)):
                    oldest = await store.call(store.oldest_received)
                    dropped = await store.call(store.enforce) if store.depth else {}
                    if await store.call(store.release_expired) and self._new_rows is not None:
                        self._new_rows.set()  # held readings whose gap was given up on
            except (sqlite3.Error, OSError) as exc:  # a full disk: enforce needs to write
                await store.call(self.disk.failed, exc)
                self._reasons(logging.ERROR, "housekeeping", "store bounds not applied: %s", exc)
                await asyncio.sleep(period)
                continue
            except TimeoutError:
                log.error("the store thread did not answer for %.0f s", max(period, 10.0))
                await asyncio.sleep(period)
                continue
            if dropped:
                log.warning("store bound reached, dropped %s", dropped)
            await self._save_counters()
            self._oldest_age = None if oldest is None else max(0.0, time.time() - oldest)
            if interval is not None:
                sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(period)


FLIGHT_GATHER_S = 0.005  # how long the flight commit waits for a group to form


class _Connection:
    """The QoS 2 state of one platform connection: rows between PUBLISH and PUBCOMP by packet
    id, the in-flight window, and the group commits that precede PUBLISH and PUBREL."""

    def __init__(self, gw: Gateway, flight: list[InFlight]) -> None:
        assert gw.store is not None
        self.gw = gw
        self.store: Store = gw.store
        self.flight = flight
        self.link: Qos2Link | None = None
        self.slots: dict[int, _Slot] = {}
        max_inflight = gw.config.forward.max_inflight
        self.window = asyncio.Semaphore(max_inflight)
        # The backlog may hold at most half of the in-flight window: the other half stays free
        # for live rows, which therefore never queue behind a whole drain batch.
        self.backlog_window = asyncio.Semaphore(max(1, max_inflight // 2))
        self._pubrecs: list[_Slot] = []
        self._rows: list[tuple[Row, bool, bool]] = []
        self._work = asyncio.Event()

    async def resume(self) -> None:
        """Finish what has a packet id already, in store order: released rows get a PUBREL,
        published rows the same PUBLISH again (DUP)."""
        assert self.link is not None
        for f in self.flight:
            await self.window.acquire()
            slot = _Slot(
                f.id,
                f.mid,
                f.topic,
                f.replay,
                backlog=False,
                released=f.state == STATE_RELEASED,
                recorded=f.state == STATE_RELEASED,
            )
            self.slots[f.mid] = slot
            if slot.released:
                self.link.pubrel(f.mid)
            else:
                self.link.publish(f.mid, f.topic, wire_payload(f.payload, f.replay), dup=True)
        self.flight = []

    def enqueue(self, row: Row, replay: bool, backlog: bool) -> None:
        """A row with a place in the window: the committer publishes it."""
        self._rows.append((row, replay, backlog))
        self._work.set()

    def on_pubrec(self, mid: int) -> None:
        slot = self.slots.get(mid)
        if slot is None or slot.recorded:
            return  # a repeated PUBREC, or none of ours (never PUBREL what we do not know)
        slot.recorded = True
        self._pubrecs.append(slot)
        self._work.set()

    def on_pubcomp(self, mid: int) -> None:
        slot = self.slots.pop(mid, None)
        if slot is None:
            return
        self.gw._completed(slot)
        self.window.release()
        if slot.backlog:
            self.backlog_window.release()

    async def committer(self) -> None:
        """The flight group commit: the PUBRECs and the rows queued for publishing that came
        while the last commit ran (or within ``FLIGHT_GATHER_S``) in one transaction, then the
        PUBRELs (in PUBREC order) and the PUBLISHes (in store order). Completed rows are
        deleted separately, lazily (``forward.delete_max_ms``)."""
        assert self.link is not None
        gw, store = self.gw, self.store
        enough = max(1, gw.config.forward.max_inflight // 4)
        while True:
            await self._work.wait()
            self._work.clear()
            # Let a group form (fewer, larger commits: SD-card writes), but not for long.
            deadline = time.monotonic() + FLIGHT_GATHER_S
            while len(self._pubrecs) + len(self._rows) < enough:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._work.wait()
                self._work.clear()
            pubrecs, self._pubrecs = self._pubrecs, []
            rows, self._rows = self._rows, []
            if not pubrecs and not rows:
                continue
            assign = [(row.id, gw._mids.take(row.id), replay) for row, replay, _ in rows]
            await store.call(store.flight_commit, assign, [s.row_id for s in pubrecs])
            now = time.monotonic()
            for slot in pubrecs:
                slot.released = True
                slot.since = now
                self.link.pubrel(slot.mid)
            for (row, replay, backlog), (rid, mid, _) in zip(rows, assign, strict=True):
                self.slots[mid] = _Slot(rid, mid, row.topic, replay, backlog)
                self.link.publish(mid, row.topic, wire_payload(row.payload, replay), dup=False)

    async def watchdog(self, timeout_s: float) -> None:
        """The link counts as broken when a PUBREC or PUBCOMP is overdue."""
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 4))
            now = time.monotonic()
            late = [
                s
                for s in self.slots.values()
                if now - s.since > timeout_s and (s.released or not s.recorded)
            ]
            if late:
                raise aiomqtt.MqttError(
                    f"no {'PUBCOMP' if late[0].released else 'PUBREC'} within {timeout_s:g} s "
                    f"for {len(late)} messages"
                )
