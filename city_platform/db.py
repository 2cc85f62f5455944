"""The sink's database: migrations (Alembic, plain SQL), roles, and the idempotent writes.

Every write is keyed on the reading's identity ``(device_id, boot, seq)`` and is a no-op when
the row is already there, so a message the broker redelivers (after a consumer crash, before
its acknowledgement) is stored once. The caller commits a batch and only then acknowledges the
batch's messages to the broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from city_platform import INSTALL_HINT, PARTITIONED_TABLES, PlatformError

if TYPE_CHECKING:
    import psycopg

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0001"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise PlatformError(f"{exc.name} is not installed", INSTALL_HINT) from None


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` as SQLAlchemy's psycopg 3 dialect wants it."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise PlatformError(
            f"the database URL must start with postgresql://, got {parts.scheme or 'nothing'}://",
            "give --db postgresql://USER:PASSWORD@HOST:PORT/DBNAME",
        )
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database's schema to ``revision`` (run as the tables' owner, not the sink)."""
    _require("sqlalchemy")
    config_mod = _require("alembic.config")
    command = _require("alembic.command")
    cfg = config_mod.Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    command.upgrade(cfg, revision)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    psycopg_mod = _require("psycopg")
    sqlalchemy_url(url)  # checks the scheme
    try:
        conn: psycopg.Connection[Any] = psycopg_mod.connect(url, autocommit=autocommit)
    except psycopg_mod.OperationalError as exc:
        raise PlatformError(
            f"cannot connect to PostgreSQL: {str(exc).strip()}",
            "check --db (host, port, user, password) and that PostgreSQL is running",
        ) from exc
    return conn


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """Fail with a clear message when the database was never migrated or is behind."""
    row = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
    have = None
    if row and row[0]:
        got = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
        have = got[0] if got else None
    conn.rollback()
    if have != HEAD:
        raise PlatformError(
            f"the database schema is at {have or 'nothing'}, this sink needs {HEAD}",
            "run 'cityedge platform migrate --db postgresql://OWNER@HOST/DB' first",
        )


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def iso(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _month(when: datetime) -> date:
    return date(when.year, when.month, 1)


@dataclass
class WriteCounts:
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    by_table: dict[str, int] = field(default_factory=dict)

    def add(self, table: str) -> None:
        self.inserted += 1
        self.by_table[table] = self.by_table.get(table, 0) + 1


class Store:
    """Writes contract payloads on one connection; the caller owns the transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._months: set[tuple[str, date]] = set()
        self._latest: dict[str, Mapping[str, Any]] = {}
        self._locked: set[str] = set()
        self.counts = WriteCounts()  # committed
        self._tx = WriteCounts()  # in the open transaction

    def ensure_partition(self, table: str, when: datetime) -> None:
        key = (table, _month(when))
        if key in self._months:
            return
        # Its own short transaction (advisory lock inside), so that concurrent consumers
        # never hold the partition lock for the length of a batch.
        with self.conn.transaction():
            self.conn.execute("SELECT cityedge.ensure_month_partition(%s, %s)", key)
        self._months.add(key)

    def partitions_for(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Create the month partitions a batch needs before its transaction starts."""
        for table, doc in items:
            when = partition_time(table, doc)
            if when is not None:
                self.ensure_partition(table, when)

    def write(self, table: str, doc: Mapping[str, Any]) -> bool:
        """Store one payload; False when it was already there (a redelivery)."""
        writer = getattr(self, f"_write_{table}")
        inserted: bool = writer(doc)
        if inserted:
            self._tx.add(table)
        else:
            self._tx.duplicates += 1
        return inserted

    def committed(self) -> None:
        """The transaction committed: its counts become the store's."""
        t, c = self._tx, self.counts
        c.inserted += t.inserted
        c.duplicates += t.duplicates
        c.rejected += t.rejected
        for table, n in t.by_table.items():
            c.by_table[table] = c.by_table.get(table, 0) + n
        self._tx = WriteCounts()

    def flush_latest(self) -> None:
        """Move ``device_latest`` forward for the devices of this transaction: only to a newer
        ``(boot, seq)``, whatever order readings arrive in; devices in sorted order, so that
        concurrent consumers lock the rows in the same order (no deadlock)."""
        for device_id in sorted(self._latest):
            o = self._latest[device_id]
            self.conn.execute(
                """INSERT INTO cityedge.device_latest AS d (device_id, boot, seq, t, site_id,
                     kind, observation) VALUES (%s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (device_id) DO UPDATE SET boot = excluded.boot,
                     seq = excluded.seq, t = excluded.t, site_id = excluded.site_id,
                     kind = excluded.kind, observation = excluded.observation,
                     updated_at = now()
                   WHERE (excluded.boot, excluded.seq) > (d.boot, d.seq)""",
                (device_id, o["boot"], o["seq"], utc(o["t"]), o["site_id"], o["kind"], _j(o)),
            )
        self._latest.clear()
        self._locked.clear()

    def latest_of(self, doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return self._latest.get(str(doc.get("device_id")))

    def restore_latest(self, doc: Mapping[str, Any], kept: Mapping[str, Any] | None) -> None:
        """Undo what a rolled-back savepoint's write gathered for device_latest."""
        device = str(doc.get("device_id"))
        self._locked.discard(device)  # the savepoint's rollback released its lock
        if kept is None:
            self._latest.pop(device, None)
        else:
            self._latest[device] = kept

    def discard(self) -> None:
        """Forget what a rolled-back transaction had gathered."""
        self._latest.clear()
        self._locked.clear()
        self._tx = WriteCounts()

    def reject(self, topic: str, payload: bytes, reason: str) -> None:
        self.conn.execute(
            "INSERT INTO cityedge.rejected (topic, payload, reason) VALUES (%s, %s, %s)",
            (topic, payload, reason[:2000]),
        )
        self._tx.rejected += 1

    # --- one function per payload ------------------------------------------------------------

    def _write_observation(self, o: Mapping[str, Any]) -> bool:
        key = (o["device_id"], o["boot"], o["seq"])
        if o["device_id"] not in self._locked:
            # One transaction at a time per device: a reading and the later one that settles
            # its flags may reach two consumers at once; without this, each could miss the
            # other's uncommitted row and the settle would stay parked. Batches are sorted by
            # device, so consumers take these locks in one order.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (o["device_id"],))
            self._locked.add(o["device_id"])
        t = utc(o["t"])
        cur = self.conn.execute(
            """INSERT INTO cityedge.observation (device_id, boot, seq, t, site_id, gateway_id,
                 kind, fw, clock_synced, received_time, window_s, replay, location, raw,
                 calibrated, quality, quality_tests, derived)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT DO NOTHING""",
            (
                *key, t, o["site_id"], o["gateway_id"], o["kind"], o.get("fw"),
                o["clock_synced"], iso(o["received_time"]), o.get("window_s"), o["replay"],
                _j(o["location"]), _j(o["raw"]), _j(o["calibrated"]), _j(o["quality"]),
                _j(o.get("quality_tests")), _j(o.get("derived")),
            ),
        )  # fmt: skip
        if cur.rowcount == 0:
            return False
        # The newest per device is written once per transaction by flush_latest().
        best = self._latest.get(o["device_id"])
        if best is None or (o["boot"], o["seq"]) > (best["boot"], best["seq"]):
            self._latest[o["device_id"]] = o
        # Final flags that came (in the next reading) before this reading did.
        self.conn.execute(
            """WITH p AS (DELETE FROM cityedge.pending_settle
                   WHERE device_id = %s AND boot = %s AND seq = %s
                   RETURNING quality, quality_tests)
               UPDATE cityedge.observation o SET quality = p.quality,
                   quality_tests = p.quality_tests, quality_settled = true
               FROM p WHERE o.device_id = %s AND o.boot = %s AND o.seq = %s""",
            (*key, *key),
        )
        settles = o.get("settles")
        if settles:
            self._settle(o["device_id"], settles)
        return True

    def _settle(self, device_id: str, s: Mapping[str, Any]) -> None:
        key = (device_id, s["boot"], s["seq"])
        cur = self.conn.execute(
            """UPDATE cityedge.observation SET quality = %s, quality_tests = %s,
                 quality_settled = true WHERE device_id = %s AND boot = %s AND seq = %s""",
            (_j(s["quality"]), _j(s["quality_tests"]), *key),
        )
        if cur.rowcount == 0:
            self.conn.execute(
                """INSERT INTO cityedge.pending_settle (device_id, boot, seq, quality,
                     quality_tests) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                (*key, _j(s["quality"]), _j(s["quality_tests"])),
            )

    def _write_device_status(self, d: Mapping[str, Any]) -> bool:
        cur = self.conn.execute(
            """INSERT INTO cityedge.device_status (device_id, last_seen, state, site_id,
                 gateway_id, kind, doc) VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT DO NOTHING""",
            (d["device_id"], iso(d["last_seen"]), d["state"], d["site_id"], d["gateway_id"],
             d.get("kind"), _j(d)),
        )  # fmt: skip
        return cur.rowcount > 0

    def _write_gateway_health(self, g: Mapping[str, Any]) -> bool:
        cur = self.conn.execute(
            """INSERT INTO cityedge.gateway_health (gateway_id, t, state, site_id, doc)
               VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            (g["gateway_id"], partition_time("gateway_health", g), g["state"], g["site_id"],
             _j(g)),
        )  # fmt: skip
        return cur.rowcount > 0

    def _write_alert(self, a: Mapping[str, Any]) -> bool:
        cur = self.conn.execute(
            """INSERT INTO cityedge.alert (device_id, alert, state, t, site_id, gateway_id,
                 kind, severity, value, unit, doc)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
            (a["device_id"], a["alert"], a["state"], iso(a["t"]), a["site_id"],
             a["gateway_id"], a["kind"], a["severity"], a.get("value"), a.get("unit"), _j(a)),
        )  # fmt: skip
        return cur.rowcount > 0


def partition_time(table: str, doc: Mapping[str, Any]) -> datetime | None:
    """The time a payload is partitioned (and, for health without ``t``, keyed) by."""
    if table == "observation":
        return utc(doc["t"])
    if table == "device_status":
        return iso(doc["last_seen"])
    if table == "alert":
        return iso(doc["t"])
    if table == "gateway_health":
        # `t` is optional in gateway_health; without it, the time the sink got it.
        return iso(doc["t"]) if doc.get("t") else datetime.now(UTC)
    return None


def _j(value: Any) -> Any:
    if value is None:
        return None
    from psycopg.types.json import Jsonb

    return Jsonb(value, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def drop_old_partitions(conn: psycopg.Connection[Any], keep: Mapping[str, int]) -> list[str]:
    """Retention: drop the monthly partitions older than ``keep[table]`` whole months."""
    today = datetime.now(UTC).date()
    dropped: list[str] = []
    with conn.transaction():
        for table in PARTITIONED_TABLES:
            months = keep.get(table)
            if months is None:
                continue
            index = today.year * 12 + today.month - 1 - months
            before = date(index // 12, index % 12 + 1, 1)
            rows = conn.execute(
                "SELECT cityedge.drop_partitions_before(%s, %s)", (table, before)
            ).fetchall()
            dropped += [r[0] for r in rows]
    return dropped


def prune_rejected(conn: psycopg.Connection[Any], days: int) -> int:
    """Delete rejected messages older than ``days`` days; returns how many."""
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM cityedge.rejected WHERE received_at < now() - make_interval(days => %s)",
            (days,),
        )
    return cur.rowcount


def create_login(conn: psycopg.Connection[Any], name: str, password: str, *, reader: bool) -> None:
    """A login role in the reader or the writer group (run as an administrator)."""
    from psycopg import sql

    group = "cityedge_reader" if reader else "cityedge_writer"
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
            sql.Identifier(name), sql.Literal(password), sql.Identifier(group)
        )
    )
