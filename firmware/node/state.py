# The node's own writes to flash, each to a temp file then renamed (a power cut leaves the old
# or the new file, never half of one): the boot id, +1 on every boot, in data/state.json; and
# a `set` command's intervals/thresholds, validated (with the rules node.config uses at boot)
# and merged into /config.json. Imported at boot and for a `set` only, alone: a `set` beside
# node.commands or node.config does not fit a running air or water node's 64 KB heap.
import json
import os

try:
    from micropython import const
except ImportError:  # CPython (the pure tests)

    def const(x):
        return x


_PATH = const("config.json")
_SET_FILE = const("data/set_cmd.json")  # written by node/app.py App.command
_ACK_FILE = const("data/set_ack.json")
_ACK_TMP = const("data/set_ack.json.tmp")
_QUOTE = const(0x22)
_BSLASH = const(0x5C)
_LBRACE = const(0x7B)
_RBRACE = const(0x7D)
_LBRACKET = const(0x5B)
_RBRACKET = const(0x5D)


def next_boot(directory="data", floor=-1):
    """Read the last boot id, store and return the next one. `floor`: highest boot id seen
    elsewhere (the outbox), so a lost state file can never make a boot id repeat."""
    path = directory + "/state.json"
    last = -1
    try:
        with open(path) as f:
            last = json.load(f)["boot"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not isinstance(last, int):
        last = -1
    boot = max(last, floor) + 1
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"boot": boot}))
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)
    return boot


def ensure_dir(directory="data"):
    try:
        os.mkdir(directory)
    except OSError:
        pass


def _check_section(k, v):
    """Rules beyond types for the merged intervals or thresholds (node.config uses them at
    boot too). Returns an error string or None."""
    if k == "intervals":
        for kk in v:
            if v[kk] <= 0:
                return "intervals.%s: must be > 0" % kk
        if v["report_s"] < v["sample_s"]:
            return "intervals.report_s: must be >= sample_s"
        if v["report_s"] > 30 * v["sample_s"]:
            return "intervals.report_s: at most 30 samples per report (raise sample_s)"
    if k == "thresholds":
        if v["on_ut"] <= v["off_ut"]:
            return "thresholds.on_ut: must be above off_ut (hysteresis)"
        if v["on_count"] < 1 or v["off_count"] < 1:
            return "thresholds.on_count/off_count: must be >= 1"
    return None


def apply_set(cfg, args):
    """A `set` command: {intervals: {...}, thresholds: {...}}. Validates fully before changing
    anything. Returns an error string or None (then cfg is updated). Every key is a number
    (the *_count thresholds whole numbers), and must already be in the running config."""
    if not isinstance(args, dict) or not args:
        return "set: args must be an object with intervals and/or thresholds"
    trial = {}
    for k in args:
        if k not in ("intervals", "thresholds"):
            return "set: only intervals and thresholds can be set, not %s" % k
        v = args[k]
        if not isinstance(v, dict):
            return "%s: expected an object" % k
        d = dict(cfg[k])
        for kk in v:
            x = v[kk]
            if kk not in d:
                return "%s.%s: unknown key" % (k, kk)
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                return "%s.%s: expected a number" % (k, kk)
            if kk.endswith("_count") and not isinstance(x, int):
                return "%s.%s: expected a whole number" % (k, kk)
            d[kk] = x
        err = _check_section(k, d)
        if err:
            return err
        trial[k] = d
    for k in trial:
        cfg[k] = trial[k]
    return None


def set(cfg, args, path=_PATH):
    """Apply a `set` (apply_set) and persist it (save_set). -> error string or None."""
    err = apply_set(cfg, args)
    if err is None:
        try:
            save_set(args, path)
        except (OSError, ValueError) as e:
            err = "set applied but not saved to config.json: %s" % e
    return err


