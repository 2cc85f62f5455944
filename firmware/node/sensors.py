# Run-time side of the board's sensors: Sensor.read(out) puts a sensor's raw channels into
# `out` (absent on error: never a made-up value); the drivers count their own errors.
# Bring-up lives in node.board, which is unloaded after boot.
import asyncio
from micropython import const

_RETRY_EVERY = const(30)  # samples between re-tries of a sensor that failed bring-up


class Sensor:
    def __init__(self, spec, kind):
        self.spec = spec
        self.name = spec.get("name", spec["driver"])
        self.driver = spec["driver"]
        self.kind = kind
        self.dev = None
        self.bus = None
        self.init_errors = 0
        self.last_init_error = None
        self._skip = 0

    def failed(self, why):
        self.dev = None
        self.init_errors += 1
        self.last_init_error = why[:80]
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
            if v is None:
                return False
            out["pm1_cf1"] = v[0]
            out["pm25_cf1"] = v[1]
            out["pm10_cf1"] = v[2]
            out["pm1_atm"] = v[3]
            out["pm25_atm"] = v[4]
            out["pm10_atm"] = v[5]
            return True
        if d == "sht3x" or d == "bme280":
            if not dev.start():
                return False
            await asyncio.sleep_ms(20)  # SHT3x high repeatability 15 ms; BME280 x1 9.3 ms max
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

    def power(self, on):
        """PMS5003 fan on/off between distant samples (the others need nothing)."""
        if self.dev is not None and self.driver == "pms5003":
            if on:
                self.dev.wake()
            else:
                self.dev.sleep()


class Led:
    def __init__(self, pin, active_high):
        self.pin = pin
        self.on_level = 1 if active_high else 0
        self.set(False)

    def set(self, on):
        self.pin.value(self.on_level if on else 1 - self.on_level)

    async def blink(self, seconds, period_ms=250):
        for i in range(int(seconds * 1000 // period_ms)):
            self.set(not i & 1)
            await asyncio.sleep_ms(period_ms // 2)
        self.set(False)
