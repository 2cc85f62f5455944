# machine.RTC and machine.WDT of the simulated board. The RTC clock and memory live in the
# flash dir's .sim/ folder so they survive deep sleep and soft/WDT resets; the launcher clears
# them on power-on and hard reset, as the chip loses them.
import time

_SIM = ".sim/"
_RTC_MEM_MAX = 2048  # ESP32 port: MICROPY_HW_RTC_USER_MEM_MAX


class RTC:
    def __init__(self, id=0):
        pass

    def init(self, datetime):
        self.datetime(datetime)

    def datetime(self, dt=None):
        # (year, month, day, weekday, hours, minutes, seconds, subseconds) as on an ESP32.
        if dt is None:
            t = time.rtc_time()
            g = time.gmtime(int(t))
            return (g[0], g[1], g[2], g[6], g[3], g[4], g[5], int((t % 1) * 1000000))
        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        time.set_rtc(secs + (dt[7] if len(dt) > 7 else 0) / 1000000)

    def memory(self, data=None):
        # RTC slow memory: survives deep sleep and soft/WDT resets, lost on power-on.
        if data is None:
            try:
                with open(_SIM + "rtc_memory", "rb") as f:
                    return f.read()
            except OSError:
                return b""
        if len(data) > _RTC_MEM_MAX:
            raise ValueError("buffer too long")
        with open(_SIM + "rtc_memory", "wb") as f:
            f.write(data)


_wdt = None


class WDT:
    """Fires like the ESP32 task watchdog: if feed() is not called within `timeout` ms of real
    time the node resets with WDT_RESET, even if the main thread is stuck in a blocking call."""

    def __init__(self, id=0, timeout=5000):
        global _wdt
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        self.timeout = timeout
        self._fed = time.ticks_ms()
        with open(_SIM + "wdt_ms", "w") as f:  # the launcher resets a crashed node after this
            f.write(str(timeout))
        if _wdt is None:
            import _thread

            _thread.start_new_thread(_watch, ())
        _wdt = self

    def feed(self):
        self._fed = time.ticks_ms()


def _watch():
    import os

    while True:
        time.sleep_ms(20)
        w = _wdt
        late = time.ticks_diff(time.ticks_ms(), w._fed)
        if late > w.timeout:
            print("sim: watchdog not fed for %d ms (timeout %d ms): WDT reset" % (late, w.timeout))
            try:
                with open(_SIM + "exit", "w") as f:
                    f.write("wdt %d" % late)
            except OSError:
                pass
            # The main thread may be stuck in a blocking call: end the process from outside.
            os.system("kill -KILL $PPID")
            return
