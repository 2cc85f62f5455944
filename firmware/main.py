# Entry point, as on an ESP32: everything else lives in node/ and drivers/.
import node.app

node.app.main()
