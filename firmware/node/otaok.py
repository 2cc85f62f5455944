# After an update (docs/ota.md): the few things a node does on the boots that follow one,
# kept apart from node/otaget.py (the transfer) so that they cost little heap in a running
# node. Imported by the app only on probation (a rollback is reported by node/otaget.py
# when the gateway offers that version again: it does until it hears an outcome).
import asyncio
import json
import os

import otaslot


def state():
    try:
        os.stat("ota/boot.json")
    except OSError:
        return {"slot": "", "ver": 0}
    return otaslot.load()


def healthy():
    """End the running slot's probation (at its first custody ack); node.ota.healthy too."""
    st = otaslot.load()
    if st.get("probation"):
        st = {
            "slot": st["slot"],
            "ver": st["ver"],
            "prev": st.get("prev", ""),
            "pver": st.get("pver", 0),
            "bad": st.get("bad", []),
            "last": {"state": "healthy", "ver": st["ver"], "boots": st.get("boots", 0)},
        }
        otaslot.save(st)
    return st


async def report(app, what, ver, reason=None):
    st = state()
    await app.link.publish(
        app.t_ota.decode() + "state",
        '{"v":1,"device_id":"%s","state":"%s","ver":%d,"running":%d,"reason":%s}'
        % (app.device_id, what, ver, st.get("ver", 0), json.dumps(reason and reason[:160])),
        1,
        True,
    )


async def after_boot(app):
    """On probation: mark the slot healthy (and say so) at the first custody ack for a reading
    of this boot (so it sampled and connected), or reset when none came in time (3 such boots
    and otaslot rolls back)."""
    from node import clock

    st = state()
    t0 = clock.ticks_ms()
    limit = int(app.cfg["intervals"]["custody_s"] * 4000) + 60000
    while st.get("probation") and app.outbox.wm_boot != app.boot:
        if clock.ticks_diff(clock.ticks_ms(), t0) > limit:
            print("node: update %d: no custody ack on probation, resetting" % st["ver"])
            app.outbox.persist()
            import machine

            machine.reset()
        await asyncio.sleep_ms(1000)
    if st.get("probation"):
        st = healthy()
        print("node: update %d healthy" % st["ver"])
    await app.link.up.wait()
    await report(app, "healthy", st["ver"])
    from node.app import drop

    drop("otaok")


async def wake(app):
    """A battery board's radio wake on probation (each counts as a boot: its resets are deep
    sleeps, which otaslot does not count): healthy once a reading of this boot is in custody,
    else one more failed boot."""
    st = state()
    if not st.get("probation"):
        return
    if app.outbox.wm_boot == app.boot:
        st = healthy()
        print("node: update %d healthy" % st["ver"])
        await report(app, "healthy", st["ver"])
        return
    st["boots"] = st.get("boots", 0) + 1
    st["why"] = "no custody ack on probation"
    otaslot.save(st)
