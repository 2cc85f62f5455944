"""The durable store: SQLite in WAL mode, one writer thread, group commits.

Tables
------
``queue``     observations and alerts waiting for the platform (deleted after the QoS 2
              handshake completed). A row goes through: *waiting* (``mid`` NULL) → *published*
              (``mid`` and ``replay`` committed before the PUBLISH leaves, ``state`` 1) →
              *released* (``state`` 2, committed after the PUBREC and before the PUBREL) →
              deleted (after the PUBCOMP; the delete may be lazy). See ``edge_gateway.upstream``.
``seen_ranges`` the de-duplication memory: one row per (device_id, boot) holding the sequence
              numbers committed so far as sorted ranges (``[[0, 1234], [1240, 1300]]``), kept
              for ``dedup_horizon_s`` after that boot was last heard of, delivered or not. One
              small row per device instead of one row per reading: a group commit dirties one or
              two pages of it rather than a page per device (SD-card writes).
``counters``  monotonic counters (received, delivered, duplicates, drops by reason) committed in
              the same transaction as the rows they count, so they survive crashes exactly.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL`` fsyncs the WAL on every commit, so a
committed group survives a power cut; only then does the gateway send custody to the nodes.
(``synchronous=NORMAL`` in WAL mode is corruption-safe but may roll back the last commits on power
loss — it is offered for cards where fsync is very slow, and then the custody promise covers
process crashes only; docs/gateway.md.) Group commits amortise the fsync over up to
``commit_max_readings`` readings or ``commit_max_ms``.

Every method runs on the store's own thread (the ``Store`` object is not shared between
threads); the asyncio side calls it through :meth:`Store.call`.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import json
import os
import shutil
import sqlite3
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge_gateway.order import HELD_SCHEMA, HOLD, LATE, OrderGate, mark_late, move_to_queue
from edge_gateway.zdict import DICTIONARY_V1

T = TypeVar("T")


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says what to do."""


# Stored payloads start with a format byte: 0 = the JSON as is, 1 = zlib with DICTIONARY_V1.
_PLAIN = b"\x00"
_ZDICT_V1 = b"\x01"


def encode_payload(payload: bytes) -> bytes:
    """Compress one payload for the store (about 16x smaller for an observation)."""
    # An 8 KiB window (the dictionary is 3.2 KB, a payload at most a few) and memLevel 6: the
    # same output size as 32 KiB / 9 at a third of the set-up cost, which dominated (profile,
    # issue 11). The decoder's 32 KiB window reads both.
    comp = zlib.compressobj(6, zlib.DEFLATED, 13, 6, zlib.Z_DEFAULT_STRATEGY, DICTIONARY_V1)
    packed = comp.compress(payload) + comp.flush()
    if len(packed) + 1 < len(payload) + 1:
        return _ZDICT_V1 + packed
    return _PLAIN + payload


def decode_payload(stored: bytes) -> bytes:
    tag, body = stored[:1], stored[1:]
    if tag == _ZDICT_V1:
        decomp = zlib.decompressobj(15, DICTIONARY_V1)
        return decomp.decompress(body) + decomp.flush()
    if tag == _PLAIN:
        return body
    raise StoreError(
        f"stored payload has unknown format byte {tag!r}; was the store written by "
        "a newer gateway? Upgrade this one."
    )


PRIORITY_READING = 0
PRIORITY_ALERT_READING = 1  # an observation that raised or cleared an alert
PRIORITY_ALERT = 2  # the alert message itself: dropped last

