# Board bring-up (imported at boot, then unloaded to give its RAM back): /board.json (data
# only, house style 8) -> buses -> sensor drivers. Pins and addresses live in the board file;
# drivers get bus objects (house style 1). A driver that fails bring-up raises OSError naming
# the chip; the caller counts it and retries later.
import json

import machine

PATH = "board.json"


def load(kind, path=PATH):
    """The parts of /board.json this node uses (descriptions and other kinds' sensors are
    dropped: every byte kept here is heap)."""
    with open(path) as f:
        b = json.load(f)
    p = b.get("power", {})
    return {
        "buses": b.get("buses", {}),
        "sensors": {kind: b.get("sensors", {}).get(kind, [])},
        "power": {"deep_sleep": p.get("deep_sleep", False), "battery": p.get("battery")},
        "status_led": b.get("status_led"),
    }


def bus(board, name, buses):
    b = buses.get(name)
    if b is not None:
        return b
    spec = board["buses"][name]
    if spec["type"] == "uart":
        b = machine.UART(
            spec["id"], baudrate=spec.get("baudrate", 9600), tx=spec["tx"], rx=spec["rx"], timeout=0
        )
    elif spec["type"] == "i2c":
        b = machine.I2C(
            spec["id"],
            scl=machine.Pin(spec["scl"]),
            sda=machine.Pin(spec["sda"]),
            freq=spec.get("freq", 100000),
        )
    else:
        raise ValueError("bus %s: unknown type %s" % (name, spec["type"]))
    buses[name] = b
    return b


def _cls(path):
    """'drivers.mod.Class' -> the class, imported now. One long literal per driver: a string
    over 10 characters is not interned, so the drivers this node does not use cost it no
    interned names (qstrs), which stay in RAM after this module is unloaded."""
    m, _, c = path.rpartition(".")
    return getattr(__import__(m, None, None, (c,)), c)


def driver(board, s, buses):
    """-> (driver object, its bus or None). Raises OSError/ValueError/KeyError on failure."""
    d = s["driver"]
    b = bus(board, s["bus"], buses) if "bus" in s else None
    Pin = machine.Pin
    if d == "pms5003":
        if "set_pin" in s:
            Pin(s["set_pin"], Pin.OUT, value=1)  # SET high: running
        return _cls("drivers.pms5003.PMS5003")(b, True), b
    if d == "sht3x":
        return _cls("drivers.sht3x.SHT3x")(b, s.get("address", 0x44)), b
    if d == "bme280":
        return _cls("drivers.bme280.BME280")(b, s.get("address", 0x76)), b
    if d in ("a02yyuw", "jsn-sr04t"):
        # (uart, min_m, max_m, trigger)
        return _cls("drivers.ultrasonic.UltrasonicUART")(
            b,
            s.get("blind_m", 0.03),
            s.get("max_m", 4.5),
            s.get("trigger", False),
            compensates=s.get("compensated", True),
        ), b
    if d in ("hc-sr04", "jsn-sr04t-pulse"):
        import time

        # (trigger, echo, pulse_us, sleep_us, pings, min_m, max_m)
        return _cls("drivers.ultrasonic_pulse.UltrasonicPulse")(
            Pin(s["trigger_pin"], Pin.OUT),
            Pin(s["echo_pin"], Pin.IN),
            machine.time_pulse_us,
            time.sleep_us,
            s.get("pings", 5),
            s.get("blind_m", 0.25),
            s.get("max_m", 4.5),
            compensates=s.get("compensated", False),
        ), None
    if d == "pressure":
        adc = machine.ADC(Pin(s["adc_pin"]), atten=machine.ADC.ATTN_11DB)
        # (adc, p_max_kpa, divider)
        return _cls("drivers.pressure.PressureTransducer")(
            adc, s.get("p_max_kpa", 100.0), s.get("divider", 1.0)
        ), None
    if d == "qmc5883l":
        return _cls("drivers.qmc5883l.QMC5883L")(b, s.get("address", 0x0D)), b
    raise ValueError("unknown driver %s" % d)


def bring_up(x, board, buses):
    """Bring up Sensor x's driver; False (counted in x) if it failed."""
    try:
        if x.names is None:
            raise ValueError("%s: not a sensor this kind of node reports" % x.driver)
        x.dev, x.bus = driver(board, x.spec, buses)
        return True
    except (OSError, ValueError, KeyError, TypeError) as e:
        x.failed(str(e))
        return False


def sensors(board, kind, buses):
    from node.sensors import Sensor

    names = __import__("node." + kind, None, None, ("NAMES",)).NAMES
    specs = board.get("sensors", {}).get(kind, [])
    out = []
    for first in (True, False):
        for s in specs:
            # temperature first: the ultrasonic compensates with it
            if (s.get("driver") in ("sht3x", "bme280")) == first:
                out.append(Sensor(s, names.get(s.get("driver"))))
    for x in out:
        bring_up(x, board, buses)
    return out


def battery(board):
    spec = board.get("power", {}).get("battery")
    if not spec:
        return None
    try:
        adc = machine.ADC(machine.Pin(spec["adc_pin"]), atten=machine.ADC.ATTN_11DB)
        return _cls("drivers.battery.Battery")(adc, spec.get("divider", 2.0))
    except (OSError, ValueError, KeyError, ImportError):
        return None


def led(board):
    spec = board.get("status_led")
    if not spec or "pin" not in spec:
        return None
    try:
        from node.sensors import Led

        return Led(machine.Pin(spec["pin"], machine.Pin.OUT), spec.get("active_high", True))
    except (OSError, ValueError):
        return None
