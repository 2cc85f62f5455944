"""The CityEdge wire contract, version 1: topics, JSON Schemas and validation.

The JSON Schema files beside this module and ``asyncapi.json`` are the normative contract;
``docs/contract.md`` explains it. Integrators may copy the schema files; they carry no code.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

VERSION = 1
ROOT = "cityedge/v1"

SCHEMA_NAMES = (
    "reading",
    "node_status",
    "node_state",
    "custody",
    "command",
    "command_ack",
    "observation",
    "device_status",
    "gateway_health",
    "alert",
    "deadletter",
)


class ContractError(ValueError):
    """A payload that breaks the contract; the message names the field and the rule."""


# --- topics on the site's local broker -------------------------------------------------------


def node_topic(device_id: str, leaf: str) -> str:
    """`cityedge/v1/node/{device_id}/{leaf}` with leaf in reading/status/state/cmd/ack/custody."""
    return f"{ROOT}/node/{device_id}/{leaf}"


NODE_SUBSCRIPTIONS = (
    f"{ROOT}/node/+/reading",
    f"{ROOT}/node/+/status",
    f"{ROOT}/node/+/state",
    f"{ROOT}/node/+/ack",
)


def parse_node_topic(topic: str) -> tuple[str, str] | None:
    """Return (device_id, leaf) for a node topic, None for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "cityedge" or parts[1] != "v1" or parts[2] != "node":
        return None
    return parts[3], parts[4]


def deadletter_topic(gateway_id: str) -> str:
    return f"{ROOT}/gateway/{gateway_id}/deadletter"


# --- topics on the city platform's broker ----------------------------------------------------


def observation_topic(site_id: str, kind: str, device_id: str) -> str:
    return f"{ROOT}/site/{site_id}/{kind}/{device_id}/observation"


def device_status_topic(site_id: str, device_id: str) -> str:
    return f"{ROOT}/site/{site_id}/device/{device_id}/status"


def gateway_health_topic(site_id: str, gateway_id: str) -> str:
    return f"{ROOT}/site/{site_id}/gateway/{gateway_id}/health"


def alert_topic(site_id: str, device_id: str) -> str:
    return f"{ROOT}/site/{site_id}/alert/{device_id}"


# --- schemas ---------------------------------------------------------------------------------


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one payload kind."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"no contract schema named {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate(name: str, payload: Any) -> None:
    """Raise ContractError naming the first offending field if `payload` breaks schema `name`."""
    error: ValidationError | None = next(iter(_validator(name).iter_errors(payload)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ContractError(f"{name} v{VERSION}: {where}: {error.message[:300]}")


def decode(name: str, payload: bytes) -> dict[str, Any]:
    """Parse JSON bytes and validate them; ContractError says what is wrong."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"{name} v{VERSION}: payload must be a JSON object")
    validate(name, obj)
    return obj


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3 document describing every topic."""
    text = resources.files(__name__).joinpath("asyncapi.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def example(name: str) -> dict[str, Any]:
    """A valid example payload of each kind, as shipped in examples/."""
    text = resources.files(__name__).joinpath("examples", f"{name}.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
