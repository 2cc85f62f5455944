"""The flight window: exactly-once to the platform broker, MQTT QoS 2 with packet ids kept in
the store.

Why not paho's own QoS 2: paho keeps its packet ids (mids) and message states in memory and
sends PUBREL the moment PUBREC arrives. After a crash both are gone, the rows are sent again
with new mids, and the broker — which de-duplicates an incoming QoS 2 PUBLISH only by (client
session, mid) — delivers them twice. So the gateway owns the protocol state:

1. Before a PUBLISH leaves, the row's mid and its replay flag are committed (one transaction for
   a group of rows, fsynced with ``store.synchronous = "full"``). The bytes on the wire are a pure
   function of the stored payload and that flag (:func:`wire_payload`), so a resend is
   byte-identical — Mosquitto treats a PUBLISH with a known mid but a different topic, QoS or
   payload as a *reused* mid and stores it as a new message (handle_publish.c).
2. On PUBREC the broker holds the message (it delivers an incoming QoS 2 message only when the
   PUBREL arrives). The row is marked *released* — durably, in group commits — and only then is
   PUBREL sent.
3. On PUBCOMP the row is deleted (lazily, in batches, like before).
4. On every connection (and so after a restart): released rows get a PUBREL only (Mosquitto
   answers a PUBREL for a mid it no longer knows with PUBCOMP: handle_pubrel.c), published rows
   are PUBLISHed again with the same mid and bytes (DUP set), new rows get new mids.

The session must persist on the broker (``clean_session = False``, a fixed client id) and, for a
broker restart between PUBREC and PUBREL, the broker must run with ``persistence true``.

Packet ids: observation and alert rows use mids ``1 .. ROW_MID_MAX``; everything paho sends by
itself (health and status, QoS 1) gets mids above that, so they never collide with a mid the
broker holds for a row. A mid is reused only after the row that had it is deleted (committed).

The paho hooks this needs are all in :mod:`edge_gateway.qos2link`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt

from edge_gateway.qos2link import ROW_MID_MAX, Qos2Link
from edge_gateway.store import STATE_RELEASED, InFlight, Row, Store

_REPLAY_FALSE = b'"replay":false}'
_REPLAY_TRUE = b'"replay":true}'


def wire_payload(payload: bytes, replay: bool) -> bytes:
    """The bytes sent for a stored payload: an observation sent as backlog says
    ``"replay":true``. Deterministic — a resend must be byte-identical."""
    if replay and payload.endswith(_REPLAY_FALSE):
        return payload[: -len(_REPLAY_FALSE)] + _REPLAY_TRUE
    return payload


class MidAllocator:
    """Row packet ids, 1..ROW_MID_MAX, round robin, never one that a stored row still has."""

    def __init__(self) -> None:
        self.busy: dict[int, int] = {}  # mid -> row id, for rows in the store that have one
        self._last = 0

    def reset(self, busy: dict[int, int]) -> None:
        self.busy = dict(busy)
        if busy:
            self._last = max(busy)

    def take(self, row_id: int) -> int:
        if len(self.busy) >= ROW_MID_MAX:
            raise RuntimeError("all row packet ids are in use")
        mid = self._last
        while True:
            mid = mid + 1 if mid < ROW_MID_MAX else 1
            if mid not in self.busy:
                break
        self._last = mid
        self.busy[mid] = row_id
        return mid

    def free(self, mid: int) -> None:
        self.busy.pop(mid, None)


@dataclass
class Slot:
    """A row on its way through the QoS 2 handshake on the current connection."""

    row_id: int
    mid: int
    topic: str
    replay: bool
    backlog: bool  # holds a permit of the backlog half of the window
    released: bool = False  # PUBREC received and committed, PUBREL sent
    recorded: bool = False  # PUBREC received (commit pending or done)
    since: float = field(default_factory=time.monotonic)


FLIGHT_GATHER_S = 0.005  # how long the flight commit waits for a group to form


class FlightWindow:
    """The QoS 2 state of one platform connection: rows between PUBLISH and PUBCOMP by packet
    id, the in-flight window, and the group commits that precede PUBLISH and PUBREL.
    ``on_completed(slot)`` is told of each PUBCOMP (the row may be deleted)."""

    def __init__(
        self,
        client: aiomqtt.Client,
        store: Store,
        flight: list[InFlight],
        max_inflight: int,
        mids: MidAllocator,
        on_completed: Callable[[Slot], None],
    ) -> None:
        self.store = store
        self.flight = flight
        self.mids = mids
        self.on_completed = on_completed
        self.max_inflight = max_inflight
        self.link = Qos2Link(client, self.on_pubrec, self.on_pubcomp)
        self.slots: dict[int, Slot] = {}
        self.window = asyncio.Semaphore(max_inflight)
        # The backlog may hold at most half of the in-flight window: the other half stays free
        # for live rows, which therefore never queue behind a whole drain batch.
        self.backlog_window = asyncio.Semaphore(max(1, max_inflight // 2))
        self._pubrecs: list[Slot] = []
        self._rows: list[tuple[Row, bool, bool]] = []
        self._work = asyncio.Event()

    async def resume(self) -> None:
        """Finish what has a packet id already, in store order: released rows get a PUBREL,
        published rows the same PUBLISH again (DUP)."""
        for f in self.flight:
            await self.window.acquire()
            slot = Slot(
                f.id,
                f.mid,
                f.topic,
                f.replay,
                backlog=False,
                released=f.state == STATE_RELEASED,
                recorded=f.state == STATE_RELEASED,
            )
            self.slots[f.mid] = slot
            if slot.released:
                self.link.pubrel(f.mid)
            else:
                self.link.publish(f.mid, f.topic, wire_payload(f.payload, f.replay), dup=True)
        self.flight = []

    def enqueue(self, row: Row, replay: bool, backlog: bool) -> None:
        """A row with a place in the window: the committer publishes it."""
        self._rows.append((row, replay, backlog))
        self._work.set()

    def on_pubrec(self, mid: int) -> None:
        slot = self.slots.get(mid)
        if slot is None or slot.recorded:
            return  # a repeated PUBREC, or none of ours (never PUBREL what we do not know)
        slot.recorded = True
        self._pubrecs.append(slot)
        self._work.set()

    def on_pubcomp(self, mid: int) -> None:
        slot = self.slots.pop(mid, None)
        if slot is None:
            return
        self.on_completed(slot)
        self.window.release()
        if slot.backlog:
            self.backlog_window.release()

    async def committer(self) -> None:
        """The flight group commit: the PUBRECs and the rows queued for publishing that came
        while the last commit ran (or within ``FLIGHT_GATHER_S``) in one transaction, then the
        PUBRELs (in PUBREC order) and the PUBLISHes (in store order). Completed rows are
        deleted separately, lazily (``forward.delete_max_ms``)."""
        store = self.store
        enough = max(1, self.max_inflight // 4)
        while True:
            await self._work.wait()
            self._work.clear()
            # Let a group form (fewer, larger commits: SD-card writes), but not for long.
            deadline = time.monotonic() + FLIGHT_GATHER_S
            while len(self._pubrecs) + len(self._rows) < enough:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._work.wait()
                self._work.clear()
            pubrecs, self._pubrecs = self._pubrecs, []
            rows, self._rows = self._rows, []
            if not pubrecs and not rows:
                continue
            assign = [(row.id, self.mids.take(row.id), replay) for row, replay, _ in rows]
            await store.call(store.flight_commit, assign, [s.row_id for s in pubrecs])
            now = time.monotonic()
            for slot in pubrecs:
                slot.released = True
                slot.since = now
                self.link.pubrel(slot.mid)
            for (row, replay, backlog), (rid, mid, _) in zip(rows, assign, strict=True):
                self.slots[mid] = Slot(rid, mid, row.topic, replay, backlog)
                self.link.publish(mid, row.topic, wire_payload(row.payload, replay), dup=False)

    async def watchdog(self, timeout_s: float) -> None:
        """The link counts as broken when a PUBREC or PUBCOMP is overdue."""
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 4))
            now = time.monotonic()
            late = [
                s
                for s in self.slots.values()
                if now - s.since > timeout_s and (s.released or not s.recorded)
            ]
            if late:
                raise aiomqtt.MqttError(
                    f"no {'PUBCOMP' if late[0].released else 'PUBREC'} within {timeout_s:g} s "
                    f"for {len(late)} messages"
                )
