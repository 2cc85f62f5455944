# Commands on .../cmd (contract schema command), each answered on .../ack (command_ack).
# Anything malformed is answered with ok=false and a reason; nothing here may raise into the
# app (the caller also catches, as a last line).
# A `set` is parsed here and returned to the app, which applies it with node.state after
# unloading this module: both beside a running air or water node do not fit a 64 KB heap.
import json
import asyncio
from micropython import const

_CMDS = const(("set", "reboot", "identify", "status"))


def _parse(raw):
    """-> (id, cmd, args, error)."""
    try:
        m = json.loads(raw)
    except ValueError:
        return "", None, None, "not valid JSON"
    if not isinstance(m, dict):
        return "", None, None, "command must be a JSON object"
    cid = m.get("id")
    if not isinstance(cid, str) or not 1 <= len(cid) <= 40:
        return "", None, None, "id: a string of 1-40 characters is required"
    if m.get("v") != 1:
        return cid, None, None, "v: must be 1"
    for k in m:
        if k not in ("v", "id", "cmd", "args"):
            return cid, None, None, "%s: unknown key" % k
    cmd = m.get("cmd")
    if cmd not in _CMDS:
        return cid, None, None, "cmd: must be one of set, reboot, identify, status"
    args = m.get("args", {})
    if not isinstance(args, dict):
        return cid, None, None, "args: must be an object"
    return cid, cmd, args, None


async def ack(app, cid, error=None):
    from node import clock

    ok = error is None
    msg = json.dumps(
        {
            "v": 1,
            "device_id": app.device_id,
            "id": cid[:40],
            "ok": ok,
            "error": error[:200] if error else None,
            "t": clock.now(),
        }
    )
    await app.link.publish(app.t_ack, msg, 1)


async def handle(app, raw):
    """Answer a command; a valid-looking `set` is returned as (id, args) for the app to apply
    (node.state) and acknowledge (ack) with this module unloaded meanwhile."""
    cid, cmd, args, err = _parse(raw)
    if err is not None:
        print("node: bad command:", err)
        await ack(app, cid, err)
        return
    if cmd == "set":
        return cid, args
    elif cmd == "status":
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
