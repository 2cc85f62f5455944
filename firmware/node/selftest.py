# Self-test for `cityedge node verify` (run over the raw REPL: `import node.selftest as t;
# t.run()`): read every sensor once, check WiFi and the MQTT broker with short timeouts, and
# print ONE line `SELFTEST {json}` (format in docs/firmware.md). Never raises.
import asyncio
import json

from node import FW

_WIFI_TIMEOUT_MS = 10000
_MQTT_TIMEOUT_MS = 5000


class _Shim:
    """What Sensor.read() and net.associate() need from the App."""

    def __init__(self, cfg, board):
        self.cfg = cfg
        self.board = board
        self.buses = {}
        self.wlan = None

    def retry_sensor(self, s):
        from node import board

        return board.bring_up(s, self.board, self.buses)


def _err(e):
    return ("%s" % (e,))[:120] or type(e).__name__


async def _sensors(shim, kind, out):
    from node import board

    ok = True
    for s in board.sensors(shim.board, kind, shim.buses):
        vals = {}
        err = s.last_init_error
        if s.dev is not None:
            try:
                got = await s.read(vals, shim)
            except Exception as e:  # a driver fault is a test result, not a crash
                got = False
                err = _err(e)
            if not got and err is None:
                err = s.dev.last_error or "no reading"
        good = bool(vals) and err is None
        ok = ok and good
        out[s.name] = {
            "driver": s.driver,
            "ok": good,
            "reading": vals,
            "errors": s.errors(),
            "error": None if good else err,
        }
    return ok


async def _wifi(shim):
    from node import net

    try:
        if await net.associate(shim, _WIFI_TIMEOUT_MS):
            return {"ok": True, "rssi_dbm": net.rssi(shim), "error": None}
        return {
            "ok": False,
            "rssi_dbm": None,
            "error": "no association within %d s (SSID, "
            "password, distance to the access point?)" % (_WIFI_TIMEOUT_MS // 1000),
        }
    except Exception as e:
        return {"ok": False, "rssi_dbm": None, "error": _err(e)}


async def _mqtt(cfg):
    from node import mqtt

    m = cfg["mqtt"]
    # A separate client id and no last will: the check must not disturb the node's session.
    core = mqtt.Core(
        cfg["device_id"] + "-st", m["username"] or None, m["password"] or None, 10, None, None
    )
    res = {"ok": False, "host": m["host"], "port": m["port"], "error": None}
    try:
        await core.connect(m["host"], m["port"], _MQTT_TIMEOUT_MS)
        await core.disconnect()
        res["ok"] = True
    except Exception as e:  # refused, timed out, unreachable: all are answers
        res["error"] = _err(e)
        core.close()
    return res


async def _run():
    from node import board as _b
    from node import config

    cfg, cerr = config.load()
    if not config.valid_device_id(cfg["device_id"]):
        from node.startup import mac_id

        cfg["device_id"] = mac_id()
    result = {
        "v": 1,
        "device_id": cfg["device_id"],
        "kind": cfg["kind"],
        "fw": FW,
        "config_error": cerr,
        "sensors": {},
        "battery_v": None,
    }
    try:
        brd = _b.load(cfg["kind"])
    except Exception as e:
        brd = {"buses": {}, "sensors": {}}
        result["config_error"] = result["config_error"] or "board.json: " + _err(e)
    shim = _Shim(cfg, brd)
    sensors_ok = await _sensors(shim, cfg["kind"], result["sensors"])
    if not result["sensors"]:
        sensors_ok = False
    bat = _b.battery(brd)
    if bat is not None:
        v = bat.read()
        result["battery_v"] = None if v is None else round(v[0], 3)
    result["wifi"] = await _wifi(shim)
    if result["wifi"]["ok"]:
        result["mqtt"] = await _mqtt(cfg)
    else:
        result["mqtt"] = {
            "ok": False,
            "host": cfg["mqtt"]["host"],
            "port": cfg["mqtt"]["port"],
            "error": "skipped: no WiFi",
        }
    result["pass"] = bool(
        sensors_ok
        and result["wifi"]["ok"]
        and result["mqtt"]["ok"]
        and result["config_error"] is None
    )
    return result


def run():
    try:
        result = asyncio.run(_run())
    except Exception as e:  # report, never crash the REPL session
        result = {"v": 1, "fw": FW, "pass": False, "error": _err(e)}
    print("SELFTEST " + json.dumps(result))
    return result["pass"]
