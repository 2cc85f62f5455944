# Byte-level fake sensors for the simulated board (MicroPython, also importable by CPython).
#
# Each fake speaks its chip's real protocol (frames, checksums, CRCs, registers) and takes
# physical values from a `source` callable returning a dict, so the real drivers in
# firmware/drivers run unchanged against them:
#   UART fakes:  write(buf), read(n), readinto(buf[, n]), any()
#   I2C fakes:   on_write(buf), on_read(n)   (see docs/architecture.md, "Simulated buses")
#   ADC fakes:   read_u16(), read_uv(), read()
# Faults for tests: fake.inject(kind, count=1) (count=None: until fake.clear()).

_PMS_START = b"\x42\x4d"


def _u16(buf, i, v):
    v = int(v)
    if v < 0:
        v = 0
    elif v > 0xFFFF:
        v = 0xFFFF
    buf[i] = v >> 8
    buf[i + 1] = v & 0xFF


class _Faults:
    """Fault injection shared by every fake; faults are consumed one per frame/transaction."""

    def _init_faults(self, seed):
        self.fault = None
        self._fault_left = 0
        self._rng = (seed & 0xFFFFFFFF) or 1
        self.injected = {}  # kind -> how many times the fault actually fired

    def inject(self, kind, count=1):
        self.fault = kind
        self._fault_left = count

    def clear(self):
        self.fault = None
        self._fault_left = 0

    def _take(self, kinds=None):
        # The active fault if it applies here (kinds: the ones this call site honours).
        kind = self.fault
        if kind is None or (kinds is not None and kind not in kinds):
            return None
        if self._fault_left is not None:
            self._fault_left -= 1
            if self._fault_left <= 0:
                self.fault = None
        self.injected[kind] = self.injected.get(kind, 0) + 1
        return kind

    def _rand8(self):
        # xorshift32: the same sequence on CPython and MicroPython for a given seed.
        x = self._rng
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._rng = x
        return x & 0xFF


class _UARTFake(_Faults):
    """Output queue + the UART read API; subclasses fill it from _pump()."""

    def _init_uart(self, seed):
        self._init_faults(seed)
        self._out = bytearray()
        self._rx = bytearray()

    def _pump(self):
        pass

    def any(self):
        self._pump()
        return len(self._out)

    def read(self, n=None):
        self._pump()
        out = self._out
        if not out:
            return None  # machine.UART.read returns None on timeout
        if n is None or n > len(out):
            n = len(out)
        data = bytes(out[:n])
        out[:n] = b""
        return data

    def readinto(self, buf, nbytes=None):
        self._pump()
        out = self._out
        n = len(buf) if nbytes is None else nbytes
        n = min(n, len(out))
        if not n:
            return None
        buf[0:n] = out[:n]
        out[:n] = b""
        return n

    def _queue(self, data):
        if len(self._out) < 1024:  # ESP32 UART RX buffer: the oldest data is kept, rest lost
            self._out.extend(data)


