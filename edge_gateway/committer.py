"""The committer: batch, de-duplicate, process, commit — the group commit of readings.

:class:`Committer` takes up to ``store.commit_max_readings`` readings from the site link's
queue or waits at most ``store.commit_max_ms``; on the store thread it de-duplicates on
(device_id, boot, seq), processes (calibration, QC, indices, alerts:
:mod:`edge_gateway.processing`) and commits them in one transaction. Only then are they
PUBACKed to the site broker and their custody sent to the nodes (:mod:`edge_gateway.sitelink`),
and the forwarder woken (:mod:`edge_gateway.forwarder`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_gateway import contract
from edge_gateway.diskguard import RETRY_S
from edge_gateway.processing import Processor
from edge_gateway.quarantine import Quarantine
from edge_gateway.sitelink import Incoming, SiteLink, ack_message
from edge_gateway.store import (
    PRIORITY_ALERT,
    PRIORITY_ALERT_READING,
    PRIORITY_READING,
    CommitResult,
    Entry,
    Store,
)

if TYPE_CHECKING:
    from edge_gateway.app import Gateway

log = logging.getLogger("edge_gateway")

Key = tuple[str, int, int]  # (device_id, boot, seq)
DeadLetter = tuple[str, bytes, str, str]  # topic, payload, code, reason


@dataclass
class PipelineResult:
    commit: CommitResult
    dead: list[DeadLetter] = field(default_factory=list)
    alerts: int = 0
    samples: list[tuple[str, float]] = field(default_factory=list)  # (device, sample time)

    def add(self, part: PipelineResult) -> None:
        self.commit.accepted += part.commit.accepted
        self.commit.duplicates += part.commit.duplicates
        for reason, n in part.commit.dropped.items():
            self.commit.dropped[reason] = self.commit.dropped.get(reason, 0) + n
        self.commit.commit_s += part.commit.commit_s
        self.dead += part.dead
        self.alerts += part.alerts
        self.samples += part.samples


@dataclass
class _Group:
    """What one processing group gathers before its commit."""

    entries: list[Entry] = field(default_factory=list)
    duplicates: list[Key] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    remember: list[tuple[str, int, int, float]] = field(default_factory=list)
    samples: list[tuple[str, float]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    observations: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0

    def dead_reading(self, item: Incoming, key: Key, code: str, reason: str) -> bytes:
        """The reading goes to the dead letters; its key is remembered so a resend is a
        duplicate (the dead letter holds the payload)."""
        raw = json.dumps(item.body, separators=(",", ":")).encode()
        self.dead.append((contract.node_topic(item.device_id, "reading"), raw, code, reason))
        self.remember.append((*key, item.received))
        return raw


def sample_time(body: dict[str, Any], received: float) -> float:
    """When a reading was sampled, for completeness: its ``t`` when the node's clock is synced
    and ``t`` is not in the future (5 min of clock skew allowed), else the receive time."""
    t = body.get("t")
    if body.get("synced") is True and isinstance(t, (int, float)) and 0 < t <= received + 300:
        return float(t)
    return received


def _keys(batch: list[Incoming]) -> list[Key]:
    return [(i.device_id, int(i.body["boot"]), int(i.body["seq"])) for i in batch]


class Committer:
    """The group commit of one gateway run: :meth:`run` until cancelled."""

    def __init__(
        self,
        gw: Gateway,
        store: Store,
        processor: Processor,
        quarantine: Quarantine | None,
        site: SiteLink,
        wake: asyncio.Event,
    ) -> None:
        self.gw = gw
        self.store = store
        self.processor = processor
        self.quarantine = quarantine
        self.site = site
        self.wake = wake  # set after each commit: new rows to forward
        self.last_commit_s = 0.0
        self._store_failures = 0

    async def run(self) -> None:
        queue = self.site.queue
        while True:
            first = await queue.get()
            batch = [first]
            cfg = self.gw.config.store
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
                ack_message(item.ack)
            self._after_commit(result)

    async def _commit_batch(self, batch: list[Incoming]) -> PipelineResult:
        """Commit one batch, trying again until it is stored. Until then nothing of it is
        PUBACKed (the site broker keeps it) and no custody is sent (the nodes keep it). A full
        disk is a state (:mod:`edge_gateway.diskguard`), never a reason to exit; any other store
        error ends the process after 10 failures in a row (systemd restarts it)."""
        store, disk = self.store, self.gw.disk
        while True:
            # Shielded: once the batch is on the store thread, let the commit finish even if the
            # gateway is being stopped, then ack what was committed.
            try:
                result = await asyncio.shield(store.call(self._pipeline, batch))
            except (sqlite3.Error, OSError) as exc:
                self.gw.counters["store_errors"] += 1
                if await store.call(disk.failed, exc):
                    self.gw.reasons(
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
        return self.gw.disk.may_retry(self.store.free_pages_bytes())

    def _pipeline(self, batch: list[Incoming]) -> PipelineResult:
        """On the store thread: commit the batch in processing groups — one, unless readings
        that were in hand when the process died before come again (:mod:`quarantine`)."""
        quarantine = self.quarantine
        if quarantine is None:
            return self._commit_group(batch)
        keys = _keys(batch)
        total: PipelineResult | None = None
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
            else:
                total.add(part)
        assert total is not None  # groups() covers the batch, which is never empty
        return total

    def _commit_group(self, batch: list[Incoming]) -> PipelineResult:
        """On the store thread: de-duplicate, process, commit one group."""
        store, processor = self.store, self.processor
        keys = _keys(batch)
        fresh = store.is_new(keys)
        calibration_errors = processor.calibration_errors
        group = _Group()
        in_batch: set[Key] = set()
        for item, key, new in zip(batch, keys, fresh, strict=True):
            if not new or key in in_batch:
                group.duplicates.append(key)
                continue
            in_batch.add(key)
            self._take(group, item, key)
        # Alert states change only with alerts; they are committed with the rows that caused them.
        alerts = len(group.alerts)
        meta = {"alert_state": json.dumps(processor.alert_state())} if alerts else None
        notify = self.gw.notify
        if notify is not None:  # recorded (fsync) before this commit: see notify/hook.py
            try:
                notify.record(group.alerts, group.observations)
            except Exception:  # the alerts still go to the platform with the readings
                log.exception("alert dispatcher: recording %d alerts failed", alerts)
        result = store.commit(
            group.entries,
            group.duplicates,
            remember=group.remember,
            counters={
                "processing_errors": group.errors,
                "calibration_errors": processor.calibration_errors - calibration_errors,
            },
            meta=meta,
            samples=group.samples,
        )
        result.accepted.extend(k[:3] for k in group.remember)  # custody: the dead letter holds them
        return PipelineResult(result, group.dead, alerts, group.samples)

    def _take(self, group: _Group, item: Incoming, key: Key) -> None:
        """One new reading of a group: quarantined, processed (a row and its alerts), or
        dead-lettered when processing fails."""
        quarantine = self.quarantine
        if quarantine is not None and quarantine.is_quarantined(key):
            reason = "quarantined: the gateway stopped twice while processing it"
            raw = group.dead_reading(item, key, "quarantined", reason)
            quarantine.record_payload(key, raw)
            return
        group.samples.append((item.device_id, sample_time(item.body, item.received)))
        try:
            processed = self.processor.process(item.device_id, item.body, item.received)
        except Exception as exc:  # noqa: BLE001 - a processing bug must not lose or block the reading
            self.gw.reasons(
                logging.ERROR,
                "processing",
                "processing %s failed: %s: %s",
                key,
                type(exc).__name__,
                exc,
            )
            group.errors += 1
            reason = f"processing failed: {type(exc).__name__}: {exc}"[:500]
            group.dead_reading(item, key, "processing", reason)
            return
        self.gw.status_feed.observation(processed.observation, item.received)
        site_id = self.processor.config.site_id
        kind = str(item.body["kind"])
        priority = PRIORITY_ALERT_READING if processed.alerts else PRIORITY_READING
        group.entries.append(
            Entry(
                contract.observation_topic(site_id, kind, item.device_id),
                processed.payload,
                item.received,
                priority,
                key,
            )
        )
        group.alerts.extend(processed.alerts)
        group.observations.append(processed.observation)
        for alert in processed.alerts:
            group.entries.append(
                Entry(
                    contract.alert_topic(site_id, item.device_id),
                    json.dumps(alert, separators=(",", ":"), ensure_ascii=False).encode(),
                    item.received,
                    PRIORITY_ALERT,
                    None,
                )
            )

    def _after_commit(self, result: PipelineResult) -> None:
        gw, c = self.gw, result.commit
        self.last_commit_s = c.commit_s
        gw.counters["alerts_raised"] += result.alerts
        now = time.time()
        for dev, t in result.samples:
            gw.devices.counted(dev, t, now)
        for topic, payload, code, reason in result.dead:  # processing_errors: counted by the commit
            if code != "processing":
                gw.counters[code] += 1  # quarantined
            self.site.dead_letter(self.site.client, topic, payload, code, reason)
        if c.dropped:
            log.warning("store bound reached, dropped %s", c.dropped)
        self.wake.set()
        self.site.send_custody(c.accepted + c.duplicates)
