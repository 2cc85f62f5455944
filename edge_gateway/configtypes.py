"""From TOML values to the config's frozen dataclasses, by their type hints: each value is
checked against its field's type, and every error names the dotted key (:class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from edge_gateway.errors import EXIT_CONFIG


class ConfigError(ValueError):
    """The config is missing or invalid; ``key`` is the dotted path of the offending key."""

    exit_code = EXIT_CONFIG  # restarting cannot fix the file (the unit's RestartPreventExitStatus)

    def __init__(self, key: str, message: str, source: str = "", hint: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")
        self.key = key
        self.detail = message
        self.hint = hint or (
            "fix that key (docs/gateway.md lists every key), then run again"
            if key
            else "give the path of the gateway's TOML config (example: "
            "edge_gateway/examples/gateway.toml)"
        )


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "none"
    if isinstance(tp, type):
        return {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
        }.get(
            tp.__name__, f"a table ({tp.__name__})" if dataclasses.is_dataclass(tp) else tp.__name__
        )
    return str(tp)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors: list[str] = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(opt, value, key)
            except ConfigError as exc:
                errors.append(exc.detail)
        raise ConfigError(key, errors[0] if errors else "invalid value")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"must be an array (got {type(value).__name__})")
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table (got {type(value).__name__})")
        return tp(**build_fields(tp, value, key))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string (got {value!r})")
        return value
    raise ConfigError(key, f"unsupported type {_type_name(tp)}")


def build_fields(
    cls: type, data: Mapping[str, Any], prefix: str, exclude: set[str] | None = None
) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in (exclude or set())]
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "(top level)", "must be a table")
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                dotted,
                f"unknown key; valid keys{' in ' + prefix if prefix else ' at the top level'}: "
                f"{', '.join(names)}",
            )
        out[key] = _convert(hints[key], value, dotted)
    return out
