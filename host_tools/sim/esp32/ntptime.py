# Simulated ntptime: settime() sets the node's RTC to the simulated true time (the host clock
# carried into simulated time: start epoch + elapsed * speed). It fails like the real module
# when the WiFi station is not connected.
import time as _time

host = "pool.ntp.org"
timeout = 1


def time():
    """Seconds since 1970 as the NTP server would answer."""
    import network

    if not network.WLAN(network.STA_IF).isconnected():
        raise OSError(116)  # ETIMEDOUT: no answer from the NTP server, as without a network
    return int(_time.true_time())


def settime():
    time()
    _time.set_rtc(_time.true_time())
