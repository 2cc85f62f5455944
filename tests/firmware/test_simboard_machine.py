"""The simulated ESP32 under the real MicroPython unix port (64 KB heap): buses feed the real
drivers, and resets, deep sleep, the watchdog, RTC memory and WiFi behave like the chip."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from host_tools.sim.simnode import (
    DEEPSLEEP_RESET,
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    WDT_RESET,
    SimNode,
)

pytestmark = pytest.mark.micropython

NO_BROKER = "127.0.0.1:9"  # these scripts never reach MQTT


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    nodes: list[SimNode] = []

    def make(kind: str, script: str, **kw: Any) -> SimNode:
        path = tmp_path / f"script{len(nodes)}.py"
        path.write_text(script)
        kw.setdefault("seed", 4)
        kw.setdefault("sim_heap", 0)  # these scripts run in a 64 KB heap, board modules included
        node = SimNode(
            kind, broker=NO_BROKER, main=path, flash_dir=tmp_path / f"flash{len(nodes)}", **kw
        )
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.close()


def _json_line(node: SimNode, tag: str, timeout_s: float = 20.0) -> Any:
    line = node.wait_for("^" + tag + " ", timeout_s)
    return json.loads(line[len(tag) + 1 :])


AIR_SCRIPT = """
import gc, json, machine, time
from drivers.pms5003 import PMS5003, as_dict
from drivers.sht3x import SHT3x
with open("board.json") as f:
    b = json.load(f)["buses"]
u = machine.UART(1, baudrate=9600, tx=b["uart1"]["tx"], rx=b["uart1"]["rx"])
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=100000)
pm = PMS5003(u, passive=True)
th = SHT3x(i2c, 68)
try:
    i2c.readfrom(0x50, 2)
    absent = None
except OSError as e:
    absent = e.args[0]
wrong = machine.UART(2, baudrate=9600, tx=4, rx=5)
print("air", json.dumps({"scan": i2c.scan(), "absent": absent, "pm": as_dict(pm.read()),
      "th": th.read(time.sleep_ms), "t": time.time(), "wrong_pins": wrong.read()}))
for i in range(400):
    r = pm.read()
    print("pm", json.dumps([r is not None, pm.errors["checksum"]]))
    time.sleep_ms(30)
"""


def test_buses_feed_the_real_drivers(run: Any) -> None:
    start = "2026-02-20T08:00:00Z"
    node = run("air", AIR_SCRIPT, start=start)
    t_sim = node.sim_time()
    got = _json_line(node, "air")
    assert got["scan"] == [68]
    assert got["absent"] == 19  # ENODEV, as an ESP32 reports a missing I2C device
    assert got["wrong_pins"] is None  # nothing is wired to those pins
    assert got["t"] < 1e9  # no NTP yet: the RTC counts from 2000-01-01 as after power-on
    w = node.model.weather(t_sim)
    temp, rh = got["th"]
    assert temp == pytest.approx(w["temp"], abs=0.3)
    assert rh == pytest.approx(w["rh"], abs=2.0)
    truth = node.model.pm(t_sim, w["rh"])
    assert got["pm"]["pm25_cf1"] == pytest.approx(truth["pm25_cf1"], rel=0.15, abs=2)
    assert got["pm"]["pm25_atm"] <= got["pm"]["pm25_cf1"] <= got["pm"]["pm10_cf1"]
    # A fault injected on the launcher side reaches the driver as a counted checksum error.
    node.wait_for(r"^pm \[true, 0\]")
    node.hardware.inject("pm", "checksum", 1)
    line = node.wait_for(r"^pm \[(true|false), 1\]")
    assert line
    node.wait_for(r"^pm \[true, 1\]")  # and the next frame is good again


MAG_SCRIPT = """
import json, machine, time
from drivers.qmc5883l import QMC5883L
m = QMC5883L(machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21)), 13)
print("mag", json.dumps(m.read()))
"""


def test_magnetometer_reads_the_bay_model(run: Any) -> None:
    node = run("parking", MAG_SCRIPT, start="2026-05-12T03:00:00Z", seed=21)
    t = node.sim_time()
    x, y, z = _json_line(node, "mag")
    want = node.model.bay(t)
    # QMC5883L at +-2 G: 12000 LSB/G, so 1 LSB = 0.0083 uT; the bay may move by the ramp only.
    assert (x, y, z) == pytest.approx((want["x"], want["y"], want["z"]), abs=1.0)


WATER_SCRIPT = """
import gc, json, machine, time
from drivers.ultrasonic_pulse import UltrasonicPulse
from drivers.pressure import PressureTransducer, head_m
from drivers.bme280 import BME280
from drivers.battery import Battery
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
temp, rh, hpa = BME280(i2c, 118).read(time.sleep_ms)
r = UltrasonicPulse(machine.Pin(13, machine.Pin.OUT), machine.Pin(34, machine.Pin.IN),
                    machine.time_pulse_us, time.sleep_us)
