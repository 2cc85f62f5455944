# machine.PWM and machine.Signal of the simulated board: they keep their settings; nothing
# on the simulated board listens to a PWM output.


class PWM:
    def __init__(self, pin, freq=5000, duty=None, *, duty_u16=None, duty_ns=None, invert=False):
        self.pin = pin
        self._freq = freq
        self._duty = 0 if duty_u16 is None else duty_u16
        if duty is not None:
            self._duty = duty * 65535 // 1023

    def init(self, *, freq=None, duty_u16=None, **kw):
        if freq is not None:
            self._freq = freq
        if duty_u16 is not None:
            self._duty = duty_u16

    def freq(self, value=None):
        if value is None:
            return self._freq
        self._freq = value

    def duty(self, value=None):
        if value is None:
            return self._duty * 1023 // 65535
        self._duty = value * 65535 // 1023

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self._duty = value

    def deinit(self):
        self._duty = 0


class Signal:
    def __init__(self, pin, *args, invert=False):
        self._pin = pin if hasattr(pin, "value") else __import__("machine").Pin(pin, *args)
        self._invert = invert

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ self._invert
        self._pin.value((1 if v else 0) ^ self._invert)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)