def save_set(args, path=_PATH):
    """Persist a validated `set` into /config.json: copy the file to a temp file, replacing each
    set section by that section merged with the new values, then rename (atomic). Streamed a
    few bytes at a time: the parsed file would take ~4 KB of a fragmented 64 KB heap. Bytes,
    not str: iterating a str makes a one-character string per character, and MicroPython
    interns each of those for good (a qstr each, ~13 per set before)."""
    tmp = path + ".tmp"
    todo = list(args)
    depth = 0
    instr = esc = False
    key = None  # the last top-level string read (a section's name when its value starts)
    sec = None  # the text of a section being replaced
    with open(path, "rb") as f, open(tmp, "wb") as out:
        while True:
            chunk = f.read(32)
            if not chunk:
                break
            o = bytearray()
            for ch in chunk:
                if instr:
                    if esc:
                        esc = False
                    elif ch == _BSLASH:
                        esc = True
                    elif ch == _QUOTE:
                        instr = False
                    elif depth == 1:
                        key.append(ch)
                elif ch == _QUOTE:
                    instr = True
                    if depth == 1:
                        key = bytearray()
                elif ch == _LBRACE or ch == _LBRACKET:
                    depth += 1
                    if depth == 2 and key is not None and key.decode() in todo:
                        key = key.decode()
                        todo.remove(key)
                        sec = bytearray()
                elif ch == _RBRACE or ch == _RBRACKET:
                    depth -= 1
                    if sec is not None and depth == 1:
                        sec.append(ch)
                        d = json.loads(sec)
                        d.update(args[key])
                        out.write(o)
                        o = bytearray()
                        out.write(json.dumps(d).encode())
                        sec = None
                        continue
                    if depth == 0:
                        for k in todo:  # sections the file does not have yet
                            o.extend((', "%s": ' % k if key is not None else '"%s": ' % k).encode())
                            o.extend(json.dumps(args[k]).encode())
                            key = k
                        todo = ()
                if sec is not None:
                    sec.append(ch)
                else:
                    o.append(ch)
            out.write(o)
    if sec is not None or depth or instr:
        raise ValueError("config.json: not valid JSON")
    try:
        os.rename(tmp, path)
    except OSError:
        # Some filesystems refuse to rename onto an existing file: remove it first.
        os.remove(path)
        os.rename(tmp, path)


def pending_set(cfg, directory="data"):
    """At boot, before the running node's modules load: apply a `set` that node.app stored
    and restarted for (App.command), with the same rules, all or nothing, and keep its ack
    (without "t", which App.on_connect adds when it sends it) in a file until it is sent.
    The command is removed before it is applied, so a set that crashed a boot is not tried
    again. Returns True while an ack waits to be sent. cfg: the loaded config, updated.
    No new short names here (each would be interned on every boot; water is near a step)."""
    ack = directory + _ACK_FILE[4:]
    try:
        with open(directory + _SET_FILE[4:]) as f:
            raw = f.read(1024)
        os.remove(directory + _SET_FILE[4:])
    except OSError:
        raw = None
    if raw is not None:
        # The checks of node.commands.handle (not imported: its names would be interned).
        cid = ""
        try:
            m = json.loads(raw)
            cid = m["id"]
            if type(cid) is not str or not 0 < len(cid) <= 40:
                cid = ""
                err = "id: a string of 1-40 characters is required"
            elif m.get("v") != 1:
                err = "v: must be 1"
            else:
                err = None
                for k in m:
                    if k not in ("v", "id", "cmd", "args"):
                        err = "%s: unknown key" % k
                        break
                if err is None:
                    err = set(cfg, m.get("args", {}))
        except (ValueError, KeyError, TypeError, AttributeError):
            err = "id: a string of 1-40 characters is required"
        print("node: set %s applied at boot, error: %r" % (cid, err))
        tmp = directory + _ACK_TMP[4:]
        with open(tmp, "w") as f:
            f.write(
                '{"v": 1, "device_id": %s, "id": %s, "ok": %s, "error": %s'
                % (
                    json.dumps(cfg["device_id"]),
                    json.dumps(cid),
                    json.dumps(err is None),
                    json.dumps(err[:200] if err else None),
                )
            )
        try:
            os.rename(tmp, ack)
        except OSError:
            os.remove(ack)
            os.rename(tmp, ack)
    try:
        os.stat(ack)
        return True
    except OSError:
        return False
