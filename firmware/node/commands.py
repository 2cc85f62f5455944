# Commands on .../cmd (contract schema command), each answered on .../ack (command_ack).
# Anything malformed is answered with ok=false and a reason; nothing here may raise into the
# app (the caller also catches, as a last line).
# A `set` never reaches handle(): the app stores it and restarts (App.command), and node.state
# checks it with the same rules at boot, where the heap is clean (pending_set), and keeps its
# ack for App.on_connect.
# Few new short names (each is interned for good, and water is near a qstr pool step: docs
# firmware.md "Heap"): the ack is one long format string, not a dict.
import asyncio
import json

from micropython import const

_CMDS = const(("set", "reboot", "identify", "status"))


async def ack(app, msg, err=None):
    from node import clock

    await app.link.publish(
        app.t_ack,
        '{"v": 1, "device_id": %s, "id": %s, "ok": %s, "error": %s, "t": %d}'
        % (
            json.dumps(app.device_id),
            json.dumps(msg[:40]),
            json.dumps(err is None),
            json.dumps(err[:200] if err else None),
            clock.now(),
        ),
        1,
    )


async def handle(app, raw):
    """Answer a command other than `set` (App.command)."""
    cid = ""
    args = None
    try:
        m = json.loads(raw)
    except ValueError:
        m = None
        err = "not valid JSON"
    else:
        err = None
        if not isinstance(m, dict):
            err = "command must be a JSON object"
        else:
            cid = m.get("id")
            if not isinstance(cid, str) or not 1 <= len(cid) <= 40:
                cid = ""
                err = "id: a string of 1-40 characters is required"
            elif m.get("v") != 1:
                err = "v: must be 1"
            else:
                for k in m:
                    if k not in ("v", "id", "cmd", "args"):
                        err = "%s: unknown key" % k
                        break
                if err is None and m.get("cmd") not in _CMDS:
                    err = "cmd: must be one of set, reboot, identify, status"
                args = m.get("args", {})
                if err is None and not isinstance(args, dict):
                    err = "args: must be an object"
    if err is not None:
        print("node: bad command:", err)
        await ack(app, cid, err)
        return
    cmd = m["cmd"]
    m = None
    if cmd == "status":
        await ack(app, cid)
        app.request_status()
    elif cmd == "identify":
        secs = args.get("seconds", 10)
        if not isinstance(secs, (int, float)) or isinstance(secs, bool) or not 0 < secs <= 600:
            await ack(app, cid, "seconds: a number from 1 to 600")
            return
        await ack(app, cid)
        if app.led is not None:
            asyncio.create_task(app.led.blink(secs))
    elif cmd == "reboot":
        await ack(app, cid)
        app.outbox.flush()
        app.outbox.persist()
        await asyncio.sleep_ms(200)
        import machine

        machine.reset()
