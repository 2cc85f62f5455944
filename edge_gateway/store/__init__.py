"""The durable store: SQLite in WAL mode, one writer thread, group commits.

The tables and the states a row goes through: :mod:`edge_gateway.store.schema`.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL`` fsyncs the WAL on every commit, so a
committed group survives a power cut; only then does the gateway send custody to the nodes.
(``synchronous=NORMAL`` in WAL mode is corruption-safe but may roll back the last commits on power
loss — it is offered for cards where fsync is very slow, and then the custody promise covers
process crashes only; docs/gateway.md.) Group commits amortise the fsync over up to
``commit_max_readings`` readings or ``commit_max_ms``.

Every method runs on the store's own thread (the ``Store`` object is not shared between
threads); the asyncio side calls it through :meth:`Store.call`. Every write goes through one
transaction helper (:meth:`Store.transaction`).

Apart: the tables, states and priorities (:mod:`edge_gateway.store.schema`), the payload codec
and the rows read back (:mod:`edge_gateway.store.codec`), the de-duplication ranges
(:mod:`edge_gateway.store.seen`) and the bounds (:mod:`edge_gateway.store.bounds`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge_gateway.order import HOLD, LATE, OrderGate, mark_late, move_to_queue
from edge_gateway.store.bounds import Bounds
from edge_gateway.store.codec import (
    IN_FLIGHT_COLUMNS,
    ROW_COLUMNS,
    InFlight,
    Row,
    decode_in_flight,
    decode_payload,
    decode_row,
    encode_payload,
)
from edge_gateway.store.samples import Completeness
from edge_gateway.store.schema import (
    DROP_REASONS,
    PRIORITY_ALERT,
    PRIORITY_ALERT_READING,
    PRIORITY_READING,
    SAMPLE_BUCKET_S,
    SAMPLE_DAY_S,
    STATE_PUBLISHED,
    STATE_RELEASED,
    STATE_WAITING,
    CommitResult,
    Entry,
    Limits,
    StoreError,
    prepare,
    read_stats,
)
from edge_gateway.store.seen import MAX_BOOTS, MAX_RANGES, DedupMemory, SeenRanges

__all__ = [
    "DROP_REASONS",
    "MAX_BOOTS",
    "MAX_RANGES",
    "PRIORITY_ALERT",
    "PRIORITY_ALERT_READING",
    "PRIORITY_READING",
    "SAMPLE_BUCKET_S",
    "SAMPLE_DAY_S",
    "STATE_PUBLISHED",
    "STATE_RELEASED",
    "STATE_WAITING",
    "CommitResult",
    "Entry",
    "InFlight",
    "Limits",
    "Row",
    "SeenRanges",
    "Store",
    "StoreError",
    "decode_payload",
    "encode_payload",
    "open_store",
    "read_stats",
]

T = TypeVar("T")


@dataclass
class _Group:
    """What one commit counts as it goes."""

    dirty: set[tuple[str, int]] = field(default_factory=set)  # (device, boot): ranges changed
    inserted: int = 0
    others: int = 0  # alerts
    held: int = 0
    late: int = 0


class Store(Bounds, DedupMemory, Completeness):
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
            prepare(db, self.path, self.synchronous)
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

    @contextlib.contextmanager
    def transaction(self, mirrors: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``). On any error it is rolled
        back and, with ``mirrors``, the in-memory mirrors of the tables (depth, bytes, counters,
        the de-duplication memory) are read again: the transaction's effects on them are gone."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if mirrors:
                self._reload_mirrors()
            raise

    # -- writes -------------------------------------------------------------------------------

    def _bump(self, name: str, n: int = 1) -> None:
        if n:
            self.counters[name] = self.counters.get(name, 0) + n
            self.db.execute(
                "INSERT INTO counters(name, value) VALUES(?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, n),
            )

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
        result = CommitResult(duplicates=list(duplicates))
        with self.transaction() as db:
            group = _Group()
            for e in entries:
                self._store_entry(e, now, group, result)
            for dev, boot, seq, _received in remember:  # keys of readings sent to dead letters
                if self._remember((dev, boot, seq), group.dirty):
                    # No row, but no gap either: readings after it must not wait for it.
                    decision = self.order.admit(dev, (boot, seq))
                    if decision == HOLD:
                        self.order.hold_started(dev, now)
                    elif decision != LATE:
                        move_to_queue(db, dev, self.order.drain(dev))
            for dev, boot in group.dirty:
                db.execute(
                    "INSERT INTO seen_ranges(device_id, boot, ranges, updated) VALUES(?, ?, ?, ?) "
                    "ON CONFLICT(device_id, boot) DO UPDATE SET ranges = excluded.ranges, "
                    "updated = excluded.updated",
                    (dev, boot, self.seen[(dev, boot)].dumps(), now),
                )
            self._bump("readings_stored", len(result.accepted))
            self._bump("alerts_stored", group.others)
            for key, value in (meta or {}).items():
                db.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            self._bump("duplicates", len(result.duplicates))
            self._bump("held", group.held)
            self._bump("late", group.late)
            self._release_expired(now)
            for name, n in (counters or {}).items():
                self._bump(name, n)
            self._count_samples(samples)
            result.dropped = self._enforce_bounds(now, group.inserted)
        result.commit_s = time.perf_counter() - t0
        if now - self._last_prune > 3600.0:
            self._last_prune = now
            self.prune_seen(now)
        return result

    def _store_entry(self, e: Entry, now: float, group: _Group, result: CommitResult) -> None:
        """Inside a transaction: one entry of a commit — a duplicate, a row in ``queue``, or a
        reading held in ``held`` until the gap before it is filled (:mod:`edge_gateway.order`)."""
        db = self.db
        payload = e.payload
        decision = None
        if e.key is not None:
            if not self._remember(e.key, group.dirty):
                result.duplicates.append(e.key)
                return
            result.accepted.append(e.key)
            decision = self.order.admit(e.key[0], (e.key[1], e.key[2]))
            if decision == LATE:
                payload = mark_late(payload)
                group.late += 1
        else:
            group.others += 1
        stored = encode_payload(payload)
        size = len(stored) + len(e.topic)
        self.bytes += size
        self.depth += 1
        if decision == HOLD and e.key is not None:
            dev, boot, seq = e.key
            db.execute(
                "INSERT INTO held(topic, payload, device_id, boot, seq, received, "
                "priority, size, since) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.topic, stored, dev, boot, seq, e.received, e.priority, size, now),
            )
            self.order.hold_started(dev, now)
            group.held += 1
            return
        dev_, boot_, seq_ = e.key if e.key else (None, None, None)
        db.execute(
            "INSERT INTO queue(topic, payload, device_id, boot, seq, received, priority, "
            "size) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
            (e.topic, stored, dev_, boot_, seq_, e.received, e.priority, size),
        )
        group.inserted += 1
        if e.key is not None and decision != LATE:
            move_to_queue(db, e.key[0], self.order.drain(e.key[0]))

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
        with self.transaction():
            return self._release_expired(now)

    def add_counters(self, gained: dict[str, int]) -> None:
        """Add to counters kept in the store, in one transaction (the gateway's saved ones)."""
        with self.transaction():
            for name, n in gained.items():
                self._bump(name, n)

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
        try:
            with self.transaction():
                n, freed = self._delete(ids)
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
        with self.transaction(mirrors=False) as db:
            if released:
                db.executemany(
                    "UPDATE queue SET state = ? WHERE id = ?",
                    [(STATE_RELEASED, rid) for rid in released],
                )
            if assign:
                db.executemany(
                    "UPDATE queue SET mid = ?, replay = ?, state = ? WHERE id = ?",
                    [
                        (mid, 1 if replay else 0, STATE_PUBLISHED, rid)
                        for rid, mid, replay in assign
                    ],
                )

    def in_flight(self) -> list[InFlight]:
        """Rows that have a packet id (published or released), in store order."""
        cur = self.db.execute(
            f"SELECT {IN_FLIGHT_COLUMNS} FROM queue WHERE mid IS NOT NULL ORDER BY id"
        )
        return [decode_in_flight(r) for r in cur]

    # -- reads --------------------------------------------------------------------------------

    def fetch(self, after_id: int, limit: int, upto_id: int | None = None) -> list[Row]:
        """Waiting rows (no packet id yet) with id > after_id (and <= upto_id), oldest first;
        they become leased."""
        if upto_id is None:
            cur = self.db.execute(
                f"SELECT {ROW_COLUMNS} FROM queue WHERE id > ? AND mid IS NULL ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        else:
            cur = self.db.execute(
                f"SELECT {ROW_COLUMNS} FROM queue WHERE id > ? AND id <= ? AND mid IS NULL "
                "ORDER BY id LIMIT ?",
                (after_id, upto_id, limit),
            )
        rows = [decode_row(r) for r in cur]
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
