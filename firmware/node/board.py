# Board bring-up: /board.json (data only, house style 8) -> buses -> sensor drivers.
# Pins and addresses live in the board file; drivers get bus objects (house style 1).
# Each board sensor becomes a Sensor whose async read(out) puts its raw channels into `out`
# (absent on error: never a made-up value) and whose driver counts its own errors.
import json
import machine
import asyncio

PATH = "board.json"
_RETRY_EVERY = 30  # samples between re-tries of a sensor that failed bring-up


def load(path=PATH):
    with open(path) as f:
        return json.load(f)


def _bus(board, name, cache):
    bus = cache.get(name)
    if bus is not None:
        return bus
    spec = board["buses"][name]
    if spec["type"] == "uart":
        bus = machine.UART(spec["id"], baudrate=spec.get("baudrate", 9600), tx=spec["tx"],
                           rx=spec["rx"], timeout=0)
    elif spec["type"] == "i2c":
        bus = machine.I2C(spec["id"], scl=machine.Pin(spec["scl"]), sda=machine.Pin(spec["sda"]),
                          freq=spec.get("freq", 100000))
    else:
        raise ValueError("bus %s: unknown type %s" % (name, spec["type"]))
    cache[name] = bus
    return bus


def _ms(n):
    return asyncio.sleep_ms(n)


class Sensor:
    """One sensor of the board. `kind` decides channel names (air temp vs water air_temp)."""

    def __init__(self, spec, kind, board, buses):
        self.spec = spec
        self.name = spec.get("name", spec["driver"])
        self.driver = spec["driver"]
        self.kind = kind
        self._board = board
        self._buses = buses
        self.dev = None
        self.init_errors = 0
        self.last_init_error = None
        self._skip = 0
        self._bus = None

    def errors(self):
        e = {}
        if self.dev is not None:
            for k, v in self.dev.errors.items():
                if v:
                    e[k] = v
        if self.init_errors:
            e["init"] = self.init_errors
        return e

    def bring_up(self):
        """Build the driver; on failure count it and retry after _RETRY_EVERY samples."""
        s = self.spec
        d = self.driver
        try:
            bus = _bus(self._board, s["bus"], self._buses) if "bus" in s else None
            self._bus = bus
            if d == "pms5003":
                from drivers.pms5003 import PMS5003

                if "set_pin" in s:
                    machine.Pin(s["set_pin"], machine.Pin.OUT, value=1)  # SET high: running
                self.dev = PMS5003(bus, passive=True)
            elif d == "sht3x":
                from drivers.sht3x import SHT3x

                self.dev = SHT3x(bus, s.get("address", 0x44))
            elif d == "bme280":
                from drivers.bme280 import BME280

                self.dev = BME280(bus, s.get("address", 0x76))
            elif d in ("a02yyuw", "jsn-sr04t", "ultrasonic_uart"):
                from drivers.ultrasonic import UltrasonicUART

                self.dev = UltrasonicUART(bus, trigger=s.get("trigger", False))
            elif d in ("ultrasonic_pulse", "hc-sr04", "jsn-sr04t-pulse"):
                from drivers.ultrasonic import UltrasonicPulse
                import time

                trig = machine.Pin(s.get("trigger_pin", s.get("trig_pin")), machine.Pin.OUT)
                echo = machine.Pin(s["echo_pin"], machine.Pin.IN)
                self.dev = UltrasonicPulse(trig, echo, machine.time_pulse_us, time.sleep_us,
                                           pings=s.get("pings", 5))
            elif d == "pressure":
                from drivers.pressure import PressureTransducer

                adc = machine.ADC(machine.Pin(s["adc_pin"]), atten=machine.ADC.ATTN_11DB)
                self.dev = PressureTransducer(adc, s.get("p_max_kpa", 100.0),
                                              divider=s.get("divider", 1.0))
            elif d == "qmc5883l":
                from drivers.qmc5883l import QMC5883L

                self.dev = QMC5883L(bus, s.get("address", 0x0D))
            else:
                raise ValueError("unknown driver %s" % d)
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.dev = None
            self.init_errors += 1
            self.last_init_error = str(e)[:80]
            self._skip = _RETRY_EVERY
            return False
        return True

    async def read(self, out):
        """Add this sensor's channels to `out`. Returns False if it produced nothing."""
        if self.dev is None:
            if self._skip > 0:
                self._skip -= 1
                return False
            if not self.bring_up():
                return False
        d = self.driver
        dev = self.dev
        if d == "pms5003":
            u = self._bus
            n = u.any()
            if n:
                u.read(n)  # stale bytes from before the request
            from drivers.pms5003 import CMD_READ

            u.write(CMD_READ)
            # A frame is 32 bytes at 9600 baud = 33 ms (PMS5003 manual: 9600 8N1).
            await _ms(50)
            dev.passive = False  # the request is sent: read() only has to frame the answer
            try:
                v = dev.read()
            finally:
                dev.passive = True
            if v is None:
                return False
            out["pm1_cf1"] = v[0]
            out["pm25_cf1"] = v[1]
            out["pm10_cf1"] = v[2]
            out["pm1_atm"] = v[3]
            out["pm25_atm"] = v[4]
            out["pm10_atm"] = v[5]
            return True
        if d in ("sht3x", "bme280"):
            if not dev.start():
                return False
            await _ms(20)  # SHT3x high repeatability 15 ms max; BME280 x1 forced 9.3 ms max
            v = dev.read_result()
            if v is None:
                return False
            if self.kind == "air":
                out["temp"] = v[0]
                out["rh"] = v[1]
            else:
                out["air_temp"] = v[0]
                if d == "bme280" and self.kind == "water":
                    out["baro"] = v[2] / 10.0  # hPa -> kPa
            return True
        if d == "pressure":
            v = dev.read()
            if v is None:
                return False
            out["pressure"] = v
            return True
        if d == "qmc5883l":
            v = dev.read()
            if v is None:
                return False
            out["mag_x"] = v[0]
            out["mag_y"] = v[1]
            out["mag_z"] = v[2]
            return True
        # ultrasonic: compensate with the air temperature read just before, if any
        v = dev.read(out.get("air_temp"))
        if v is None:
            return False
        out["distance"] = v
        return True

    def sleep(self):
        """Power the sensor down between samples where it supports it (PMS5003 fan)."""
        if self.dev is not None and self.driver == "pms5003":
            self.dev.sleep()

    def wake(self):
        if self.dev is not None and self.driver == "pms5003":
            self.dev.wake()


