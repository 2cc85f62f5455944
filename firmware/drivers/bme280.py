# Bosch BME280 temperature / humidity / pressure sensor on I2C (0x76, or 0x77 with SDO high).
# Registers, trimming layout and the floating-point compensation: Bosch BME280 datasheet
# BST-BME280-DS002 (rev 1.23), sections 4.2.2, 5.3, 5.4 and 8.1.
# The driver takes a configured I2C bus; it never builds one or knows a pin.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


ADDRESSES = (0x76, 0x77)
_REG_CHIP_ID = const(0xD0)
CHIP_ID = const(0x60)  # BME280 (a BMP280 reads 0x58) - table 18
_REG_RESET = const(0xE0)
_REG_CALIB_TP = const(0x88)  # 0x88..0xA1: T1..T3, P1..P9 (little-endian), 0xA0 unused, H1
_REG_CALIB_H = const(0xE1)  # 0xE1..0xE7: H2..H6 (table 16)
_REG_CTRL_HUM = const(0xF2)  # osrs_h[2:0]; takes effect after a write to ctrl_meas (5.4.3)
_REG_STATUS = const(0xF3)  # bit3 measuring, bit0 im_update
_REG_CTRL_MEAS = const(0xF4)  # osrs_t[7:5] osrs_p[4:2] mode[1:0]
_REG_DATA = const(0xF7)  # press[19:0], temp[19:0], hum[15:0], 8 bytes big-endian
_CTRL_HUM_X1 = const(0x01)
_CTRL_MEAS_FORCED_X1 = const(0x25)  # osrs_t x1 (001), osrs_p x1 (001), forced mode (01)
MEASURE_MS = const(10)  # t_measure,max for x1/x1/x1 = 9.3 ms (datasheet section 9.1)
_SKIPPED20 = const(0x80000)  # value of a skipped/not-yet-measured 20-bit channel
_SKIPPED16 = const(0x8000)

REASONS = ("skipped", "bus")

# Declaration (docs/drivers.md "Declaration"), read on CPython by boards/drivers.py (`ast`):
# BOARD "names Class bus temp argument..." (names /-separated; bus uart, i2c or -; temp: temp
# = it gives the temperature, read first, temp_c = read(temp_c) is compensated with it, or
# -; each argument key:code[:default][:keyword]) and VALUES, the values a read returns.
# MicroPython compiles `if False:` to nothing: no heap (the node is at its 64 KB limit; one
# 34-character string here breaks its simulated day). tests/firmware/test_driver_parity.py
# checks the node's bring-up (node/board.py), the board schema, the kinds and the fakes
# against it.
if False:
    BOARD = "bme280 BME280 i2c temp address:I:118"
    VALUES = (("temp", "Cel"), ("rh", "%RH"), ("pressure", "kPa"))


def _s16(v):
    return v - 65536 if v & 0x8000 else v


def _s12(v):
    return v - 4096 if v & 0x800 else v


def parse_trim(tp, h):
    """Pure: 26 bytes from 0x88 and 7 bytes from 0xE1 -> trimming tuple
    (T1, T2, T3, P1..P9, H1..H6) (datasheet table 16)."""
    w = [tp[2 * i] | tp[2 * i + 1] << 8 for i in range(12)]
    return (
        w[0],
        _s16(w[1]),
        _s16(w[2]),
        w[3],
        _s16(w[4]),
        _s16(w[5]),
        _s16(w[6]),
        _s16(w[7]),
        _s16(w[8]),
        _s16(w[9]),
        _s16(w[10]),
        _s16(w[11]),
        tp[25],  # H1 u8 at 0xA1
        _s16(h[0] | h[1] << 8),  # H2 s16 at 0xE1/0xE2
        h[2],  # H3 u8 at 0xE3
        _s12(h[3] << 4 | (h[4] & 0x0F)),  # H4 = 0xE4[7:0] << 4 | 0xE5[3:0]
        _s12(h[5] << 4 | h[4] >> 4),  # H5 = 0xE6[7:0] << 4 | 0xE5[7:4]
        h[6] - 256 if h[6] & 0x80 else h[6],  # H6 s8 at 0xE7
    )


