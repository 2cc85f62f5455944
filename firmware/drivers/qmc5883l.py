# QST QMC5883L 3-axis magnetometer on I2C (fixed address 0x0D), used for parking bays.
# Registers and bits: QST QMC5883L datasheet (2016), "Register Map" section.
# The driver takes a configured I2C bus; it never builds one or knows a pin.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


ADDRESS = const(0x0D)
_REG_DATA = const(0x00)  # X LSB, X MSB, Y LSB, Y MSB, Z LSB, Z MSB (little-endian int16)
_REG_STATUS = const(0x06)  # bit0 DRDY, bit1 OVL, bit2 DOR
_REG_CTRL1 = const(0x09)  # OSR[7:6] RNG[5:4] ODR[3:2] MODE[1:0]
_REG_CTRL2 = const(0x0A)  # bit7 SOFT_RST, bit6 ROL_PNT, bit0 INT_ENB
_REG_SET_RESET = const(0x0B)  # SET/RESET period; datasheet recommends 0x01
_REG_CHIP_ID = const(0x0D)  # reads 0xFF
CHIP_ID = const(0xFF)
STATUS_DRDY = const(0x01)
STATUS_OVL = const(0x02)
STATUS_DOR = const(0x04)
# OSR 512 (00), RNG +-2 G (00, calibration-reference section 4), ODR 50 Hz (01), continuous (01).
CTRL1_DEFAULT = const(0x05)
LSB_PER_GAUSS = const(12000)  # +-2 G range sensitivity (datasheet specifications)
UT_PER_GAUSS = const(100)  # 1 G = 100 uT

REASONS = ("overflow", "not_ready", "bus")

# Declaration (docs/drivers.md "Declaration"), read on CPython by boards/drivers.py (`ast`):
# BOARD "names Class bus temp argument..." (names /-separated; bus uart, i2c or -; temp: temp
# = it gives the temperature, read first, temp_c = read(temp_c) is compensated with it, or
# -; each argument key:code[:default][:keyword]) and VALUES, the values a read returns.
# MicroPython compiles `if False:` to nothing: no heap (the node is at its 64 KB limit; one
# 34-character string here breaks its simulated day). tests/firmware/test_driver_parity.py
# checks the node's bring-up (node/board.py), the board schema, the kinds and the fakes
# against it.
if False:
    BOARD = "qmc5883l QMC5883L i2c - address:I:13"
    VALUES = (("x", "uT"), ("y", "uT"), ("z", "uT"))


def _s16(lo, hi):
    v = hi << 8 | lo
    return v - 65536 if v & 0x8000 else v


def parse_data(buf):
    """Pure: 6 data bytes -> raw (x, y, z) int16 counts."""
    if len(buf) < 6:
        raise ValueError("truncated")
    return _s16(buf[0], buf[1]), _s16(buf[2], buf[3]), _s16(buf[4], buf[5])


def counts_to_ut(raw):
    # +-2 G: 12000 LSB/G, x 100 uT/G.
    return raw * UT_PER_GAUSS / LSB_PER_GAUSS


class QMC5883L:
    """QMC5883L on I2C. read() -> (x_ut, y_ut, z_ut) or None; overflow and bus errors are
    counted in self.errors, never returned as a value."""

    def __init__(self, i2c, address=ADDRESS, check=True):
        self.i2c = i2c
        self.address = address
        self._buf = bytearray(6)
        self._status = bytearray(1)
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0
        self.last_error = None
        if check:
            self.init()

    def init(self):
        a = self.address
        try:
            self.i2c.readfrom_mem_into(a, _REG_CHIP_ID, self._status)
        except OSError as e:
            raise OSError(19, f"QMC5883L not answering at I2C 0x{a:02x} ({e})")
        if self._status[0] != CHIP_ID:
            raise OSError(
                19, f"QMC5883L at I2C 0x{a:02x}: chip id 0x{self._status[0]:02x}, want 0xff"
            )
        self.i2c.writeto_mem(a, _REG_SET_RESET, b"\x01")  # datasheet: "recommended 0x01"
        self.i2c.writeto_mem(a, _REG_CTRL2, b"\x00")  # no interrupt pin, no pointer roll-over
        self.i2c.writeto_mem(a, _REG_CTRL1, bytes((CTRL1_DEFAULT,)))

    def _count(self, reason):
        self.errors[reason] += 1
        self.last_error = reason

    def read_raw(self):
        """Status byte then the 6 data bytes (reading data clears DRDY, so status first).
        Returns the status; the data stays in self._buf. OSError propagates."""
        self.i2c.readfrom_mem_into(self.address, _REG_STATUS, self._status)
        st = self._status[0]
        if st & STATUS_DRDY:
            self.i2c.readfrom_mem_into(self.address, _REG_DATA, self._buf)
        return st

    def read(self):
        try:
            st = self.read_raw()
        except OSError:
            return self._count("bus")
        if not st & STATUS_DRDY:
            return self._count("not_ready")
        if st & STATUS_OVL:
            # Some axis exceeded the +-2 G range: the data is not a field value.
            return self._count("overflow")
        x, y, z = parse_data(self._buf)
        self.last_error = None
        return counts_to_ut(x), counts_to_ut(y), counts_to_ut(z)
