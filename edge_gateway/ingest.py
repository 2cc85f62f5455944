"""Ingest: turn one MQTT message from the site broker into a validated message or a rejection.

Pure and total: :func:`classify` never raises, whatever the bytes. A rejection carries a short
``reason_code`` (the metric label) and a human ``reason`` (goes into the dead letter).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge_gateway import contract

LEAF_SCHEMAS = {"reading": "reading", "status": "node_status", "state": "node_state", "ack": "command_ack"}

REASON_CODES = (
    "bad_topic",
    "too_large",
    "not_json",
    "schema",
    "device_mismatch",
    "unknown_device",
    "kind_mismatch",
)


@dataclass(frozen=True)
class Accepted:
    device_id: str
    leaf: str  # reading / status / state / ack
    body: dict[str, Any]


@dataclass(frozen=True)
class Rejected:
    reason_code: str
    reason: str


def classify(
    topic: str,
    payload: bytes,
    max_payload_bytes: int,
    known_kind: Callable[[str], str | None] | None = None,
) -> Accepted | Rejected:
    """Validate one message. ``known_kind(device_id)`` returns the configured kind of a device,
    or None for a device not in the inventory; pass None when unknown devices are allowed."""
    try:
        return _classify(topic, payload, max_payload_bytes, known_kind)
    except Exception as exc:  # noqa: BLE001 - the ingest boundary: nothing a node sends may stop the gateway
        return Rejected("schema", f"could not validate: {type(exc).__name__}: {exc}"[:500])


def _classify(
    topic: str,
    payload: bytes,
    max_payload_bytes: int,
    known_kind: Callable[[str], str | None] | None,
) -> Accepted | Rejected:
    parsed = contract.parse_node_topic(topic)
    if parsed is None or parsed[1] not in LEAF_SCHEMAS:
        return Rejected("bad_topic", f"not a node topic the gateway reads: {topic[:200]}")
    device_id, leaf = parsed
    if len(payload) > max_payload_bytes:
        return Rejected(
            "too_large", f"payload of {len(payload)} bytes exceeds {max_payload_bytes} bytes"
        )
    try:
        body = contract.decode(LEAF_SCHEMAS[leaf], payload)
    except contract.ContractError as exc:
        code = "not_json" if str(exc).startswith("not JSON") else "schema"
        return Rejected(code, str(exc)[:500])
    if "device_id" in body and body["device_id"] != device_id:
        return Rejected(
            "device_mismatch",
            f"device_id {str(body['device_id'])[:60]!r} in the payload differs from the topic's "
            f"{device_id!r}",
        )
    if known_kind is not None:
        kind = known_kind(device_id)
        if kind is None:
            return Rejected("unknown_device", f"device {device_id!r} is not in the inventory")
        if "kind" in body and body["kind"] != kind:
            return Rejected(
                "kind_mismatch", f"device {device_id!r} is a {kind} node, payload says {body['kind']}"
            )
    return Accepted(device_id, leaf, body)


def deadletter_payload(gateway_id: str, topic: str, payload: bytes, reason: str) -> bytes:
    """The dead-letter message (contract ``deadletter``) for a rejected message."""
    body = {
        "v": 1,
        "gateway_id": gateway_id,
        "topic": topic[:512],
        "reason": reason[:500],
        "t": iso_utc(datetime.now(UTC).timestamp()),
        "size": len(payload),
        "payload_b64": base64.b64encode(payload[:1024]).decode("ascii"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def iso_utc(t: float, millis: bool = False) -> str:
    """Seconds since the epoch as ISO 8601 UTC ending in Z."""
    dt = datetime.fromtimestamp(t, UTC)
    if millis:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
