# Persistent identity of this run: the boot id, +1 on every boot, kept in data/state.json
# (written to a temp file then renamed, so a power cut leaves the old or the new file, never
# half of one). Imported at boot only.
import json
import os


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
