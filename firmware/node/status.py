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


def _cadence(app, iv):
    # How often readings reach the gateway when that is not report_s: the gateway judges
    # liveness by it (a battery board wakes its radio every batch_s; a parking node sends a
    # reading on a change or every heartbeat_s).
    if getattr(app, "deep_sleep", False):
        return ',"batch_s":%s' % json.dumps(iv["batch_s"])
    if app.kind_name == "parking":
        return ',"heartbeat_s":%s' % json.dumps(iv["heartbeat_s"])
    return ""


def build(app):
    """The status JSON as a list of short pieces (node.mqtt sends them one after the other):
    no dict per status and no 500-byte string to find room for in a fragmented heap; a long
    template is not interned, so its keys cost no qstr."""
    gc.collect()
    ob = app.outbox
    iv = app.cfg["intervals"]
    err = app.config_error
    d = json.dumps
    return [
        '{"v":1,"device_id":"%s","kind":"%s","fw":"%s","boot":%d,"t":%d,"synced":%s,'
        '"uptime_s":%d,"reset_cause":"%s",'
        % (
            app.device_id,
            app.kind_name,
            FW,
            app.boot,
            clock.now(),
            d(clock.synced),
            app.uptime_s(),
            app.reset_cause,
        ),
        '"free_heap":%d,"rssi_dbm":%s,"battery_v":%s,'
        '"outbox":{"depth":%d,"capacity":%d,"dropped":%d},"sensor_errors":'
        % (gc.mem_free(), d(app.rssi), d(app.battery_v()), ob.depth, ob.cap, ob.dropped),
        d(sensor_errors(app)),
        ',"config_error":',
        d(err[:200] if err else None),
        ',"intervals":{"sample_s":%s,"report_s":%s,"status_s":%s%s},"seq":%d}'
        % (d(iv["sample_s"]), d(iv["report_s"]), d(iv["status_s"]), _cadence(app, iv), app.seq),
    ]
