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
    few bytes at a time: the parsed file would take ~4 KB of a fragmented 64 KB heap."""
    tmp = path + ".tmp"
    todo = list(args)
    depth = 0
    instr = esc = False
    key = None  # the last top-level string read (a section's name when its value starts)
    sec = None  # the text of a section being replaced
    with open(path) as f, open(tmp, "w") as out:
        while True:
            chunk = f.read(32)
            if not chunk:
                break
            o = []
            for ch in chunk:
                if instr:
                    if esc:
                        esc = False
                    elif ch == "\\":
                        esc = True
                    elif ch == '"':
                        instr = False
                    elif depth == 1:
                        key += ch
                elif ch == '"':
                    instr = True
                    if depth == 1:
                        key = ""
                elif ch == "{" or ch == "[":
                    depth += 1
                    if depth == 2 and key in todo:
                        todo.remove(key)
                        sec = []
                elif ch == "}" or ch == "]":
                    depth -= 1
                    if sec is not None and depth == 1:
                        sec.append(ch)
                        d = json.loads("".join(sec))
                        d.update(args[key])
                        out.write("".join(o))
                        o = []
                        json.dump(d, out)
                        sec = None
                        continue
                    if depth == 0:
                        for k in todo:  # sections the file does not have yet
                            o.append(', "%s": ' % k if key is not None else '"%s": ' % k)
                            o.append(json.dumps(args[k]))
                            key = k
                        todo = ()
                if sec is not None:
                    sec.append(ch)
                else:
                    o.append(ch)
            out.write("".join(o))
    if sec is not None or depth or instr:
        raise ValueError("config.json: not valid JSON")
    try:
        os.rename(tmp, path)
    except OSError:
        # Some filesystems refuse to rename onto an existing file: remove it first.
        os.remove(path)
        os.rename(tmp, path)