class FakePMS5003(_UARTFake):
    """Plantower PMS5003 on a UART. source() -> {"pm1", "pm25", "pm10"} ug/m3 (atmospheric
    channel; optional "pm1_cf1", "pm25_cf1", "pm10_cf1" and counts "n03".."n100").

    Passive mode: one frame per 0xE2 read request. Active mode: one frame per period_s of
    clock() seconds, or (no clock) a frame whenever the queue is empty. No output asleep.
    Faults: "checksum", "garbage", "truncated", "length", "start", "stop"."""

    FAULTS = ("checksum", "garbage", "truncated", "length", "start", "stop")

    def __init__(self, source, clock=None, passive=False, period_s=1.0, seed=1):
        self.source = source
        self.clock = clock
        self.passive = passive
        self.period_s = period_s
        self.asleep = False
        self.frames = 0  # data frames put on the wire
        self.commands = []  # (cmd, data) of the last 16 valid host commands, oldest first
        self._next_t = None
        self._init_uart(seed)

    # -- host -> sensor ------------------------------------------------------------
    def write(self, buf):
        rx = self._rx
        rx.extend(buf)
        while len(rx) >= 7:
            if rx[0] != 0x42 or rx[1] != 0x4D:
                rx[0:1] = b""
                continue
            s = 0
            for i in range(5):
                s += rx[i]
            if (rx[5] << 8 | rx[6]) != s & 0xFFFF:
                rx[0:1] = b""  # the sensor ignores a command with a bad check code
                continue
            self._command(rx[2], rx[4])
            rx[0:7] = b""
        return len(buf)

    def _ack(self, cmd, data):
        # Reply seen from real PMS5003s to 0xE1/0xE4: 42 4D 00 04 CMD DATA CHK.
        if self.fault == "stop":
            return
        b = bytearray(b"\x42\x4d\x00\x04\x00\x00\x00\x00")
        b[4] = cmd
        b[5] = data
        s = 0
        for i in range(6):
            s += b[i]
        _u16(b, 6, s)
        self._queue(b)

    def _command(self, cmd, data):
        self.commands.append((cmd, data))
        if len(self.commands) > 16:
            self.commands.pop(0)
        if cmd == 0xE4:
            if data == 0:
                if not self.asleep:
                    self._ack(cmd, data)
                self.asleep = True
                self._out[:] = b""
            else:
                self.asleep = False
                self._next_t = None
        elif self.asleep:
            return
        elif cmd == 0xE1:
            self.passive = data == 0
            self._ack(cmd, data)
            self._next_t = None
        elif cmd == 0xE2 and self.passive:
            self._send_frame()

    # -- sensor -> host ------------------------------------------------------------
    def _pump(self):
        if self.passive or self.asleep:
            return
        if self.clock is None:
            if not self._out:
                self._send_frame()
            return
        t = self.clock()
        if self._next_t is None:
            self._next_t = t + self.period_s
            return
        k = 0
        while t >= self._next_t and k < 8:
            self._send_frame()
            self._next_t += self.period_s
            k += 1
        if t >= self._next_t:
            self._next_t = t + self.period_s

    def frame(self):
        """A valid 32-byte frame for the current source values."""
        v = self.source()
        pm1 = v.get("pm1", 0.0)
        pm25 = v.get("pm25", 0.0)
        pm10 = v.get("pm10", 0.0)
        b = bytearray(32)
        b[0] = 0x42
        b[1] = 0x4D
        b[3] = 28
        words = (
            v.get("pm1_cf1", pm1),
            v.get("pm25_cf1", pm25),
            v.get("pm10_cf1", pm10),
            pm1,
            pm25,
            pm10,
            # Particle counts per 0.1 L: a plausible spread, not a physical model.
            v.get("n03", pm1 * 150),
            v.get("n05", pm1 * 45),
            v.get("n10", pm25 * 8),
            v.get("n25", pm25),
            v.get("n50", pm10 * 0.2),
            v.get("n100", pm10 * 0.05),
            0x9700,  # reserved word: version 0x97, error code 0 as real units report
        )
        for i in range(13):
            _u16(b, 4 + 2 * i, round(words[i]))
        s = 0
        for i in range(30):
            s += b[i]
        _u16(b, 30, s)
        return b

    def _send_frame(self):
        kind = self._take(self.FAULTS)
        if kind == "stop":
            return
        b = self.frame()
        self.frames += 1
        if kind == "checksum":
            b[31] ^= 0x5A
        elif kind == "length":
            b[3] = 29
            s = 0
            for i in range(30):
                s += b[i]
            _u16(b, 30, s)
        elif kind == "start":
            b[1] = 0x4E
        elif kind == "truncated":
            b = b[:20]
        elif kind == "garbage":
            g = bytearray(9)
            for i in range(9):
                g[i] = self._rand8()
            self._queue(g)
        self._queue(b)


