# Node config: firmware defaults + the site's /config.json (house style 8).
# A bad file (unreadable JSON, unknown key, wrong type, missing device id, impossible value)
# never stops the node: load() salvages every section that is valid, keeps the defaults for
# the rest and returns an error string; the app then runs in SAFE MODE (connects if it can,
# reports its status with config_error set, samples nothing).
import json

try:
    from micropython import const
except ImportError:  # CPython (the pure tests)

    def const(x):
        return x


PATH = "config.json"
KINDS = const(("air", "water", "parking"))


# The defaults as JSON text, parsed on each call (callers mutate their copy). Text, not a dict
# literal: a string this long is not interned, so keys only the defaults name (site_id,
# location, ...) cost no interned name (qstr) on the node; json.loads makes plain strings.
# intervals (every duration lives there: the simulation divides them all by its speed-up):
#   sample_s read the sensors; report_s one averaged reading (air, water at rest); status_s
#   heartbeat on .../status; heartbeat_s parking: a reading even without a state change;
#   alarm_report_s water: report period while alarming; warmup_s PMS fan run before a reading
#   when it sleeps between samples; batch_s battery boards: radio wake period; custody_s
#   resend unacknowledged readings after this long.
# thresholds: warn_distance_m water, 0 = off, at or below it: alarm; rise_m_per_min water:
#   level rising faster: alarm; on_ut/off_ut parking: delta from the free-bay baseline (uT)
#   with on_count/off_count consecutive samples above/below; baseline_alpha tracking weight
#   while free; outlier_mads air: samples further than this many MADs from the median drop.
_DEFAULTS = const(
    '{"device_id": "", "kind": "air", "site_id": "",'
    ' "location": {"lat": 0.0, "lon": 0.0, "elev_m": null, "name": ""},'
    ' "wifi": {"ssid": "", "password": ""},'
    ' "mqtt": {"host": "", "port": 1883, "username": "", "password": "", "tls": false,'
    ' "keepalive_s": 60},'
    ' "ntp_host": "",'
    ' "intervals": {"sample_s": 10.0, "report_s": 60.0, "status_s": 300.0,'
    ' "heartbeat_s": 600.0, "alarm_report_s": 10.0, "warmup_s": 30.0, "batch_s": 900.0,'
    ' "custody_s": 30.0},'
    ' "thresholds": {"warn_distance_m": 0.0, "rise_m_per_min": 0.05, "on_ut": 12.0,'
    ' "off_ut": 6.0, "on_count": 3, "off_count": 3, "baseline_alpha": 0.05,'
    ' "outlier_mads": 3.5},'
    ' "outbox_slots": 512, "credential_version": 1}'
)


def defaults():
    return json.loads(_DEFAULTS)


def _check_value(path, default, value):
    """Return None if value fits the default's type, else an error message. A null default
    is an optional number (location.elev_m)."""
    if default is None:
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return "%s: expected a number or null" % path
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            return "%s: expected true/false" % path
    elif isinstance(default, (int, float)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "%s: expected a number" % path
        if isinstance(default, int) and not isinstance(value, int):
            return "%s: expected a whole number" % path
    elif isinstance(default, str):
        if not isinstance(value, str):
            return "%s: expected a string" % path
    elif isinstance(default, dict):
        if not isinstance(value, dict):
            return "%s: expected an object" % path
        for k in value:
            if k not in default:
                return "%s.%s: unknown key" % (path, k)
            err = _check_value(path + "." + k, default[k], value[k])
            if err:
                return err
    return None


_ID_CHARS = const("abcdefghijklmnopqrstuvwxyz0123456789-")


def valid_device_id(s):
    # contract: ^[a-z0-9][a-z0-9-]{2,40}$
    if not isinstance(s, str) or not 3 <= len(s) <= 41:
        return False
    if s[0] == "-":
        return False
    for ch in s:
        if ch not in _ID_CHARS:
            return False
    return True


def _check_section(key, cfg):
    """Semantic checks beyond types, for one top-level key of a merged config."""
    v = cfg[key]
    if key == "device_id" and not valid_device_id(v):
        return "device_id: must be 3-41 of a-z 0-9 - (e.g. ce-a1b2c3d4e5f6)"
    if key == "kind" and v not in KINDS:
        return "kind: must be one of air, water, parking"
    if key == "intervals" or key == "thresholds":
        # The same rules as a `set` command (node.state, unloaded again by node.startup).
        from node.state import _check_section as check

        return check(key, v)
    if key == "mqtt" and not 0 < v["port"] < 65536:
        return "mqtt.port: must be 1-65535"
    if key == "mqtt" and v["tls"]:
        # One TLS session costs ~25 KB of heap (anchors.md): too much beside the outbox on an
        # ESP32 without PSRAM. The site broker is on the LAN; TLS is the gateway's uplink.
        return "mqtt.tls: not supported on the node; use the site broker's plain listener"
    if key == "location" and len(v["name"]) > 64:
        return "location.name: at most 64 characters"  # it travels in every status
    if key == "outbox_slots" and not 8 <= v <= 4096:
        return "outbox_slots: must be 8-4096"
    return None


def merge(cfg, raw):
    """Merge the site's raw dict into cfg. Returns the first error or None. Salvage for safe
    mode: a bad key inside a section is skipped (its siblings still apply, so a typo in a
    threshold does not cost the broker address); a section failing its checks stays default."""
    first = None
    if not isinstance(raw, dict):
        return "config: expected a JSON object"
    for k in raw:
        if k not in cfg:
            first = first or ("%s: unknown key" % k)
            continue
        old = cfg[k]
        v = raw[k]
        if isinstance(old, dict) and isinstance(v, dict):
            new = dict(old)
            for kk in v:
                err = (
                    _check_value(k + "." + kk, old.get(kk), v[kk])
                    if kk in old
                    else "%s.%s: unknown key" % (k, kk)
                )
                if err is None:
                    new[kk] = v[kk]
                first = first or err
            cfg[k] = new
        else:
            err = _check_value(k, old, v)
            first = first or err
            if err is None:
                cfg[k] = v
        err = _check_section(k, cfg)
        if err is not None:
            cfg[k] = old
        first = first or err
    if not cfg["device_id"]:
        first = first or "device_id: missing"
    return first


def load(path=PATH):
    """-> (cfg, error or None). Never raises."""
    cfg = defaults()
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        return cfg, "config.json: not found (provision the node)"
    except ValueError:
        return cfg, "config.json: not valid JSON"
    err = merge(cfg, raw)
    if err is not None and len(err) > 200:
        err = err[:200]
    return cfg, err
