# Hardware watchdog (machine.WDT), fed by this loop only while the sampler keeps beating:
# a hung task or a loop blocked in a driver stops the feeding and the chip resets itself.
import asyncio
import machine
from node import clock

_TIMEOUT_MS = 30000  # ESP32 WDT: generous enough for a slow flash write or an NTP exchange
_FEED_MS = 1000


async def run(app):
    try:
        wdt = machine.WDT(timeout=_TIMEOUT_MS)
    except (AttributeError, ValueError, OSError):
        return
    app.wdt = wdt
    while True:
        iv = app.cfg["intervals"]
        # The sampler may legitimately wait sample_s plus the PMS warm-up between beats.
        stall_ms = int((iv["sample_s"] * 3 + iv["warmup_s"]) * 1000) + 20000
        if app.kind is None or clock.ticks_diff(clock.ticks_ms(), app._beat_ms) < stall_ms:
            wdt.feed()
        else:
            print("node: sampler stalled, letting the watchdog reset the node")
        await asyncio.sleep_ms(_FEED_MS)
