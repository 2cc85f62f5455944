# machine.UART of the simulated board: bytes go to the fake device on that bus (sim_link).
import time
from binascii import hexlify, unhexlify

import sim_link as _link


def _pin_id(p):
    return -1 if p is None else p if isinstance(p, int) else p.id


class UART:
    INV_TX = 1
    INV_RX = 2
    RTS = 1
    CTS = 2

    def __init__(
        self,
        id,
        baudrate=115200,
        bits=8,
        parity=None,
        stop=1,
        *,
        tx=None,
        rx=None,
        timeout=0,
        timeout_char=0,
        **kw,
    ):
        if id not in (0, 1, 2):
            raise ValueError("UART(%d) doesn't exist" % id)
        self.id = id
        self.tx = _pin_id(tx)
        self.rx = _pin_id(rx)
        self.baudrate = baudrate
        self.timeout = timeout
        h = _link.call("U %d %d %d %d" % (id, self.tx, self.rx, baudrate))
        self._h = h if h and h != "-" else None  # None: nothing wired to these pins

    def init(self, baudrate=None, bits=8, parity=None, stop=1, *, timeout=None, **kw):
        if baudrate is not None:
            self.baudrate = baudrate
        if timeout is not None:
            self.timeout = timeout

    def deinit(self):
        pass

    def any(self):
        if self._h is None:
            return 0
        return int(_link.call("u %s a" % self._h))

    def read(self, nbytes=-1):
        if self._h is None:
            if self.timeout > 0:
                time.sleep_ms(self.timeout)
            return None
        t0 = time.ticks_ms()
        while True:
            r = _link.call("u %s r %d" % (self._h, nbytes))
            if r or self.timeout <= 0 or time.ticks_diff(time.ticks_ms(), t0) >= self.timeout:
                return unhexlify(r) if r else None
            time.sleep_ms(2)

    def readinto(self, buf, nbytes=-1):
        n = len(buf) if nbytes < 0 else min(nbytes, len(buf))
        data = self.read(n)
        if not data:
            return None
        k = len(data)
        buf[:k] = data
        return k

    def readline(self):
        out = b""
        while True:
            c = self.read(1)
            if not c:
                return out or None
            out += c
            if c == b"\n":
                return out

    def write(self, buf):
        if self._h is not None:
            _link.call("u %s w %s" % (self._h, hexlify(buf).decode()))
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass

    def __repr__(self):
        return "UART(%d, baudrate=%d, tx=%d, rx=%d)" % (self.id, self.baudrate, self.tx, self.rx)
