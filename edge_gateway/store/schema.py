"""The store's tables, its named states and priorities, what it holds, and a read-only look at
a store file (``cityedge gateway stats``).

Tables
------
``queue``     observations and alerts waiting for the platform (deleted after the QoS 2
              handshake completed). A row goes through: *waiting* (``mid`` NULL) → *published*
              (``mid`` and ``replay`` committed before the PUBLISH leaves, ``STATE_PUBLISHED``) →
              *released* (``STATE_RELEASED``, committed after the PUBREC and before the
              PUBREL) → deleted (after the PUBCOMP; the delete may be lazy). See
              :mod:`edge_gateway.flight`.
``seen_ranges`` the de-duplication memory: one row per (device_id, boot) holding the sequence
              numbers committed so far as sorted ranges (``[[0, 1234], [1240, 1300]]``), kept
              for ``dedup_horizon_s`` after that boot was last heard of, delivered or not. One
              small row per device instead of one row per reading: a group commit dirties one or
              two pages of it rather than a page per device (SD-card writes).
``counters``  monotonic counters (received, delivered, duplicates, drops by reason) committed in
              the same transaction as the rows they count, so they survive crashes exactly.
``meta``      small values committed with the rows they belong to (the alert states, first
              sample times); ``samples`` the completeness counts; ``held`` readings waiting for
              a gap before them (:mod:`edge_gateway.order`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_gateway.order import HELD_SCHEMA


class StoreError(RuntimeError):
    """The store cannot be opened or written; the message says what to do."""


# Row states on the way to the platform (QoS 2): see the table above.
STATE_WAITING = 0
STATE_PUBLISHED = 1
STATE_RELEASED = 2

PRIORITY_READING = 0
PRIORITY_ALERT_READING = 1  # an observation that raised or cleared an alert
PRIORITY_ALERT = 2  # the alert message itself: dropped last

DROP_REASONS = ("max_bytes", "max_age", "disk_floor")

SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS queue(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    device_id TEXT,
    boot INTEGER,
    seq INTEGER,
    received REAL NOT NULL,
    priority INTEGER NOT NULL DEFAULT {PRIORITY_READING},
    size INTEGER NOT NULL,
    mid INTEGER,
    replay INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT {STATE_WAITING}
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


# Columns added after the first release; older stores get them on open.
MIGRATIONS = (
    ("mid", "ALTER TABLE queue ADD COLUMN mid INTEGER"),
    ("replay", "ALTER TABLE queue ADD COLUMN replay INTEGER NOT NULL DEFAULT 0"),
    ("state", f"ALTER TABLE queue ADD COLUMN state INTEGER NOT NULL DEFAULT {STATE_WAITING}"),
)


@dataclass
class CommitResult:
    accepted: list[tuple[str, int, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    commit_s: float = 0.0


def prepare(db: sqlite3.Connection, path: Path, synchronous: str) -> None:
    """Pragmas (WAL, fsync policy), the integrity check, the tables and their migrations."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    db.execute("PRAGMA busy_timeout=5000")
    # Keep the WAL file from growing past 8 MiB after a checkpoint (SD-card space).
    db.execute("PRAGMA journal_size_limit=8388608")
    db.execute("PRAGMA wal_autocheckpoint=1000")
    check = db.execute("PRAGMA quick_check").fetchone()
    if check is None or check[0] != "ok":
        raise StoreError(
            f"the store {path} failed its integrity check ({check}); move it "
            "aside (it is kept for analysis) and restart to start a new one"
        )
    db.executescript(SCHEMA)
    columns = {str(r[1]) for r in db.execute("PRAGMA table_info(queue)")}
    for name, ddl in MIGRATIONS:
        if name not in columns:
            db.execute(ddl)


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
