# Battery boards (board.json power.deep_sleep: true): the chip deep-sleeps between samples.
# Every wake: restore the run's state from RTC memory, take one sample, and only wake the
# radio (WiFi association ~4 s and ~300 mC, anchors.md) when a batch is due (batch_s), a
# reading is an alarm, or the outbox is half full. Then store the state and sleep again.
# RTC slow memory survives deep sleep but not a power cut: a power-on is a new boot.
import asyncio
import json

import machine

from node import clock

_FILE = "data/sleep.json"  # when the state does not fit in RTC memory (2 KB on the ESP32)
_CUSTODY_WAIT_MS = 5000
_CONNECT_WAIT_MS = 15000


def log(msg):
    print("node:", msg)


def restore(app):
    """The state saved before the last deep sleep, or None (power-on, reset, other boot)."""
    if app.reset_cause != "deep_sleep":
        return None
    try:
        raw = machine.RTC().memory()
        if raw == b"@":
            with open(_FILE) as f:
                raw = f.read()
        st = json.loads(raw)
        if st["dev"] != app.device_id:
            return None
        return st
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(app, radio_in, sleep_ms, kind_state):
    st = {
        "dev": app.device_id,
        "boot": app.boot,
        "seq": app.seq,
        "synced": clock.synced,
        "step": clock.stepped,
        "up": app.uptime_s() + sleep_ms // 1000,
        "radio": radio_in,
        "ob": app.outbox.hint(),
        "kind": kind_state,
    }
    raw = json.dumps(st)
    rtc = machine.RTC()
    try:
        rtc.memory(raw)
    except ValueError:  # too long for RTC memory: keep it on flash, mark RTC memory
        with open(_FILE, "w") as f:
            f.write(raw)
        rtc.memory(b"@")


async def radio(app, timeout_ms=_CONNECT_WAIT_MS):
    """Associate, connect, publish the whole outbox and status, wait for custody, disconnect.
    Returns True if the outbox was emptied."""
    from node import net

    app.make_link()
    link = app.link
    if not await net.associate(app, timeout_ms):
        log("radio wake: no WiFi")
        return False
    app.net_up.set()
    if not clock.synced:
        net.ntp(app)
    app.rssi = net.rssi(app)
    task = asyncio.create_task(link.run(clock.ticks_ms, clock.ticks_diff, asyncio.sleep_ms))
    ok = False
    try:
        await asyncio.wait_for_ms(link.up.wait(), timeout_ms)
        ob = app.outbox
        t0 = clock.ticks_ms()
        while ob.depth and clock.ticks_diff(clock.ticks_ms(), t0) < _CUSTODY_WAIT_MS:
            rec = ob.next_unsent(8)
            if rec is None:
                app.wake.clear()
                try:
                    await asyncio.wait_for_ms(app.wake.wait(), 200)
                except asyncio.TimeoutError:
                    pass
                continue
            await link.publish(app.t_reading, rec[2], 1)
            ob.mark_sent(rec[:2])
            t0 = clock.ticks_ms()
        ok = ob.depth == 0
        await app.send_status()
        while app._cmds:  # a command queued for us arrived while we were awake
            await app.command(app._cmds.pop(0))
    except (OSError, asyncio.TimeoutError) as e:
        log("radio wake: %r" % (e,))
    link.stop()
    await link.core.disconnect()
    task.cancel()
    app.wlan.active(False)  # radio off before sleeping
    return ok


async def run(app):
    iv = app.cfg["intervals"]
    st = app.rtc_state
    if st is None:
        app.new_boot()
        radio_in = 0  # first wake after power-on: say hello now
    else:
        app.boot = st["boot"]
        app.seq = st["seq"]
        clock.synced = st["synced"]
        clock.stepped = st["step"]
        app.uptime_base_s = st["up"]
        radio_in = st["radio"]
    log("wake: boot %d seq %d" % (app.boot, app.seq))
    app.bring_up()
    if st is not None and st["kind"] is not None and app.kind is not None:
        app.kind.load(st["kind"])
    try:
        wdt = machine.WDT(timeout=60000)
    except (AttributeError, ValueError, OSError):
        wdt = None
    t_wake = clock.ticks_ms()
    lead = app.kind.lead_ms()
    if lead:
        await app.kind.prepare()
        await asyncio.sleep_ms(lead)
    r = await app.sample_once()
    if wdt:
        wdt.feed()
    alarm = r is not None and r[3]
    per = max(1, round(iv["batch_s"] / iv["sample_s"]))
    radio_in -= 1
    kind_state = app.kind.save()
    full = app.outbox.depth * 2 >= app.outbox.cap
    if alarm or radio_in < 0 or full or app._status_now:
        log(
            "radio: %s"
            % (
                "alarm"
                if alarm
                else "batch"
                if radio_in < 0
                else "outbox half full"
                if full
                else "status"
            )
        )
        _unload_sampling(app)
        await radio(app)
        radio_in = per - 1
        if wdt:
            wdt.feed()
    app.outbox.maybe_persist()  # only if custody moved: spare the flash
    period = int(iv["sample_s"] * 1000)
    left = period - clock.ticks_diff(clock.ticks_ms(), t_wake)
    left = left if left > 10 else 10
    save(app, radio_in, left, kind_state)
    machine.deepsleep(left)


def _unload_sampling(app):
    """This wake has sampled: give the sensor code's RAM to the radio phase (WiFi, MQTT).
    The status still reports the sensors' error counts, taken now."""
    import sys

    from node.app import drop, use

    app.errors_snapshot = use("status").sensor_errors(app)
    drop("status")
    app.kind = None
    app.sensors = []
    for m in list(sys.modules):
        if m.startswith("drivers.") and m != "drivers.battery":
            del sys.modules[m]
    for m in (app.kind_name, "sensors", "filters"):
        drop(m)