DROP_REASONS = ("max_bytes", "max_age", "disk_floor")

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS queue(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    device_id TEXT,
    boot INTEGER,
    seq INTEGER,
    received REAL NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    mid INTEGER,
    replay INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS seen_ranges(
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    ranges TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY(device_id, boot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples(
    device_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY(device_id, bucket)
) WITHOUT ROWID;
"""
    + HELD_SCHEMA
)

SAMPLE_BUCKET_S = 600  # completeness: readings counted per device in 10-minute sample-time buckets
SAMPLE_DAY_S = 86400


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_age_s: float
    min_free_bytes: int
    dedup_horizon_s: float


@dataclass
class Entry:
    """One row to commit: a reading's observation (key set) or an alert (key None)."""

    topic: str
    payload: bytes
    received: float
    priority: int = PRIORITY_READING
    key: tuple[str, int, int] | None = None


@dataclass(frozen=True)
class Row:
    id: int
    topic: str
    payload: bytes
    device_id: str | None
    received: float


# Row states on the way to the platform (QoS 2): see the module docstring.
STATE_WAITING = 0
STATE_PUBLISHED = 1
STATE_RELEASED = 2

# Columns added after the first release; older stores get them on open.
_MIGRATIONS = (
    ("mid", "ALTER TABLE queue ADD COLUMN mid INTEGER"),
    ("replay", "ALTER TABLE queue ADD COLUMN replay INTEGER NOT NULL DEFAULT 0"),
    ("state", "ALTER TABLE queue ADD COLUMN state INTEGER NOT NULL DEFAULT 0"),
)


@dataclass(frozen=True)
class InFlight:
    """A row that has a packet id: PUBLISHed (``state`` 1) or released (``state`` 2). ``payload``
    is the stored payload; what went on the wire is ``wire_payload(payload, replay)``."""

    id: int
    topic: str
    payload: bytes
    mid: int
    replay: bool
    state: int


@dataclass
class CommitResult:
    accepted: list[tuple[str, int, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    commit_s: float = 0.0


MAX_RANGES = 4096  # per (device, boot); beyond it the oldest ranges are forgotten
MAX_BOOTS = 8  # per device; beyond it the oldest boot's ranges are forgotten (bounded memory)


class SeenRanges:
    """Sequence numbers of one (device, boot) as sorted, disjoint, non-adjacent [lo, hi] ranges.

    Gaps (readings a node dropped, or not yet resent) keep their own ranges. If a boot ever has
    more than ``MAX_RANGES`` gaps, the oldest ranges are forgotten: a very late copy of such a
    reading is then taken as new (a possible duplicate upstream, never a loss).
    """

    __slots__ = ("his", "los")

    def __init__(self, ranges: list[list[int]] | None = None) -> None:
        self.los: list[int] = [r[0] for r in ranges or []]
        self.his: list[int] = [r[1] for r in ranges or []]

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self.los, seq) - 1
        return i >= 0 and seq <= self.his[i]

    def add(self, seq: int) -> None:
        i = bisect.bisect_right(self.los, seq) - 1  # the range starting at or before seq
        if i >= 0 and seq <= self.his[i]:
            return
        joins_left = i >= 0 and self.his[i] == seq - 1
        joins_right = i + 1 < len(self.los) and self.los[i + 1] == seq + 1
        if joins_left and joins_right:
            self.his[i] = self.his[i + 1]
            del self.los[i + 1], self.his[i + 1]
        elif joins_left:
            self.his[i] = seq
        elif joins_right:
            self.los[i + 1] = seq
        else:
            self.los.insert(i + 1, seq)
            self.his.insert(i + 1, seq)
            if len(self.los) > MAX_RANGES:
                del self.los[0], self.his[0]

    def dumps(self) -> str:
        return json.dumps(
            [[lo, hi] for lo, hi in zip(self.los, self.his, strict=True)], separators=(",", ":")
        )


class Store:
    """The SQLite store. Create with :meth:`open`; use from one thread only (see ``call``)."""

    def __init__(self, path: Path, limits: Limits, synchronous: str = "full") -> None:
        self.path = path
        self.limits = limits
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="cityedge-store"
        )
        self.bytes = 0
        self.depth = 0
        self.leased: set[int] = set()
        self.counters: dict[str, int] = {}
        self.seen: dict[tuple[str, int], SeenRanges] = {}
        self._boots: dict[str, list[int]] = {}  # device -> its boots in ``seen``, sorted
        self.order = OrderGate()  # per-device (boot, seq) order through power cuts
        self._last_age_check = 0.0
        self._last_prune = 0.0

    # -- thread plumbing ----------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the store thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self._executor.submit(fn, *args).result()

    # -- open / close -------------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the store {self.path}: {exc}; check that the data directory "
                "exists and the gateway's user may write it"
            ) from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.synchronous == 'full' else 'NORMAL'}")
            db.execute("PRAGMA busy_timeout=5000")
            # Keep the WAL file from growing past 8 MiB after a checkpoint (SD-card space).
            db.execute("PRAGMA journal_size_limit=8388608")
            db.execute("PRAGMA wal_autocheckpoint=1000")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(
                    f"the store {self.path} failed its integrity check ({check}); move it "
                    "aside (it is kept for analysis) and restart to start a new one"
                )
            db.executescript(_SCHEMA)
            columns = {str(r[1]) for r in db.execute("PRAGMA table_info(queue)")}
            for name, ddl in _MIGRATIONS:
                if name not in columns:
                    db.execute(ddl)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(
                f"the store {self.path} is not a usable SQLite database ({exc}); move it "
                "aside and restart to start a new one"
            ) from exc
        self._db = db
        db.execute("DROP TABLE IF EXISTS seen")  # the per-reading table of early versions
        self.prune_seen(time.time())
        self._reload_mirrors()

    def _reload_mirrors(self) -> None:
        """Re-read depth, bytes, counters and the de-duplication memory from the database."""
        db = self.db
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM queue").fetchone()
        self.depth, self.bytes = int(row[0]), int(row[1])
        row = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM held").fetchone()
        self.depth, self.bytes = self.depth + int(row[0]), self.bytes + int(row[1])
        self.counters = {str(k): int(v) for k, v in db.execute("SELECT name, value FROM counters")}
        self.seen = {
            (str(dev), int(boot)): SeenRanges(json.loads(ranges))
            for dev, boot, ranges in db.execute("SELECT device_id, boot, ranges FROM seen_ranges")
        }
        self._boots = {}
        for dev, boot in sorted(self.seen):
            self._boots.setdefault(dev, []).append(boot)
        self.order.load(db, {k: list(zip(v.los, v.his, strict=True)) for k, v in self.seen.items()})

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    def shutdown(self) -> None:
        """Close on the store thread and stop the thread."""
        with contextlib.suppress(RuntimeError):
            self.call_sync(self.close)
        self._executor.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    # -- writes -------------------------------------------------------------------------------

    def _bump(self, name: str, n: int = 1) -> None:
        if n:
            self.counters[name] = self.counters.get(name, 0) + n
            self.db.execute(
                "INSERT INTO counters(name, value) VALUES(?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, n),
            )

    def is_new(self, keys: Iterable[tuple[str, int, int]]) -> list[bool]:
        """Which of these keys have not been committed before (memory only, no I/O)."""
        out = []
        for dev, boot, seq in keys:
            ranges = self.seen.get((dev, boot))
            out.append(ranges is None or seq not in ranges)
        return out

    def _remember(self, key: tuple[str, int, int], dirty: set[tuple[str, int]]) -> bool:
        """Add a key to the de-duplication memory; False if it was there already."""
        dev, boot, seq = key
        ranges = self.seen.get((dev, boot))
        if ranges is None:
            self._new_boot(dev, boot, dirty)
            ranges = self.seen[(dev, boot)] = SeenRanges()
        elif seq in ranges:
            return False
        ranges.add(seq)
        dirty.add((dev, boot))
        return True

    def _new_boot(self, dev: str, boot: int, dirty: set[tuple[str, int]]) -> None:
        """Inside a transaction: a boot not seen before; forget the device's oldest boot beyond
        ``MAX_BOOTS`` (a very late copy of one of its readings is then taken as new)."""
        boots = self._boots.setdefault(dev, [])
        bisect.insort(boots, boot)
        while len(boots) > MAX_BOOTS:
            old = boots.pop(0) if boots[0] != boot else boots.pop(1)
            self.seen.pop((dev, old), None)
            dirty.discard((dev, old))
            self.db.execute("DELETE FROM seen_ranges WHERE device_id = ? AND boot = ?", (dev, old))

    def commit(
        self,
        entries: Sequence[Entry],
        duplicates: Sequence[tuple[str, int, int]] = (),
        now: float | None = None,
        counters: dict[str, int] | None = None,
        remember: Sequence[tuple[str, int, int, float]] = (),
        meta: dict[str, str] | None = None,
        samples: Sequence[tuple[str, float]] = (),
    ) -> CommitResult:
        """Store a group of entries in one transaction and enforce the bounds.

        A reading whose key was committed before is not stored again and comes back in
        ``duplicates`` (it is durable already, so custody may be acknowledged again).
        ``remember`` keys are only added to the de-duplication memory. ``samples`` are
        ``(device_id, sample time)`` of the new readings, counted for completeness.
        """
        now = time.time() if now is None else now
        t0 = time.perf_counter()
        db = self.db
        result = CommitResult(duplicates=list(duplicates))
        db.execute("BEGIN IMMEDIATE")
        try:
            inserted = 0
            others = 0
            dirty: set[tuple[str, int]] = set()
            held = late = 0
            for e in entries:
                payload = e.payload
                decision = None
                if e.key is not None:
                    if not self._remember(e.key, dirty):
                        result.duplicates.append(e.key)
                        continue
                    result.accepted.append(e.key)
                    decision = self.order.admit(e.key[0], (e.key[1], e.key[2]))
                    if decision == LATE:
                        payload = mark_late(payload)
                        late += 1
                else:
                    others += 1
                stored = encode_payload(payload)
                size = len(stored) + len(e.topic)
                if decision == HOLD and e.key is not None:
                    db.execute(
                        "INSERT INTO held(topic, payload, device_id, boot, seq, received, "
                        "priority, size, since) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            e.topic,
                            stored,
                            e.key[0],
                            e.key[1],
                            e.key[2],
                            e.received,
                            e.priority,
                            size,
                            now,
                        ),
                    )
                    self.order.hold_started(e.key[0], now)
                    held += 1
                    self.bytes += size
                    self.depth += 1
                    continue
                db.execute(
                    "INSERT INTO queue(topic, payload, device_id, boot, seq, received, priority, "
                    "size) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.topic,
                        stored,
                        e.key[0] if e.key else None,
                        e.key[1] if e.key else None,
                        e.key[2] if e.key else None,
                        e.received,
                        e.priority,
                        size,
                    ),
                )
                inserted += 1
                self.bytes += size
                self.depth += 1
                if e.key is not None and decision != LATE:
                    move_to_queue(db, e.key[0], self.order.drain(e.key[0]))
            for dev, boot, seq, _received in remember:  # keys of readings sent to dead letters
                if self._remember((dev, boot, seq), dirty):
                    # No row, but no gap either: readings after it must not wait for it.
                    decision = self.order.admit(dev, (boot, seq))
                    if decision == HOLD:
                        self.order.hold_started(dev, now)
                    elif decision != LATE:
                        move_to_queue(db, dev, self.order.drain(dev))
            for dev, boot in dirty:
                db.execute(
                    "INSERT INTO seen_ranges(device_id, boot, ranges, updated) VALUES(?, ?, ?, ?) "
                    "ON CONFLICT(device_id, boot) DO UPDATE SET ranges = excluded.ranges, "
                    "updated = excluded.updated",
                    (dev, boot, self.seen[(dev, boot)].dumps(), now),
                )
            self._bump("readings_stored", len(result.accepted))
            self._bump("alerts_stored", others)
            for key, value in (meta or {}).items():
                db.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            self._bump("duplicates", len(result.duplicates))
            self._bump("held", held)
            self._bump("late", late)
            self._release_expired(now)
            for name, n in (counters or {}).items():
                self._bump(name, n)
            self._count_samples(samples)
            result.dropped = self._enforce_bounds(now, inserted)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._reload_mirrors()  # the transaction is gone: so are its in-memory effects
            raise
        result.commit_s = time.perf_counter() - t0
        if now - self._last_prune > 3600.0:
            self._last_prune = now
            self.prune_seen(now)
        return result

    def _release_expired(self, now: float) -> int:
        """Inside a transaction: release the held rows of devices whose gap waited too long."""
        moved = 0
        for dev, keys in self.order.expired(now).items():
            moved += move_to_queue(self.db, dev, keys)[0]
        return moved

    def release_expired(self, now: float | None = None) -> int:
        """Release held rows whose gap waited ``order.HOLD_S`` (housekeeping); returns how
        many rows went to the forwarding queue."""
        now = time.time() if now is None else now
        if not any(d.held for d in self.order.devices.values()):
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            moved = self._release_expired(now)
            self.db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            self._reload_mirrors()
            raise
        return moved

    def _evict(self, reason: str, n_rows: int | None, bytes_over: int | None) -> int:
        """Delete the lowest-priority, oldest rows (never leased ones); count them."""
        db = self.db
        dropped = 0
        freed = 0
        while True:
            if n_rows is not None and dropped >= n_rows:
                break
            if bytes_over is not None and freed >= bytes_over:
                break
            want = 256 if n_rows is None else min(256, n_rows - dropped)
            rows = []
            for priority in (PRIORITY_READING, PRIORITY_ALERT_READING, PRIORITY_ALERT):
                # Rowid order: the oldest rows of the lowest priority go first.
                # Rows with a packet id are never dropped: the platform broker may hold them
                # (exactly once means finishing their handshake), and they are few.
                found = db.execute(
                    "SELECT id, size, device_id FROM queue WHERE priority = ? AND mid IS NULL "
                    "ORDER BY id LIMIT ?",
                    (priority, want + len(self.leased)),
                ).fetchall()
                rows = [r for r in found if r[0] not in self.leased][:want]
                if rows:
                    break
            if not rows:
                break
            for rid, size, _dev in rows:
                if bytes_over is not None and freed >= bytes_over:
                    break
                if n_rows is not None and dropped >= n_rows:
                    break
                db.execute("DELETE FROM queue WHERE id=?", (rid,))
                freed += int(size)
                dropped += 1
        self.bytes -= freed
        self.depth -= dropped
        self._bump(f"dropped_{reason}", dropped)
        return dropped

    def _enforce_bounds(self, now: float, inserted: int) -> dict[str, int]:
        dropped: dict[str, int] = {}
        lim = self.limits
        if now - self._last_age_check >= 1.0:
            self._last_age_check = now
            n = self._drop_old(now - lim.max_age_s)
            if n:
                dropped["max_age"] = n
        if self.bytes > lim.max_bytes:
            n = self._evict("max_bytes", None, self.bytes - lim.max_bytes)
            if n:
                dropped["max_bytes"] = n
        if inserted and lim.min_free_bytes and self.free_bytes() < lim.min_free_bytes:
            # Below the free-disk floor the store must not grow: every row added pushes out one
            # old row, and SQLite reuses the freed pages.
            n = self._evict("disk_floor", inserted, None)
            if n:
                dropped["disk_floor"] = n
        return dropped

    def _drop_old(self, cutoff: float) -> int:
        """Drop rows received before ``cutoff``. Rows are stored in time order, so this reads
        from the oldest end and stops at the first young row: no scan of the whole table."""
        db = self.db
        dropped = 0
        after = 0
        while True:
            rows = db.execute(
                "SELECT id, size, received, mid FROM queue WHERE id > ? ORDER BY id LIMIT 512",
                (after,),
            ).fetchall()
            old = [(rid, size, mid) for rid, size, received, mid in rows if received < cutoff]
            doomed = [
                (rid, size) for rid, size, mid in old if rid not in self.leased and mid is None
            ]
            if doomed:
                db.executemany("DELETE FROM queue WHERE id=?", [(rid,) for rid, _ in doomed])
                self.bytes -= sum(int(size) for _, size in doomed)
                self.depth -= len(doomed)
                dropped += len(doomed)
            if len(old) < len(rows) or not rows:
                break
            after = rows[-1][0]
        self._bump("dropped_max_age", dropped)
        return dropped

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return 0

    def enforce(self, now: float | None = None) -> dict[str, int]:
        """Apply the bounds without inserting (e.g. after a reload shrank them)."""
        now = time.time() if now is None else now
        self._last_age_check = 0.0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            dropped = self._enforce_bounds(now, 0)
            self.db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise
        return dropped

    def add_counters(self, gained: dict[str, int]) -> None:
        """Add to counters kept in the store, in one transaction (the gateway's saved ones)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, n in gained.items():
                self._bump(name, n)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._reload_mirrors()
            raise

    def _count_samples(self, samples: Sequence[tuple[str, float]]) -> None:
        """Per device and 10-minute bucket of sample time, how many new readings; and each
        device's first sample time (meta ``first_sample:<device>``)."""
        per: dict[tuple[str, int], int] = defaultdict(int)
        first: dict[str, float] = {}
        for dev, t in samples:
            per[(dev, int(t // SAMPLE_BUCKET_S) * SAMPLE_BUCKET_S)] += 1
            first[dev] = min(t, first.get(dev, t))
        for (dev, bucket), n in per.items():
            self.db.execute(
                "INSERT INTO samples(device_id, bucket, n) VALUES(?, ?, ?) "
                "ON CONFLICT(device_id, bucket) DO UPDATE SET n = n + excluded.n",
                (dev, bucket, n),
            )
        for dev, t in first.items():
            self.db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET "
                "value = excluded.value WHERE CAST(excluded.value AS REAL) < CAST(value AS REAL)",
                (f"first_sample:{dev}", repr(float(t))),
            )

    def sample_counts(self, now: float) -> tuple[dict[str, dict[int, int]], dict[str, float]]:
        """Readings per device and sample-time bucket of the last 24 h, and first sample times
        (what completeness is computed from; kept across restarts)."""
        counts: dict[str, dict[int, int]] = defaultdict(dict)
        for dev, bucket, n in self.db.execute(
            "SELECT device_id, bucket, n FROM samples WHERE bucket > ?", (now - SAMPLE_DAY_S,)
        ):
            counts[str(dev)][int(bucket)] = int(n)
        firsts = {
            str(k).removeprefix("first_sample:"): float(v)
            for k, v in self.db.execute(
                "SELECT key, value FROM meta WHERE key LIKE 'first_sample:%'"
            )
        }
        return dict(counts), firsts

    def prune_seen(self, now: float) -> int:
        """Forget the sequence ranges of boots not heard of for ``dedup_horizon_s`` (and
        completeness buckets older than a day)."""
        self.db.execute(
            "DELETE FROM samples WHERE bucket <= ?", (now - SAMPLE_DAY_S - SAMPLE_BUCKET_S,)
        )
        cutoff = now - self.limits.dedup_horizon_s
        gone = self.db.execute(
            "DELETE FROM seen_ranges WHERE updated < ? RETURNING device_id, boot", (cutoff,)
        ).fetchall()
        for dev, boot in gone:
            self.seen.pop((str(dev), int(boot)), None)
            boots = self._boots.get(str(dev))
            if boots is not None and int(boot) in boots:
                boots.remove(int(boot))
                if not boots:
                    del self._boots[str(dev)]
        return len(gone)

    def delivered(self, ids: Sequence[int]) -> int:
        """Delete rows the platform took (PUBCOMP); returns how many were still there."""
        if not ids:
            return 0
        db = self.db
        # A delete need not be fsynced: if a power cut undoes it, the row is still marked
        # released, so only a PUBREL is sent again (answered with PUBCOMP, no duplicate), and
        # the next fsynced commit makes it durable anyway (WAL frames are written in order).
        # A process crash cannot undo it.
        if self.synchronous == "full":
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            n, freed = self._delete(ids)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._reload_mirrors()
            raise
        finally:
            if self.synchronous == "full":
                db.execute("PRAGMA synchronous=FULL")
        self._after_delete(ids, n, freed)
        return n

    def _delete(self, ids: Sequence[int]) -> tuple[int, int]:
        """Inside a transaction: delete delivered rows, count them."""
        n = 0
        freed = 0
        for rid in ids:
            row = self.db.execute("DELETE FROM queue WHERE id=? RETURNING size", (rid,)).fetchone()
            if row is not None:
                n += 1
                freed += int(row[0])
        self._bump("delivered", n)
        return n, freed

    def _after_delete(self, ids: Sequence[int], n: int, freed: int) -> None:
        for rid in ids:
            self.leased.discard(rid)
        self.bytes -= freed
        self.depth -= n

    def flight_commit(
        self, assign: Sequence[tuple[int, int, bool]] = (), released: Sequence[int] = ()
    ) -> None:
        """One transaction for the upstream's QoS 2 state, committed (fsynced with ``synchronous
        = full``) before any of the packets it covers leaves: mark ``released`` rows (PUBREC
        came; PUBREL follows), and give each ``(id, mid, replay)`` row its packet id and replay
        flag (PUBLISH follows)."""
        if not assign and not released:
            return
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if released:
                db.executemany(
                    "UPDATE queue SET state = 2 WHERE id = ?", [(rid,) for rid in released]
                )
            if assign:
                db.executemany(
                    "UPDATE queue SET mid = ?, replay = ?, state = 1 WHERE id = ?",
                    [(mid, 1 if replay else 0, rid) for rid, mid, replay in assign],
                )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def in_flight(self) -> list[InFlight]:
        """Rows that have a packet id (published or released), in store order."""
        cur = self.db.execute(
            "SELECT id, topic, payload, mid, replay, state FROM queue WHERE mid IS NOT NULL "
            "ORDER BY id"
        )
        return [
            InFlight(
                int(r[0]), str(r[1]), decode_payload(bytes(r[2])), int(r[3]), bool(r[4]), int(r[5])
            )
            for r in cur
        ]

    # -- reads --------------------------------------------------------------------------------

    def fetch(self, after_id: int, limit: int, upto_id: int | None = None) -> list[Row]:
        """Waiting rows (no packet id yet) with id > after_id (and <= upto_id), oldest first;
        they become leased."""
        if upto_id is None:
            cur = self.db.execute(
                "SELECT id, topic, payload, device_id, received FROM queue WHERE id > ? "
                "AND mid IS NULL ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        else:
            cur = self.db.execute(
                "SELECT id, topic, payload, device_id, received FROM queue WHERE id > ? "
                "AND id <= ? AND mid IS NULL ORDER BY id LIMIT ?",
                (after_id, upto_id, limit),
            )
        rows = [
            Row(int(r[0]), str(r[1]), decode_payload(bytes(r[2])), r[3], float(r[4])) for r in cur
        ]
        self.leased.update(r.id for r in rows)
        return rows

    def release_all(self) -> None:
        """Forget leases (the upstream connection is gone; unacked rows will be fetched again)."""
        self.leased.clear()

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def max_id(self) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM queue").fetchone()
        return int(row[0])

    def oldest_received(self) -> float | None:
        """Receive time of the first row in store order (rows are appended in time order)."""
        row = self.db.execute("SELECT received FROM queue ORDER BY id LIMIT 1").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def snapshot(self) -> dict[str, Any]:
        """Depth, bytes, oldest age and counters, for stats and health."""
        oldest = self.oldest_received()
        return {
            "queue_depth": self.depth,
            "queue_bytes": self.bytes,
            "oldest_age_s": None if oldest is None else max(0.0, time.time() - oldest),
            "counters": dict(self.counters),
            "file_bytes": self.file_bytes(),
        }

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def free_pages_bytes(self) -> int:
        """Bytes of free pages inside the database (reused by new rows without growing it)."""
        count = self.db.execute("PRAGMA freelist_count").fetchone()
        size = self.db.execute("PRAGMA page_size").fetchone()
        return int(count[0]) * int(size[0])

    def set_limits(self, limits: Limits) -> None:
        self.limits = limits


def open_store(path: Path, limits: Limits, synchronous: str = "full") -> Store:
    """Open (or create) the store and its thread."""
    store = Store(path, limits, synchronous)
    try:
        store.call_sync(store.open)
    except BaseException:
        store._executor.shutdown(wait=False)
        raise
    return store


def read_stats(path: Path) -> dict[str, Any]:
    """Depth, bytes, oldest age and counters of a store file, read-only (for ``stats``)."""
    if not path.exists():
        raise StoreError(f"no store at {path}; has the gateway run with this config?")
    uri = f"file:{path}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            depth, nbytes, oldest = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(received) FROM queue"
            ).fetchone()
            counters = {str(k): int(v) for k, v in db.execute("SELECT name, value FROM counters")}
            per_device = {
                str(d): int(n)
                for d, n in db.execute(
                    "SELECT device_id, COUNT(*) FROM queue WHERE device_id IS NOT NULL "
                    "GROUP BY device_id"
                )
            }
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {path}: {exc}") from exc
    return {
        "queue_depth": int(depth),
        "queue_bytes": int(nbytes),
        "oldest_age_s": None if oldest is None else max(0.0, time.time() - float(oldest)),
        "counters": counters,
        "per_device": per_device,
    }
