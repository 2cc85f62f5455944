"""Board definitions: which pins, buses, sensors and power a CityEdge node board has.

Board files (`boards/<name>.json`) are data only; the firmware reads the same file as
`/board.json` on the node. `load_board(name_or_path)` returns the parsed dict after checking
it; every error names the key and says what to fix. The format is described in
boards/README.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boards.drivers import declarations, kinds

BOARDS_DIR = Path(__file__).resolve().parent
KINDS = kinds()  # firmware/node/config.py's, the one list of node kinds
MCUS = ("esp32", "sim")
POWER_SOURCES = ("mains", "battery", "solar")
CHEMISTRIES = ("li-ion", "lifepo4")

# ESP32 GPIO facts (ESP32 datasheet, "Peripheral pin configurations" and "Strapping pins"):
# GPIO 6-11 are wired to the SPI flash; 20, 24, 28-31 do not exist; 34-39 are input-only.
_NO_PIN = frozenset({6, 7, 8, 9, 10, 11, 20, 24, 28, 29, 30, 31})
_INPUT_ONLY = frozenset(range(34, 40))
# ADC1 channels (GPIO 32-39). ADC2 cannot be read while WiFi is on (ESP-IDF ADC docs).
_ADC1 = frozenset(range(32, 40))

_TOP_REQUIRED = {
    "name": str,
    "description": str,
    "mcu": str,
    "flash_mb": int,
    "psram": bool,
    "power": dict,
    "buses": dict,
    "sensors": dict,
}
_TOP_OPTIONAL = {"status_led": dict, "notes": str}
_BUS_KEYS = {
    "uart": {"type": str, "id": int, "tx": int, "rx": int, "baudrate": int},
    "i2c": {"type": str, "id": int, "scl": int, "sda": int, "freq": int},
}

_NUM = (int, float)
_TYPES = {"i": int, "f": _NUM, "b": bool, "o": int, "n": int, "a": int, "h": int}


def _schema() -> dict[str, tuple[str | None, dict[str, Any], dict[str, Any], dict[str, str]]]:
    """Sensor entries from the drivers' declarations (boards/drivers.py): driver -> (bus type
    or None, required keys, optional keys, GPIO keys -> output/input/adc)."""
    out = {}
    for name, d in declarations().items():
        if name == "battery":  # power.battery, checked with the power model's keys
            continue
        keys = d.keys
        req = {k: _TYPES[a.code] for k, a in keys.items() if a.required}
        opt = {k: _TYPES[a.code] for k, a in keys.items() if not a.required}
        pins = {k: a.pin for k, a in keys.items() if a.pin is not None}
        out[name] = (d.bus, req, opt, pins)
    return out


DRIVERS = _schema()
_OUTPUT_PIN_KEYS = ("tx", "scl", "sda")


class BoardError(ValueError):
    """A board file that cannot be used; the message names the key, `hint` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def list_boards() -> list[str]:
    """Names of the board files shipped in boards/."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json"))


def board_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if "/" in text or text.endswith(".json"):
        return Path(text)
    return BOARDS_DIR / f"{text}.json"


def load_board(name_or_path: str | Path) -> dict[str, Any]:
    """Read and check a board file: a name from `list_boards()` or a path to a .json file."""
    path = board_path(name_or_path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise BoardError(
            f"no board file {path}", hint="known boards: " + ", ".join(list_boards())
        ) from exc
    except OSError as exc:
        raise BoardError(f"cannot read board file {path}: {exc}") from exc
    try:
        board = json.loads(text)
    except ValueError as exc:
        raise BoardError(
            f"{path}: not valid JSON: {exc}", hint="fix the syntax (a JSON linter shows the line)"
        ) from exc
    validate_board(board, str(path))
    return board  # type: ignore[no-any-return]


def _type_name(t: Any) -> str:
    if t is bool:
        return "true/false"
    if t is int:
        return "a whole number"
    if t == _NUM:
        return "a number"
    if t is str:
        return "a string"
    if t is dict:
        return "an object"
    return str(t)


def _check_type(where: str, key: str, value: Any, t: Any) -> None:
    ok = isinstance(value, t) and not (t is int and isinstance(value, bool))
    if t == _NUM and isinstance(value, bool):
        ok = False
    if not ok:
        raise BoardError(f"{where}{key}: expected {_type_name(t)}, got {json.dumps(value)}")


def _check_keys(
    where: str, obj: dict[str, Any], required: dict[str, Any], optional: dict[str, Any]
) -> None:
    for key, t in required.items():
        if key not in obj:
            raise BoardError(f"{where}{key}: missing", hint=f'add "{key}" ({_type_name(t)})')
        _check_type(where, key, obj[key], t)
    for key, value in obj.items():
        if key in required:
            continue
        if key not in optional:
            known = ", ".join(sorted({*required, *optional}))
            raise BoardError(f"{where}{key}: unknown key", hint=f"known keys here: {known}")
        _check_type(where, key, value, optional[key])


def _check_pin(where: str, pin: int, output: bool = False, adc: bool = False) -> None:
    if not 0 <= pin <= 39 or pin in _NO_PIN:
        hint = "GPIO 6-11 drive the SPI flash" if pin in range(6, 12) else "an ESP32 has GPIO 0-39"
        raise BoardError(f"{where}: GPIO {pin} cannot be used", hint=hint)
    if output and pin in _INPUT_ONLY:
        raise BoardError(
            f"{where}: GPIO {pin} is input-only (GPIO 34-39)",
            hint="use an output-capable pin such as 4, 5, 13-19, 21-23, 25-27, 32, 33",
        )
    if adc and pin not in _ADC1:
        raise BoardError(
            f"{where}: GPIO {pin} is not on ADC1",
            hint="use GPIO 32-39: ADC2 cannot be read while WiFi is on",
        )


def _check_bus(w: str, name: str, bus: Any, claim: Callable[[int, str], None]) -> None:
    """One entry of ``buses``: its type, keys, controller id and pins."""
    where = f"{w}buses.{name}."
    if not isinstance(bus, dict):
        raise BoardError(f"{where[:-1]}: expected an object")
    btype = bus.get("type")
    if btype not in _BUS_KEYS:
        raise BoardError(
            f"{where}type: {json.dumps(btype)} is not a bus type", hint='use "uart" or "i2c"'
        )
    keys = _BUS_KEYS[btype]
    _check_keys(
        where,
        bus,
        {k: t for k, t in keys.items() if k not in ("baudrate", "freq")},
        {k: t for k, t in keys.items() if k in ("baudrate", "freq")},
    )
    max_id = 2 if btype == "uart" else 1
    if not 0 <= bus["id"] <= max_id:
        raise BoardError(f"{where}id: an ESP32 has {btype} 0..{max_id}")
    for key in ("tx", "rx", "scl", "sda"):
        if key in bus:
            _check_pin(f"{where}{key}", bus[key], output=key in _OUTPUT_PIN_KEYS)
            claim(bus[key], f"buses.{name}.{key}")


def _check_sensors(
    w: str, sensors: dict[str, Any], buses: dict[str, Any], claimed: dict[int, str]
) -> None:
    """Each kind's sensor list; each kind starts from the board-level pin claims."""
    for kind, entries in sensors.items():
        if kind not in KINDS:
            raise BoardError(
                f"{w}sensors.{kind}: unknown node kind", hint="use air, water or parking"
            )
        if not isinstance(entries, list):
            raise BoardError(f"{w}sensors.{kind}: expected a list of sensors")
        kind_claims = dict(claimed)
        names: set[str] = set()
        for i, entry in enumerate(entries):
            _check_sensor(f"{w}sensors.{kind}[{i}].", entry, buses, names, kind_claims)


