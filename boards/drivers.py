"""The sensor drivers' declarations, read on CPython without importing MicroPython code.

Each module in firmware/drivers/ declares its board drivers in an ``if False:`` block, which
MicroPython compiles to nothing (no heap on the node, which is at its 64 KB limit)
(docs/drivers.md "Declaration"):

    if False:
        BOARD = "names Class bus temp argument..."
        VALUES = (("quantity", "unit"), ...)

``names`` are the board-file driver names (``/``-separated), ``bus`` uart, i2c or ``-``,
``temp`` ``temp`` if it gives the temperature (the node reads it first), ``temp_c`` if its
read(temp_c) is compensated with a temperature read before, else ``-``; each argument of the
constructor after the bus ``key:code[:default[:keyword]]``. ``VALUES`` are the values a read
returns. This module parses the files with :mod:`ast` (no MicroPython code is imported) for
the board schema (boards/), the kinds' channel names and the simulator's fakes, and reads
the node kinds from firmware/node/config.py, so those are defined once too.
tests/firmware/test_driver_parity.py checks the node's bring-up against the declarations.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"

# Argument codes (upper case: the key is required in the board file).
VALUE_CODES = {"i": "int", "f": "number", "b": "bool"}
PIN_CODES = {"o": "output", "n": "input", "a": "adc", "h": "output"}
PLATFORM_CODES = {"t": "machine.time_pulse_us", "s": "time.sleep_us"}


@dataclass(frozen=True)
class Arg:
    """One board-file key of a driver (or a platform callable when ``key`` is None)."""

    key: str | None
    code: str  # the letter, lower case: i f b o n a h t s
    required: bool
    default: Any
    passed: bool  # False: a board-file key the driver does not take ("-" codes, "h")
    keyword: str | None = None

    @property
    def pin(self) -> str | None:
        """``output``/``input``/``adc`` for a GPIO key, else None."""
        return PIN_CODES.get(self.code)


@dataclass(frozen=True)
class Driver:
    """One board driver name's declaration."""

    name: str
    module: str  # firmware/drivers/<module>.py
    cls: str
    bus: str | None
    args: tuple[Arg, ...]
    values: tuple[tuple[str, str | None], ...]  # (quantity, unit) of each value result() gives
    takes_temp: bool  # result(temp_c): compensated with a temperature read before
    gives_temp: bool  # its first value is the temperature: the node reads it first

    @property
    def keys(self) -> dict[str, Arg]:
        return {a.key: a for a in self.args if a.key is not None}


class DeclarationError(ValueError):
    """A driver module's BOARD literal is malformed (a firmware bug, not a user's)."""


def _literal(node: ast.expr, names: dict[str, Any], where: str) -> Any:
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "const":
        return _literal(node.args[0], names, where)
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):  # CHANNELS[:6]
        seq = _literal(node.value, names, where)
        lo, hi = (
            None if b is None else _literal(b, names, where)
            for b in (node.slice.lower, node.slice.upper)
        )
        return seq[lo:hi]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, names, where) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {
            _literal(k, names, where): _literal(v, names, where)
            for k, v in zip(node.keys, node.values, strict=True)
            if k is not None
        }
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise DeclarationError(f"{where}: not a literal: {ast.unparse(node)}") from exc


def module_literals(path: Path) -> dict[str, Any]:
    """The module-level ``NAME = <literal>`` assignments of a firmware file (others skipped)."""
    names: dict[str, Any] = {}
    body = ast.parse(path.read_text(), str(path)).body
    for stmt in list(body):  # `if False:` data for this side only (the node never runs it)
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Constant) and not stmt.test.value:
            body.extend(stmt.body)
    for stmt in body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                try:
                    names[target.id] = _literal(stmt.value, names, f"{path}:{stmt.lineno}")
                except DeclarationError:
                    continue
    return names


