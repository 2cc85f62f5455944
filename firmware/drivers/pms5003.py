# Plantower PMS5003 / PMS7003 particulate sensor over UART (9600 8N1).
# Frame layout, commands and checksum: Plantower PMS5003 data manual V2.3, appendix I/II.
# The driver takes a configured UART; it never builds one or knows a pin.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_START1 = const(0x42)  # frame start "B" (manual appendix I)
_START2 = const(0x4D)  # frame start "M"
_FRAME_LEN = const(32)  # 2 start + 2 length + 13 words + 2 checksum
_DATA_LEN = const(28)  # length field: 2 * 13 data words + 2 checksum bytes
_ACK_LEN = const(4)  # length field of the 8-byte reply the sensor sends to 0xE1/0xE4
_ACK_FRAME = const(8)
_CMD_MODE = const(0xE1)  # data 0x00 passive, 0x01 active (manual appendix II)
_CMD_READ = const(0xE2)  # read one frame in passive mode
_CMD_SLEEP = const(0xE4)  # data 0x00 sleep (fan off), 0x01 wake
_MAX_SCAN = const(512)  # bytes a single read() may inspect before giving up
_POLL_MS = const(2)  # between empty polls: 40 tries cover a 32-byte frame at 9600 baud (33 ms)

# Order of the values parse_frame() returns (words 1..12 of the frame, manual appendix I).
FIELDS = (
    # ug/m3, "CF=1, standard particle"
    "pm1_cf1",
    "pm25_cf1",
    "pm10_cf1",
    # ug/m3, "under atmospheric environment"
    "pm1_atm",
    "pm25_atm",
    "pm10_atm",
    # particles larger than 0.3, 0.5, 1.0, 2.5, 5.0, 10 um in 0.1 L of air
    "n03",
    "n05",
    "n10",
    "n25",
    "n50",
    "n100",
)

# Per-reason counters in PMS5003.errors. All but "resync" mean the read returned None;
# "resync" counts frames that were found only after skipping garbage.
REASONS = ("start", "length", "checksum", "truncated", "timeout", "bus", "resync")

# Declaration (docs/drivers.md "Declaration"), read on CPython by boards/drivers.py (`ast`):
# BOARD "names Class bus temp argument..." (names /-separated; bus uart, i2c or -; temp: temp
# = it gives the temperature, read first, temp_c = read(temp_c) is compensated with it, or
# -; each argument key:code[:default][:keyword]) and VALUES, the values a read returns.
# MicroPython compiles `if False:` to nothing: no heap (the node is at its 64 KB limit; one
# 34-character string here breaks its simulated day). tests/firmware/test_driver_parity.py
# checks the node's bring-up (node/board.py), the board schema, the kinds and the fakes
# against it.
if False:
    BOARD = "pms5003 PMS5003 uart - set_pin:h reset_pin:-o"
    VALUES = (
        ("pm1_cf1", "ug/m3"),
        ("pm25_cf1", "ug/m3"),
        ("pm10_cf1", "ug/m3"),
        ("pm1_atm", "ug/m3"),
        ("pm25_atm", "ug/m3"),
        ("pm10_atm", "ug/m3"),
        ("n03", None),  # particle counts per 0.1 L: no contract unit
        ("n05", None),
        ("n10", None),
        ("n25", None),
        ("n50", None),
        ("n100", None),
    )


def checksum(buf, n):
    # Check code = sum of all bytes before it (manual appendix I).
    s = 0
    for i in range(n):
        s += buf[i]
    return s & 0xFFFF


def command(cmd, data):
    # 7-byte host command: 42 4D CMD DATAH DATAL LRCH LRCL, LRC = byte sum (appendix II).
    b = bytearray(7)
    b[0] = _START1
    b[1] = _START2
    b[2] = cmd
    b[3] = 0
    b[4] = data
    s = checksum(b, 5)
    b[5] = s >> 8
    b[6] = s & 0xFF
    return bytes(b)


CMD_PASSIVE = command(_CMD_MODE, 0)
CMD_ACTIVE = command(_CMD_MODE, 1)
CMD_READ = command(_CMD_READ, 0)
CMD_SLEEP = command(_CMD_SLEEP, 0)
CMD_WAKE = command(_CMD_SLEEP, 1)


def _default_wait():
    try:
        from time import sleep_ms

        return sleep_ms
    except ImportError:
        return None


def parse_frame(buf):
    """Pure: 32 bytes -> tuple of 12 ints in FIELDS order; ValueError names the reason."""
    if len(buf) < _FRAME_LEN:
        raise ValueError("truncated")
    if buf[0] != _START1 or buf[1] != _START2:
        raise ValueError("start")
    if (buf[2] << 8 | buf[3]) != _DATA_LEN:
        raise ValueError("length")
    if checksum(buf, 30) != (buf[30] << 8 | buf[31]):
        raise ValueError("checksum")
    return (
        buf[4] << 8 | buf[5],
        buf[6] << 8 | buf[7],
        buf[8] << 8 | buf[9],
        buf[10] << 8 | buf[11],
        buf[12] << 8 | buf[13],
        buf[14] << 8 | buf[15],
        buf[16] << 8 | buf[17],
        buf[18] << 8 | buf[19],
        buf[20] << 8 | buf[21],
        buf[22] << 8 | buf[23],
        buf[24] << 8 | buf[25],
        buf[26] << 8 | buf[27],
    )


