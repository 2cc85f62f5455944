# Simulated wall clock for the node process. It shadows the builtin `time` module (a time.py
# on MICROPYPATH wins over an extensible builtin) so the firmware runs unchanged:
# - ticks_ms/ticks_us/sleep*/ticks_* are the builtin ones: durations and scheduling are real
#   time (the launcher divides the node's configured intervals by the speed-up instead);
# - time()/time_ns()/gmtime()/localtime() read the node's RTC, which runs `speed` times faster
#   than the host from the simulated start epoch in /sim.json. Like an ESP32 the RTC starts at
#   2000-01-01 after power-on or a hard reset and keeps running through deep sleep, WDT and soft
#   resets; ntptime.settime() sets it to the simulated "true" time.
import sys

_saved = sys.path[:]
sys.path.clear()
try:
    import time as _host  # the builtin, reachable only with the path cleared
finally:
    sys.path.extend(_saved)
del _saved

ticks_ms = _host.ticks_ms
ticks_us = _host.ticks_us
ticks_cpu = _host.ticks_cpu
ticks_add = _host.ticks_add
ticks_diff = _host.ticks_diff
sleep = _host.sleep
sleep_ms = _host.sleep_ms
sleep_us = _host.sleep_us
mktime = _host.mktime

_RTC_FILE = ".sim/rtc_offset"
_EPOCH_2000 = 946684800  # 2000-01-01T00:00:00Z, where an ESP32's RTC starts after power-on

_speed = 1.0
_sim_t0 = 0.0
_host_t0 = None
_offset = None  # RTC time minus simulated true time, seconds


def _load():
    global _speed, _sim_t0, _host_t0
    import json

    try:
        with open("sim.json") as f:
            cfg = json.load(f)
    except OSError:
        cfg = {}
    clock = cfg.get("clock") or {}
    _speed = float(cfg.get("speed", 1.0))
    _host_t0 = clock.get("host_t0")
    _sim_t0 = clock.get("sim_t0")
    if _host_t0 is None:  # no launcher: the simulated clock is the host's clock
        _host_t0 = _host.time_ns() / 1e9
    if _sim_t0 is None:  # a hand-written sim.json may give just "start" (epoch seconds)
        _sim_t0 = cfg.get("start", _host_t0)


def true_time():
    """Simulated true UTC time, seconds since 1970 (what NTP would say)."""
    if _host_t0 is None:
        _load()
    return _sim_t0 + (_host.time_ns() / 1e9 - _host_t0) * _speed


def speed():
    if _host_t0 is None:
        _load()
    return _speed


def _rtc_offset():
    global _offset
    if _offset is None:
        try:
            with open(_RTC_FILE) as f:
                _offset = float(f.read())
        except (OSError, ValueError):
            set_rtc(_EPOCH_2000)  # power-on: the RTC restarts at 2000-01-01
    return _offset


def set_rtc(epoch_s):
    """Set the RTC to `epoch_s` (seconds since 1970); survives deep sleep, WDT and soft resets."""
    global _offset
    _offset = epoch_s - true_time()
    try:
        with open(_RTC_FILE, "w") as f:
            f.write(repr(_offset))
    except OSError:  # no .sim dir (run without the launcher): keep it in RAM
        pass


def rtc_time():
    """The RTC's reading, float seconds since 1970."""
    off = _rtc_offset()  # first: on power-on this sets the RTC, and time moves on after it
    return true_time() + off + 1e-6  # 1 us: keep float rounding off whole seconds


def time_ns():
    return int(rtc_time() * 1e9)


def time():
    return int(rtc_time())


def gmtime(secs=None):
    # 8-tuple as on an ESP32: (year, month, mday, hour, minute, second, weekday, yearday).
    return _host.gmtime(time() if secs is None else int(secs))[:8]


def localtime(secs=None):
    # An ESP32 has no time zone: localtime is UTC, as on the device.
    return gmtime(secs)
