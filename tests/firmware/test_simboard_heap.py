"""What the simulated board costs the node's heap, and that the launcher's allowance covers it.

On an ESP32 `machine`, `network`, `ntptime` and `time` are in ROM; in the simulation they are
.mpy modules on the GC heap, so SimNode adds SIM_HEAP to the firmware's heap. This test uses
every part of the simulated board in one 64 KB node and checks the board's modules never need
more than that allowance (so the firmware's own budget stays what `heap` says)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from host_tools.sim.simnode import SIM_HEAP, SimNode

pytestmark = pytest.mark.micropython

SCRIPT = """
import gc
gc.collect()
base = gc.mem_alloc()
import machine, network, ntptime, time
u = machine.UART(1, baudrate=9600, tx=17, rx=16)
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=100000)
i2c.scan()
i2c.writeto(118, b"\\xd0")
i2c.readfrom(118, 1)
i2c.readfrom_mem(118, 0xD0, 1)
u.write(b"\\x42\\x4d\\xe2\\x00\\x00\\x01\\x71")
u.read(32)
adc = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
adc.read_uv()
led = machine.Pin(5, machine.Pin.OUT)
led.value(1)
machine.time_pulse_us(machine.Pin(27, machine.Pin.IN), 1, 10)
machine.Signal(led, invert=True).on()
machine.PWM(machine.Pin(26), freq=1000)
wdt = machine.WDT(timeout=30000)
wdt.feed()
rtc = machine.RTC()
rtc.memory(b"abc")
rtc.datetime()
machine.unique_id()
machine.reset_cause()
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("cityedge-sim", "pw")
while not w.isconnected():
    time.sleep_ms(5)
w.status("rssi")
w.config("mac")
w.ifconfig()
ntptime.settime()
time.gmtime()
gc.collect()
print("board heap", gc.mem_alloc() - base)
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SimNode]:
    script = tmp_path / "heap.py"
    script.write_text(SCRIPT)
    n = SimNode(
        "air",
        broker="127.0.0.1:9",
        board="sim-battery",
        main=script,
        seed=1,
        sim_heap=0,
        flash_dir=tmp_path / "flash",
        wifi={"assoc_ms": 20},
    )
    yield n.start()
    n.close()


def test_simulated_board_fits_its_allowance_in_a_64k_heap(node: SimNode) -> None:
    used = int(node.wait_for("^board heap ").split()[-1])
    print(f"simulated board heap: {used} bytes (allowance {SIM_HEAP})")
    assert 0 < used <= SIM_HEAP, f"the simulated board takes {used} bytes; SIM_HEAP is {SIM_HEAP}"
    assert not any("MemoryError" in line for line in node.log)
