"""Exactly-once publishing to the platform broker: MQTT QoS 2 with packet ids kept in the store.

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

The hooks on paho's client instance (checked for at construction, see :class:`Qos2Link`):
``_mid_generate`` (paho's own mids moved to the upper half), ``_handle_pubrec`` and
``_handle_pubackcomp`` (PUBREC/PUBCOMP of row mids go to the gateway instead of paho, which does
not know these mids), ``_send_publish`` and ``_send_pubrel`` (to send a PUBLISH with a chosen mid
and DUP flag, and a PUBREL when the gateway decides). They exist in paho-mqtt 2.x; if a future
paho drops them, the gateway refuses to start the upstream link with a clear message rather
than silently falling back to at-least-once.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

ROW_MID_MAX = 32767  # mids 1..32767: rows; 32768..65535: paho's own publishes

_REPLAY_FALSE = b'"replay":false}'
_REPLAY_TRUE = b'"replay":true}'

_HOOKS = (
    "_mid_generate",
    "_handle_pubrec",
    "_handle_pubackcomp",
    "_send_publish",
    "_send_pubrel",
    "_in_packet",
)


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


class Qos2Link:
    """QoS 2 with gateway-chosen mids over an aiomqtt client's paho client. Create it before the
    client connects; ``on_pubrec(mid)`` and ``on_pubcomp(mid)`` run on the event loop thread
    (aiomqtt reads the socket there), for row mids only."""

    def __init__(
        self,
        client: aiomqtt.Client,
        on_pubrec: Callable[[int], None],
        on_pubcomp: Callable[[int], None],
    ) -> None:
        # paho-private: _client (aiomqtt's paho client)
        p: Any = client._client
        missing = [name for name in _HOOKS if not hasattr(p, name)]
        if missing:
            raise RuntimeError(
                f"paho-mqtt {getattr(paho, '__version__', '?')} lacks {', '.join(missing)}: "
                "the gateway's exactly-once upstream needs paho-mqtt 2.x (pyproject.toml)"
            )
        self._paho = p
        self._lock = threading.Lock()
        self._own_mid = ROW_MID_MAX

        def mid_generate() -> int:
            with self._lock:
                self._own_mid = self._own_mid + 1 if self._own_mid < 65535 else ROW_MID_MAX + 1
                return self._own_mid

        # paho-private: _handle_pubrec (PUBREC of row mids go to the gateway)
        handle_pubrec = p._handle_pubrec
        # paho-private: _handle_pubackcomp (PUBCOMP of row mids go to the gateway)
        handle_pubackcomp = p._handle_pubackcomp

        def pubrec() -> MQTTErrorCode:
            mid = self._mid()
            if mid is not None and mid <= ROW_MID_MAX:
                on_pubrec(mid)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            return MQTTErrorCode(handle_pubrec())

        def pubackcomp(cmd: str) -> MQTTErrorCode:
            if cmd == "PUBCOMP":
                mid = self._mid()
                if mid is not None and mid <= ROW_MID_MAX:
                    on_pubcomp(mid)
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
            return MQTTErrorCode(handle_pubackcomp(cmd))

        # paho-private: _mid_generate (paho's mids moved to the upper half)
        p._mid_generate = mid_generate
        # paho-private: _handle_pubrec (PUBREC of row mids go to the gateway)
        p._handle_pubrec = pubrec
        # paho-private: _handle_pubackcomp (PUBCOMP of row mids go to the gateway)
        p._handle_pubackcomp = pubackcomp

        # Whether the broker still had this gateway's session (CONNACK session present).
        self.session_present: bool | None = None
        aiomqtt_on_connect = p.on_connect

        def on_connect(client: Any, userdata: Any, flags: Any, *rest: Any) -> None:
            self.session_present = bool(getattr(flags, "session_present", False))
            aiomqtt_on_connect(client, userdata, flags, *rest)

        p.on_connect = on_connect

    def _mid(self) -> int | None:
        # paho-private: _in_packet (the packet paho is handling)
        packet = self._paho._in_packet.get("packet", b"")
        if len(packet) < 2:
            return None
        return int(struct.unpack_from("!H", packet)[0])

    def publish(self, mid: int, topic: str, payload: bytes, dup: bool) -> None:
        """Queue a QoS 2 PUBLISH with this mid (paho does not track it)."""
        # paho-private: _send_publish (a PUBLISH with a chosen mid)
        rc = self._paho._send_publish(mid, topic.encode(), payload, 2, False, dup)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(rc, "could not publish to the platform broker")

    def pubrel(self, mid: int) -> None:
        # paho-private: _send_pubrel (a PUBREL with a chosen mid)
        rc = self._paho._send_pubrel(mid)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(rc, "could not send PUBREL to the platform broker")
