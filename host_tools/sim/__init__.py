"""The simulator: the simulated node, the demo, the brokers, the virtual board and the fake ROM.

esp32/ runs inside MicroPython (the simulated board's machine, network, time ... modules);
models/ is CPython: the signal models and byte-level sensor fakes that feed it."""