def parse_data(buf):
    """Pure: 8 bytes from 0xF7 -> (adc_p, adc_t, adc_h)."""
    return (
        buf[0] << 12 | buf[1] << 4 | buf[2] >> 4,
        buf[3] << 12 | buf[4] << 4 | buf[5] >> 4,
        buf[6] << 8 | buf[7],
    )


def compensate_t(adc_t, trim):
    """Datasheet 8.1: returns (temp_c, t_fine)."""
    t1 = trim[0]
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * trim[1]
    x = adc_t / 131072.0 - t1 / 8192.0
    var2 = x * x * trim[2]
    t_fine = var1 + var2
    return t_fine / 5120.0, t_fine


def compensate_p(adc_p, t_fine, trim):
    """Datasheet 8.1: pressure in Pa (0.0 if the trimming would divide by zero)."""
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = trim[3:12]
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0
    var2 = var2 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    if var1 == 0.0:
        return 0.0  # avoid division by zero (datasheet)
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = p9 * p * p / 2147483648.0
    var2 = p * p8 / 32768.0
    return p + (var1 + var2 + p7) / 16.0


def compensate_h(adc_h, t_fine, trim):
    """Datasheet 8.1: relative humidity in %, clamped to 0..100."""
    h1, h2, h3, h4, h5, h6 = trim[12:18]
    h = t_fine - 76800.0
    h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * h)) * (
        h2 / 65536.0 * (1.0 + h6 / 67108864.0 * h * (1.0 + h3 / 67108864.0 * h))
    )
    h = h * (1.0 - h1 * h / 524288.0)
    if h > 100.0:
        return 100.0
    if h < 0.0:
        return 0.0
    return h


def compensate(adc_p, adc_t, adc_h, trim):
    """Pure: raw ADC values -> (temp_c, rh_pct, pressure_hpa)."""
    t, t_fine = compensate_t(adc_t, trim)
    return t, compensate_h(adc_h, t_fine, trim), compensate_p(adc_p, t_fine, trim) / 100.0


class BME280:
    """BME280 on I2C in forced mode, oversampling x1 (datasheet 3.5.1 "weather monitoring").
    start(), then >= MEASURE_MS later read_result() -> (temp_c, rh_pct, pressure_hpa) or None;
    read(sleep_ms) does both. Failures are counted in self.errors by reason."""

    def __init__(self, i2c, address=0x76, check=True):
        self.i2c = i2c
        self.address = address
        self._buf = bytearray(8)
        self.trim = None
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0
        self.last_error = None
        if check:
            self.init()

    def init(self):
        a = self.address
        try:
            cid = self.i2c.readfrom_mem(a, _REG_CHIP_ID, 1)[0]
        except OSError as e:
            raise OSError(19, f"BME280 not answering at I2C 0x{a:02x} ({e})")
        if cid != CHIP_ID:
            raise OSError(19, f"BME280 at I2C 0x{a:02x}: chip id 0x{cid:02x}, want 0x60")
        self.trim = parse_trim(
            self.i2c.readfrom_mem(a, _REG_CALIB_TP, 26), self.i2c.readfrom_mem(a, _REG_CALIB_H, 7)
        )

    def _count(self, reason):
        self.errors[reason] += 1
        self.last_error = reason

    def start(self):
        """Trigger one forced-mode conversion; False (counted) if the bus failed."""
        try:
            self.i2c.writeto_mem(self.address, _REG_CTRL_HUM, b"\x01")
            self.i2c.writeto_mem(self.address, _REG_CTRL_MEAS, b"\x25")
        except OSError:
            self._count("bus")
            return False
        return True

    def read_raw(self):
        self.i2c.readfrom_mem_into(self.address, _REG_DATA, self._buf)
        return parse_data(self._buf)

    def read_result(self):
        try:
            if self.trim is None:
                self.init()
            adc_p, adc_t, adc_h = self.read_raw()
        except OSError:
            return self._count("bus")
        if adc_t == _SKIPPED20 or adc_p == _SKIPPED20 or adc_h == _SKIPPED16:
            return self._count("skipped")
        self.last_error = None
        return compensate(adc_p, adc_t, adc_h, self.trim)

    def read(self, sleep_ms):
        if not self.start():
            return None
        sleep_ms(MEASURE_MS)
        return self.read_result()