p = PressureTransducer(machine.ADC(machine.Pin(33), atten=machine.ADC.ATTN_11DB), 200.0, divider=1.5)
bat = Battery(machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB), divider=2.0)
print("water", json.dumps({"range": r.read(temp), "head": head_m(p.read(), hpa / 10), "bat": bat.read(),
      "floating": machine.ADC(machine.Pin(32)).read_u16()}))
gc.collect()
print("free", gc.mem_free())
"""


def test_battery_board_water_sensors(run: Any) -> None:
    node = run("water", WATER_SCRIPT, board="sim-battery", start="2026-09-01T06:00:00Z", seed=8)
    t = node.sim_time()
    got = _json_line(node, "water")
    canal = node.model.canal(t)
    assert got["range"] == pytest.approx(canal["distance_m"], abs=0.03)
    # The transducer sits 0.1 m above the gauge zero (sim-battery.json mount_m).
    assert got["head"] == pytest.approx(canal["level"] - 0.1, abs=0.05)
    volts, percent = got["bat"]
    assert 3.9 < volts < 4.1 and 70 < percent < 95  # the launcher's default 90 % charge
    assert got["floating"] == 0
    node.wait_for("^free ")


DEEPSLEEP_SCRIPT = """
import machine, time
rtc = machine.RTC()
mem = rtc.memory()
n = mem[0] if mem else 0
print("boot %d cause %d wake %d t %d" % (n, machine.reset_cause(), machine.wake_reason(), time.time()))
if n < 2:
    rtc.memory(bytes([n + 1]))
    machine.deepsleep(300)
    print("never printed: deep sleep does not return")
print("done")
"""


def test_deepsleep_keeps_rtc_memory_and_power_cut_clears_it(run: Any) -> None:
    node = run("air", DEEPSLEEP_SCRIPT, speed=10.0)
    node.wait_for("^done$")
    lines = [ln for ln in node.log if ln.startswith("boot ")]
    assert [ln.split()[1:6] for ln in lines] == [
        ["0", "cause", str(PWRON_RESET), "wake", "0"],
        ["1", "cause", str(DEEPSLEEP_RESET), "wake", "4"],
        ["2", "cause", str(DEEPSLEEP_RESET), "wake", "4"],
    ]
    # The RTC kept counting through the sleeps: >= 2 x 0.3 s real x speed 10.
    t = [int(ln.split()[-1]) for ln in lines]
    assert t[2] - t[0] >= 6
    assert "never printed" not in "\n".join(node.log)
    assert node.reset_causes == [PWRON_RESET, DEEPSLEEP_RESET, DEEPSLEEP_RESET]
    node.wait_for("staying down")
    assert node.state == "halted"  # main.py ended, no watchdog: the board sits at the REPL
    node.kill()
    mark = len(node.log)
    node.start()  # power-on: RTC memory is gone
    node.wait_for(f"^boot 0 cause {PWRON_RESET} ", start=mark)
    node.wait_for(f"^boot 1 cause {DEEPSLEEP_RESET} ", start=mark)
    mark = len(node.log)
    node.reboot()  # EN button: RTC memory is gone too, flash stays
    node.wait_for(f"^boot 0 cause {HARD_RESET} ", start=mark)


WDT_SCRIPT = """
import machine, time
cause = machine.reset_cause()
print("cause", cause)
if cause != machine.WDT_RESET:
    w = machine.WDT(timeout=300)
    w.feed()
    time.sleep(60)  # stuck in a blocking call: nothing feeds the watchdog
print("recovered")
"""


def test_watchdog_resets_a_stuck_node(run: Any) -> None:
    node = run("air", WDT_SCRIPT)
    node.wait_for("^recovered$", timeout_s=15)
    assert node.reset_causes == [PWRON_RESET, WDT_RESET]
    assert any("watchdog not fed" in ln for ln in node.log)


CRASH_SCRIPT = """
import machine
cause = machine.reset_cause()
print("cause", cause)
if cause == machine.PWRON_RESET:
    machine.WDT(timeout=200)
    raise ValueError("boom")
if cause == machine.WDT_RESET:
    machine.reset()
