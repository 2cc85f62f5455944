"""Input that cannot hurt: a JSON decoder with bounds, the per-unit value limits of the reading
contract, and a logger that reports each kind of bad input once per interval.

The decoder refuses what Python's ``json`` would otherwise accept and turn into trouble later:

* ``NaN``, ``Infinity``, ``-Infinity`` (not JSON numbers; ``json`` accepts them by default);
* integers of more than ``MAX_INT_DIGITS`` digits (``json`` turns ``1`` followed by 400 zeros
  into a Python int, which ``float()`` cannot convert: the crash of issue 11), and numbers
  written with more than ``MAX_NUMBER_CHARS`` characters;
* floats that overflow to infinity (``1e400``);
* duplicate keys in an object (parsers disagree about which one wins);
* nesting deeper than ``MAX_DEPTH`` (checked on the bytes before parsing: no recursion).

Magnitudes are the schema's business: every number in the node-facing schemas has a
``minimum`` and ``maximum``, and a raw value's bounds depend on its unit (the ``allOf`` of
``reading.schema.json``'s ``$defs/value``); :func:`unit_limits` reads that table from the schema
so the fast path cannot drift from it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from functools import cache
from typing import Any

from edge_gateway import contract

MAX_INT_DIGITS = 20  # 2**64 has 20 digits; every integer in the contract fits in 32 bits
MAX_NUMBER_CHARS = 40
MAX_DEPTH = 16  # the deepest node payload (status sensor_errors) nests 3 objects


class BoundsError(ValueError):
    """A payload that is JSON by Python's rules but outside the contract's number rules."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BoundsError(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BoundsError(
            f"number written with {len(text)} characters (at most {MAX_NUMBER_CHARS})"
        )
    value = float(text)
    if not math.isfinite(value):
        raise BoundsError(f"number {text[:20]} overflows a double")
    return value


def _no_constants(name: str) -> Any:
    raise BoundsError(f"{name} is not a JSON number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BoundsError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return out


_DECODER = json.JSONDecoder(
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_no_constants,
    object_pairs_hook=_pairs,
)


def too_deep(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the brackets nest deeper than ``limit`` (a cheap upper bound: brackets inside
    strings count too, which only makes it stricter for odd payloads)."""
    if payload.count(b"{") + payload.count(b"[") <= limit:
        return False
    depth = 0
    for byte in payload:
        if byte == 0x7B or byte == 0x5B:  # { [
            depth += 1
            if depth > limit:
                return True
        elif byte == 0x7D or byte == 0x5D:  # } ]
            depth -= 1
    return False


def loads(payload: bytes) -> Any:
    """Decode one payload under the rules above; raises ValueError (BoundsError, JSON syntax,
    UnicodeDecodeError) for anything else."""
    if too_deep(payload):
        raise BoundsError(f"nested deeper than {MAX_DEPTH} levels")
    return _DECODER.decode(payload.decode("utf-8"))


@cache
def unit_limits() -> dict[str, tuple[float, float]]:
    """unit -> (minimum, maximum) of a raw value, from the reading schema's ``$defs/value``."""
    value = contract.schema("reading")["$defs"]["value"]
    out: dict[str, tuple[float, float]] = {}
    generic = value["properties"]["v"]
    # v is a number or a boolean (anyOf, for ajv's strict mode): the bounds are the number's
    generic = next((b for b in generic.get("anyOf", ()) if b.get("type") == "number"), generic)
    for unit in value["properties"]["u"]["enum"]:
        out[unit] = (float(generic["minimum"]), float(generic["maximum"]))
    for rule in value.get("allOf", ()):
        unit = rule["if"]["properties"]["u"]["const"]
        v = rule["then"]["properties"]["v"]
        v = next((b for b in v.get("anyOf", ()) if b.get("type") == "number"), v)
        out[unit] = (float(v["minimum"]), float(v["maximum"]))
    return out


class ReasonLog:
    """Log a kind of bad input at most once per ``interval_s`` per reason, with how many more
    came meanwhile — never one line (or traceback) per message of a flood."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self.log = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, level: int, reason: str, message: str, *args: object) -> bool:
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        if len(self._last) > 256:  # reasons are a fixed set; this only guards against misuse
            self._last.clear()
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        suffix = f" ({more} more like it in the last {self.interval_s:.0f} s)" if more else ""
        self.log.log(level, message + suffix, *args)
        return True