_FIRST = ("sht3x", "bme280")  # temperature first: the ultrasonic compensates with it


def sensors(board, kind):
    buses = {}
    specs = board.get("sensors", {}).get(kind, [])
    out = []
    for s in specs:
        if s.get("driver") in _FIRST:
            out.append(Sensor(s, kind, board, buses))
    for s in specs:
        if s.get("driver") not in _FIRST:
            out.append(Sensor(s, kind, board, buses))
    for x in out:
        x.bring_up()
    return out


class Battery:
    def __init__(self, spec):
        from drivers.battery import Battery as Drv

        adc = machine.ADC(machine.Pin(spec["adc_pin"]), atten=machine.ADC.ATTN_11DB)
        self.dev = Drv(adc, divider=spec.get("divider", 2.0))
        self.name = "battery"

    def volts(self):
        v = self.dev.read()
        return None if v is None else v[0]

    def errors(self):
        e = {}
        for k, v in self.dev.errors.items():
            if v:
                e[k] = v
        return e


def battery(board):
    spec = board.get("power", {}).get("battery")
    if not spec:
        return None
    try:
        return Battery(spec)
    except (OSError, ValueError, KeyError, ImportError):
        return None


class Led:
    def __init__(self, spec):
        self.pin = None
        self.on_level = 1
        if spec and "pin" in spec:
            try:
                self.pin = machine.Pin(spec["pin"], machine.Pin.OUT)
                self.on_level = 1 if spec.get("active_high", True) else 0
                self.set(False)
            except (OSError, ValueError):
                self.pin = None

    def set(self, on):
        if self.pin is not None:
            self.pin.value(self.on_level if on else 1 - self.on_level)

    async def blink(self, seconds, period_ms=250):
        n = int(seconds * 1000 // period_ms)
        for i in range(n):
            self.set(not i & 1)
            await _ms(period_ms // 2)
        self.set(False)