def _arg(text: str, where: str) -> Arg:
    parts = text.split(":")
    if not 2 <= len(parts) <= 4:
        raise DeclarationError(
            f"{where}: an argument is key:code[:default[:keyword]], not {text!r}"
        )
    key, code = parts[0] or None, parts[1]
    skip = code.startswith("-")
    letter = code.lstrip("-")
    low = letter.lower()
    if low not in {**VALUE_CODES, **PIN_CODES, **PLATFORM_CODES}:
        raise DeclarationError(f"{where}: unknown argument code {code!r}")
    raw = parts[2] if len(parts) > 2 else ""
    default: Any = None
    if raw:
        default = float(raw) if low == "f" else (raw == "1" if low == "b" else int(raw))
    return Arg(
        key=key,
        code=low,
        required=letter.isupper() and low not in PLATFORM_CODES,
        default=default,
        passed=not skip and low != "h",
        keyword=parts[3] if len(parts) > 3 else None,
    )


def parse(text: str, values: Any, module: str, where: str) -> list[Driver]:
    """The drivers one BOARD string declares, with the VALUES beside it."""
    fields = text.split(" ")
    if len(fields) < 4:
        raise DeclarationError(f"{where}: want BOARD = 'names Class bus temp argument...'")
    names, cls, bus, temp = fields[:4]
    if bus not in ("uart", "i2c", "-") or temp not in ("temp", "temp_c", "-"):
        raise DeclarationError(f"{where}: bus is uart, i2c or -; temp is temp, temp_c or -")
    if not (isinstance(values, tuple) and all(len(v) == 2 for v in values)):
        raise DeclarationError(f"{where}: VALUES is a tuple of (quantity, unit)")
    return [
        Driver(
            name=name,
            module=module,
            cls=cls,
            bus=None if bus == "-" else bus,
            args=tuple(_arg(a, f"{where}: {name}") for a in fields[4:]),
            values=tuple((q, u or None) for q, u in values),
            takes_temp=temp == "temp_c",
            gives_temp=temp == "temp",
        )
        for name in names.split("/")
    ]


@cache
def declarations() -> dict[str, Driver]:
    """Board driver name -> its declaration, from every firmware/drivers/*.py with a BOARD."""
    out: dict[str, Driver] = {}
    for path in sorted((FIRMWARE / "drivers").glob("*.py")):
        found = module_literals(path)
        board = found.get("BOARD")
        if board is None:
            continue
        if not isinstance(board, str):
            raise DeclarationError(f"{path}: BOARD must be one string")
        for d in parse(board, found.get("VALUES"), path.stem, str(path)):
            if d.name in out:
                raise DeclarationError(f"{path}: driver {d.name!r} is declared twice")
            out[d.name] = d
    return out


@cache
def kinds() -> tuple[str, ...]:
    """The node kinds (air, water, parking): ``KINDS`` of firmware/node/config.py."""
    found = module_literals(FIRMWARE / "node" / "config.py").get("KINDS")
    if not (isinstance(found, tuple) and all(isinstance(k, str) for k in found)):
        raise DeclarationError("firmware/node/config.py: KINDS is not a tuple of names")
    return found


def kind_names(kind: str) -> dict[str, tuple[str | None, ...]]:
    """A kind's ``NAMES`` (board driver -> the channel of each value) from firmware/node/."""
    found = module_literals(FIRMWARE / "node" / f"{kind}.py").get("NAMES")
    if not isinstance(found, dict):
        raise DeclarationError(f"firmware/node/{kind}.py: no literal NAMES")
    return found


def kind_units(kind: str) -> dict[str, tuple[str, int]]:
    """A kind's ``UNITS`` (channel -> (SenML unit, decimals)) from firmware/node/."""
    found = module_literals(FIRMWARE / "node" / f"{kind}.py").get("UNITS")
    if not isinstance(found, dict):
        raise DeclarationError(f"firmware/node/{kind}.py: no literal UNITS")
    return found
