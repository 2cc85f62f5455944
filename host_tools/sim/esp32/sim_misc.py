# The rarely used parts of the simulated `machine` module, loaded on first use: sleep
# variants, clock frequency, IRQ masking, wake reasons, soft reset and raw memory access.
import sys
import time

_saved = sys.path[:]
sys.path.clear()
try:
    import machine as _builtin  # the unix port's own machine module
finally:
    sys.path.extend(_saved)
del _saved

mem8 = _builtin.mem8
mem16 = _builtin.mem16
mem32 = _builtin.mem32

# machine.wake_reason() values on an ESP32.
PIN_WAKE = EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6
IDLE = 1
SLEEP = 2
DEEPSLEEP = 4

_freq = 240000000


def wake_reason():
    return TIMER_WAKE if _m().reset_cause() == 4 else 0


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz


def idle():
    time.sleep_ms(1)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def soft_reset():
    print("sim: machine.soft_reset()")
    _m()._exit("soft_reset", 103)


def lightsleep(time_ms=0):
    # Execution resumes where it stopped; the WiFi link survives a short light sleep.
    time.sleep_ms(time_ms if time_ms > 0 else 1)


sleep = lightsleep


def _m():
    import machine

    return machine
