"""The store's codec: a payload as stored (a format byte, then zlib with a dictionary) and the
rows read back from the ``queue`` table.

Stored payloads start with a format byte: 0 = the JSON as is, 1 = zlib with
:data:`edge_gateway.zdict.DICTIONARY_V1`. The bytes sent upstream are a pure function of the
decoded payload (:func:`edge_gateway.flight.wire_payload`), so a resend is byte-identical.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from edge_gateway.store.schema import StoreError
from edge_gateway.zdict import DICTIONARY_V1

_PLAIN = b"\x00"
_ZDICT_V1 = b"\x01"


def encode_payload(payload: bytes) -> bytes:
    """Compress one payload for the store (about 16x smaller for an observation)."""
    # An 8 KiB window (the dictionary is 3.2 KB, a payload at most a few) and memLevel 6: the
    # same output size as 32 KiB / 9 at a third of the set-up cost, which dominated (profile,
    # issue 11). The decoder's 32 KiB window reads both.
    comp = zlib.compressobj(6, zlib.DEFLATED, 13, 6, zlib.Z_DEFAULT_STRATEGY, DICTIONARY_V1)
    packed = comp.compress(payload) + comp.flush()
    if len(packed) + 1 < len(payload) + 1:
        return _ZDICT_V1 + packed
    return _PLAIN + payload


def decode_payload(stored: bytes) -> bytes:
    tag, body = stored[:1], stored[1:]
    if tag == _ZDICT_V1:
        decomp = zlib.decompressobj(15, DICTIONARY_V1)
        return decomp.decompress(body) + decomp.flush()
    if tag == _PLAIN:
        return body
    raise StoreError(
        f"stored payload has unknown format byte {tag!r}; was the store written by "
        "a newer gateway? Upgrade this one."
    )


@dataclass(frozen=True)
class Row:
    id: int
    topic: str
    payload: bytes
    device_id: str | None
    received: float


@dataclass(frozen=True)
class InFlight:
    """A row that has a packet id: PUBLISHed (``state`` 1) or released (``state`` 2). ``payload``
    is the stored payload; what went on the wire is ``wire_payload(payload, replay)``."""

    id: int
    topic: str
    payload: bytes
    mid: int
    replay: bool
    state: int


ROW_COLUMNS = "id, topic, payload, device_id, received"
IN_FLIGHT_COLUMNS = "id, topic, payload, mid, replay, state"


def decode_row(r: Any) -> Row:
    """A ``queue`` row selected with :data:`ROW_COLUMNS`."""
    return Row(int(r[0]), str(r[1]), decode_payload(bytes(r[2])), r[3], float(r[4]))


def decode_in_flight(r: Any) -> InFlight:
    """A ``queue`` row selected with :data:`IN_FLIGHT_COLUMNS`."""
    return InFlight(
        int(r[0]), str(r[1]), decode_payload(bytes(r[2])), int(r[3]), bool(r[4]), int(r[5])
    )
