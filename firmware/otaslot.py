# Boot-time slot chooser for over-the-air updates (docs/ota.md). main.py
# imports it only when ota/boot.json exists, i.e. once an update has been installed.
# It stays at the flash root (never in a bundle): it must not depend on the slot it picks.
#
# ota/boot.json (written temp + rename, so a power cut leaves the old or the new one):
#   {"slot": "a"|"b"|"", "ver": N, "prev": slot, "pver": N, "probation": bool, "boots": n,
#    "why": last failure, "bad": [versions rolled back], "last": {"state": ..., ...}}
# "" is the factory install at the flash root. On probation each boot is counted before the
# new slot runs; a boot that starts with 3 already counted (none marked healthy by
# node.ota.healthy()) goes back to the previous slot and reports rolled_back with the reason.
import json
import os
import sys

from micropython import const

STATE = const("ota/boot.json")
_TMP = const("ota/boot.tmp")
_FAIL = const("ota/fail.txt")
MAX_BOOTS = const(3)
ON = False  # this boot runs a slot on probation (node/sleep.py radios every wake then)


def load():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"slot": "", "ver": 0}


def save(st):
    with open(_TMP, "w") as f:
        json.dump(st, f)
    os.rename(_TMP, STATE)  # the one atomic step (littlefs and POSIX replace the target)


def _why(st):
    try:
        with open(_FAIL) as f:
            why = f.read(120)
        os.remove(_FAIL)
        return why
    except OSError:
        pass
    try:
        import machine

        if machine.reset_cause() == machine.WDT_RESET:
            return "watchdog reset"
    except (ImportError, AttributeError):
        pass
    return st.get("why") or "reset before it was healthy (sampled, connected, custody ack)"


def _slept():
    """Woken from deep sleep (a battery board's every wake): not a failed boot (node/otaget.py
    wake() counts a radio wake without custody instead)."""
    try:
        import machine

        return machine.reset_cause() == machine.DEEPSLEEP_RESET
    except (ImportError, AttributeError):
        return False


def boot():
    """Count a probation boot or roll back; put the active slot first on sys.path. Returns the
    state the node runs with."""
    global ON
    st = load()
    if st.get("probation") and not _slept():
        if st.get("boots", 0):
            st["why"] = _why(st)
        if st.get("boots", 0) >= MAX_BOOTS:
            bad = st.get("bad", [])[-3:] + [st["ver"]]
            st = {
                "slot": st.get("prev", ""),
                "ver": st.get("pver", 0),
                "bad": bad,
                "last": {
                    "state": "rolled_back",
                    "ver": st["ver"],
                    "to": st.get("pver", 0),
                    "reason": st["why"],
                    "boots": st["boots"],
                },
            }
        else:
            st["boots"] = st.get("boots", 0) + 1
        save(st)
    ON = bool(st.get("probation"))
    if st.get("slot"):
        # Relative, as "" is: each module's __file__ (interned) stays "ota/a/node/x.mpy".
        sys.path.insert(0, "ota/" + st["slot"])
    return st


def start():
    """Choose the slot. On probation, run the app here, so an exception (at import or later)
    is recorded for the rollback report and the board reset (an ESP32 whose main.py ends sits
    at the REPL, its watchdog perhaps not started yet); main.py's own import then never runs."""
    st = boot()
    if not st.get("probation"):
        return
    try:
        import node.app

        node.app.main()
    except Exception as e:  # noqa: BLE001 - recorded for the rollback report, then reset
        try:
            with open(_FAIL, "w") as f:
                f.write(("%s: %s" % (type(e).__name__, e))[:120])
        except OSError:
            pass
        import machine

        machine.reset()
    raise SystemExit  # main() returned: end main.py as it would have, without a second run