def validate_board(board: Any, source: str = "board") -> None:
    """Raise BoardError naming the first problem in `board`."""
    if not isinstance(board, dict):
        raise BoardError(f"{source}: the file must hold one JSON object")
    w = f"{source}: "
    _check_keys(w, board, _TOP_REQUIRED, _TOP_OPTIONAL)
    if board["mcu"] not in MCUS:
        raise BoardError(
            f"{w}mcu: {board['mcu']!r} is not supported", hint="use one of: " + ", ".join(MCUS)
        )
    if board["flash_mb"] <= 0:
        raise BoardError(f"{w}flash_mb: must be positive")
    claimed: dict[int, str] = {}

    def claim(pin: int, what: str, kind: str | None = None) -> None:
        owner = claimed.get(pin)
        if owner is not None and owner != what:
            raise BoardError(
                f"{w}{what}: GPIO {pin} is already used by {owner}",
                hint="give each signal its own pin",
            )
        claimed[pin] = what

    _check_power(w, board["power"], claim)
    led = board.get("status_led")
    if led is not None:
        _check_keys(f"{w}status_led.", led, {"pin": int}, {"active_high": bool})
        _check_pin(f"{w}status_led.pin", led["pin"], output=True)
        claim(led["pin"], "status_led.pin")
    buses = board["buses"]
    for name, bus in buses.items():
        _check_bus(w, name, bus, claim)
    _check_sensors(w, board["sensors"], buses, claimed)


