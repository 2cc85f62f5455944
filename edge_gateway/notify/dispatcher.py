"""The dispatcher: records alerts into incidents and the outbox, and delivers the outbox.

    dispatcher = Dispatcher(settings, places={"ce-...": "Khlong Saen Saep, pier 3"})
    task = asyncio.create_task(dispatcher.run())
    dispatcher.record(alerts, observations)   # any thread; returns after the fsynced commit

Delivery of one notification walks its route's channel chain: a channel that answers
``retry`` is tried again with back-off (``retry_min_s`` doubling up to ``retry_max_s``) and the
same idempotency key, and after ``attempts_before_failover`` failed tries the next channel is
used; LINE's 429, a LINE quota within ``quota_reserve`` of its limit, and refusals (a wrong
token) go to the next channel at once. After the last channel the chain starts again: a
notification is never dropped. Each failover is counted by (from, to, reason) in the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_gateway.notify.channels import SENDERS, Outcome, Sender, need_aiohttp
from edge_gateway.notify.incidents import Incidents
from edge_gateway.notify.outbox import Outbox, OutRow
from edge_gateway.notify.settings import NotifySettings
from edge_gateway.notify.silence import SilenceRules
from edge_gateway.notify.templates import render

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        settings: NotifySettings,
        places: Mapping[str, str] | None = None,
        site_id: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.site_id = site_id
        self.clock = clock
        self.outbox = Outbox(settings.outbox)
        self.incidents = Incidents(settings, places=places)
        self.senders: dict[str, Sender] = {}
        self.counters: dict[str, int] = defaultdict(int)
        self.sent: dict[str, int] = defaultdict(int)
        self.failed: dict[tuple[str, str], int] = defaultdict(int)
        self.failovers: dict[tuple[str, str, str], int] = defaultdict(int)
        self.last_sent_latency_s: float | None = None
        self.on_heartbeat: Callable[[dict[str, Any]], None] | None = None
        # In the gateway: the status page's liveness facts per device (hook.py), for the
        # silent-node rule (centrally the device status messages feed the same rule).
        self.statuses: Callable[[], list[dict[str, Any]]] | None = None
        self.silence = SilenceRules(settings.silent_grace_s, settings.default_report_s)
        self.silence.silent = set(self.open_keys("silent"))
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = False
        with self.outbox.lock:
            self._open_devices: set[Any] = {
                r[0] for r in self.outbox.db.execute("SELECT device FROM incidents WHERE open >= 1")
            }

    def open_keys(self, family: str) -> list[tuple[str, str]]:
        """(site, device) of the open incidents of a family (rules resume them after a restart)."""
        with self.outbox.lock:
            return [
                (str(a), str(b))
                for a, b in self.outbox.db.execute(
                    "SELECT site, device FROM incidents WHERE family = ? AND open >= 1", (family,)
                )
            ]

    # -- recording (any thread) ---------------------------------------------------------------

    def record(
        self, alerts: Iterable[Mapping[str, Any]], observations: Iterable[Mapping[str, Any]] = ()
    ) -> int:
        alerts = list(alerts)
        for obs in observations:  # place names and the last Thai AQI, kept in memory
            self.incidents.remember(obs)
        # Observations matter to the outbox only for the peak of an open incident: no write
        # (and no fsync) for a reading of a device without one.
        interest = self._open_devices | {a.get("device_id") for a in alerts}
        observations = [o for o in observations if o.get("device_id") in interest]
        if not alerts and not observations:
            return 0
        now = self.clock()
        with self.outbox.transaction() as db:
            n = self.incidents.record(db, alerts, observations, now)
            self._open_devices = {
                r[0] for r in db.execute("SELECT device FROM incidents WHERE open >= 1")
            }
        self.counters["recorded_alerts"] += len(alerts)
        if n:
            self.counters["queued"] += n
            self.wake()
        return n

    def test_message(self, channels: list[str]) -> bool:
        now = self.clock()
        per_lang = {
            lang: {"site": self.site_id or "-", "time": _local(now, self.settings)}
            for lang in self.settings.languages
        }
        text = render(self.incidents.templates, self.settings.languages, "test", per_lang)
        ok = self.outbox.add(
            f"test:{now:.6f}",
            "test",
            channels,
            {"text": text, "title": "CityEdge test", "tier": "info", "kind": "test"},
            now,
        )
        self.wake()
        return ok

    def wake(self) -> None:
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    # -- delivery -----------------------------------------------------------------------------

    async def run(self) -> None:
        aiohttp = need_aiohttp()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            self.senders = {
                name: SENDERS[ch.type](ch, session) for name, ch in self.settings.channels.items()
            }
            log.info(
                "alert dispatcher: %d channels, %d routes, outbox %s (%d waiting)",
                len(self.senders),
                len(self.settings.routes),
                self.outbox.path,
                self.outbox.pending()[0],
            )
            if not self.settings.routes:
                log.warning(
                    "%s has no [[routes]]: incidents are recorded but nobody is told",
                    self.settings.source,
                )
            timers = asyncio.create_task(self._timers(session))
            try:
                while not self._stop:
                    await self.deliver_due()
                    nxt = await asyncio.to_thread(self.outbox.next_due)
                    delay = 5.0 if nxt is None else max(0.0, min(5.0, nxt - self.clock()))
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
            finally:
                timers.cancel()
                with contextlib.suppress(BaseException):
                    await timers

    def stop(self) -> None:
        self._stop = True
        self.wake()

    def close(self) -> None:
        self.outbox.close()

    async def deliver_due(self) -> None:
        rows = await asyncio.to_thread(self.outbox.due, self.clock())
        for row in rows:
            await self._deliver(row)

    async def _deliver(self, row: OutRow) -> None:
        chain, pos, attempts = row.chain, row.pos, row.attempts
        for _ in range(len(chain)):
            name = chain[pos % len(chain)]
            nxt = chain[(pos + 1) % len(chain)]
            sender = self.senders.get(name)
            if sender is None:
                self._failover(name, nxt, "unknown_channel")
                pos, attempts = pos + 1, 0
                continue
            if sender.blocked_until > time.monotonic() and len(chain) > 1:
                self._failover(name, nxt, "blocked")
                pos, attempts = pos + 1, 0
                continue
            wait = sender.bucket.wait_s()
            if wait > 0:
                self.counters["rate_limited"] += 1
                await asyncio.to_thread(
                    self.outbox.reschedule, row.id, pos, attempts, self.clock() + wait, "rate limit"
                )
                return
            try:
                outcome = await sender.send(row.message, row.retry_key)
            except Exception as exc:  # noqa: BLE001 - aiohttp.ClientError, timeouts, OSError
                outcome = Outcome("retry", f"{type(exc).__name__}: {exc}"[:200])
            if outcome.status == "sent":
                await self._sent(row, name, outcome)
                return
            self.failed[(name, outcome.status)] += 1
            log.warning(
                "notification %d on %s: %s (%s)", row.id, name, outcome.status, outcome.reason
            )
            attempts, failover = await self._failed(row, sender, outcome, pos, attempts, len(chain))
            if failover is None:
                return  # rescheduled on this channel
            reason = failover
            self._failover(name, nxt, reason)
            pos, attempts = pos + 1, 0
        # Every channel of the chain failed over this pass: start again after a back-off.
        await asyncio.to_thread(
            self.outbox.reschedule,
            row.id,
            pos,
            attempts,
            self.clock() + self._backoff(max(1, attempts)),
            "all channels failed",
        )

    async def _sent(self, row: OutRow, name: str, outcome: Outcome) -> None:
        now = self.clock()
        await asyncio.to_thread(self.outbox.mark_sent, row.id, name, now)
        self.sent[name] += 1
        self.last_sent_latency_s = now - row.created
        log.info(
            "notification %d (%s) sent on %s%s",
            row.id,
            row.kind,
            name,
            f" ({outcome.reason})" if outcome.reason else "",
        )

    async def _failed(
        self, row: OutRow, sender: Sender, outcome: Outcome, pos: int, attempts: int, chain_len: int
    ) -> tuple[int, str | None]:
        """A send that did not succeed: rescheduled on the same channel (returns None as the
        reason), or the reason to fail over to the next one."""
        if outcome.status == "failover" and chain_len == 1:  # nowhere else to go: wait
            attempts += 1
            wait_s = max(self._backoff(attempts), sender.blocked_until - time.monotonic())
            await asyncio.to_thread(
                self.outbox.reschedule, row.id, pos, attempts, self.clock() + wait_s, outcome.reason
            )
            return attempts, None
        if outcome.status == "retry":
            attempts += 1
            if attempts < self.settings.attempts_before_failover or chain_len == 1:
                await asyncio.to_thread(
                    self.outbox.reschedule,
                    row.id,
                    pos,
                    attempts,
                    self.clock() + self._backoff(attempts),
                    outcome.reason,
                )
                return attempts, None
            return attempts, "retries"
        reason = outcome.reason
        return attempts, ("quota" if "quota" in reason else "429" if "429" in reason else "refused")

    def _failover(self, src: str, dst: str, reason: str) -> None:
        self.failovers[(src, dst, reason)] += 1
        log.warning("failover %s -> %s (%s)", src, dst, reason)

    def _backoff(self, attempts: int) -> float:
        s = self.settings
        base: float = min(s.retry_max_s, s.retry_min_s * 2.0 ** (attempts - 1))
        return base * random.uniform(0.8, 1.2)

    # -- timers: escalation, digest, alive message, uptime ping ------------------------------

    async def _timers(self, session: Any) -> None:
        last_ping = 0.0
        while True:
            try:
                await asyncio.to_thread(self.tick)
                if self.statuses is not None:
                    silent = self.silence.evaluate(self.statuses(), self.clock())
                    if silent:
                        await asyncio.to_thread(self.record, silent)
                s = self.settings
                if (
                    s.heartbeat_ping_url
                    and time.monotonic() - last_ping >= s.heartbeat_ping_interval_s
                ):
                    last_ping = time.monotonic()
                    await self._ping(session, s.heartbeat_ping_url)
                if self.on_heartbeat is not None:
                    self.on_heartbeat(self.stats())
            except Exception:
                log.exception("alert timers")
            s = self.settings
            await asyncio.sleep(min(5.0, s.heartbeat_ping_interval_s, s.heartbeat_publish_s))

    def tick(self) -> int:
        """Escalations due, the daily digest and the daily alive message (once per local day)."""
        now = self.clock()
        s = self.settings
        local = datetime.fromtimestamp(now, UTC) + timedelta(hours=s.utc_offset_h)
        day = local.strftime("%Y-%m-%d")
        n = 0
        with self.outbox.transaction() as db:
            n += self.incidents.escalate(db, now)
            if s.digest_hour is not None and local.hour >= s.digest_hour:
                n += self.incidents.digest(db, day, now)
            if s.heartbeat_channels and local.hour >= s.heartbeat_hour:
                per_lang = {
                    lang: {
                        "channel": self.site_id or "central",
                        "count": self.outbox_pending_in(db),
                    }
                    for lang in s.languages
                }
                text = render(self.incidents.templates, s.languages, "alive", per_lang)
                n += Outbox.enqueue(
                    db,
                    f"alive:{day}",
                    "alive",
                    list(s.heartbeat_channels),
                    {"text": text, "title": "CityEdge alive", "tier": "info", "kind": "alive"},
                    now,
                )
            db.execute("DELETE FROM outbox WHERE state = 1 AND sent_at < ?", (now - 30 * 86400,))
        if n:
            self.counters["queued"] += n
            self.wake()
        return n

    @staticmethod
    def outbox_pending_in(db: Any) -> int:
        return int(db.execute("SELECT COUNT(*) FROM outbox WHERE state = 0").fetchone()[0])

    async def _ping(self, session: Any, url: str) -> None:
        aiohttp = need_aiohttp()
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                self.counters["pings_ok" if resp.status < 400 else "pings_failed"] += 1
        except Exception as exc:  # noqa: BLE001
            self.counters["pings_failed"] += 1
            log.debug("uptime ping failed: %s", exc)

    # -- figures ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        pending, oldest = self.outbox.pending()
        return {
            "pending": pending,
            "oldest_pending_age_s": None if oldest is None else round(self.clock() - oldest, 3),
            "sent": dict(self.sent),
            "failed": {f"{c}:{o}": n for (c, o), n in self.failed.items()},
            "failovers": {f"{a}->{b}:{r}": n for (a, b, r), n in self.failovers.items()},
            "queued": self.counters["queued"],
            "rate_limited": self.counters["rate_limited"],
            "last_latency_s": self.last_sent_latency_s,
            "channels": {name: s.status() for name, s in self.senders.items()},
        }

    def metrics_text(self) -> str:
        """Prometheus text lines for the notify figures."""
        pending, oldest = self.outbox.pending()
        lines = [
            "# HELP cityedge_notify_pending notifications waiting in the outbox",
            "# TYPE cityedge_notify_pending gauge",
            f"cityedge_notify_pending {pending}",
            "# HELP cityedge_notify_oldest_pending_age_seconds age of the oldest waiting notification",
            "# TYPE cityedge_notify_oldest_pending_age_seconds gauge",
            (
                "cityedge_notify_oldest_pending_age_seconds "
                f"{'NaN' if oldest is None else round(self.clock() - oldest, 3)}"
            ),
            "# HELP cityedge_notify_sent_total notifications accepted by a channel",
            "# TYPE cityedge_notify_sent_total counter",
        ]
        lines += [
            f'cityedge_notify_sent_total{{channel="{c}"}} {n}' for c, n in sorted(self.sent.items())
        ]
        lines += [
            "# HELP cityedge_notify_send_failures_total failed attempts by channel and outcome",
            "# TYPE cityedge_notify_send_failures_total counter",
        ]
        lines += [
            f'cityedge_notify_send_failures_total{{channel="{c}",outcome="{o}"}} {n}'
            for (c, o), n in sorted(self.failed.items())
        ]
        lines += [
            "# HELP cityedge_notify_failovers_total notifications moved to the next channel",
            "# TYPE cityedge_notify_failovers_total counter",
        ]
        lines += [
            f'cityedge_notify_failovers_total{{from="{a}",to="{b}",reason="{r}"}} {n}'
            for (a, b, r), n in sorted(self.failovers.items())
        ]
        lines += [
            "# HELP cityedge_notify_line_quota_remaining LINE messages left this month",
            "# TYPE cityedge_notify_line_quota_remaining gauge",
        ]
        for name, sender in sorted(self.senders.items()):
            rem = sender.status().get("remaining")
            if sender.channel.type == "line":
                lines.append(
                    f'cityedge_notify_line_quota_remaining{{channel="{name}"}} '
                    f"{'NaN' if rem is None else rem}"
                )
        return "\n".join(lines) + "\n"


def _local(now: float, s: NotifySettings) -> str:
    return (datetime.fromtimestamp(now, UTC) + timedelta(hours=s.utc_offset_h)).strftime(
        "%Y-%m-%d %H:%M"
    )
