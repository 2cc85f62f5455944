"""The MQTT link layer, and the ONE module that touches paho's and aiomqtt's internals.

Every access to a private attribute of paho's client (or of aiomqtt's wrapper around it) is in
this module and ends with a ``# paho-private: <why>`` comment; nothing else in the gateway (or
in ``edge_gateway.notify``) reaches in. What is here:

* :class:`Qos2Link` — exactly-once publishing to the platform broker with packet ids the
  gateway chooses and keeps in the store (the protocol and why: :mod:`edge_gateway.flight`).
* :class:`InboundGate` — stop reading a client's socket while ingest is behind
  (back-pressure: :mod:`edge_gateway.backpressure`).
* :func:`manual_ack` and :func:`puback` — PUBACK a site-broker message only after its commit.
* :func:`make_client` — an aiomqtt client from a broker section of the config;
  :class:`Reconnect` leaves a connection to make it again.

The hooks on paho's client instance (checked for at construction of :class:`Qos2Link`):
``_mid_generate`` (paho's own mids moved to the upper half), ``_handle_pubrec`` and
``_handle_pubackcomp`` (PUBREC/PUBCOMP of row mids go to the gateway instead of paho, which does
not know these mids), ``_send_publish`` and ``_send_pubrel`` (to send a PUBLISH with a chosen mid
and DUP flag, and a PUBREL when the gateway decides). They exist in paho-mqtt 2.x; if a future
paho drops them, the gateway refuses to start the upstream link with a clear message rather
than silently falling back to at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from edge_gateway.config import BrokerSection

ROW_MID_MAX = 32767  # mids 1..32767: rows; 32768..65535: paho's own publishes

_HOOKS = (
    "_mid_generate",
    "_handle_pubrec",
    "_handle_pubackcomp",
    "_send_publish",
    "_send_pubrel",
    "_in_packet",
)


class Reconnect(Exception):
    """Leave the current broker connection and connect again (settings changed or link broken)."""


def _paho_of(client: aiomqtt.Client) -> Any:
    return client._client  # paho-private: aiomqtt keeps its paho client private


def tls_context(section: BrokerSection) -> ssl.SSLContext | None:
    if not section.tls:
        return None
    ctx = ssl.create_default_context(cafile=section.ca_file)
    if section.cert_file and section.key_file:
        ctx.load_cert_chain(section.cert_file, section.key_file)
    if section.tls_insecure:
        ctx.check_hostname = False
    return ctx


def make_client(section: BrokerSection, default_id: str, **kwargs: Any) -> aiomqtt.Client:
    """An aiomqtt client for a broker section of the config (not connected yet)."""
    client = aiomqtt.Client(
        section.host,
        section.port,
        username=section.username,
        password=section.password,
        identifier=section.client_id or default_id,
        keepalive=section.keepalive_s,
        tls_context=tls_context(section),
        tls_insecure=section.tls_insecure if section.tls else None,
        timeout=section.timeout_s,
        **kwargs,
    )
    # Many concurrent QoS 1 publishes are the design (bounded by forward.max_inflight and
    # the custody fan-out), not a leak: raise aiomqtt's warning threshold accordingly.
    client.pending_calls_threshold = 100_000
    return client


def manual_ack(client: aiomqtt.Client) -> None:
    """PUBACK received messages only when :func:`puback` says so (set before connecting)."""
    _paho_of(client).manual_ack_set(True)


def puback(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """PUBACK a message received with :func:`manual_ack`. On a connection that is gone this
    does nothing: the broker sends the message again on the next connection."""
    if qos > 0:
        with contextlib.suppress(Exception):
            _paho_of(client).ack(mid, qos)


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
        p: Any = _paho_of(client)
        missing = [name for name in _HOOKS if not hasattr(p, name)]
        if missing:
            raise RuntimeError(
                f"paho-mqtt {getattr(paho, '__version__', '?')} lacks {', '.join(missing)}: "
                "the gateway's exactly-once upstream needs paho-mqtt 2.x (pyproject.toml)"
            )
        self._paho = p
        self._lock = threading.Lock()
        self._own_mid = ROW_MID_MAX
        self._on_pubrec = on_pubrec
        self._on_pubcomp = on_pubcomp
        self._paho_pubrec = p._handle_pubrec  # paho-private: row PUBRECs are ours
        self._paho_pubackcomp = p._handle_pubackcomp  # paho-private: row PUBCOMPs are ours
        p._mid_generate = self._mid_generate  # paho-private: paho's mids above ROW_MID_MAX
        p._handle_pubrec = self._pubrec  # paho-private: PUBREC of a row mid to the gateway
        p._handle_pubackcomp = self._pubackcomp  # paho-private: PUBCOMP of a row mid too

        # Whether the broker still had this gateway's session (CONNACK session present).
        self.session_present: bool | None = None
        aiomqtt_on_connect = p.on_connect

        def on_connect(client: Any, userdata: Any, flags: Any, *rest: Any) -> None:
            self.session_present = bool(getattr(flags, "session_present", False))
            aiomqtt_on_connect(client, userdata, flags, *rest)

        p.on_connect = on_connect

    def _mid_generate(self) -> int:
        with self._lock:
            self._own_mid = self._own_mid + 1 if self._own_mid < 65535 else ROW_MID_MAX + 1
            return self._own_mid

    def _pubrec(self) -> MQTTErrorCode:
        mid = self._mid()
        if mid is not None and mid <= ROW_MID_MAX:
            self._on_pubrec(mid)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return MQTTErrorCode(self._paho_pubrec())

    def _pubackcomp(self, cmd: str) -> MQTTErrorCode:
        if cmd == "PUBCOMP":
            mid = self._mid()
            if mid is not None and mid <= ROW_MID_MAX:
                self._on_pubcomp(mid)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return MQTTErrorCode(self._paho_pubackcomp(cmd))

    def _mid(self) -> int | None:
        packet = self._paho._in_packet.get("packet", b"")  # paho-private: the packet being read
        if len(packet) < 2:
            return None
        return int(struct.unpack_from("!H", packet)[0])

    def publish(self, mid: int, topic: str, payload: bytes, dup: bool) -> None:
        """Queue a QoS 2 PUBLISH with this mid (paho does not track it)."""
        rc = self._paho._send_publish(  # paho-private: PUBLISH with our mid and DUP flag
            mid, topic.encode(), payload, 2, False, dup
        )
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(rc, "could not publish to the platform broker")

    def pubrel(self, mid: int) -> None:
        rc = self._paho._send_pubrel(mid)  # paho-private: PUBREL once the PUBREC is committed
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(rc, "could not send PUBREL to the platform broker")


class InboundGate:
    """Pause reading an aiomqtt client's socket while its received-message queue is above
    ``high``; resume below ``low``. Install before connecting; call :meth:`check` after taking a
    message from the client."""

    def __init__(self, client: aiomqtt.Client, high: int = 256, low: int = 64) -> None:
        self.client = client
        self.high = high
        self.low = low
        self.paused = False
        self.pauses = 0
        self._fd: int | None = None
        p: Any = _paho_of(client)
        self._paho = p
        self._loop_read = p.loop_read
        p.loop_read = self._gated_read

    def _backlog(self) -> int:
        return int(self.client._queue.qsize())  # paho-private: aiomqtt's received messages

    def _gated_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self.paused:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        if self._backlog() >= self.high:
            sock = self._paho.socket()
            if sock is not None:
                self._fd = sock.fileno()
                asyncio.get_running_loop().remove_reader(self._fd)
                self.paused = True
                self.pauses += 1
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return MQTTErrorCode(self._loop_read(max_packets))

    def check(self) -> None:
        if self.paused and self._backlog() <= self.low:
            self.paused = False
            sock = self._paho.socket()
            fd = self._fd
            if sock is not None and fd is not None and sock.fileno() == fd:
                asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        """What aiomqtt does when the socket is readable (its reader was replaced by ours)."""
        try:
            while True:
                self._gated_read()
                if self.paused:
                    return
                sock = self._paho._sock  # paho-private: TLS data already read, not yet parsed
                if hasattr(sock, "pending") and sock.pending() > 0:
                    continue
                break
        except Exception as exc:  # noqa: BLE001 - a broken connection, as aiomqtt handles it
            disconnected = self.client._disconnected  # paho-private: aiomqtt's link-lost future
            if not disconnected.done():
                disconnected.set_exception(exc)
