"""The gateway service: lifecycle, signals, reload, stats — and the jobs it runs.

    from edge_gateway.app import Gateway
    gw = Gateway(config)            # a GatewayConfig
    task = asyncio.create_task(gw.run())
    ...
    gw.stats()                      # counters, queue depth, drops by reason
    gw.request_stop()               # run() returns after a clean shutdown

One module per job; ``run()`` makes them once the store is open and runs their tasks:

* **site link** (:mod:`edge_gateway.sitelink`): subscribes to the node topics on the site
  broker; classifies each message (bad ones go to the dead-letter topic, counted by reason);
  queues readings for the committer; PUBACK after commit; custody to the nodes.
* **committer** (:mod:`edge_gateway.committer`): batch, de-duplicate, process (calibration, QC,
  indices, alerts), commit in one transaction.
* **forwarder** (:mod:`edge_gateway.forwarder`): the platform session, live rows first, the
  backlog at ``forward.drain_rate_per_s``, exactly once through the flight window
  (:mod:`edge_gateway.flight`, over :mod:`edge_gateway.qos2link`); retained health and device
  status.
* **housekeeping** (here): store bounds, the oldest-age gauge, the saved counters, the systemd
  watchdog; and the metrics endpoint (:mod:`edge_gateway.metrics`) and the status page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge_gateway import metrics, sdnotify
from edge_gateway.bounds import ReasonLog
from edge_gateway.committer import Committer
from edge_gateway.config import ConfigError, GatewayConfig, load_config
from edge_gateway.devices import DeviceTracker
from edge_gateway.diskguard import DiskGuard
from edge_gateway.forwarder import Forwarder, OfflineClock, health_payload
from edge_gateway.processing import Processor, load_registries
from edge_gateway.prometheus import MetricsServer
from edge_gateway.quarantine import Quarantine
from edge_gateway.sitelink import SiteLink, publish_quietly
from edge_gateway.status import StatusFeed
from edge_gateway.store import Limits, Store, open_store

log = logging.getLogger("edge_gateway")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _limits(config: GatewayConfig) -> Limits:
    s = config.store
    return Limits(s.max_bytes, s.max_age_s, s.min_free_bytes, s.dedup_horizon_s)


class Gateway:
    """One site's gateway. ``await run()`` until cancelled or :meth:`request_stop`."""

    def __init__(self, config: GatewayConfig, config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path is not None else None
        self.devices = DeviceTracker(config)
        self.status_feed = StatusFeed(config)  # the status page (edge_gateway/status)
        # Event-loop counters (edge_gateway.metrics: the "process" and "saved" ones); the saved
        # ones are written to the store by _save_counters, _saved is what it holds of them.
        self.counters: dict[str, int] = defaultdict(int)
        self._saved: dict[str, int] = {}
        self.reasons = ReasonLog(log)  # bad input: one log line per reason and minute
        self.disk = DiskGuard(config.store_path.parent)
        self.offline = OfflineClock()  # the platform link's down time
        self.notify: Any = None  # the alert dispatcher (edge_gateway.notify), when configured
        self.metrics_port: int | None = None
        self.ready = False
        # Made by run(), once the store is open (None before and in between):
        self.store: Store | None = None
        self.processor: Processor | None = None
        self.quarantine: Quarantine | None = None
        self.site: SiteLink | None = None
        self.committer: Committer | None = None
        self.forwarder: Forwarder | None = None
        self._stop: asyncio.Event | None = None
        self._metrics: MetricsServer | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._upstream_task: asyncio.Task[None] | None = None
        self._oldest_age: float | None = None
        self._reload_requested = False
        self.ota: Any = None  # the OTA rollout service (edge_gateway.ota), once running

    def spawn(self, coro: Any) -> None:
        """Run a fire-and-forget coroutine, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- public API ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask ``run()`` to finish: pending deletes are flushed and the store closed."""
        if self._stop is not None:
            self._stop.set()

    def check_stop(self) -> None:
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
            self.spawn(self.reload())

    @property
    def upstream_client(self) -> Any:
        """The platform broker client while connected, else None (for edge_gateway.notify)."""
        return self.forwarder.client if self.forwarder is not None else None

    async def publish_quietly(
        self, client: Any, topic: str, payload: bytes, qos: int, retain: bool = False
    ) -> bool:
        """Publish, logging (not raising) a failure: for fire-and-forget messages."""
        return await publish_quietly(client, topic, payload, qos, retain)

    def stats(self) -> dict[str, Any]:
        """Every figure of :data:`edge_gateway.metrics.METRICS` (also what the metrics endpoint
        and the health message show)."""
        store = self.store
        given = {
            "queue_depth": store.depth if store is not None else 0,
            "queue_bytes": store.bytes if store is not None else 0,
            "store_file_bytes": store.file_bytes() if store is not None else 0,
            "oldest_age_s": self._oldest_age,
            "upstream_offline_s": round(self.offline.seconds(), 3),
            "upstream_connected": self.upstream_client is not None,
            "local_connected": self.site is not None and self.site.client is not None,
            "last_commit_s": self.committer.last_commit_s if self.committer else 0.0,
            "devices": len(self.devices.devices),
            "ready": self.ready,
            "disk_full": self.disk.full,
        }
        stored = dict(store.counters) if store is not None else {}
        return metrics.collect(self.counters, stored, given)

    def health(self, state: str, reason: str | None = None) -> bytes:
        """The retained health message (:func:`edge_gateway.forwarder.health_payload`)."""
        since = self.forwarder.online_since if self.forwarder is not None else None
        return health_payload(self.config, self.stats(), state, reason, since)

    def calibration_record(self, record_id: str) -> Any:
        processor = self.processor
        for reg in (processor.site_registry, processor.fleet_registry) if processor else ():
            if reg is not None and (rec := reg.get(record_id)) is not None:
                return rec
        return None

    # -- saved counters -----------------------------------------------------------------------

    def _load_saved_counters(self, store: Store) -> None:
        """At start: the saved counters continue from what the store holds."""
        for name, value in store.counters.items():
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

    # -- run ----------------------------------------------------------------------------------

    async def run(self, handle_signals: bool = False) -> None:
        """Run until :meth:`request_stop` or cancellation. ``handle_signals`` installs SIGTERM,
        SIGINT (stop) and SIGHUP (reload) handlers — for the service, not for embedding."""
        loop = asyncio.get_running_loop()
        stop = self._stop = asyncio.Event()
        store, processor, quarantine = await self._open()
        site = self.site = SiteLink(self)
        forwarder = self.forwarder = Forwarder(self, store)
        self.committer = Committer(self, store, processor, quarantine, site, forwarder.new_rows)
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        tasks = self._start_jobs(store, site, self.committer, forwarder)
        try:
            await self._start_servers(store)
            await self._supervise(stop, tasks)
        finally:
            await self._shutdown(store, tasks, stop)
            if handle_signals:
                for sig in _SIGNALS:
                    loop.remove_signal_handler(sig)
            await asyncio.to_thread(store.shutdown)
            if self.notify is not None:
                self.notify.close()
            log.info("gateway stopped; %d rows kept in the store", store.depth)

    async def _open(self) -> tuple[Store, Processor, Quarantine]:
        """Open the store, the quarantine, the processor (with its saved alert states) and the
        alert dispatcher."""
        cfg = self.config
        registries = await asyncio.to_thread(load_registries, cfg)
        store = self.store = await asyncio.to_thread(
            open_store, cfg.store_path, _limits(cfg), cfg.store.synchronous
        )
        await store.call(self.disk.open)
        quarantine = self.quarantine = Quarantine(cfg.store_path.parent)
        for key in await store.call(quarantine.open):
            self.counters["quarantined_new"] += 1
            log.error(
                "reading %s/%d/%d made the gateway stop twice: quarantined (it will be "
                "dead-lettered and confirmed to the node, not processed)",
                *key,
            )
        processor = self.processor = Processor(cfg, registries)
        self.devices.restore(*await store.call(store.sample_counts, time.time()))
        self._load_saved_counters(store)
        processor.node_location = self.devices.location  # provisioned, from node state
        saved = await store.call(store.get_meta, "alert_state")
        if saved:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                processor.restore_alert_state(json.loads(saved))
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
        return store, processor, quarantine

    def _start_jobs(
        self, store: Store, site: SiteLink, committer: Committer, forwarder: Forwarder
    ) -> list[asyncio.Task[None]]:
        tasks: list[asyncio.Task[None]] = [
            asyncio.create_task(site.run(), name="local"),
            asyncio.create_task(committer.run(), name="committer"),
            asyncio.create_task(self._housekeeping(store), name="housekeeping"),
        ]
        if self.config.upstream.enabled:
            self._start_upstream(forwarder)
        from edge_gateway.ota import service as ota  # rollouts over the site broker (docs/ota.md)

        tasks.append(asyncio.create_task(ota.run(self), name="ota"))
        if self.notify is not None:
            from edge_gateway.notify.hook import supervise

            tasks.append(asyncio.create_task(supervise(self.notify), name="notify"))
        return tasks

    def _start_upstream(self, forwarder: Forwarder) -> None:
        forwarder.stopping = False
        self._upstream_task = asyncio.create_task(forwarder.run(), name="upstream")

    async def _start_metrics(self) -> None:
        cfg = self.config.metrics
        if cfg.enabled:
            notify_text = self.notify.metrics_text if self.notify else None
            self._metrics = MetricsServer(cfg.host, cfg.port, self.stats, notify_text)
            self.metrics_port = await self._metrics.start()

    async def _start_servers(self, store: Store) -> None:
        await self._start_metrics()
        self.ready = True
        sdnotify.notify(f"READY=1\nSTATUS=store {store.depth} rows waiting")
        if self.config.status.enabled:  # the page (edge_gateway/status), after READY
            self.status_feed.gateway_stats = self.stats
            self.status_feed.calibration = self.calibration_record
            await self.status_feed.start()

    async def _supervise(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
        """Until the stop event: a job that fails ends the gateway (systemd restarts it)."""
        stop_wait = asyncio.create_task(stop.wait(), name="stop-wait")
        while not stop_wait.done():
            watched = [stop_wait, *tasks]
            if self._upstream_task is not None:
                watched.append(self._upstream_task)
            # Wake at least every second: a reload may have started or stopped forwarding.
            done, _ = await asyncio.wait(watched, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop_wait and not t.cancelled() and t.exception() is not None:
                    raise RuntimeError(f"gateway task {t.get_name()} failed") from t.exception()

    async def _shutdown(
        self, store: Store, tasks: list[asyncio.Task[None]], stop: asyncio.Event
    ) -> None:
        """The clean stop: final health, jobs cancelled, deletes flushed, counters saved."""
        sdnotify.notify("STOPPING=1")
        self.ready = False
        forwarder = self.forwarder
        if forwarder is not None:
            with contextlib.suppress(Exception):
                await forwarder.publish_stopped("gateway stopped")
        stop.set()  # for the loops' check_stop: a cancel can get lost (see there)
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
        if forwarder is not None:
            with contextlib.suppress(BaseException):
                await forwarder.flush_deletes()
        with contextlib.suppress(BaseException):
            await self._save_counters()
        if self.quarantine is not None:
            with contextlib.suppress(BaseException):
                await store.call(self.quarantine.close)

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
            await store.call(store.set_limits, _limits(new))
            if processor is not None:
                await store.call(processor.reconfigure, new, registries)
            dropped = await store.call(store.enforce)
            if dropped:
                log.warning("new store bounds dropped %s", dropped)
        await self._apply_upstream(new)
        if new.local != old.local and self.site is not None:
            self.site.reconnect.set()
        if new.upstream != old.upstream and self.forwarder is not None:
            self.forwarder.reconnect.set()
        if new.metrics != old.metrics and self._metrics is not None:
            await self._metrics.stop()
            self._metrics = None
            await self._start_metrics()
        log.info("config reloaded from %s", self.config_path)
        return True

    async def _apply_upstream(self, new: GatewayConfig) -> None:
        """Forwarding switched on or off by a reload."""
        if new.upstream.enabled and self._upstream_task is None and self.forwarder is not None:
            self._start_upstream(self.forwarder)
        elif not new.upstream.enabled and self._upstream_task is not None:
            if self.forwarder is not None:
                await self.forwarder.publish_stopped("forwarding disabled by a reload")
            self._upstream_task.cancel()
            with contextlib.suppress(BaseException):
                await self._upstream_task
            self._upstream_task = None

    # -- housekeeping -------------------------------------------------------------------------

    async def _housekeeping(self, store: Store) -> None:
        """Watchdog pings (only while the store thread answers), oldest-age gauge, age bound."""
        interval = sdnotify.watchdog_interval_s()
        period = min(interval or 5.0, 5.0)
        while True:
            try:
                async with asyncio.timeout(max(period, 10.0)):
                    oldest = await store.call(store.oldest_received)
                    dropped = await store.call(store.enforce) if store.depth else {}
                    if await store.call(store.release_expired) and self.forwarder is not None:
                        self.forwarder.new_rows.set()  # held readings whose gap was given up on
            except (sqlite3.Error, OSError) as exc:  # a full disk: enforce needs to write
                await store.call(self.disk.failed, exc)
                self.reasons(logging.ERROR, "housekeeping", "store bounds not applied: %s", exc)
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
