# Over-the-air update pulled over the node's own MQTT link (docs/ota.md). Not resident: the app
# imports it when the gateway offers an update (.../ota/offer, retained) and drops it after.
# The node asks for one chunk at a time on .../ota/get ("<offset> <n> <name>") and the gateway
# answers on .../ota/c ("<offset> <name>\n" + bytes, at most 256: the link's 384-byte input
# buffer). node/ota.py writes them into the inactive slot; a transfer cut by a disconnect, a
# reset or a deep sleep resumes from what is on flash at the next offer (the retained one is
# delivered again on every connect). The outcome goes to .../ota/state (retained, QoS 1).
import asyncio
import json
import os

from micropython import const

from node.otaok import report, state

_WAIT_MS = const(5000)
_TRIES = const(4)


def _board():
    """The board's name (board.json "name"; app.board keeps only what the node uses)."""
    try:
        with open("board.json") as f:
            return json.load(f).get("name", "")
    except (OSError, ValueError):
        return ""


class Src:
    """The bundle as node/ota.py reads it, fetched chunk by chunk from the gateway."""

    def __init__(self, app):
        self.app = app
        self.ev = asyncio.Event()
        self.want = None
        self.got = None
        self.topic = app.t_ota.decode() + "get"

    def rx(self, topic, payload):
        if self.want is None or not topic.endswith(b"/c"):
            return
        i = bytes(payload[:80]).find(b"\n")
        if i > 0 and bytes(payload[:i]) == self.want:
            self.got = bytes(payload[i + 1 :])
            self.ev.set()

    async def read(self, name, off, n):
        self.want = ("%d %s" % (off, name)).encode()
        link = self.app.link
        for _ in range(_TRIES):
            self.ev.clear()
            try:
                await link.publish(self.topic, "%d %d %s" % (off, n, name), 0)
                await asyncio.wait_for_ms(self.ev.wait(), _WAIT_MS)
                return self.got
            except (OSError, asyncio.TimeoutError):
                pass
        raise OSError(110)  # the gateway did not answer: kept on flash, resumed next offer


async def at_boot(app):
    """A boot (or wake) that found an offer stored by App.command: connect with a clean heap
    (no sensors, no sampling), install, then restart into the new slot or the old one. The
    offer file goes first: a transfer that fails is resumed at the next offer (the gateway's
    is retained: it comes back at the next connect), not at every boot."""
    from node import clock, net

    try:
        with open("data/ota_offer.json") as f:
            raw = f.read(200)
    finally:
        os.remove("data/ota_offer.json")
    print("node: update offered: %s" % raw)
    app.make_link()
    if app.deep_sleep:
        ok = await net.associate(app)
        if ok:
            app.net_up.set()
    else:
        asyncio.create_task(net.keep_up(app))
    asyncio.create_task(app.link.run(clock.ticks_ms, clock.ticks_diff, asyncio.sleep_ms))
    try:
        await asyncio.wait_for_ms(app.link.up.wait(), 60000)
        await offer(app, raw)
    except Exception as e:  # noqa: BLE001 - resumed at the next offer
        print("node: update failed: %r" % (e,))
    app.link.stop()
    await app.link.core.disconnect()
    import machine

    machine.reset()


async def offer(app, raw):
    """An offer (JSON {"v":1,"version":N}): install it unless it runs already or was rolled
    back here; report the outcome (at_boot then restarts the node into the new slot)."""
    try:
        ver = json.loads(raw)["version"]
        if type(ver) is not int:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return  # an empty (withdrawn) or malformed offer
    st = state()
    if ver == st.get("ver", 0):
        await report(app, "installed" if st.get("probation") else "healthy", ver)
        return
    if ver in st.get("bad", ()):
        await report(app, "rolled_back", ver, (st.get("last") or {}).get("reason"))
        return
    src = Src(app)
    app.ota_rx = src.rx
    from node import ota

    try:
        await ota.install(src, _board(), app.kind_name)
    except ota.Refused as e:
        print("node: update %d refused: %s" % (ver, e))
        await report(app, "refused", ver, str(e))
        return
    finally:
        app.ota_rx = None
        src = None
    print("node: update %d installed" % ver)
    await report(app, "installed", ver)
