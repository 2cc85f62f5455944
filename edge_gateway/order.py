"""Order per device through a power cut: hold a device's readings behind a ``(boot, seq)`` gap.

When the Pi loses power, the site broker loses the readings it had queued for the gateway (its
last autosave is older) although it had PUBACKed them to the nodes. The nodes still have them —
no custody came — and send them again when they rewind their outbox, but by then they may
already have sent newer readings, which the gateway would forward first.

So each device has a *frontier*: the largest ``(boot, seq)`` the gateway has released for
forwarding. A committed reading is

* **released** (appended to the forwarding queue) when it is the frontier's successor — the
  next ``seq`` of the same boot, or ``seq`` 0 of a later boot — or when the device has no
  frontier yet; held readings that now follow without a gap are released behind it, in order;
* **held** (kept in the store's ``held`` table, durable, custody sent) when it is further ahead:
  a gap before it;
* **late** when it is behind the frontier (its gap was given up on): released at once, its
  observation marked ``"late": true``.

A gap is waited for at most ``HOLD_S`` seconds from the first reading held behind it; then the
device's held readings are released in order (the frontier jumps over the gap) and whatever
fills the gap afterwards is late. Readings a node never sends (its outbox overflowed) therefore
delay that device's next readings by ``HOLD_S`` once, and nothing else.

The frontier is not stored separately: it is the largest committed key that is not held
(:meth:`OrderGate.load`), the same rule the gate keeps in memory. Store order of the forwarding
queue is then ``(boot, seq)`` order per device, apart from late readings, which say so.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

HOLD_S = 60.0
MAX_HELD = 20_000  # per device; beyond it the oldest held readings are released

Key = tuple[int, int]  # (boot, seq)

HELD_SCHEMA = """
CREATE TABLE IF NOT EXISTS held(
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    received REAL NOT NULL,
    priority INTEGER NOT NULL,
    size INTEGER NOT NULL,
    since REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS held_key ON held(device_id, boot, seq);
"""

_LATE_FROM = b'"replay":false}'
_LATE_TO = b'"late":true,"replay":false}'


def mark_late(payload: bytes) -> bytes:
    """The observation with ``"late": true`` (before ``replay``, which must stay last)."""
    if payload.endswith(_LATE_FROM):
        return payload[: -len(_LATE_FROM)] + _LATE_TO
    return payload


@dataclass
class _Device:
    frontier: Key | None = None
    held: list[Key] = field(default_factory=list)  # sorted
    since: float | None = None  # when the oldest gap began to be waited for


RELEASE, HOLD, LATE = "release", "hold", "late"


class OrderGate:
    """The frontier and held keys of every device. Used on the store thread, inside the store's
    transactions."""

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self.devices: dict[str, _Device] = {}

    def load(
        self, db: sqlite3.Connection, seen: Mapping[tuple[str, int], Iterable[tuple[int, int]]]
    ) -> None:
        """Rebuild from the store: held keys from ``held``, frontiers from the committed keys
        (``seen``: (device, boot) -> its (lo, hi) ranges) that are not held."""
        self.devices = {}
        for dev, boot, seq, since in db.execute(
            "SELECT device_id, boot, seq, since FROM held ORDER BY boot, seq"
        ):
            d = self.devices.setdefault(str(dev), _Device())
            d.held.append((int(boot), int(seq)))
            d.since = float(since) if d.since is None else min(d.since, float(since))
        by_device: dict[str, list[tuple[int, list[tuple[int, int]]]]] = {}
        for (dev, boot), ranges in seen.items():
            by_device.setdefault(dev, []).append((boot, list(ranges)))
        for dev, boots in by_device.items():
            d = self.devices.setdefault(dev, _Device())
            held = set(d.held)
            d.frontier = _largest_not_held(sorted(boots, reverse=True), held)

    def admit(self, dev: str, key: Key) -> str:
        """Where a newly committed reading goes: RELEASE, HOLD or LATE."""
        d = self.devices.get(dev)
        if d is None:
            d = self.devices[dev] = _Device()
        f = d.frontier
        if f is None or _follows(f, key):
            d.frontier = key if f is None or key > f else f
            return RELEASE
        if key < f:
            return LATE
        bisect.insort(d.held, key)
        return HOLD

    def hold_started(self, dev: str, now: float) -> None:
        d = self.devices[dev]
        if d.since is None:
            d.since = now

    def drain(self, dev: str) -> list[Key]:
        """Held keys that now follow the frontier without a gap (released, in order)."""
        d = self.devices.get(dev)
        if d is None or not d.held or d.frontier is None:
            return []
        out: list[Key] = []
        while d.held and _follows(d.frontier, d.held[0]):
            d.frontier = d.held.pop(0)
            out.append(d.frontier)
        if not d.held:
            d.since = None
        return out

    def expired(self, now: float) -> dict[str, list[Key]]:
        """Devices whose oldest gap has waited ``hold_s``: all their held keys, released in
        order (the frontier jumps over the gap), or the oldest beyond ``MAX_HELD``."""
        out: dict[str, list[Key]] = {}
        for dev, d in self.devices.items():
            if not d.held:
                continue
            if d.since is not None and now - d.since >= self.hold_s:
                keys, d.held = d.held, []
                d.since = None
            elif len(d.held) > MAX_HELD:
                keys, d.held = d.held[: len(d.held) - MAX_HELD], d.held[len(d.held) - MAX_HELD :]
            else:
                continue
            if d.frontier is None or keys[-1] > d.frontier:
                d.frontier = keys[-1]
            out[dev] = keys
        return out

    def held_count(self) -> int:
        return sum(len(d.held) for d in self.devices.values())

    def forget(self, dev: str) -> None:
        d = self.devices.get(dev)
        if d is not None and not d.held:
            del self.devices[dev]


def _follows(frontier: Key, key: Key) -> bool:
    """``key`` comes right after ``frontier``: the next seq, or the first of a later boot."""
    return (key[0] == frontier[0] and key[1] == frontier[1] + 1) or (
        key[0] > frontier[0] and key[1] == 0
    )


def _largest_not_held(boots: list[tuple[int, list[tuple[int, int]]]], held: set[Key]) -> Key | None:
    for boot, ranges in boots:
        for lo, hi in sorted(ranges, reverse=True):
            seq = hi
            while seq >= lo:
                if (boot, seq) not in held:
                    return (boot, seq)
                seq -= 1
    return None


def move_to_queue(db: sqlite3.Connection, dev: str, keys: list[Key]) -> tuple[int, int]:
    """Inside a transaction: move held rows of ``dev`` to the forwarding queue in ``(boot,
    seq)`` order. Returns (rows, bytes) moved."""
    moved = 0
    size = 0
    for boot, seq in keys:
        row = db.execute(
            "DELETE FROM held WHERE device_id = ? AND boot = ? AND seq = ? "
            "RETURNING topic, payload, received, priority, size",
            (dev, boot, seq),
        ).fetchone()
        if row is None:
            continue
        db.execute(
            "INSERT INTO queue(topic, payload, device_id, boot, seq, received, priority, size) "
            "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
            (row[0], row[1], dev, boot, seq, row[2], row[3], row[4]),
        )
        moved += 1
        size += int(row[4])
    return moved, size
