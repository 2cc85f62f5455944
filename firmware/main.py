# Entry point, as on an ESP32: everything else lives in node/ and drivers/.
# An installed update (ota/boot.json exists): otaslot picks its slot, counts a probation boot or
# rolls back (docs/ota.md). Inline, not a module: a node never updated pays two names for it.
import os

try:
    os.stat("ota/boot.json")
except OSError:
    pass
else:
    import otaslot

    otaslot.start()
import node.app

node.app.main()