def as_dict(values):
    return dict(zip(FIELDS, values))


class PMS5003:
    """PMS5003/PMS7003 on a UART. read() -> 12-tuple (FIELDS order) or None; errors by reason."""

    def __init__(self, uart, passive=True, tries=40, wait_ms=None, check=True):
        self.uart = uart
        self.passive = passive
        self.tries = tries
        # Called between empty polls; None: the platform's time.sleep_ms (none on CPython).
        self._wait = wait_ms if wait_ms is not None else _default_wait()
        self._buf = bytearray(_FRAME_LEN)
        self._mv = memoryview(self._buf)
        self._readinto = getattr(uart, "readinto", None)
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0
        self.last_error = None
        self.asleep = False
        if check:
            self.init()

    def init(self):
        # Bring-up: select the mode, then insist on one valid frame.
        try:
            self._send(CMD_PASSIVE if self.passive else CMD_ACTIVE)
        except OSError as e:
            raise OSError(19, f"PMS5003 not answering on {self.uart!r} ({e})")
        if self.read() is None:
            raise OSError(19, f"PMS5003: no valid frame on {self.uart!r} ({self.last_error})")

    def _send(self, cmd):
        self.uart.write(cmd)

    def set_passive(self, passive):
        self._send(CMD_PASSIVE if passive else CMD_ACTIVE)
        self.passive = passive

    def sleep(self):
        # Fan off between readings to spare it (calibration-reference section 1).
        self._send(CMD_SLEEP)
        self.asleep = True

    def wake(self):
        # Give the airflow ~30 s to settle before trusting a reading (reference section 1).
        self._send(CMD_WAKE)
        self.asleep = False

    def _count(self, reason):
        self.errors[reason] += 1
        self.last_error = reason

    def _get(self, start, end):
        # Read up to end-start bytes into the buffer at start; returns how many arrived.
        if self._readinto is not None:
            got = self._readinto(self._mv[start:end])
            return got or 0
        data = self.uart.read(end - start)
        if not data:
            return 0
        n = len(data)
        self._buf[start : start + n] = data
        return n

    def _drain(self):
        # Only what is queued now (stale frames, acks): a chatty sensor cannot hold us here.
        k = min(self.uart.any(), 1024)
        while k > 0:
            got = self._get(0, min(k, _FRAME_LEN))
            if not got:
                return
            k -= got

    def read_raw(self):
        """Fill self._buf with the next 32-byte data frame (checksum not yet checked),
        skipping garbage and command acknowledgements. Returns True, or the reason string
        ("start", "length", "truncated", "timeout") when no frame could be framed."""
        uart = self.uart
        buf = self._buf
        n = 0
        empty = self.tries
        scanned = 0
        synced = True
        while scanned < _MAX_SCAN:
            if n >= 4:
                length = buf[2] << 8 | buf[3]
                if length == _DATA_LEN:
                    want = _FRAME_LEN
                elif length == _ACK_LEN:
                    want = _ACK_FRAME
                else:
                    return "length"
                if n >= want:
                    if want == _FRAME_LEN:
                        if not synced:
                            # Garbage was skipped before this frame: counted, not fatal.
                            self.errors["resync"] += 1
                        return True
                    n = 0  # a command acknowledgement, not data: skip it
                    continue
            else:
                want = 4 if n >= 2 else n + 1
            got = self._get(n, want) if uart.any() else 0
            if not got:
                empty -= 1
                if empty <= 0:
                    return "truncated" if n else ("timeout" if synced else "start")
                if self._wait is not None:
                    self._wait(_POLL_MS)
                continue
            scanned += got
            if n >= 2:
                n += got
            else:
                # Hunting for 42 4D one byte at a time, so no frame bytes are swallowed.
                c = buf[n]
                if n == 0:
                    if c == _START1:
                        n = 1
                    else:
                        synced = False
                elif c == _START2:
                    n = 2
                else:
                    synced = False
                    n = 1 if c == _START1 else 0
        return "start"

    def request(self):
        """Passive mode: drop stale bytes and ask for one frame (async callers: request(),
        wait ~50 ms - 32 bytes at 9600 baud take 33 ms - then read_frame())."""
        self._drain()
        self._send(CMD_READ)

    def read(self):
        """Passive: request() + read_frame(); active: the next frame in the stream."""
        try:
            if self.passive:
                self.request()
            return self._read()
        except OSError:
            return self._count("bus")

    def read_frame(self):
        """The next frame already on its way (after request()), or None (counted)."""
        try:
            return self._read()
        except OSError:
            return self._count("bus")

    def _read(self):
        r = self.read_raw()
        if r is not True:
            return self._count(r)
        try:
            values = parse_frame(self._buf)
        except ValueError as e:
            return self._count(e.args[0])
        self.last_error = None
        return values
