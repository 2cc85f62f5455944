"""The compact, byte-bounded history the status page plots and the completeness report counts.

* **Samples**: per device, 12-byte records ``(t: uint32 sample time, value: float32, battery:
  float16, rssi: int8, flags: uint8)`` in hourly chunks (by sample time); all devices together
  stay under ``max_bytes`` (each device gets an equal share; its oldest records go first).
* **Day counts**: per device and Bangkok calendar day, 144 ten-minute buckets of readings
  counted by *sample* time (``uint16`` each, 288 bytes a day), kept ``COUNT_DAYS`` days.

Both live in memory and in ``<data_dir>/history.sqlite`` (WAL, ``synchronous = NORMAL``: the
history is a view, not custody; a power cut loses at most the last flush), written only in
:meth:`History.flush`, which the gateway calls from a worker thread every ``FLUSH_S``.
"""

from __future__ import annotations

import math
import sqlite3
import struct
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Bangkok")
REC = struct.Struct("<Ife bB")
REC_SIZE = REC.size  # 12
BUCKET_S = 600
BUCKETS = 86400 // BUCKET_S
COUNT_DAYS = 62  # the month before this one is always whole
SAMPLE_DAYS = 8
FLAG_QC = 1  # the reading had a SUSPECT or FAIL flag
NAN = float("nan")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (device_id TEXT NOT NULL, hour INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (device_id, hour)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS days (device_id TEXT NOT NULL, day TEXT NOT NULL,
    counts BLOB NOT NULL, PRIMARY KEY (device_id, day)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS maintenance (id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL, start REAL NOT NULL, end REAL, reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL);
"""


def local_day(t: float) -> str:
    return datetime.fromtimestamp(t, TZ).date().isoformat()


def day_start(day: str) -> float:
    d = date.fromisoformat(day)
    return datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp()


def days_between(first: str, last: str) -> list[str]:
    d, end = date.fromisoformat(first), date.fromisoformat(last)
    out = []
    while d <= end:
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def open_db(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        return db
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


@dataclass
class Sample:
    t: float
    value: float | None
    battery: float | None
    rssi: int | None
    flags: int


def _pack(
    t: float, value: float | None, battery: float | None, rssi: int | None, flags: int
) -> bytes:
    b = NAN if battery is None else max(-65000.0, min(65000.0, battery))
    v = NAN if value is None or not math.isfinite(value) else max(-3e38, min(3e38, value))
    r = -128 if rssi is None else max(-127, min(127, int(rssi)))
    return REC.pack(int(t) & 0xFFFFFFFF, v, b, r, flags & 0xFF)


def _unpack(buf: bytes | bytearray) -> Iterator[Sample]:
    for t, v, b, r, f in REC.iter_unpack(buf):
        yield Sample(
            float(t),
            None if math.isnan(v) else v,
            None if math.isnan(b) else b,
            None if r == -128 else r,
            f,
        )


@dataclass
class DeviceHistory:
    chunks: dict[int, bytearray] = field(default_factory=dict)  # hour start -> records
    days: dict[str, array[int]] = field(default_factory=dict)
    dirty_hours: set[int] = field(default_factory=set)
    dirty_days: set[str] = field(default_factory=set)
    deleted_hours: set[int] = field(default_factory=set)
    nbytes: int = 0  # sum of the chunks' lengths
    oldest_hour: int = 0

    def sample_bytes(self) -> int:
        return self.nbytes


class History:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.devices: dict[str, DeviceHistory] = {}
        self.lock = threading.Lock()
        self._total = 0

    def _dev(self, device_id: str) -> DeviceHistory:
        d = self.devices.get(device_id)
        if d is None:
            d = self.devices[device_id] = DeviceHistory()
        return d

    # -- writing (event loop) -----------------------------------------------------------------

    def add(
        self,
        device_id: str,
        t: float,
        value: float | None,
        battery: float | None,
        rssi: int | None,
        flags: int,
        now: float,
    ) -> None:
        if not (0 < t < now + 2 * 86400):  # a clock far ahead must not fill the history
            return
        with self.lock:
            d = self._dev(device_id)
            day = local_day(t)
            counts = d.days.get(day)
            if counts is None:
                counts = d.days[day] = array("H", bytes(2 * BUCKETS))
            i = int((t - day_start(day)) // BUCKET_S)
            if counts[i] < 0xFFFF:
                counts[i] += 1
            d.dirty_days.add(day)
            if t < now - SAMPLE_DAYS * 86400:
                return
            hour = int(t // 3600 * 3600)
            chunk = d.chunks.get(hour)
            if chunk is None:
                chunk = d.chunks[hour] = bytearray()
            chunk += _pack(t, value, battery, rssi, flags)
            d.nbytes += REC_SIZE
            self._total += REC_SIZE
            d.dirty_hours.add(hour)
            share = max(REC_SIZE * 16, self.max_bytes // max(1, len(self.devices)))
            if d.nbytes > share or d.oldest_hour + 3600 <= now - SAMPLE_DAYS * 86400:
                self._bound(d, now, share)
            if self._total > self.max_bytes:  # a new device: every share got smaller
                for other in self.devices.values():
                    if other.nbytes > share:
                        self._bound(other, now, share)

    def _bound(self, d: DeviceHistory, now: float, share: int) -> None:
        before = d.nbytes
        over = d.nbytes - share
        old = now - SAMPLE_DAYS * 86400
        for hour in sorted(d.chunks):
            if over <= 0 and hour + 3600 > old:
                break
            chunk = d.chunks[hour]
            if over >= len(chunk) or hour + 3600 <= old:
                over -= len(chunk)
                d.nbytes -= len(chunk)
                del d.chunks[hour]
                d.deleted_hours.add(hour)
                d.dirty_hours.discard(hour)
            else:
                cut = -(-over // REC_SIZE) * REC_SIZE
                del chunk[:cut]
                over -= cut
                d.nbytes -= cut
                d.dirty_hours.add(hour)
        d.oldest_hour = min(d.chunks, default=int(now))
        self._total -= before - d.nbytes

    def total_bytes(self) -> int:
        with self.lock:
            return sum(d.sample_bytes() for d in self.devices.values())

    # -- reading -------------------------------------------------------------------------------

    def samples(self, device_id: str, since: float) -> list[Sample]:
        with self.lock:
            d = self.devices.get(device_id)
            if d is None:
                return []
            out: list[Sample] = []
            for hour in sorted(d.chunks):
                if hour + 3600 <= since:
                    continue
                out.extend(s for s in _unpack(d.chunks[hour]) if s.t >= since)
        out.sort(key=lambda s: s.t)
        return out

    def day_counts(self, device_id: str, day: str) -> array[int] | None:
        with self.lock:
            d = self.devices.get(device_id)
            return None if d is None else d.days.get(day)

    # -- persistence (worker thread) -----------------------------------------------------------

    def load(self, db: sqlite3.Connection, now: float) -> None:
        cutoff_h = now - SAMPLE_DAYS * 86400
        cutoff_d = local_day(now - COUNT_DAYS * 86400)
        with self.lock:
            for dev, hour, data in db.execute("SELECT device_id, hour, data FROM samples"):
                if hour + 3600 > cutoff_h:
                    d = self._dev(dev)
                    d.chunks[int(hour)] = bytearray(data)
                    d.nbytes += len(data)
                    self._total += len(data)
                    d.oldest_hour = min(d.chunks)
            for dev, day, counts in db.execute("SELECT device_id, day, counts FROM days"):
                if day >= cutoff_d and len(counts) == 2 * BUCKETS:
                    a = array("H")
                    a.frombytes(counts)
                    self._dev(dev).days[str(day)] = a

    def flush(self, db: sqlite3.Connection, now: float) -> None:
        cutoff_d = local_day(now - COUNT_DAYS * 86400)
        with self.lock:
            rows_s: list[tuple[str, int, bytes]] = []
            gone_s: list[tuple[str, int]] = []
            rows_d: list[tuple[str, str, bytes]] = []
            for dev, d in self.devices.items():
                rows_s += [(dev, h, bytes(d.chunks[h])) for h in d.dirty_hours if h in d.chunks]
                gone_s += [(dev, h) for h in d.deleted_hours]
                for day in [k for k in d.days if k < cutoff_d]:
                    del d.days[day]
                rows_d += [(dev, k, d.days[k].tobytes()) for k in d.dirty_days if k in d.days]
                d.dirty_hours.clear()
                d.deleted_hours.clear()
                d.dirty_days.clear()
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO samples VALUES (?,?,?)", rows_s)
        db.executemany("DELETE FROM samples WHERE device_id=? AND hour=?", gone_s)
        db.executemany("INSERT OR REPLACE INTO days VALUES (?,?,?)", rows_d)
        db.execute("DELETE FROM days WHERE day < ?", (cutoff_d,))
        db.execute("COMMIT")


def counts_from_db(db: sqlite3.Connection, device_id: str, day: str) -> array[int] | None:
    row = db.execute(
        "SELECT counts FROM days WHERE device_id=? AND day=?", (device_id, day)
    ).fetchone()
    if row is None or len(row[0]) != 2 * BUCKETS:
        return None
    a = array("H")
    a.frombytes(row[0])
    return a


def utc_iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