print("finally up")
"""


def test_crash_with_watchdog_armed_resets_then_machine_reset(run: Any) -> None:
    node = run("air", CRASH_SCRIPT)
    node.wait_for("^finally up$", timeout_s=15)
    assert node.reset_causes == [PWRON_RESET, WDT_RESET, SOFT_RESET]
    assert any("ValueError: boom" in ln for ln in node.log)


def test_crash_without_watchdog_stays_down(run: Any) -> None:
    node = run("air", "print('up')\nraise RuntimeError('no watchdog here')\n")
    node.wait_for("staying down")
    time.sleep(0.5)
    assert node.boots == 1 and node.state == "halted" and node.running
    assert node.returncode == 1
    node.stop()
    assert not node.running


WIFI_SCRIPT = """
import network, time, ntptime, machine
w = network.WLAN(network.STA_IF)
try:
    w.connect("cityedge-sim", "pw")
except OSError as e:
    print("inactive", e)
w.active(True)
w.connect("cityedge-sim", "pw")
print("c0", w.isconnected(), w.status())
t0 = time.ticks_ms()
while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    time.sleep_ms(10)
print("assoc", time.ticks_diff(time.ticks_ms(), t0), w.status())
print("mac", w.config("mac") == machine.unique_id(), w.ifconfig()[0])
r = [w.status("rssi") for _ in range(200)]
print("rssi", min(r), max(r))
ntptime.settime()
a = time.time()
time.sleep_ms(500)
b = time.time()
print("ntp", a, b, time.gmtime(a)[0], machine.RTC().datetime()[0])
print("waiting")
while w.isconnected():
    time.sleep_ms(20)
print("lost", w.status())
try:
    ntptime.settime()
except OSError as e:
    print("ntp fails", e.args[0])
while not w.isconnected():
    w.connect("cityedge-sim", "pw")
    time.sleep_ms(300)
print("back", w.status())
"""


def test_wifi_association_rssi_outage_and_accelerated_clock(run: Any) -> None:
    start = datetime(2026, 2, 20, tzinfo=UTC).timestamp()
    node = run("air", WIFI_SCRIPT, speed=3600.0, start="2026-02-20", wifi={"assoc_ms": 200})
    assert "Wifi Not Started" in node.wait_for("^inactive")
    assert node.wait_for("^c0 ") == "c0 False 1001"  # STAT_CONNECTING
    _, ms, status = node.wait_for("^assoc ").split()
    assert int(ms) >= 200 and status == "1010"  # STAT_GOT_IP after the association delay
    assert node.wait_for("^mac ").startswith("mac True 192.168.4.")
    lo, hi = map(int, node.wait_for("^rssi ").split()[1:])
    assert -75 <= lo < hi <= -59
    _, a, b, year, rtc_year = node.wait_for("^ntp ").split()
    # NTP gives simulated time: from the start date, 3600 simulated s per real s.
    assert start <= int(a) < start + 3600 * 60
    assert 1700 <= int(b) - int(a) <= 3600 * 3
    assert year == rtc_year == "2026"
    node.wait_for("^waiting$")
    node.set_wifi(False)
    assert node.wait_for("^lost ") == "lost 200"  # STAT_BEACON_TIMEOUT
    assert node.wait_for("^ntp fails") == "ntp fails 116"
    node.set_wifi(True)
    assert node.wait_for("^back ") == "back 1010"


def test_wifi_that_never_associates(run: Any) -> None:
    script = (
        "import network, time\nw = network.WLAN(network.STA_IF)\nw.active(True)\n"
        "w.connect('x', 'y')\ntime.sleep_ms(300)\nprint('st', w.isconnected(), w.status())\n"
    )
    node = run("water", script, wifi={"fail": True, "assoc_ms": 100})
    assert node.wait_for("^st ") == "st False 201"  # STAT_NO_AP_FOUND


RTC_SCRIPT = """
import machine, time
rtc = machine.RTC()
if machine.reset_cause() == machine.PWRON_RESET:
    rtc.datetime((2026, 4, 13, 0, 6, 30, 0, 0))  # Songkran morning, UTC
    print("set", time.time(), time.gmtime()[:6])
    machine.reset()
print("after", machine.reset_cause(), time.time(), rtc.datetime()[:3], machine.unique_id().hex())
"""


def test_rtc_set_by_the_firmware_survives_a_soft_reset(run: Any) -> None:
    node = run("parking", RTC_SCRIPT, speed=1.0)
    _, t_set, *_ = node.wait_for("^set ").split(" ", 2)
    assert int(t_set) == int(datetime(2026, 4, 13, 6, 30, tzinfo=UTC).timestamp())
    assert "(2026, 4, 13, 6, 30, 0)" in node.wait_for("^set ")
    _, cause, t_after, rest = node.wait_for("^after ").split(" ", 3)
    assert cause == str(SOFT_RESET)
    assert 0 <= int(t_after) - int(t_set) <= 5  # the RTC kept its time through the reset
    assert rest == f"(2026, 4, 13) {node.mac}"
