# CityEdge node runtime. FW is reported in every reading, status and birth message.
FW = "0.1.0"
