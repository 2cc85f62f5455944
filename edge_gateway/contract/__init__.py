"""The CityEdge wire contract, version 1: topics, JSON Schemas and validation.

The JSON Schema files beside this module and ``asyncapi.json`` are the normative contract;
``docs/contract.md`` explains it. Integrators may copy the schema files; they carry no code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, validators
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


# RFC 3339 section 5.6 date-time: full-date "T" full-time, the offset mandatory. jsonschema
# checks "date-time" only when the optional rfc3339-validator package is installed (and then
# silently passes anything when it is not), so the contract brings its own check: the same
# grammar ajv-formats applies, and the calendar (month 13, 30 February) through datetime.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))"
)

FORMAT_CHECKER = FormatChecker()


def is_date_time(instance: object) -> bool:
    """RFC 3339 date-time (non-strings pass: "format" constrains strings only)."""
    if not isinstance(instance, str):
        return True
    m = _DATE_TIME.fullmatch(instance)
    if m is None:
        raise ValueError("not an RFC 3339 date-time such as 2026-11-22T03:20:00Z")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if second == 60 and minute == 59:  # a leap second: valid at the end of any minute 59
        second = 59
    datetime(year, month, day, hour, minute, second)  # ValueError names what is out of range
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        raise ValueError("time offset out of range")
    return True


FORMAT_CHECKER.checks("date-time", raises=ValueError)(is_date_time)


def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a JSON Schema ``pattern`` (ECMA-262) for Python with ECMA's meaning of ``$``:
    the end of the string. Python's ``$`` also matches before a trailing newline, so
    ``^[a-z]+$`` would accept ``"abc\\n"``; here every ``$`` outside a character class
    becomes ``\\Z``."""
    out: list[str] = []
    in_class = escaped = False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif in_class:
            out.append(ch)
            in_class = ch != "]"
        elif ch == "[":
            out.append(ch)
            in_class = True
        else:
            out.append(r"\Z" if ch == "$" else ch)
    return re.compile("".join(out))


_ecma_pattern = cache(ecma_pattern)


def _pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_pattern(patrn).search(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        for key, value in instance.items():
            if _ecma_pattern(patrn).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


#: Draft 2020-12 with what the contract promises and plain jsonschema does not check: formats
#: (date-time) and ECMA-262 ``$`` in patterns. Use it (or :func:`validate`) for contract data.
ContractValidator = validators.extend(
    Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties}
)


def validator_for(schema_doc: dict[str, Any]) -> Any:
    """A validator for any schema, with the contract's format checker and pattern semantics."""
    return ContractValidator(schema_doc, format_checker=FORMAT_CHECKER)


@cache
def _validator(name: str) -> Any:
    return validator_for(schema(name))


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
