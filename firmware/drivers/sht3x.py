# Sensirion SHT30/SHT31/SHT35 humidity and temperature sensor on I2C (0x44, or 0x45 with ADDR
# high). Commands, timing, CRC and conversion: Sensirion SHT3x-DIS datasheet (v7, 2022).
# The driver takes a configured I2C bus; it never builds one or knows a pin.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


ADDRESSES = (0x44, 0x45)  # datasheet "I2C address" table (ADDR pin low / high)
# single shot, high repeatability, no clock stretching (single-shot command table)
_CMD_MEASURE_HI = const(b"\x24\x00")
_CMD_STATUS = const(b"\xf3\x2d")  # read status register ("Status Register" section)
_CMD_RESET = const(b"\x30\xa2")  # soft reset ("Reset" section)
MEASURE_MS = const(16)  # high repeatability max duration ~15 ms (timing table)

REASONS = ("crc", "bus")

# Declaration (docs/drivers.md "Declaration"), read on CPython by boards/drivers.py (`ast`):
# BOARD "names Class bus temp argument..." (names /-separated; bus uart, i2c or -; temp: temp
# = it gives the temperature, read first, temp_c = read(temp_c) is compensated with it, or
# -; each argument key:code[:default][:keyword]) and VALUES, the values a read returns.
# MicroPython compiles `if False:` to nothing: no heap (the node is at its 64 KB limit; one
# 34-character string here breaks its simulated day). tests/firmware/test_driver_parity.py
# checks the node's bring-up (node/board.py), the board schema, the kinds and the fakes
# against it.
if False:
    BOARD = "sht3x SHT3x i2c temp address:I:68"
    VALUES = (("temp", "Cel"), ("rh", "%RH"))


def crc8(buf, start=0, end=2):
    # CRC-8, polynomial 0x31 (x^8+x^5+x^4+1), init 0xFF, no final XOR ("Checksum Calculation").
    crc = 0xFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def convert(raw_t, raw_rh):
    # T = -45 + 175 * S_T / (2^16 - 1); RH = 100 * S_RH / (2^16 - 1) ("Conversion of Signal Output").
    return -45.0 + 175.0 * raw_t / 65535.0, 100.0 * raw_rh / 65535.0


def parse_measurement(buf):
    """Pure: 6 bytes (T msb, lsb, crc, RH msb, lsb, crc) -> (temp_c, rh_pct); ValueError."""
    if len(buf) < 6:
        raise ValueError("truncated")
    if crc8(buf, 0, 2) != buf[2] or crc8(buf, 3, 5) != buf[5]:
        raise ValueError("crc")
    return convert(buf[0] << 8 | buf[1], buf[3] << 8 | buf[4])


class SHT3x:
    """SHT3x on I2C. start() then (>= MEASURE_MS later) read_result() -> (temp_c, rh_pct) or
    None; read(sleep_ms) does both. Failures are counted in self.errors by reason."""

    def __init__(self, i2c, address=0x44, check=True):
        self.i2c = i2c
        self.address = address
        self._buf = bytearray(6)
        self._mv = memoryview(self._buf)
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0
        self.last_error = None
        if check:
            self.init()

    def init(self):
        # Bring-up: the status register answers with a valid CRC ("Status Register").
        try:
            self.i2c.writeto(self.address, _CMD_STATUS)
            self.i2c.readfrom_into(self.address, self._mv[0:3])
        except OSError as e:
            raise OSError(19, f"SHT3x not answering at I2C 0x{self.address:02x} ({e})")
        if crc8(self._buf, 0, 2) != self._buf[2]:
            raise OSError(5, f"SHT3x at I2C 0x{self.address:02x}: bad CRC on status register")

    def reset(self):
        self.i2c.writeto(self.address, _CMD_RESET)

    def _count(self, reason):
        self.errors[reason] += 1
        self.last_error = reason

    def start(self):
        """Start one measurement; returns False (and counts) if the bus failed."""
        try:
            self.i2c.writeto(self.address, _CMD_MEASURE_HI)
        except OSError:
            self._count("bus")
            return False
        return True

    def read_raw(self):
        # Raw 6 bytes into the pre-allocated buffer; OSError (NACK while busy) propagates.
        self.i2c.readfrom_into(self.address, self._buf)
        return self._buf

    def read_result(self):
        try:
            buf = self.read_raw()
        except OSError:
            return self._count("bus")
        try:
            value = parse_measurement(buf)
        except ValueError as e:
            return self._count(e.args[0])
        self.last_error = None
        return value

    def read(self, sleep_ms):
        """Blocking: start, wait MEASURE_MS with the given sleep_ms callable, read."""
        if not self.start():
            return None
        sleep_ms(MEASURE_MS)
        return self.read_result()
