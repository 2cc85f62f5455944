# Ultrasonic distance for canal water level.
# (a) UART sensors (JSN-SR04T mode 2/3, DFRobot A02YYUW): 4-byte frame 0xFF, H, L, SUM,
#     SUM = (0xFF + H + L) & 0xFF, distance = H*256 + L mm (vendor manuals).
# (b) Trigger/echo sensors (JSN-SR04T mode 1, HC-SR04): drivers/ultrasonic_pulse.py, its own
#     module so that a UART node does not intern its names (docs/firmware.md "Heap").
# Drivers take their UART / Pin objects and a pulse-timing callable; they never build a bus.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_HEADER = const(0xFF)
_FRAME = const(4)
_MAX_SCAN = const(64)
_POLL_MS = const(5)  # between empty polls: 40 tries cover the A02YYUW's ~100 ms output period
_BLIND_M = const(0.25)  # JSN-SR04T blind zone ~20-25 cm (calibration-reference section 3)
_MAX_M = const(4.5)  # JSN-SR04T range ~4.5-6 m (calibration-reference section 3)
_C_REF = const(343.42)  # c at 20 C from the formula below; used when no temperature is given

REASONS = ("checksum", "truncated", "timeout", "blind", "range", "bus")  # + too_few: pulse

# Declaration (docs/drivers.md "Declaration"), read on CPython by boards/drivers.py (`ast`):
# BOARD "names Class bus temp argument..." (names /-separated; bus uart, i2c or -; temp: temp
# = it gives the temperature, read first, temp_c = read(temp_c) is compensated with it, or
# -; each argument key:code[:default][:keyword]) and VALUES, the values a read returns.
# MicroPython compiles `if False:` to nothing: no heap (the node is at its 64 KB limit; one
# 34-character string here breaks its simulated day). tests/firmware/test_driver_parity.py
# checks the node's bring-up (node/board.py), the board schema, the kinds and the fakes
# against it.
if False:
    # The node's defaults: blind_m 0.03 (the A02YYUW's 3 cm), compensated by the sensor itself.
    BOARD = (
        "a02yyuw/jsn-sr04t UltrasonicUART uart temp_c blind_m:f:0.03 max_m:f:4.5 trigger:b:0"
        " compensated:b:1"
    )
    VALUES = (("distance", "m"),)


def _default_wait():
    try:
        from time import sleep_ms

        return sleep_ms
    except ImportError:
        return None


def speed_of_sound(temp_c):
    # c = 331.3 + 0.606 * T m/s (calibration-reference section 3).
    return 331.3 + 0.606 * temp_c


def parse_frame(buf):
    """Pure: 4 bytes FF H L SUM -> distance in mm; ValueError names the reason."""
    if len(buf) < _FRAME:
        raise ValueError("truncated")
    if buf[0] != _HEADER:
        raise ValueError("start")
    if (_HEADER + buf[1] + buf[2]) & 0xFF != buf[3]:  # SUM = (0xFF + H + L) & 0xFF
        raise ValueError("checksum")
    return buf[1] << 8 | buf[2]


class _Limits:
    def _init_limits(self, min_m, max_m):
        self.min_m = min_m
        self.max_m = max_m
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0
        self.last_error = None

    def _count(self, reason):
        self.errors[reason] += 1
        self.last_error = reason

    def _check(self, d):
        # Returns d, or None after counting why the reading was rejected.
        if d < self.min_m:
            return self._count("blind")
        if d > self.max_m:
            return self._count("range")
        return d


class UltrasonicUART(_Limits):
    """JSN-SR04T (mode 2/3) or A02YYUW on a UART (9600 8N1). read() -> metres or None.

    trigger=True sends 0x55 before each read (JSN-SR04T mode 3, A02YYUW controlled mode).
    compensates=False with a temperature rescales the sensor's distance, which assumed
    c_ref m/s, to the speed of sound at that temperature."""

    def __init__(
        self,
        uart,
        min_m=_BLIND_M,
        max_m=_MAX_M,
        trigger=False,
        compensates=True,
        c_ref=_C_REF,
        tries=40,
        wait_ms=None,
        check=True,
    ):
        self.uart = uart
        self.trigger = trigger
        self.compensates = compensates
        self.c_ref = c_ref
        self.tries = tries
        # Called between empty polls; None: the platform's time.sleep_ms (none on CPython).
        self._wait = wait_ms if wait_ms is not None else _default_wait()
        self._buf = bytearray(_FRAME)
        self._mv = memoryview(self._buf)
        self._readinto = getattr(uart, "readinto", None)
        self._init_limits(min_m, max_m)
        if check:
            self.init()

    def init(self):
        self.request()
        if self.read_raw() is not True:
            raise OSError(19, f"ultrasonic sensor: no valid frame on {self.uart!r}")

    def _get(self, start, end):
        if self._readinto is not None:
            return self._readinto(self._mv[start:end]) or 0
        data = self.uart.read(end - start)
        if not data:
            return 0
        self._buf[start : start + len(data)] = data
        return len(data)

    def _drain(self):
        # Continuous-output sensors queue stale frames; drop them so the reading is fresh.
        # Only what is queued now: a sensor that keeps talking cannot hold us here.
        k = min(self.uart.any(), 1024)
        while k > 0:
            got = self._get(0, min(k, _FRAME))
            if not got:
                return
            k -= got

    def read_raw(self):
        """Next frame into self._buf: True, or why not ("timeout", "truncated", "checksum")."""
        buf = self._buf
        n = 0
        empty = self.tries
        scanned = 0
        bad_sum = False
        while scanned < _MAX_SCAN:
            if n == _FRAME:
                if (_HEADER + buf[1] + buf[2]) & 0xFF == buf[3]:
                    return True
                # Bad sum: slide by one and look for the next 0xFF (L may legally be 0xFF).
                bad_sum = True
                n = 0
                for i in range(1, _FRAME):
                    if buf[i] == _HEADER:
                        for j in range(i, _FRAME):
                            buf[n] = buf[j]
                            n += 1
                        break
                continue
            got = self._get(n, n + 1 if n == 0 else _FRAME) if self.uart.any() else 0
            if not got:
                empty -= 1
                if empty <= 0:
                    if bad_sum:
                        return "checksum"
                    return "truncated" if n else "timeout"
                if self._wait is not None:
                    self._wait(_POLL_MS)
                continue
            scanned += got
            if n == 0 and buf[0] != _HEADER:
                continue
            n += got
        return "checksum" if bad_sum else "timeout"

    def request(self):
        """Drop stale frames and, for a triggered sensor, ask for a fresh one. The node calls
        this, awaits the frame's bytes (uart.any()), then read(temp_c, False), so the asyncio
        loop is not held while the sensor answers."""
        self._drain()
        if self.trigger:
            self.uart.write(b"\x55")

    def read(self, temp_c=None, fresh=True):
        try:
            if fresh:
                self.request()
            r = self.read_raw()
        except OSError:
            return self._count("bus")
        if r is not True:
            return self._count(r)
        d = (self._buf[1] << 8 | self._buf[2]) / 1000.0
        if not self.compensates and temp_c is not None:
            d = d * speed_of_sound(temp_c) / self.c_ref
        d = self._check(d)
        if d is not None:
            self.last_error = None
        return d
