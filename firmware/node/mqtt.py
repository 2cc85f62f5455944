# MQTT 3.1.1 client for the node, on asyncio streams.
#
# Two layers (house style 4, like umqtt.simple/robust and mqtt_as):
# - Core: one connection attempt, one packet at a time; every failure raises OSError.
#   Every wait has a timeout so a degraded link can never hang the node.
# - Link: the ONE place that reconnects (exponential backoff + jitter), re-subscribes after
#   every reconnect, keeps the connection alive (PINGREQ) and retransmits QoS 1 publishes
#   with the DUP flag until PUBACK.
# Buffers are allocated once: outgoing packets are built in a fixed bytearray, incoming
# packets are read into a fixed bytearray (oversized ones are drained and dropped).
import asyncio
import struct

from micropython import const

try:
    import random
except ImportError:  # pragma: no cover - every port we run on has it
    random = None

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)

_ETIMEDOUT = const(110)
_ECONNABORTED = const(103)
_EPROTO = const(71)
_OBUF = const(320)
_IBUF = const(384)
_RETRIES = const(3)  # PUBLISH retransmissions (DUP) before the link is dropped


class Core:
    """One MQTT connection. Methods raise OSError on any failure; nothing here retries."""

    def __init__(
        self,
        client_id,
        username=None,
        password=None,
        keepalive_s=60,
        will_topic=None,
        will_msg=None,
    ):
        self.client_id = client_id
        self.username = username
        self.password = password
        self.keepalive_s = keepalive_s
        self.will_topic = will_topic
        self.will_msg = will_msg  # sent retained, QoS 1 (contract: state topic)
        # out: fixed header + topic (+ CONNECT fields); payloads go out from their own buffer
        self._obuf = bytearray(_OBUF)
        self.ibuf = bytearray(_IBUF)  # in: commands and custody acks are far smaller
        self._hdr = bytearray(5)  # [0]: a received byte; [1:5]: remaining-length encoding
        self._r = None
        self._w = None

    # --- packet building (synchronous: a packet is built and queued without an await) ---

    def _put_str(self, pos, s):
        if isinstance(s, str):
            s = s.encode()
        n = len(s)
        struct.pack_into("!H", self._obuf, pos, n)
        self._obuf[pos + 2 : pos + 2 + n] = s
        return pos + 2 + n

    def _send(self, first, length, start=5, end=None):
        # Write the fixed header just before the body already placed at `start` (which
        # leaves 5 bytes: type + up to 4 remaining-length bytes) and queue the packet.
        # end: where the part in the buffer ends, if the rest of the body follows separately.
        lb = self._hdr
        i = 1
        n = length
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                b |= 0x80
            lb[i] = b
            i += 1
            if not n:
                break
        at = start - i
        self._obuf[at] = first
        self._obuf[at + 1 : start] = lb[1:i]
        if self._w is None:
            raise OSError(_ECONNABORTED)
        self._w.write(memoryview(self._obuf)[at : start + length if end is None else end])

    async def _drain(self, timeout_ms):
        try:
            await asyncio.wait_for_ms(self._w.drain(), timeout_ms)
        except asyncio.TimeoutError:
            raise OSError(_ETIMEDOUT)

    # --- connection ---

    async def connect(self, host, port, timeout_ms=10000):
        """Open TCP, send CONNECT, wait for CONNACK. Returns session_present."""
        self.close()
        try:
            self._r, self._w = await asyncio.wait_for_ms(
                asyncio.open_connection(host, port), timeout_ms
            )
        except asyncio.TimeoutError:
            raise OSError(_ETIMEDOUT)
        pos = 5
        pos = self._put_str(pos, "MQTT")
        flags = 0x02  # clean session: the outbox, not the broker, keeps what must survive
        if self.will_topic:
            flags |= 0x04 | 0x08 | 0x20  # will flag, will QoS 1, will retain
        if self.username:
            flags |= 0x80
            if self.password:
                flags |= 0x40
        struct.pack_into("!BBH", self._obuf, pos, 4, flags, self.keepalive_s)
        pos += 4
        pos = self._put_str(pos, self.client_id)
        if self.will_topic:
            pos = self._put_str(pos, self.will_topic)
            pos = self._put_str(pos, self.will_msg)
        if self.username:
            pos = self._put_str(pos, self.username)
            if self.password:
                pos = self._put_str(pos, self.password)
        self._send(_CONNECT, pos - 5, 5)
        await self._drain(timeout_ms)
        ptype, n = await self.read_packet(timeout_ms, timeout_ms)
        if ptype != _CONNACK or n != 2:
            raise OSError(_EPROTO)
        rc = self.ibuf[1]
        if rc:
            # 4 bad user name or password, 5 not authorised (MQTT 3.1.1 table 3.1)
            raise OSError("CONNACK refused, code %d" % rc)
        return bool(self.ibuf[0] & 1)

    def close(self):
        w, self._w, self._r = self._w, None, None
        if w is not None:
            try:
                w.close()
            except OSError:
                pass

    async def disconnect(self, timeout_ms=2000):
        if self._w is not None:
            try:
                self._send(_DISCONNECT, 0, 5)
                await self._drain(timeout_ms)
            except OSError:
                pass
        self.close()

    # --- outgoing packets ---

    async def publish(self, topic, msg, qos=0, retain=False, pid=0, d=False, timeout_ms=10000):
        """Queue and flush one PUBLISH. msg: bytes, bytearray, memoryview or str, or a list
        of them sent one after the other (a long message without one large allocation).
        The fixed header and topic are built in the small output buffer; the payload is
        queued straight from the caller's buffers (no copy), in the same synchronous step."""
        parts = msg if isinstance(msg, list) else (msg,)
        n = 0
        for p in parts:
            n += len(memoryview(p))  # UTF-8 bytes of a str
        pos = self._put_str(5, topic)
        if qos:
            struct.pack_into("!H", self._obuf, pos, pid)
            pos += 2
        first = _PUBLISH | (qos << 1) | (0x08 if d else 0) | (1 if retain else 0)  # d: DUP
        self._send(first, pos + n - 5, 5, pos)
        for p in parts:
            self._w.write(p)
        await self._drain(timeout_ms)

    async def control(self, first, pid=0, topic=None, qos=0, timeout_ms=10000):
        """A small packet: SUBSCRIBE (pid, topic, qos), PUBACK (pid) or PINGREQ."""
        pos = 5
        if pid:
            struct.pack_into("!H", self._obuf, 5, pid)
            pos = 7
        if topic is not None:
            pos = self._put_str(7, topic)
            self._obuf[pos] = qos
            pos += 1
        self._send(first, pos - 5, 5)
        await self._drain(timeout_ms)

    # --- incoming packets ---

    async def _read_into(self, b, timeout_ms):
        r = self._r
        if r is None:
            raise OSError(_ECONNABORTED)
        got = 0
        want = len(b)
        while got < want:
            try:
                n = await asyncio.wait_for_ms(r.readinto(b[got:]), timeout_ms)
            except asyncio.TimeoutError:
                raise OSError(_ETIMEDOUT)
            if not n:
                raise OSError(_ECONNABORTED)  # peer closed the connection
            got += n

    async def read_packet(self, wait_ms, timeout_ms=10000):
        """Read one packet. Returns (type byte, payload length); the payload is in ibuf[:n]
        (n may exceed len(ibuf) for an oversized packet, whose payload was dropped).
        Raises asyncio.TimeoutError if no packet starts within wait_ms (nothing
        consumed, safe to call again); OSError if a started packet does not complete."""
        r = self._r
        if r is None:
            raise OSError(_ECONNABORTED)
        one = memoryview(self._hdr)[:1]
        n = await asyncio.wait_for_ms(r.readinto(one), wait_ms)
        if not n:
            raise OSError(_ECONNABORTED)
        ptype = self._hdr[0]
        length = 0
        shift = 0
        while True:
            await self._read_into(one, timeout_ms)
            b = self._hdr[0]
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise OSError(_EPROTO)
        size = len(self.ibuf)
        if length <= size:
            if length:
                await self._read_into(memoryview(self.ibuf)[:length], timeout_ms)
            return ptype, length
        # Oversized: drain it through ibuf and drop it.
        left = length
        while left:
            k = left if left < size else size
            await self._read_into(memoryview(self.ibuf)[:k], timeout_ms)
            left -= k
        return ptype, length