class FakeUltrasonicUART(_UARTFake):
    """JSN-SR04T (mode 2/3) / A02YYUW: frames FF H L SUM with distance in mm.
    source() -> {"distance_m"}. Output: one frame per 0x55 trigger byte; and, when
    continuous, one per period_s of clock() (no clock: whenever the queue is empty).
    Faults: "checksum", "garbage", "truncated", "stop"."""

    FAULTS = ("checksum", "garbage", "truncated", "stop")

    def __init__(self, source, clock=None, continuous=True, period_s=0.1, seed=2):
        self.source = source
        self.clock = clock
        self.continuous = continuous
        self.period_s = period_s
        self.frames = 0
        self._next_t = None
        self._init_uart(seed)

    def write(self, buf):
        for c in buf:
            if c == 0x55:  # trigger byte (JSN-SR04T mode 3, A02YYUW controlled output)
                self._send_frame()
        return len(buf)

    def _pump(self):
        if not self.continuous:
            return
        if self.clock is None:
            if not self._out:
                self._send_frame()
            return
        t = self.clock()
        if self._next_t is None:
            self._next_t = t
        k = 0
        while t >= self._next_t and k < 16:
            self._send_frame()
            self._next_t += self.period_s
            k += 1
        if t >= self._next_t:
            self._next_t = t + self.period_s

    def frame(self):
        mm = round(self.source()["distance_m"] * 1000)
        if mm < 0:
            mm = 0
        elif mm > 0xFFFF:
            mm = 0xFFFF
        b = bytearray(4)
        b[0] = 0xFF
        b[1] = mm >> 8
        b[2] = mm & 0xFF
        b[3] = (0xFF + b[1] + b[2]) & 0xFF
        return b

    def _send_frame(self):
        kind = self._take(self.FAULTS)
        if kind == "stop":
            return
        b = self.frame()
        self.frames += 1
        if kind == "checksum":
            b[3] ^= 0x21
        elif kind == "truncated":
            b = b[:2]
        elif kind == "garbage":
            g = bytearray(5)
            for i in range(5):
                g[i] = self._rand8()
            self._queue(g)
        self._queue(b)


class FakePin:
    """A GPIO pin that records its level (for the trigger) and counts rising edges."""

    def __init__(self, level=0):
        self.level = level
        self.rising = 0

    def value(self, v=None):
        if v is None:
            return self.level
        v = 1 if v else 0
        if v and not self.level:
            self.rising += 1
        self.level = v
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    __call__ = value


class FakeRanger(_Faults):
    """Trigger/echo ultrasonic sensor (JSN-SR04T mode 1, HC-SR04). source() ->
    {"distance_m", "temp"}; echo time = 2 d / c, c = 331.3 + 0.606 T (calibration-reference
    section 3). Use .trigger and .echo as the driver's pins and .pulse_us in place of
    machine.time_pulse_us. Faults: "timeout" (-2: no echo started), "stop" (same, meant
    persistent), "near" (a close echo off the canal wall, in the blind zone)."""

    FAULTS = ("timeout", "stop", "near")

    def __init__(self, source, seed=3):
        self.source = source
        self.trigger = FakePin()
        self.echo = FakePin()
        self._seen = 0
        self.pings = 0
        self._init_faults(seed)

    def echo_us(self):
        v = self.source()
        c = 331.3 + 0.606 * v.get("temp", 20.0)
        return 2.0 * v["distance_m"] / c * 1e6

    def pulse_us(self, pin, level, timeout_us):
        # machine.time_pulse_us: -2 if the pulse never started, -1 if it outlasted timeout_us.
        if pin is not self.echo or level != 1:
            return -2
        if self.trigger.rising == self._seen or self.trigger.level:
            return -2  # no completed trigger pulse since the last echo
        self._seen = self.trigger.rising
        self.pings += 1
        kind = self._take(self.FAULTS)
        if kind == "timeout" or kind == "stop":
            return -2
        if kind == "near":
            return int(2.0 * 0.08 / 343.4 * 1e6)
        t = round(self.echo_us())
        if t > timeout_us:
            return -1
        return t


