# Simulated ESP32 `machine` module for the MicroPython unix port. It shadows the small builtin
# machine module (a machine.py on MICROPYPATH wins) and gives the firmware what an ESP32 has.
# Buses reach their fake devices in the launcher through sim_link; resets, deep sleep and the
# watchdog end the process with the codes below, and the launcher (host_tools/sim/simnode.py)
# restarts it with the matching reset cause, like the chip would. Everything the firmware
# rarely needs loads on first use (__getattr__ below): on an ESP32 this module is in ROM and
# costs no heap, here every function does.
import time

import sim_link as _link
from micropython import const

# machine.reset_cause() values on an ESP32 (ports/esp32/modmachine.c).
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# Process exit codes the launcher understands (also written to .sim/exit with details).
_EXIT_DEEPSLEEP = const(100)
_EXIT_RESET = const(101)  # 103: soft_reset (sim_misc.py); the watchdog kills (sim_rtc.py)

_cause = None


def _exit(reason, code, detail=0):
    try:
        with open(".sim/exit", "w") as f:
            f.write("%s %d" % (reason, detail))
    except OSError:
        pass
    raise SystemExit(code)


def reset_cause():
    global _cause
    if _cause is None:
        try:
            with open(".sim/reset_cause") as f:
                _cause = int(f.read())
        except (OSError, ValueError):
            _cause = PWRON_RESET
    return _cause


def unique_id():
    import json

    try:
        with open("sim.json") as f:
            h = json.load(f).get("unique_id") or "240ac4000001"
    except (OSError, ValueError):
        h = "240ac4000001"
    b = bytearray(6)
    for i in range(6):
        b[i] = int(h[2 * i : 2 * i + 2], 16)
    return bytes(b)


def reset():
    print("sim: machine.reset()")
    _exit("reset", _EXIT_RESET)


def deepsleep(time_ms=0):
    # The launcher keeps the process down for time_ms of real time (0: until it is stopped),
    # then restarts it with DEEPSLEEP_RESET; RTC memory and the RTC clock survive.
    print("sim: deepsleep %d ms" % time_ms)
    _exit("deepsleep", _EXIT_DEEPSLEEP, time_ms)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if isinstance(id, Pin):
            id = id.id
        if (
            not isinstance(id, int)
            or not 0 <= id <= 39
            or 6 <= id <= 11
            or id in (20, 24, 28, 29, 30, 31)
        ):
            raise ValueError("invalid pin")
        self.id = id
        self._mode = -1
        self._pull = -1
        self._v = 0
        self._irq = None
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if mode != -1:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self.id >= 34:
                raise ValueError("pin can only be input")  # GPIO34-39 are input-only
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            r = _link.call("p %d v" % self.id) if _hw_pin(self.id) else None
            if r is not None:
                return int(r)
            if self._mode in (Pin.OUT, Pin.OPEN_DRAIN):
                return self._v
            return 1 if self._pull == Pin.PULL_UP else 0
        self._v = 1 if v else 0
        if _hw_pin(self.id):
            _link.call("p %d w %d" % (self.id, self._v))

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, *, priority=1, wake=None, hard=False):
        # No edges arrive from the simulated board; the handler is kept, as on a quiet pin.
        self._irq = handler
        return self

    def __repr__(self):
        return "Pin(%d)" % self.id


_pins = None


def _hw_pin(pid):
    # Pins wired to a simulated device (e.g. an ultrasonic ranger's trigger and echo).
    global _pins
    if _pins is None:
        r = _link.call("p -1 list")
        _pins = () if not r else tuple(int(p) for p in r.split(","))
    return pid in _pins


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    pid = pin.id if isinstance(pin, Pin) else pin
    if _hw_pin(pid):
        us = int(_link.call("p %d t %d %d" % (pid, pulse_level, timeout_us)))
        time.sleep_us(us if us > 0 else timeout_us)  # the echo takes its time, as on the chip
        return us
    # Nothing drives this pin: its level never changes (-2: timed out waiting for the pulse,
    # -1: timed out inside it), after waiting the full timeout as the chip would.
    level = pin.value() if isinstance(pin, Pin) else 0
    time.sleep_us(timeout_us)
    return -1 if level == pulse_level else -2


_LAZY = {
    "UART": "sim_uart",
    "I2C": "sim_i2c",
    "SoftI2C": "sim_i2c",
    "ADC": "sim_adc",
    "PWM": "sim_pwm",
    "Signal": "sim_pwm",
    "RTC": "sim_rtc",
    "WDT": "sim_rtc",
}


def __getattr__(name):
    # Peripheral classes load on first use, so a node pays heap only for the buses it has.
    mod = _LAZY.get(name, "sim_misc")
    obj = getattr(__import__(mod), name, None)
    if obj is None:
        raise AttributeError("module 'machine' has no attribute '%s'" % name)
    globals()[name] = obj
    return obj
