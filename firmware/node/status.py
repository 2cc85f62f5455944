# Status / heartbeat message (contract schema node_status).
import gc
import json
from node import FW, clock


def sensor_errors(app):
    snap = getattr(app, "errors_snapshot", None)
    if snap is not None:
        return snap
    out = {}
    for s in app.sensors:
        key = s.driver if s.driver not in out else s.name
        out[key] = s.errors()
    if app.battery is not None:
        e = {}
        for k, v in app.battery.errors.items():
            if v:
                e[k] = v
        out["battery"] = e
    return out


def build(app):
    gc.collect()
    ob = app.outbox
    bv = app.battery_v()
    iv = {}
    for k in ("sample_s", "report_s", "status_s"):
        iv[k] = app.cfg["intervals"][k]
    err = app.config_error
    return json.dumps(
        {
            "v": 1,
            "device_id": app.device_id,
            "kind": app.kind_name,
            "fw": FW,
            "boot": app.boot,
            "t": clock.now(),
            "synced": clock.synced,
            "uptime_s": app.uptime_s(),
            "reset_cause": app.reset_cause,
            "free_heap": gc.mem_free(),
            "rssi_dbm": app.rssi,
            "battery_v": bv,
            "outbox": {"depth": ob.depth, "capacity": ob.cap, "dropped": ob.dropped},
            "sensor_errors": sensor_errors(app),
            "config_error": err[:200] if err else None,
            "intervals": iv,
            "seq": app.seq,
        }
    )