class FakeADC(_Faults):
    """An ESP32 ADC channel behind a divider. source() -> {key: volts before the divider};
    the pin sees volts / divider, clipped to 0..full_scale_v (11 dB attenuation ~3.3 V).
    Faults: "open" (reads 0 V: broken wire), "rail" (reads full scale)."""

    FAULTS = ("open", "rail")

    def __init__(self, source, divider=1.0, key="volts", full_scale_v=3.3, seed=4):
        self.source = source
        self.divider = divider
        self.key = key
        self.full_scale_v = full_scale_v
        self._init_faults(seed)

    def pin_volts(self):
        kind = self._take(self.FAULTS)
        if kind == "open":
            return 0.0
        if kind == "rail":
            return self.full_scale_v
        v = self.source()[self.key] / self.divider
        if v < 0:
            return 0.0
        if v > self.full_scale_v:
            return self.full_scale_v
        return v

    def read_uv(self):
        return round(self.pin_volts() * 1e6)

    def read_u16(self):
        return round(self.pin_volts() / self.full_scale_v * 65535)

    def read(self):
        return self.read_u16() >> 4  # 12-bit, as the ESP32 port's ADC.read()


class I2CBus:
    """A minimal machine.I2C over fake devices (address -> object with on_write/on_read),
    for tests that run without simboard's machine.py. Absent address -> OSError(19)."""

    def __init__(self, devices=None):
        self.devices = dict(devices or {})

    def _dev(self, addr):
        d = self.devices.get(addr)
        if d is None:
            raise OSError(19)  # ENODEV, as an ESP32 reports a NACKed address
        return d

    def scan(self):
        return sorted(self.devices)

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).on_write(bytes(buf))
        return len(buf)

    def readfrom(self, addr, n, stop=True):
        return bytes(self._dev(addr).on_read(n))

    def readfrom_into(self, addr, buf, stop=True):
        buf[0 : len(buf)] = self._dev(addr).on_read(len(buf))

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        b = bytearray(1 + len(buf))
        b[0] = reg
        b[1:] = buf
        self._dev(addr).on_write(bytes(b))

    def readfrom_mem(self, addr, reg, n, addrsize=8):
        d = self._dev(addr)
        d.on_write(bytes((reg,)))
        return bytes(d.on_read(n))

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        d = self._dev(addr)
        d.on_write(bytes((reg,)))
        buf[0 : len(buf)] = d.on_read(len(buf))


def _sht_crc(b0, b1):
    # Sensirion CRC-8: poly 0x31, init 0xFF (SHT3x datasheet "Checksum Calculation").
    crc = 0xFF
    for c in (b0, b1):
        crc ^= c
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class FakeSHT3x(_Faults):
    """Sensirion SHT3x: command-based I2C device. source() -> {"temp", "rh"}.
    Commands: 0x2400 / 0x2C06 measure, 0xF32D status, 0x30A2 reset. Reading before a
    measurement NACKs (OSError(19)). Faults: "crc", "garbage", "stop"."""

    FAULTS = ("crc", "garbage", "stop")

    def __init__(self, source, seed=5):
        self.source = source
        self.measurements = 0
        self._pending = None
        self._init_faults(seed)

    def _word(self, out, v):
        out.append(v >> 8)
        out.append(v & 0xFF)
        out.append(_sht_crc(v >> 8, v & 0xFF))

    def on_write(self, buf):
        if self.fault == "stop":
            self._take()
            raise OSError(19)
        if len(buf) < 2:
            return
        cmd = buf[0] << 8 | buf[1]
        out = bytearray()
        if cmd in (0x2400, 0x2C06):
            v = self.source()
            # Inverse of T = -45 + 175 S/65535, RH = 100 S/65535 (SHT3x datasheet "Conversion of Signal Output").
            st = round((v["temp"] + 45.0) * 65535.0 / 175.0)
            srh = round(v["rh"] * 65535.0 / 100.0)
            self._word(out, max(0, min(65535, st)))
            self._word(out, max(0, min(65535, srh)))
            self.measurements += 1
        elif cmd == 0xF32D:
            self._word(out, 0x8010)  # alert pending + reset detected, as after power-up
        elif cmd == 0x30A2:
            self._pending = None
            return
        else:
            return
        self._pending = out

    def on_read(self, n):
        if self.fault == "stop":
            self._take()
            raise OSError(19)
        out = self._pending
        if out is None:
            raise OSError(19)  # no data ready: the sensor NACKs its read header
        self._pending = None
        kind = self._take(("crc", "garbage"))
        if kind == "crc":
            out[2] ^= 0x01
        elif kind == "garbage":
            for i in range(len(out)):
                out[i] = self._rand8()
        while len(out) < n:
            out.append(0xFF)  # clocking past the data reads 0xFF
        return bytes(out[:n])


