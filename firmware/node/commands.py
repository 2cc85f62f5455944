# Commands on .../cmd (contract schema command), each answered on .../ack (command_ack).
# Anything malformed is answered with ok=false and a reason; nothing here may raise into the
# app (the caller also catches, as a last line).
import json
import asyncio
from node import clock

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


async def _ack(app, cid, ok, error=None):
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
    cid, cmd, args, err = _parse(raw)
    if err is not None:
        print("node: bad command:", err)
        await _ack(app, cid, False, err)
        return
    if cmd == "set":
        from node.app import use, drop

        config = use("config")
        err = config.apply_set(app.cfg, args)
        if err is None:
            try:
                config.save_set(args)
            except (OSError, ValueError) as e:
                err = "set applied but not saved to config.json: %s" % e
        del config
        drop("config")  # not resident: give its RAM back
        await _ack(app, cid, err is None, err)
        app.request_status()
    elif cmd == "status":
        await _ack(app, cid, True)
        app.request_status()
    elif cmd == "identify":
        secs = args.get("seconds", 10)
        if not isinstance(secs, (int, float)) or isinstance(secs, bool) or not 0 < secs <= 600:
            await _ack(app, cid, False, "seconds: a number from 1 to 600")
            return
        await _ack(app, cid, True)
        if app.led is not None:
            asyncio.create_task(app.led.blink(secs))
    elif cmd == "reboot":
        await _ack(app, cid, True)
        app.outbox.flush()
        app.outbox.persist()
        await asyncio.sleep_ms(200)
        import machine

        machine.reset()