def _check_power(w: str, power: dict[str, Any], claim: Any) -> None:
    where = f"{w}power."
    src = power.get("source")
    if src not in POWER_SOURCES:
        raise BoardError(
            f"{where}source: {json.dumps(src)} is not a power source",
            hint="use one of: " + ", ".join(POWER_SOURCES),
        )
    if src == "mains":
        _check_keys(where, power, {"source": str, "deep_sleep": bool}, {"notes": str})
        return
    _check_keys(
        where,
        power,
        {
            "source": str,
            "deep_sleep": bool,
            "battery": dict,
            "sleep_current_ua": _NUM,
            "active_current_ma": _NUM,
            "wifi_tx_current_ma": _NUM,
        },
        {"notes": str, "sources": str},
    )
    bat = power["battery"]
    _check_keys(
        f"{where}battery.",
        bat,
        {"adc_pin": int, "divider": _NUM, "capacity_mah": _NUM, "chemistry": str},
        {},
    )
    _check_pin(f"{where}battery.adc_pin", bat["adc_pin"], adc=True)
    claim(bat["adc_pin"], "power.battery.adc_pin")
    if bat["divider"] < 1 or bat["capacity_mah"] <= 0:
        raise BoardError(f"{where}battery: divider must be >= 1 and capacity_mah positive")
    if bat["chemistry"] not in CHEMISTRIES:
        raise BoardError(
            f"{where}battery.chemistry: {bat['chemistry']!r} is not known",
            hint="use one of: " + ", ".join(CHEMISTRIES),
        )
    for key in ("sleep_current_ua", "active_current_ma", "wifi_tx_current_ma"):
        if power[key] < 0:
            raise BoardError(f"{where}{key}: must not be negative")


def _check_sensor(
    where: str, entry: Any, buses: dict[str, Any], names: set[str], claimed: dict[int, str]
) -> None:
    if not isinstance(entry, dict):
        raise BoardError(f"{where[:-1]}: expected an object")
    drv = entry.get("driver")
    if drv not in DRIVERS:
        raise BoardError(
            f"{where}driver: {json.dumps(drv)} is not a known driver",
            hint="known drivers: " + ", ".join(sorted(DRIVERS)),
        )
    bus_type, required, optional, pins = DRIVERS[drv]
    req = {"name": str, "driver": str, **required}
    if bus_type is not None:
        req["bus"] = str
    _check_keys(where, entry, req, optional)
    if entry["name"] in names:
        raise BoardError(
            f"{where}name: {entry['name']!r} is used twice in this kind",
            hint="sensor names must be unique within a kind",
        )
    names.add(entry["name"])
    if bus_type is not None:
        bus = buses.get(entry["bus"])
        if bus is None:
            raise BoardError(
                f"{where}bus: {entry['bus']!r} is not a bus of this board",
                hint="buses here: " + ", ".join(buses),
            )
        if bus["type"] != bus_type:
            raise BoardError(
                f"{where}bus: {drv} needs a {bus_type} bus, {entry['bus']} is {bus['type']}"
            )
    if "address" in entry and not 0x08 <= entry["address"] <= 0x77:
        raise BoardError(
            f"{where}address: {entry['address']} is not a 7-bit I2C address (8-119)",
            hint="addresses are decimal in JSON: 0x44 is 68, 0x76 is 118, 0x0D is 13",
        )
    for key, role in pins.items():
        if key in entry:
            pin = entry[key]
            _check_pin(f"{where}{key}", pin, output=role == "output", adc=role == "adc")
            owner = claimed.get(pin)
            if owner is not None:
                raise BoardError(
                    f"{where}{key}: GPIO {pin} is already used by {owner}",
                    hint="give each signal its own pin",
                )
            claimed[pin] = f"{where.split(': ')[-1]}{key}"
