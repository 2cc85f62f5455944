# Imported first by main.py: when an update has been installed (ota/boot.json exists), otaslot
# picks its slot, counts a probation boot or rolls back (docs/ota.md). Kept tiny: a node that
# was never updated pays only this module (main.py and this stay at the flash root).
import os


def _updated():
    try:
        os.stat("ota/boot.json")
        return True
    except OSError:
        return False


if _updated():
    import otaslot

    otaslot.start()
