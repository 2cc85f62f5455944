# Entry point, as on an ESP32: everything else lives in node/ and drivers/.
import otaboot  # an installed update: its slot, probation and rollback (docs/ota.md)
import node.app

node.app.main()
