"""Bounded memory whatever arrives: back-pressure from the site broker's socket to the committer.

* :class:`BoundedQueue` — the queue between ingest and the committer, bounded in messages *and*
  bytes; a full queue makes ingest wait.
* :class:`InboundGate` — while ingest waits (aiomqtt's own queue of received messages is above
  ``high``), the gateway stops reading the site broker's socket. The kernel's socket buffer
  fills, TCP's window closes, and the broker keeps the messages (QoS 1: in the gateway's
  session, the broker's ``max_queued_messages``), instead of the gateway's memory growing with
  what an attacker or a backlog sends. Reading starts again below ``low``.
* :class:`TokenBucket` — a rate limit (dead letters are published at most so often; a flood of
  bad messages is counted, not echoed).

A pause longer than the MQTT keepalive ends the connection (no PINGRESP is read); the gateway
then reconnects, and the broker sends again what was not acknowledged: nothing is lost.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiomqtt
from paho.mqtt.enums import MQTTErrorCode

T = TypeVar("T")


class BoundedQueue(asyncio.Queue[T]):
    """An asyncio queue bounded to ``maxsize`` items and ``max_bytes`` of ``size_of(item)``
    (one item larger than ``max_bytes`` still goes in when the queue is empty)."""

    def __init__(self, maxsize: int, max_bytes: int, size_of: Callable[[T], int]) -> None:
        super().__init__(maxsize)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._size_of = size_of
        self._byte_waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def put(self, item: T) -> None:
        size = self._size_of(item)
        while self.bytes and self.bytes + size > self.max_bytes:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._byte_waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
        await super().put(item)

    def _put(self, item: T) -> None:
        super()._put(item)
        self.bytes += self._size_of(item)

    def _get(self) -> T:
        item: T = super()._get()
        self.bytes -= self._size_of(item)
        while self._byte_waiters:
            fut = self._byte_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break
        return item


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
        # paho-private: _client (aiomqtt's paho client)
        paho: Any = client._client
        self._paho = paho
        self._loop_read = paho.loop_read
        paho.loop_read = self._gated_read

    def _backlog(self) -> int:
        return int(self.client._queue.qsize())

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
                # paho-private: _sock (paho's socket, to stop reading it while behind)
                sock = self._paho._sock
                if hasattr(sock, "pending") and sock.pending() > 0:
                    continue
                break
        except Exception as exc:  # noqa: BLE001 - a broken connection, as aiomqtt handles it
            disconnected = self.client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)


class TokenBucket:
    """``allow()`` at most ``rate`` times a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
