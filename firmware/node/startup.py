# Start-up work of the App (node/app.py), in its own module so that its code is unloaded once
# the node runs: load and validate the config (safe mode on error), the board file, the outbox,
# a new boot id, the sensors and the kind, and the MQTT link object.
import json

import machine
from micropython import const

from node import clock
from node.app import drop, log, use

_RESETS = const(("other", "power_on", "hard_reset", "watchdog", "deep_sleep", "soft_reset"))
_ROOT = const("cityedge/v1/node/")
# What the running node still reads from its config once the link exists (net: wifi and
# ntp_host; sampling, status and `set`: intervals and thresholds). The rest is dropped: heap.
_KEEP = const(("intervals", "thresholds", "wifi", "ntp_host"))


def mac_id():
    b = machine.unique_id()
    return "ce-" + "".join("%02x" % x for x in b[-6:])


def init(app):
    st = use("state")
    st.ensure_dir()
    drop("state")
    config = use("config")
    app.cfg, app.config_error = config.load()
    if not config.valid_device_id(app.cfg["device_id"]):
        app.cfg["device_id"] = mac_id()
    drop("config")
    # A `set` stored by the running node (App.command) is applied now, while the heap is
    # clean; its ack goes out after the connect (App.on_connect). A battery board wakes its
    # radio for it (node/sleep.py: _status_now).
    if use("state").pending_set(app.cfg):
        app._status_now = True
    drop("commands")
    drop("state")  # config checked intervals and thresholds with its rules
    cfg = app.cfg
    app.device_id = cfg["device_id"]
    app.kind_name = cfg["kind"]
    try:
        c = machine.reset_cause()
        app.reset_cause = _RESETS[c] if 0 < c < len(_RESETS) else "other"
    except (AttributeError, OSError):
        app.reset_cause = "other"
    b = use("board")
    try:
        app.board = b.load(app.kind_name)
    except (OSError, ValueError) as e:
        app.board = {}
        app.config_error = app.config_error or ("board.json: %s" % e)
    drop("board")
    app.safe = app.config_error is not None
    if app.safe:
        log("SAFE MODE: " + app.config_error)
    app.deep_sleep = bool(app.board.get("power", {}).get("deep_sleep"))
    if app.deep_sleep and not app.safe:
        app.rtc_state = use("sleep").restore(app)
    from node.outbox import Outbox

    app.outbox = Outbox(
        "data",
        cfg["outbox_slots"],
        int(cfg["intervals"]["custody_s"] * 2000),
        clock.ticks_ms,
        clock.ticks_diff,
        app.rtc_state and app.rtc_state["ob"],
    )
    topic = _ROOT + app.device_id + "/"
    app.t_reading = topic + "reading"
    app.t_status = topic + "status"
    app.t_state = topic + "state"
    app.t_ack = topic + "ack"
    app.t_cmd = (topic + "cmd").encode()
    app.t_custody = (topic + "custody").encode()


def new_boot(app):
    app.boot = use("state").next_boot("data", app.outbox.last_boot)
    drop("state")
    app.seq = 0


def bring_up(app):
    b = use("board")
    app.led = b.led(app.board)
    app.battery = b.battery(app.board)
    if not app.safe:
        app.sensors = b.sensors(app.board, app.kind_name, app.buses)
    drop("board")
    if not app.safe:
        app.kind = use(app.kind_name).Kind(app)


def make_link(app):
    from node import mqtt

    m = app.cfg["mqtt"]
    loc = app.cfg["location"]
    if loc["lat"] or loc["lon"]:  # provisioned: one string now, no dict per connect
        app.place = ',"location":' + json.dumps(loc)
    core = mqtt.Core(
        app.device_id,
        m["username"] or None,
        m["password"] or None,
        m["keepalive_s"],
        app.t_state,
        app.state_msg("offline"),
    )
    app.link = mqtt.Link(
        core,
        m["host"],
        m["port"],
        [(app.t_cmd, 1), (app.t_custody, 1)],
        app.on_message,
        app.on_connect,
        log=log,
        ready=app.net_up,
    )
    cfg = app.cfg
    for k in list(cfg):
        if k not in _KEEP:
            del cfg[k]
