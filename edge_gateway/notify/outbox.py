"""The durable outbox and incident table: one SQLite file (``notify.sqlite``, WAL, fsync).

A notification is a row from the moment the alert that caused it is recorded until a channel
accepted it. Each row carries a UUID retry key, created with the row and kept with it: every
attempt — after a timeout, a 5xx, a SIGKILL between LINE's 200 and our commit — sends the same
key, so LINE answers a repeat with 409 instead of delivering it twice (``X-Line-Retry-Key``);
webhooks get it as ``Idempotency-Key``, e-mail as the Message-ID.

Rows are created with ``INSERT OR IGNORE`` on a de-duplication key derived from the incident
and the event, so recording the same alert twice (a reading re-processed after a crash) gives
one row. Sent rows are kept ``keep_sent_s`` for ``cityedge alerts status`` and then deleted.

The connection is shared by the gateway's store thread (recording) and the dispatcher (sending,
through ``asyncio.to_thread``), guarded by a lock.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PENDING, SENT = 0, 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup TEXT NOT NULL UNIQUE,
    incident INTEGER,
    kind TEXT NOT NULL,
    chain TEXT NOT NULL,
    pos INTEGER NOT NULL DEFAULT 0,
    retry_key TEXT NOT NULL,
    message TEXT NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    created REAL NOT NULL,
    sent_at REAL,
    channel TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS incidents (
    no INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    family TEXT NOT NULL,
    tier TEXT NOT NULL,
    max_tier TEXT NOT NULL,
    open INTEGER NOT NULL DEFAULT 1,
    opened_t REAL NOT NULL,
    opened_wall REAL NOT NULL,
    closed_t REAL,
    peak REAL,
    unit TEXT,
    last TEXT NOT NULL,
    acked_at REAL,
    acked_by TEXT,
    escalated INTEGER NOT NULL DEFAULT 0,
    held TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class OutRow:
    id: int
    incident: int | None
    kind: str
    chain: list[str]
    pos: int
    retry_key: str
    message: dict[str, Any]
    attempts: int
    created: float


class Outbox:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One fsynced transaction (BEGIN IMMEDIATE … COMMIT) under the lock."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- rows ---------------------------------------------------------------------------------

    @staticmethod
    def enqueue(
        db: sqlite3.Connection,
        dedup: str,
        kind: str,
        chain: list[str],
        message: dict[str, Any],
        now: float,
        incident: int | None = None,
    ) -> bool:
        """Insert one notification (inside a :meth:`transaction`); False if it exists."""
        cur = db.execute(
            "INSERT OR IGNORE INTO outbox(dedup, incident, kind, chain, retry_key, message, "
            "next_at, created) VALUES (?,?,?,?,?,?,?,?)",
            (
                dedup,
                incident,
                kind,
                json.dumps(chain),
                str(uuid.uuid4()),
                json.dumps(message, ensure_ascii=False),
                now,
                now,
            ),
        )
        return cur.rowcount > 0

    def add(
        self,
        dedup: str,
        kind: str,
        chain: list[str],
        message: dict[str, Any],
        now: float | None = None,
    ) -> bool:
        with self.transaction() as db:
            return self.enqueue(
                db, dedup, kind, chain, message, time.time() if now is None else now
            )

    def due(self, now: float, limit: int = 50) -> list[OutRow]:
        with self.lock:
            rows = self.db.execute(
                "SELECT id, incident, kind, chain, pos, retry_key, message, attempts, created "
                "FROM outbox WHERE state = 0 AND next_at <= ? ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [
            OutRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], json.loads(r[6]), r[7], r[8])
            for r in rows
        ]

    def next_due(self) -> float | None:
        with self.lock:
            row = self.db.execute("SELECT MIN(next_at) FROM outbox WHERE state = 0").fetchone()
        return None if row[0] is None else float(row[0])

    def mark_sent(self, row_id: int, channel: str, now: float) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET state = 1, sent_at = ?, channel = ?, error = NULL WHERE id = ?",
                (now, channel, row_id),
            )

    def reschedule(self, row_id: int, pos: int, attempts: int, next_at: float, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET pos = ?, attempts = ?, next_at = ?, error = ? WHERE id = ?",
                (pos, attempts, next_at, error[:500], row_id),
            )

    def prune(self, older_than: float) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE state = 1 AND sent_at < ?", (older_than,))

    def pending(self) -> tuple[int, float | None]:
        """(rows waiting, creation time of the oldest)."""
        with self.lock:
            n, oldest = self.db.execute(
                "SELECT COUNT(*), MIN(created) FROM outbox WHERE state = 0"
            ).fetchone()
        return int(n), None if oldest is None else float(oldest)

    def sent_rows(self) -> list[tuple[int, str, str, str]]:
        with self.lock:
            return [
                tuple(r)
                for r in self.db.execute(
                    "SELECT id, kind, channel, retry_key FROM outbox WHERE state = 1 ORDER BY id"
                )
            ]

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
