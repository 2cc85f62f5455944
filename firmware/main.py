# Entry point, as on an ESP32: everything else lives in node/ and drivers/.
import os

try:
    ota = os.stat("ota/boot.json")  # an update was installed: otaboot picks the slot
except OSError:
    ota = None
if ota:
    import otaboot

    otaboot.run()
else:
    import node.app

    node.app.main()
