# WiFi station: associate, stay associated, and set the clock by NTP once the network is up.
# A lost association clears app.net_up, which stops MQTT connection attempts until it is back.
import asyncio

import network
from micropython import const

from node import clock

_ASSOC_TIMEOUT_MS = const(20000)
_NTP_RETRY_MS = const(3600000)  # unsynced: try NTP hourly; synced: re-sync daily against RTC drift
_NTP_EVERY_MS = const(86400000)
# Station states that end an association attempt (ESP32 port's network.STAT_*).
_FAILED = tuple(
    getattr(network, n)
    for n in (
        "STAT_NO_AP_FOUND",
        "STAT_WRONG_PASSWORD",
        "STAT_ASSOC_FAIL",
        "STAT_HANDSHAKE_TIMEOUT",
        "STAT_BEACON_TIMEOUT",
    )
    if hasattr(network, n)
)


def log(msg):
    print("node:", msg)


async def associate(app, timeout_ms=_ASSOC_TIMEOUT_MS):
    """One association attempt; True when the station has an IP."""
    w = app.wlan
    if w is None:
        w = app.wlan = network.WLAN(network.STA_IF)
    w.active(True)
    if w.isconnected():
        return True
    wc = app.cfg["wifi"]
    try:
        w.connect(wc["ssid"], wc["password"])
    except OSError as e:  # "Wifi Internal Error" on ESP32 reconnects: retry after a backoff
        log("wifi connect: %r" % (e,))
        return False
    t0 = clock.ticks_ms()
    while clock.ticks_diff(clock.ticks_ms(), t0) < timeout_ms:
        if w.isconnected():
            return True
        if w.status() in _FAILED:
            break  # no AP, wrong password, handshake timeout: give up now, retry later
        await asyncio.sleep_ms(100)
    try:
        w.disconnect()
    except OSError:
        pass
    return False


def rssi(app):
    try:
        return app.wlan.status("rssi")
    except (OSError, AttributeError, ValueError):
        return None


def ntp(app):
    try:
        clock.sync(app.cfg["ntp_host"])
        return True
    except (OSError, OverflowError, IndexError) as e:
        log("ntp failed: %r" % (e,))
        return False


async def keep_up(app):
    delay = 1000
    ntp_ms = None
    while True:
        if not app.wlan or not app.wlan.isconnected():
            app.net_up.clear()
            if app.link is not None:
                app.link.kick()
            if not await associate(app):
                await asyncio.sleep_ms(delay)
                delay = min(delay * 2, 60000)
                continue
            log("wifi up")
            delay = 1000
        if not app.net_up.is_set():
            app.net_up.set()
        now = clock.ticks_ms()
        due = _NTP_EVERY_MS if clock.synced else _NTP_RETRY_MS
        if ntp_ms is None or clock.ticks_diff(now, ntp_ms) > due:
            ntp_ms = now
            ntp(app)
        app.rssi = rssi(app)
        await asyncio.sleep_ms(1000)