class Link:
    """A kept-up MQTT connection: reconnect with backoff + jitter, re-subscribe, keepalive,
    QoS 1 retransmission. Run `run()` as a task; use `publish()` from other tasks."""

    def __init__(
        self,
        core,
        host,
        port,
        subscriptions,
        on_message,
        on_connect=None,
        timeout_ms=10000,
        backoff_min_ms=1000,
        backoff_max_ms=300000,
        puback_timeout_ms=5000,
        log=print,
        ready=None,
    ):
        self.core = core
        self.host = host
        self.port = port
        self.subscriptions = subscriptions  # list of (topic, qos)
        self.on_message = on_message  # on_message(topic_bytes, payload_memoryview)
        self.on_connect = on_connect  # async on_connect(): e.g. publish birth
        self.timeout_ms = timeout_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.puback_timeout_ms = puback_timeout_ms
        self.log = log
        self.ready = ready  # an Event set while the network is up (None: always)
        self.up = asyncio.Event()
        self._ack = asyncio.Event()
        self._free = asyncio.Event()  # set while no publish holds the link (a lock)
        self._free.set()
        self._wait_pid = 0
        self._pid = 0
        self._rx_ms = 0
        self._tx_ms = 0
        self.connects = 0
        self.last_error = None
        self._stop = False
        self._kick = False
        self._up_ms = None
        self._ticks_ms = None

    def kick(self):
        """Drop the connection (e.g. a publish got no PUBACK); run() reconnects."""
        self._kick = True
        self.up.clear()
        self.core.close()

    def stop(self):
        self._stop = True
        self.kick()

    async def _session(self, ticks_ms, ticks_diff):
        c = self.core
        await c.connect(self.host, self.port, self.timeout_ms)
        now = ticks_ms()
        self._rx_ms = self._tx_ms = now
        for topic, qos in self.subscriptions:
            pid = self._pid = self._pid % 65535 + 1
            self._wait_pid = pid
            await c.control(_SUBSCRIBE, pid, topic, qos, self.timeout_ms)
            # The reader is not running yet: read the SUBACK here.
            while True:
                ptype, n = await c.read_packet(self.timeout_ms, self.timeout_ms)
                if ptype & 0xF0 == _SUBACK and n >= 3:
                    if (c.ibuf[0] << 8) | c.ibuf[1] == pid:
                        if c.ibuf[2] == 0x80:
                            raise OSError(_EPROTO)  # subscription refused (ACL?)
                        break
                else:
                    await self._dispatch(ptype, n)
        self.connects += 1
        self._up_ms = ticks_ms()
        self.up.set()
        self.log("mqtt up")
        if self.on_connect is not None:
            task = asyncio.create_task(self.on_connect())
        else:
            task = None
        try:
            await self._reader(ticks_ms, ticks_diff)
        finally:
            if task is not None:
                task.cancel()

    async def _reader(self, ticks_ms, ticks_diff):
        c = self.core
        ka_ms = c.keepalive_s * 1000
        poll_ms = ka_ms // 4 if ka_ms else 5000
        while not self._kick:
            try:
                ptype, n = await c.read_packet(poll_ms, self.timeout_ms)
            except asyncio.TimeoutError:
                ptype = None
            now = ticks_ms()
            if ptype is not None:
                self._rx_ms = now
                await self._dispatch(ptype, n)
            if ka_ms:
                if ticks_diff(now, self._rx_ms) > ka_ms + ka_ms // 2:
                    raise OSError(_ETIMEDOUT)  # broker silent: the link is dead
                if ticks_diff(now, self._tx_ms) >= ka_ms // 2:
                    self._tx_ms = now
                    await c.control(_PINGREQ, 0, None, 0, self.timeout_ms)
        raise OSError(_ECONNABORTED)

    async def _dispatch(self, p, n):
        kind = p & 0xF0  # p: the packet's first byte
        c = self.core
        if kind == _PUBACK and n >= 2:
            if (c.ibuf[0] << 8) | c.ibuf[1] == self._wait_pid:
                self._ack.set()
        elif kind == _PUBLISH:
            b = c.ibuf
            if n > len(b):
                return  # oversized: drained and dropped; never acked
            # topic length, topic, [packet id if QoS > 0], payload
            pos = 2 + ((b[0] << 8) | b[1])
            topic = bytes(b[2:pos])
            pid = 0
            if p & 0x06:
                pid = (b[pos] << 8) | b[pos + 1]
                pos += 2
            try:
                self.on_message(topic, memoryview(b)[pos:n])
            except Exception as e:  # a bad message must never take the link down
                self.log("on_message: %r" % (e,))
            if pid:
                await c.control(_PUBACK, pid, None, 0, self.timeout_ms)
        # PINGRESP and anything else: only refreshes _rx_ms

    async def run(self, ticks_ms, ticks_diff, sleep_ms, urandom=None):
        """Keep the connection up until stop(). ticks/sleep come from the node clock."""
        self._ticks_ms = ticks_ms
        delay = self.backoff_min_ms
        while not self._stop:
            if self.ready is not None:
                await self.ready.wait()
            self._kick = False
            try:
                await self._session(ticks_ms, ticks_diff)
            except (OSError, asyncio.TimeoutError) as e:
                self.last_error = e
            self.up.clear()
            self.core.close()
            if self._stop:
                break
            if self._up_ms is not None:
                # A session that lived past a minute was healthy: start backoff afresh.
                if ticks_diff(ticks_ms(), self._up_ms) > 60000:
                    delay = self.backoff_min_ms
                self._up_ms = None
            self.log("mqtt down: %r, retry in %d ms" % (self.last_error, delay))
            # jitter: wait between delay/2 and delay so a site's nodes do not reconnect together
            j = delay // 2
            if random is not None and j > 0:
                j = random.getrandbits(20) % j
            await sleep_ms(delay // 2 + j)
            delay = min(delay * 2, self.backoff_max_ms)

    async def publish(self, topic, msg, qos=1, retain=False):
        """Publish once connected; QoS 1 waits for PUBACK, retransmitting with DUP.
        Raises OSError if the link is down or the broker does not acknowledge."""
        if not self.up.is_set():
            raise OSError(_ECONNABORTED)
        free = self._free
        while not free.is_set():  # one publish at a time (one PUBACK awaited)
            await free.wait()
        free.clear()
        c = self.core
        try:  # inline, not a helper coroutine: every coroutine call allocates its frame
            if not qos:
                await c.publish(topic, msg, 0, retain, 0, False, self.timeout_ms)
                return
            pid = self._pid = self._pid % 65535 + 1
            self._wait_pid = pid
            dup = False
            for _ in range(_RETRIES + 1):
                if not self.up.is_set():
                    raise OSError(_ECONNABORTED)
                self._ack.clear()
                if self._ticks_ms is not None:
                    self._tx_ms = self._ticks_ms()
                try:
                    await c.publish(topic, msg, 1, retain, pid, dup, self.timeout_ms)
                except OSError:
                    self.kick()
                    raise
                try:
                    await asyncio.wait_for_ms(self._ack.wait(), self.puback_timeout_ms)
                    self._wait_pid = 0
                    return
                except asyncio.TimeoutError:
                    dup = True
            self._wait_pid = 0
            self.kick()
            raise OSError(_ETIMEDOUT)
        finally:
            free.set()