class _RegisterDevice(_Faults):
    """Register-map I2C device: first written byte sets the pointer, the rest write
    registers; reads auto-increment. Fault "stop": every transaction raises OSError(19)."""

    def _init_regs(self, size, seed):
        self.regs = bytearray(size)
        self.ptr = 0
        self._init_faults(seed)

    def _stopped(self):
        if self.fault == "stop":
            self._take()
            raise OSError(19)

    def on_write(self, buf):
        self._stopped()
        if not buf:
            return
        self.ptr = buf[0]
        for i in range(1, len(buf)):
            self._write_reg(self.ptr, buf[i])
            self.ptr = (self.ptr + 1) % len(self.regs)

    def _write_reg(self, reg, value):
        self.regs[reg] = value

    def _before_read(self, reg, n):
        pass

    def _after_read(self, reg, n):
        pass

    def on_read(self, n):
        self._stopped()
        start = self.ptr
        self._before_read(start, n)
        size = len(self.regs)
        out = bytearray(n)
        for i in range(n):
            out[i] = self.regs[(start + i) % size]
        self.ptr = (start + n) % size
        self._after_read(start, n)
        return bytes(out)


class FakeQMC5883L(_RegisterDevice):
    """QST QMC5883L at 0x0D. source() -> {"x", "y", "z"} in uT. Continuous mode: a read of
    the status register (0x06) takes a new sample and sets DRDY; reading data clears it.
    Fields beyond +-2 G set OVL (datasheet "Register Map"). Faults: "overflow", "not_ready",
    "stop"."""

    FAULTS = ("overflow", "not_ready")

    def __init__(self, source, seed=6):
        self.source = source
        self.samples = 0
        self._init_regs(0x0E, seed)
        self.regs[0x0D] = 0xFF  # chip id

    def _write_reg(self, reg, value):
        if reg == 0x0A and value & 0x80:  # SOFT_RST: registers to defaults
            for i in range(0x0D):
                self.regs[i] = 0
            return
        if reg in (0x09, 0x0A, 0x0B):
            self.regs[reg] = value

    def _sample(self):
        v = self.source()
        ctrl = self.regs[0x09]
        lsb_per_g = 3000 if (ctrl >> 4) & 0x03 == 1 else 12000  # RNG 01 = +-8 G, else +-2 G
        status = 0x01
        for i, k in enumerate(("x", "y", "z")):
            raw = round(v[k] / 100.0 * lsb_per_g)  # 1 G = 100 uT
            if raw > 32767 or raw < -32768:
                status |= 0x02  # OVL
                raw = 32767 if raw > 0 else -32768
            raw &= 0xFFFF
            self.regs[2 * i] = raw & 0xFF
            self.regs[2 * i + 1] = raw >> 8
        kind = self._take(self.FAULTS)
        if kind == "overflow":
            status |= 0x02
        elif kind == "not_ready":
            status = 0
        if self.regs[0x06] & 0x01 and status & 0x01:
            status |= 0x04  # DOR: the previous sample was never read
        self.regs[0x06] = status
        self.samples += 1

    def _before_read(self, reg, n):
        continuous = self.regs[0x09] & 0x03 == 0x01
        if reg == 0x06 and continuous:
            self._sample()

    def _after_read(self, reg, n):
        if reg < 0x06:
            self.regs[0x06] &= ~0x05 & 0xFF  # reading data clears DRDY and DOR


