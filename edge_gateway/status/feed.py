"""What the status page knows, fed from the gateway's own stream of messages: observations
(after the store committed them), node status, node session state, command acks and dead
letters. Nothing here polls a device."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calibration.qc import Flag
from edge_gateway.status.devicefacts import EVENTS_KEPT as EVENTS_KEPT
from edge_gateway.status.devicefacts import Device, Window, num
from edge_gateway.status.history import (
    FLAG_QC,
    History,
    open_db,
)
from edge_gateway.status.views import FeedViews

if TYPE_CHECKING:
    from edge_gateway.config import GatewayConfig

log = logging.getLogger(__name__)

FLUSH_S = 30.0
DRAIN_S = 2.0
INCOMING_MAX = 200_000
# The quantity a device's plots and "last value" show, per kind: (quantity, unit).
MAIN = {"air": ("pm25", "ug/m3"), "water": ("level", "m"), "parking": ("occupied", "")}
_STATUS_KEYS = (
    "fw",
    "boot",
    "uptime_s",
    "reset_cause",
    "free_heap",
    "rssi_dbm",
    "battery_v",
    "outbox",
    "sensor_errors",
    "config_error",
    "intervals",
    "synced",
)


class StatusFeed(FeedViews):
    """The gateway calls :meth:`message`, :meth:`observation` (from its store thread) and
    :meth:`dead_letter`; :meth:`start`/:meth:`stop` run the web server and the flusher."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.devices: dict[str, Device] = {}
        self.history = History(config.status.history_max_bytes)
        self.windows: list[Window] = []
        # Filled on the store thread, emptied on the loop (every DRAIN_S at least); bounded so a
        # stalled page can never grow the gateway without limit.
        self._incoming: deque[tuple[dict[str, Any], float]] = deque(maxlen=INCOMING_MAX)
        self.active = False  # the hooks do nothing until the page runs
        self._db: sqlite3.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: Any = None
        self.port: int | None = None
        self.token: str = ""
        self.gateway_stats: Callable[[], dict[str, Any]] | None = None
        self.calibration: Callable[[str], Any] | None = None  # record id -> record or None
        # The gateway's alert dispatcher (edge_gateway.notify), when it runs: its open
        # incidents are shown and acknowledged on the page.
        self.alerts: Any = None
        self.started = time.time()
        self.version = 0  # bumped on every change: the page's live updates poll it

    @property
    def db_path(self) -> Path:
        return Path(self.config.data_dir) / "history.sqlite"

    @property
    def token_path(self) -> Path:
        s = self.config.status
        return Path(s.token_file) if s.token_file else Path(self.config.data_dir) / "status-token"

    # -- the gateway's taps -------------------------------------------------------------------

    def observation(self, obs: Mapping[str, Any], received: float) -> None:
        """A new reading, processed and about to be committed (called on the store thread)."""
        if self.active:
            self._incoming.append((dict(obs), received))

    def message(self, leaf: str, device_id: str, body: Mapping[str, Any], now: float) -> None:
        if leaf == "reading" or not self.active:
            return  # counted once committed (observation): a resent duplicate is not new data
        try:
            self._message(leaf, device_id, body, now)
        except Exception:  # the page must never disturb the gateway's ingest
            log.exception("status page: message from %s not taken", device_id)

    def _message(self, leaf: str, device_id: str, body: Mapping[str, Any], now: float) -> None:
        dev = self._get(device_id, now)
        if leaf == "status":
            dev.status = {k: body[k] for k in _STATUS_KEYS if k in body}
            dev.status_rx = now
            dev.kind = str(body.get("kind") or dev.kind or "") or None
            bat = num(body.get("battery_v"))
            if bat is not None:
                dev.battery_v = bat
        elif leaf == "state":
            dev.session = str(body.get("state") or "unknown")
        elif leaf == "ack":
            dev.events.append(
                {
                    "t": now,
                    "type": "command",
                    "text": f"{body.get('id')}: {'ok' if body.get('ok') else 'failed'}"
                    + (f" ({body.get('error')})" if body.get("error") else ""),
                }
            )
        self.version += 1

    def dead_letter(self, topic: str, code: str, reason: str, now: float) -> None:
        if not self.active:
            return
        parts = topic.split("/")
        if len(parts) >= 5 and parts[2] == "node":
            dev = self.devices.get(parts[3])
            if dev is not None:
                dev.events.append(
                    {"t": now, "type": "dead_letter", "text": f"{code}: {reason[:200]}"}
                )
                self.version += 1

    # -- model ----------------------------------------------------------------------------------

    def _get(self, device_id: str, now: float) -> Device:
        dev = self.devices.get(device_id)
        if dev is None:
            dev = self.devices[device_id] = Device(device_id, first_known=now)
            entry = self.config.device(device_id)
            if entry is not None:
                dev.kind = entry.kind
        return dev

    def drain(self, now: float | None = None) -> None:
        """Take in the observations the store thread handed over."""
        now = time.time() if now is None else now
        while self._incoming:
            obs, received = self._incoming.popleft()
            try:
                self._take(obs, received, now)
            except Exception:
                log.exception("status page: observation not taken")
        for entry in self.config.inventory.device:
            if entry.id not in self.devices:
                self._get(entry.id, self.started)

    def _take(self, obs: Mapping[str, Any], received: float, now: float) -> None:
        device_id = str(obs["device_id"])
        dev = self._get(device_id, now)
        kind = str(obs.get("kind") or "")
        dev.kind = kind or dev.kind
        quantity, unit = MAIN.get(kind, ("", ""))
        cal = (obs.get("calibrated") or {}).get(quantity) or {}
        value = cal.get("v")
        if isinstance(value, bool):
            value = 1.0 if value else 0.0
        dev.value = num(value)
        dev.unit = str(cal.get("u") or unit)
        dev.calibration_id = cal.get("calibration_id") if cal else None
        bat = ((obs.get("raw") or {}).get("battery") or {}).get("v")
        if num(bat) is not None:
            dev.battery_v = num(bat)
        qc: str | None = None
        flags = 0
        for tests in (obs.get("quality_tests") or {}).values():
            if not isinstance(tests, dict):
                continue
            if int(tests.get("gross_range", 0) or 0) >= 3:
                qc = "out_of_range"
            elif int(tests.get("flat_line", 0) or 0) >= 3 and qc is None:
                qc = "stuck"
        if any(
            int(f) in (Flag.SUSPECT, Flag.FAIL)
            for f in (obs.get("quality") or {}).values()
            if isinstance(f, int)
        ):
            flags |= FLAG_QC
        dev.qc = qc
        t = num(obs.get("t")) or received
        dev.last_rx = max(dev.last_rx or 0.0, received)
        dev.last_t = t
        rssi = dev.status.get("rssi_dbm")
        self.history.add(
            device_id,
            t,
            dev.value,
            dev.battery_v,
            rssi if isinstance(rssi, int) else None,
            flags,
            now,
        )
        self.version += 1

    # -- maintenance ----------------------------------------------------------------------------

    def in_maintenance(self, device_id: str, now: float) -> Window | None:
        for w in self.windows:
            if w.device_id == device_id and w.active(now):
                return w
        return None

    def start_maintenance(
        self, device_id: str, hours: float | None, reason: str, now: float | None = None
    ) -> Window:
        now = time.time() if now is None else now
        self.end_maintenance(device_id, now)
        end = None if hours is None else now + hours * 3600
        wid = 0
        if self._db is not None:
            cur = self._db.execute(
                "INSERT INTO maintenance (device_id, start, end, reason, created) VALUES (?,?,?,?,?)",
                (device_id, now, end, reason, now),
            )
            wid = int(cur.lastrowid or 0)
        w = Window(wid, device_id, now, end, reason[:200])
        self.windows.append(w)
        self._get(device_id, now)
        self.version += 1
        return w

    def end_maintenance(self, device_id: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        ended = False
        for w in self.windows:
            if w.device_id == device_id and w.active(now):
                w.end = now
                ended = True
                if self._db is not None:
                    self._db.execute("UPDATE maintenance SET end=? WHERE id=?", (now, w.id))
        if ended:
            self.version += 1
        return ended

    def maintenance_seconds(self, device_id: str, lo: float, hi: float) -> float:
        total = 0.0
        for w in self.windows:
            if w.device_id != device_id:
                continue
            a, b = max(lo, w.start), min(hi, w.end if w.end is not None else hi)
            total += max(0.0, b - a)
        return min(total, hi - lo)

    # -- alerts (edge_gateway.notify) -----------------------------------------------------------

    def incidents(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """The dispatcher's open incidents of this site (of one device)."""
        if self.alerts is None:
            return []
        from edge_gateway.notify.incidents import open_incidents

        try:
            found = open_incidents(self.alerts.outbox)
        except sqlite3.Error as exc:
            log.warning("status page: open incidents not read: %s", exc)
            return []
        return [
            i
            for i in found
            if i["site"] == self.config.site_id and (device_id is None or i["device"] == device_id)
        ]

    def ack_incident(self, number: int, by: str, now: float | None = None) -> bool:
        """Acknowledge an open incident (as ``cityedge alerts ack``): it escalates no more.
        False if it is not open here or was acknowledged already. Blocking (an fsynced write):
        call it from a worker thread."""
        if self.alerts is None or not any(i["no"] == number for i in self.incidents()):
            return False
        from edge_gateway.notify.incidents import ack

        ok = ack(self.alerts.outbox, number, by, time.time() if now is None else now)
        if ok:
            self.version += 1
        return ok

    def detail(self, device_id: str, now: float | None = None) -> dict[str, Any] | None:
        now = time.time() if now is None else now
        self.drain(now)
        dev = self.devices.get(device_id)
        if dev is None:
            return None
        out = self.row(dev, now)
        if self.alerts is not None:
            out["incidents"] = self.incidents(device_id)
        out["events"] = list(dev.events)
        out["maintenance_windows"] = [
            w.as_dict() for w in self.windows if w.device_id == device_id
        ][-10:]
        return out

    def health(self) -> dict[str, Any]:
        stats = self.gateway_stats() if self.gateway_stats else {}
        keep = (
            "ready",
            "upstream_connected",
            "local_connected",
            "queue_depth",
            "oldest_age_s",
            "dropped_total",
            "dead_letters",
            "readings_stored",
            "upstream_offline_s",
        )
        return {
            "site_id": self.config.site_id,
            "gateway_id": self.config.gateway_id,
            "state": "online" if stats.get("ready", True) else "starting",
            **{k: stats[k] for k in keep if k in stats},
        }

    # -- life cycle -----------------------------------------------------------------------------

    def _load_token(self) -> str:
        path = self.token_path
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if not text:
            if self.config.status.token_file:
                raise RuntimeError(f"status.token_file {str(path)!r} is missing or empty")
            path.parent.mkdir(parents=True, exist_ok=True)
            text = secrets.token_urlsafe(24)
            with contextlib.suppress(FileExistsError):
                fd = path.open("x", encoding="utf-8")
                path.chmod(0o600)
                with fd:
                    fd.write(text + "\n")
            text = path.read_text().strip()
        return text

    def open_store(self) -> None:
        """Open (or create) the history file and load what it holds, and the token."""
        now = time.time()
        self._db = open_db(self.db_path)
        self.history.load(self._db, now)
        for dev_id, doc in self._db.execute("SELECT device_id, doc FROM devices"):
            with contextlib.suppress(ValueError, TypeError):
                self.devices[dev_id] = Device.from_doc(dev_id, json.loads(doc))
        for wid, dev_id, start, end, reason in self._db.execute(
            "SELECT id, device_id, start, end, reason FROM maintenance"
        ):
            self.windows.append(
                Window(int(wid), dev_id, float(start), None if end is None else float(end), reason)
            )
        self.token = self._load_token()
        self.active = True

    def flush(self, now: float | None = None) -> None:
        """Write the history and device facts (worker thread; the history has its own lock)."""
        db = self._db
        if db is None:
            return
        now = time.time() if now is None else now
        self.history.flush(db, now)
        docs = [
            (k, json.dumps(d.doc(), separators=(",", ":"))) for k, d in list(self.devices.items())
        ]
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO devices VALUES (?,?)", docs)
        db.execute("COMMIT")

    async def start(self) -> None:
        """Open the history and serve the page. Any failure is logged and the gateway runs on
        without its page (a damaged history file is moved aside and started afresh)."""
        try:
            try:
                await asyncio.to_thread(self.open_store)
            except sqlite3.DatabaseError as exc:
                aside = self.db_path.with_name(f"history.sqlite.damaged-{int(time.time())}")
                log.error(
                    "status history %s unreadable (%s): moved to %s, starting afresh",
                    self.db_path,
                    exc,
                    aside,
                )
                if self._db is not None:
                    self._db.close()
                    self._db = None
                self.db_path.rename(aside)
                self.devices.clear()
                self.windows.clear()
                await asyncio.to_thread(self.open_store)
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            log.error("status page not started: %s", exc)
            return
        self.active = True
        self._tasks.append(asyncio.create_task(self._flusher(), name="status-flush"))
        try:
            from edge_gateway.status.web import start_site  # aiohttp: only when served

            self._runner, self.port = await start_site(self)
        except (OSError, ImportError) as exc:  # the gateway runs on without its page
            log.error(
                "status page not served on %s:%d: %s (status.host/status.port; "
                "pip install aiohttp)",
                self.config.status.host,
                self.config.status.port,
                exc,
            )
            return
        log.info("status page on http://%s:%d/", self.config.status.host, self.port)

    async def _flusher(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(DRAIN_S)
            self.drain()
            if time.monotonic() - last < FLUSH_S:
                continue
            last = time.monotonic()
            try:
                await asyncio.to_thread(self.flush)
            except sqlite3.Error as exc:
                log.warning("status history not saved: %s", exc)

    async def stop(self) -> None:
        self.active = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
        if self._db is not None:
            self.drain()
            with contextlib.suppress(sqlite3.Error):
                await asyncio.to_thread(self.flush)
            self._db.close()
            self._db = None
