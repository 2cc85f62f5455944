# Run-time side of the board's sensors: Sensor.read(out) puts a sensor's raw channels into
# `out` (absent on error: never a made-up value); the drivers count their own errors.
# Bring-up lives in node.board, which is unloaded after boot.
import asyncio

from micropython import const

_RETRY_EVERY = const(30)  # samples between re-tries of a sensor that failed bring-up
_BLINK_MS = const(250)  # identify: LED blink period


class Sensor:
    def __init__(self, spec, names):
        self.spec = spec
        self.name = spec.get("name", spec["driver"])
        self.driver = spec["driver"]
        # The channel each value of the driver goes to (None: not reported), from the node
        # kind's NAMES, so this resident module names no kind's channels.
        self.names = names
        self.dev = None
        self.bus = None
        self.init_errors = 0
        self.last_init_error = None
        self._skip = 0

    def failed(self, e):
        self.dev = None
        self.init_errors += 1
        self.last_init_error = e[:80]
        self._skip = _RETRY_EVERY

    def errors(self):
        e = {}
        if self.dev is not None:
            for k, v in self.dev.errors.items():
                if v:
                    e[k] = v
        if self.init_errors:
            e["init"] = self.init_errors
        return e

    async def read(self, out, app):
        """Add this sensor's channels to `out`; False if it produced nothing."""
        if self.dev is None:
            if self._skip > 0:
                self._skip -= 1
                return False
            if not app.retry_sensor(self):
                return False
        d = self.driver
        dev = self.dev
        names = self.names
        if d == "pms5003":
            u = self.bus
            n = u.any()
            if n:
                u.read(n)  # stale bytes from before the request
            from drivers.pms5003 import CMD_READ

            u.write(CMD_READ)
            # A frame is 32 bytes at 9600 baud = 33 ms (PMS5003 manual: 9600 8N1).
            await asyncio.sleep_ms(40)
            dev.passive = False  # the request is sent: read() only has to frame the answer
            try:
                v = dev.read()
            finally:
                dev.passive = True
        elif d == "sht3x" or d == "bme280":
            if not dev.start():
                return False
            await asyncio.sleep_ms(20)  # SHT3x high repeatability 15 ms; BME280 x1 9.3 ms max
            v = dev.read_result()
            if v is not None and len(v) > 2:
                v = (v[0], v[1], v[2] / 10.0)  # BME280 pressure: hPa -> kPa (contract unit)
        elif d == "pressure" or d == "qmc5883l":
            v = dev.read()
        else:
            # ultrasonic: names = (distance, the air temperature channel read just before,
            # which compensates the speed of sound, if there is one)
            u = getattr(dev, "uart", None)
            if u is None:  # trigger/echo ranging: time_pulse_us, bounded by its timeout
                v = dev.read(out.get(names[1]))
            else:
                # UART frame: request it, then await its 4 bytes (A02YYUW: a frame per 100 ms,
                # 9600 baud) instead of letting the driver poll with time.sleep_ms.
                try:
                    dev.request()
                except OSError:
                    pass  # read() counts the bus error
                k = 30
                while k and u.any() < 4:
                    await asyncio.sleep_ms(10)
                    k -= 1
                v = dev.read(out.get(names[1]), False)
        if v is None:
            return False
        if not isinstance(v, tuple):
            out[names[0]] = v
            return True
        for i in range(len(names)):
            if names[i] is not None:
                out[names[i]] = v[i]
        return True

    def power(self, on):
        """PMS5003 fan on/off between distant samples (the others need nothing)."""
        if self.dev is not None and self.driver == "pms5003":
            if on:
                self.dev.wake()
            else:
                self.dev.sleep()


class Led:
    def __init__(self, pin, on):
        self.pin = pin
        self.on = 1 if on else 0  # the pin level that lights it
        self.set(False)

    def set(self, on):
        self.pin.value(self.on if on else 1 - self.on)

    async def blink(self, seconds):
        for i in range(int(seconds * 1000 // _BLINK_MS)):
            self.set(not i & 1)
            await asyncio.sleep_ms(_BLINK_MS // 2)
        self.set(False)