# BME280 trimming values used by the fake: the worked example of the Bosch BMP280
# datasheet ("Calculating pressure and temperature") for T and P, and values read from a real BME280 for humidity.
BME280_TRIM = {
    "T1": 27504,
    "T2": 26435,
    "T3": -1000,
    "P1": 36477,
    "P2": -10685,
    "P3": 3024,
    "P4": 2855,
    "P5": 140,
    "P6": -7,
    "P7": 15500,
    "P8": -14600,
    "P9": 6000,
    "H1": 75,
    "H2": 362,
    "H3": 0,
    "H4": 313,
    "H5": 50,
    "H6": 30,
}


def _bme_t_fine(adc_t, c):
    # Bosch BME280 datasheet section 4.2.3, 32-bit integer compensation.
    var1 = (((adc_t >> 3) - (c["T1"] << 1)) * c["T2"]) >> 11
    x = (adc_t >> 4) - c["T1"]
    var2 = (((x * x) >> 12) * c["T3"]) >> 14
    return var1 + var2


def _bme_p(adc_p, t_fine, c):
    # Bosch BME280 datasheet section 4.2.3, 64-bit integer pressure; result in Pa * 256.
    var1 = t_fine - 128000
    var2 = var1 * var1 * c["P6"]
    var2 = var2 + ((var1 * c["P5"]) << 17)
    var2 = var2 + (c["P4"] << 35)
    var1 = ((var1 * var1 * c["P3"]) >> 8) + ((var1 * c["P2"]) << 12)
    var1 = (((1 << 47) + var1) * c["P1"]) >> 33
    if var1 == 0:
        return 0
    p = 1048576 - adc_p
    p = (((p << 31) - var2) * 3125) // var1
    var1 = (c["P9"] * (p >> 13) * (p >> 13)) >> 25
    var2 = (c["P8"] * p) >> 19
    return ((p + var1 + var2) >> 8) + (c["P7"] << 4)


def _bme_h(adc_h, t_fine, c):
    # Bosch BME280 datasheet section 4.2.3, 32-bit integer humidity; result in %RH * 1024.
    v = t_fine - 76800
    v = ((((adc_h << 14) - (c["H4"] << 20) - (c["H5"] * v)) + 16384) >> 15) * (
        (
            (((((v * c["H6"]) >> 10) * (((v * c["H3"]) >> 11) + 32768)) >> 10) + 2097152) * c["H2"]
            + 8192
        )
        >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c["H1"]) >> 4)
    v = max(v, 0)
    v = min(v, 419430400)
    return v >> 12


def _bisect(f, target, lo, hi, rising):
    # Smallest raw value whose compensated output reaches target (f monotonic).
    while lo < hi:
        mid = (lo + hi) >> 1
        y = f(mid)
        if (y < target) if rising else (y > target):
            lo = mid + 1
        else:
            hi = mid
    return lo


