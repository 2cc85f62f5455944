# Node clock: UTC seconds for sample times, set by NTP. `synced` is False until NTP answered
# (then `t` counts from the RTC's power-on value and the contract says: approximate).
import time

# MicroPython ports differ in epoch: the ESP32 port's time() counts from 2000-01-01 on older
# releases, the unix port from 1970. Readings always carry seconds since 1970.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

synced = False
stepped = 0  # sum of the steps NTP made to the clock: now() - stepped never jumps
ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add


def now():
    """UTC seconds since 1970 (int: an ESP32's single-precision float cannot hold it)."""
    return time.time() + EPOCH_OFFSET


def mono():
    """Seconds on a scale NTP does not step: for durations (windows, rates)."""
    return time.time() + EPOCH_OFFSET - stepped


def sync(host=""):
    """Set the RTC from NTP (one UDP exchange, ~1 s timeout in ntptime). Raises OSError."""
    global synced, stepped
    import ntptime

    if host:
        ntptime.host = host
    before = time.time()
    ntptime.settime()
    stepped += time.time() - before
    synced = True
