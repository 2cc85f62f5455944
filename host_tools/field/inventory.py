"""The technician's device inventory: one SQLite file of devices and what was done to them.

Tables: `devices` (identity, site, current firmware and credential version, the Mosquitto hash
of the current credential — never the password itself), `events` (flash, deploy, provision,
verify, with firmware and credential versions and UTC timestamps) and `broker_users` (gateway
accounts). Each public write runs in one transaction; `provisioning()` keeps its transaction
open while the caller writes the board, and commits only if that write succeeded.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from host_tools.field.errors import InventoryError

DEFAULT_PATH = Path.home() / ".cityedge" / "inventory.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    chip TEXT,
    kind TEXT NOT NULL,
    board TEXT NOT NULL,
    site_id TEXT NOT NULL,
    name TEXT,
    lat REAL,
    lon REAL,
    elev_m REAL,
    firmware_version TEXT,
    credential_version INTEGER NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT,
    port TEXT,
    action TEXT NOT NULL,
    at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    firmware_version TEXT,
    credential_version INTEGER,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_device ON events(device_id, at);
CREATE TABLE IF NOT EXISTS broker_users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    site_id TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Device:
    device_id: str
    mac: str
    chip: str | None
    kind: str
    board: str
    site_id: str
    name: str | None
    lat: float | None
    lon: float | None
    elev_m: float | None
    firmware_version: str | None
    credential_version: int
    password_hash: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Event:
    id: int
    device_id: str | None
    port: str | None
    action: str
    at: str
    ok: bool
    firmware_version: str | None
    credential_version: int | None
    detail: dict[str, Any]


class Inventory:
    """A handle on the inventory file. Open one per thread (SQLite connections are not shared)."""

    def __init__(self, path: Path = DEFAULT_PATH, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            # Boards of a batch finish at the same moment and open the inventory at once; on a
            # new file, switching it to WAL and creating the tables answers "database is
            # locked" at once (no busy wait for a journal-mode change), so try again.
            for attempt in range(100):
                try:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=FULL")
                    self._db.executescript(_SCHEMA)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 99:
                        raise
                    time.sleep(0.05)
        except (OSError, sqlite3.Error) as exc:
            raise InventoryError(f"cannot open the inventory {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock now, so two threads never both read an old
        # credential version and both write version + 1.
        for attempt in range(50):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise InventoryError(f"inventory {self.path} is busy: {exc}") from exc
                time.sleep(0.1)
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:  # disk full, I/O error, a drive that went away
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise InventoryError(f"could not save to the inventory {self.path}: {exc}") from exc

    # --- writes -------------------------------------------------------------------------

    def record_event(
        self,
        action: str,
        *,
        device_id: str | None = None,
        port: str | None = None,
        ok: bool = True,
        firmware_version: str | None = None,
        credential_version: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        with self._transaction() as db:
            self._insert_event(
                db, action, device_id, port, ok, firmware_version, credential_version, detail
            )
            if ok and firmware_version and device_id and action in ("deploy", "verify"):
                db.execute(
                    "UPDATE devices SET firmware_version=?, updated_at=? WHERE device_id=?",
                    (firmware_version, utc_now(), device_id),
                )

    @staticmethod
    def _insert_event(
        db: sqlite3.Connection,
        action: str,
        device_id: str | None,
        port: str | None,
        ok: bool,
        firmware_version: str | None,
        credential_version: int | None,
        detail: dict[str, Any] | None,
    ) -> None:
        db.execute(
            "INSERT INTO events (device_id, port, action, at, ok, firmware_version,"
            " credential_version, detail) VALUES (?,?,?,?,?,?,?,?)",
            (
                device_id,
                port,
                action,
                utc_now(),
                int(ok),
                firmware_version,
                credential_version,
                json.dumps(detail or {}, sort_keys=True),
            ),
        )

    @contextmanager
    def provisioning(self, device: Device, port: str | None) -> Iterator[None]:
        """Store `device` (new or re-provisioned) and its provision event in one transaction.

        The body of the `with` writes the board; an exception there rolls everything back, so a
        failed provision leaves no row behind.
        """
        with self._transaction() as db:
            db.execute(
                "INSERT INTO devices (device_id, mac, chip, kind, board, site_id, name, lat, lon,"
                " elev_m, firmware_version, credential_version, password_hash, created_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(device_id) DO UPDATE SET mac=excluded.mac, chip=excluded.chip,"
                " kind=excluded.kind, board=excluded.board, site_id=excluded.site_id,"
                " name=excluded.name, lat=excluded.lat, lon=excluded.lon, elev_m=excluded.elev_m,"
                " firmware_version=COALESCE(excluded.firmware_version, firmware_version),"
                " credential_version=excluded.credential_version,"
                " password_hash=excluded.password_hash, updated_at=excluded.updated_at",
                (
                    device.device_id,
                    device.mac,
                    device.chip,
                    device.kind,
                    device.board,
                    device.site_id,
                    device.name,
                    device.lat,
                    device.lon,
                    device.elev_m,
                    device.firmware_version,
                    device.credential_version,
                    device.password_hash,
                    device.created_at,
                    device.updated_at,
                ),
            )
            self._insert_event(
                db,
                "provision",
                device.device_id,
                port,
                True,
                device.firmware_version,
                device.credential_version,
                {"site_id": device.site_id, "kind": device.kind, "board": device.board},
            )
            yield

    def set_broker_user(self, username: str, role: str, site_id: str, password_hash: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO broker_users (username, role, site_id, password_hash, updated_at)"
                " VALUES (?,?,?,?,?) ON CONFLICT(username) DO UPDATE SET role=excluded.role,"
                " site_id=excluded.site_id, password_hash=excluded.password_hash,"
                " updated_at=excluded.updated_at",
                (username, role, site_id, password_hash, utc_now()),
            )

    # --- reads --------------------------------------------------------------------------

    def device(self, device_id: str) -> Device | None:
        row = self._db.execute("SELECT * FROM devices WHERE device_id=?", (device_id,)).fetchone()
        return Device(**dict(row)) if row else None

    def devices(self, search: str | None = None, site_id: str | None = None) -> list[Device]:
        sql = "SELECT * FROM devices WHERE 1=1"
        params: list[Any] = []
        if site_id:
            sql += " AND site_id=?"
            params.append(site_id)
        if search:
            like = f"%{search}%"
            sql += " AND (device_id LIKE ? OR site_id LIKE ? OR name LIKE ? OR kind LIKE ? OR mac LIKE ?)"
            params += [like] * 5
        rows = self._db.execute(sql + " ORDER BY site_id, device_id", params).fetchall()
        return [Device(**dict(r)) for r in rows]

    def events(self, device_id: str | None = None, limit: int = 200) -> list[Event]:
        if device_id:
            rows = self._db.execute(
                "SELECT * FROM events WHERE device_id=? ORDER BY id DESC LIMIT ?",
                (device_id, limit),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["ok"] = bool(d["ok"])
            d["detail"] = json.loads(d["detail"])
            out.append(Event(**d))
        return out

    def sites(self) -> dict[str, int]:
        """site id → number of devices, for every site with devices or a gateway account."""
        found: dict[str, int] = {
            r["site_id"]: 0 for r in self._db.execute("SELECT DISTINCT site_id FROM broker_users")
        }
        for r in self._db.execute("SELECT site_id, COUNT(*) AS n FROM devices GROUP BY site_id"):
            found[r["site_id"]] = r["n"]
        return dict(sorted(found.items()))

    def broker_users(self, site_id: str) -> dict[str, tuple[str, str]]:
        """username → (role, password hash) for every account one site's broker must know:
        that site's gateway account(s) and devices, and no other site's."""
        users: dict[str, tuple[str, str]] = {}
        for r in self._db.execute(
            "SELECT username, role, password_hash FROM broker_users WHERE site_id=?", (site_id,)
        ):
            users[r["username"]] = (r["role"], r["password_hash"])
        for r in self._db.execute(
            "SELECT device_id, password_hash FROM devices WHERE site_id=?", (site_id,)
        ):
            users[r["device_id"]] = ("device", r["password_hash"])
        return users