class FakeBME280(_RegisterDevice):
    """Bosch BME280 at 0x76/0x77. source() -> {"temp" C, "rh" %, "pressure" hPa}.
    A forced-mode write to ctrl_meas (0xF4) measures at once and returns to sleep; raw values
    are found by inverting the datasheet's integer compensation. Faults: "stop", "skipped"
    (data registers hold the 0x80000 "skipped" pattern), "chip_id" (wrong id)."""

    FAULTS = ("skipped",)

    def __init__(self, source, trim=None, seed=7):
        self.source = source
        self.trim = dict(BME280_TRIM if trim is None else trim)
        self.measurements = 0
        self._init_regs(0x100, seed)
        self._reset()

    def _reset(self):
        r = self.regs
        for i in range(0xF2, 0x100):
            r[i] = 0
        r[0xD0] = 0x60  # chip id (datasheet table 18)
        c = self.trim
        b = bytearray(26)
        i = 0
        for k in ("T1", "T2", "T3", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9"):
            v = c[k] & 0xFFFF
            b[i] = v & 0xFF  # little-endian words from 0x88 (datasheet table 16)
            b[i + 1] = v >> 8
            i += 2
        b[25] = c["H1"]  # 0xA1
        r[0x88 : 0x88 + 26] = b
        h2 = c["H2"] & 0xFFFF
        r[0xE1] = h2 & 0xFF
        r[0xE2] = h2 >> 8
        r[0xE3] = c["H3"]
        h4 = c["H4"] & 0xFFF
        h5 = c["H5"] & 0xFFF
        r[0xE4] = h4 >> 4  # H4 = E4[7:0] << 4 | E5[3:0]
        r[0xE5] = (h4 & 0x0F) | ((h5 & 0x0F) << 4)  # H5 = E6[7:0] << 4 | E5[7:4]
        r[0xE6] = h5 >> 4
        r[0xE7] = c["H6"] & 0xFF
        r[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"  # reset values (table 18)

    def inject(self, kind, count=1):
        if kind == "chip_id":
            self.regs[0xD0] = 0x58  # a BMP280 where a BME280 was expected
            return
        _Faults.inject(self, kind, count)

    def _write_reg(self, reg, value):
        if reg == 0xE0:
            if value == 0xB6:  # soft reset word
                self._reset()
            return
        if reg in (0xF2, 0xF5):
            self.regs[reg] = value
        elif reg == 0xF4:
            self.regs[reg] = value
            if value & 0x03 in (0x01, 0x02):  # forced mode
                self._measure()
                self.regs[0xF4] = value & 0xFC  # back to sleep when done (section 3.3.3)

    def raw_for(self, temp_c, rh, pressure_hpa):
        c = self.trim
        adc_t = _bisect(
            lambda a: (_bme_t_fine(a, c) * 5 + 128) >> 8,
            round(temp_c * 100),
            0,
            (1 << 20) - 1,
            True,
        )
        t_fine = _bme_t_fine(adc_t, c)
        adc_p = _bisect(
            lambda a: _bme_p(a, t_fine, c),
            round(pressure_hpa * 25600),
            0,
            (1 << 20) - 1,
            False,
        )
        adc_h = _bisect(lambda a: _bme_h(a, t_fine, c), round(rh * 1024), 0, 0xFFFF, True)
        return adc_t, adc_p, adc_h

    def _measure(self):
        r = self.regs
        kind = self._take(self.FAULTS)
        v = self.source()
        adc_t, adc_p, adc_h = self.raw_for(v["temp"], v["rh"], v["pressure"])
        # A channel with oversampling "skipped" (osrs = 0) holds 0x80000 / 0x8000.
        if kind == "skipped" or not (r[0xF4] >> 5):
            adc_t = 0x80000
        if not (r[0xF4] >> 2) & 0x07:
            adc_p = 0x80000
        if not r[0xF2] & 0x07:
            adc_h = 0x8000
        r[0xF7] = adc_p >> 12
        r[0xF8] = (adc_p >> 4) & 0xFF
        r[0xF9] = (adc_p & 0x0F) << 4
        r[0xFA] = adc_t >> 12
        r[0xFB] = (adc_t >> 4) & 0xFF
        r[0xFC] = (adc_t & 0x0F) << 4
        r[0xFD] = adc_h >> 8
        r[0xFE] = adc_h & 0xFF
        self.measurements += 1
