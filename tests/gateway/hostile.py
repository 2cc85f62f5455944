"""Hostile node payloads, generated over the fields of the reading schema.

Each payload is built as text (so it can hold what ``json.dumps`` never writes: NaN and
Infinity tokens, integers of hundreds of digits, duplicate keys) from a valid reading with one
field replaced. :func:`corpus` walks every field of ``reading.schema.json`` (and every raw unit)
with every kind of bad value; :func:`payload_with` makes one from a hypothesis draw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

from edge_gateway import bounds, contract

HUGE_INT = "1" + "0" * 400  # the integer of issue 11: valid JSON, not a double
TOKENS = [
    HUGE_INT,
    "-" + HUGE_INT,
    "1" + "0" * 30,
    "9" * 4400,
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    "0." + "1" * 100,
    "4294967296",
    "-1",
    "1.5",
    "true",
    "null",
    '""',
    '"' + "x" * 20000 + '"',
    '"\\ud800"',
    "[]",
    "{}",
    "[" * 5000 + "]" * 5000,
    '{"a":' * 40 + "1" + "}" * 40,
    '"' + "\u0e01" * 3000 + '"',
    "[1,2,3]" * 1,
    '{"v":1}',
]


def base_reading(device_id: str, seq: int, t: float = 1.7e9) -> dict[str, Any]:
    return {
        "v": 1,
        "device_id": device_id,
        "kind": "air",
        "fw": "0.1.0",
        "boot": 1,
        "seq": seq,
        "t": t,
        "synced": True,
        "window_s": 60,
        "n": 12,
        "raw": {
            "pm25_atm": {"v": 12.5, "u": "ug/m3"},
            "temp": {"v": 30.5, "u": "Cel"},
            "battery": {"v": 3.9, "u": "V"},
        },
    }


def _text(body: dict[str, Any], path: tuple[str, ...], token: str) -> str:
    """The reading's JSON with the value at ``path`` replaced by the raw ``token`` text."""
    marker = "\u0000MARK\u0000"
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return json.dumps(body, separators=(",", ":")).replace(json.dumps(marker), token)


def _paths() -> list[tuple[str, ...]]:
    sch = contract.schema("reading")
    out: list[tuple[str, ...]] = [(name,) for name in sch["properties"]]
    out += [
        ("raw", "pm25_atm", "v"),
        ("raw", "pm25_atm", "u"),
        ("raw", "battery", "v"),
        ("raw", "temp", "v"),
        ("raw", "x" * 40),
        ("raw", "Bad-Name"),
        ("extra",),
    ]
    return out


def corpus(device_id: str, first_seq: int, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """(what, payload) pairs; every one breaks the contract. Seqs are distinct, from
    ``first_seq``."""
    seq = first_seq
    for path in _paths():
        for token in TOKENS:
            body = base_reading(device_id, seq)
            seq += 1
            text = _text(body, path, token)
            if _accepted_by_reference(text):
                continue  # e.g. "n": 1.5 is refused, but "extra" may be whatever: skip valid ones
            yield f"{'.'.join(path)}={token[:20]}", text.encode()
    for unit, (lo, hi) in bounds.unit_limits().items():
        for v in (lo - 1, hi + 1, hi * 1e6):
            body = base_reading(device_id, seq)
            seq += 1
            body["raw"]["x"] = {"v": v, "u": unit}
            yield f"raw.x {unit}={v}", json.dumps(body).encode()
    for key in ("seq", "boot", "device_id", "raw", "t"):  # duplicate keys
        body = base_reading(device_id, seq)
        seq += 1
        text = json.dumps(body, separators=(",", ":"))
        yield f"duplicate {key}", (text[:-1] + f',"{key}":{json.dumps(body[key])}}}').encode()
    for size in (16385, 40000, 65536):  # above the gateway's bound, up to the test broker's
        yield f"size {size}", b'{"v":1,"pad":"' + b"x" * (size - 16) + b'"}'
    for _ in range(200):  # random bytes and truncations
        body = base_reading(device_id, seq)
        seq += 1
        text = json.dumps(body).encode()
        cut = rng.randrange(1, len(text) - 1)
        yield "truncated", text[:cut]
        yield "bytes", rng.randbytes(rng.randrange(1, 400))


def _accepted_by_reference(text: str) -> bool:
    """The reference decision: strict JSON (Python's json with the contract's number rules) and
    the JSON Schema. Independent of the gateway's fast path."""
    try:
        body = json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return False
    try:
        contract.validate("reading", body)
    except (contract.ContractError, RecursionError):
        return False
    return _all_finite_small(body)


def _all_finite_small(node: Any) -> bool:
    if isinstance(node, dict):
        return all(_all_finite_small(v) for v in node.values())
    if isinstance(node, list):
        return all(_all_finite_small(v) for v in node)
    if isinstance(node, int) and not isinstance(node, bool):
        return abs(node) < 10**20
    return True


def _refuse(name: str) -> Any:
    raise ValueError(name)


def payload_with(device_id: str, seq: int, path: tuple[str, ...], token: str) -> bytes:
    return _text(base_reading(device_id, seq), path, token).encode()


def field_paths() -> list[tuple[str, ...]]:
    return _paths()
