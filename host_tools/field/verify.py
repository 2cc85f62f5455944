"""Run the node's self-test over the raw REPL and judge the result.

The firmware's `node.selftest.run()` prints one line `SELFTEST {json}` with each sensor's
reading, the WiFi and MQTT status, the firmware version and a `pass` boolean (docs/firmware.md).
This module runs it, parses that line, and turns it into rows a technician can read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from host_tools.field.board import Board
from host_tools.field.errors import BoardCommandError

SELFTEST_CODE = "import node.selftest\nnode.selftest.run()\n"
MARKER = "SELFTEST "


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "sensor pm", "wifi", "mqtt"
    ok: bool
    detail: str
    hint: str = ""  # what to do, for a failed check


@dataclass(frozen=True)
class SelfTest:
    port: str
    passed: bool
    firmware: str | None
    device_id: str | None
    checks: list[Check] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if k not in ("ok", "error"))
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _ok(value: Any) -> bool:
    if isinstance(value, dict):
        for key in ("ok", "pass", "connected"):
            if key in value:
                return bool(value[key])
        return "error" not in value
    return bool(value)


def _status_detail(value: Any) -> str:
    if isinstance(value, dict):
        where = f"{value['host']}:{value['port']}" if "host" in value and "port" in value else ""
        if value.get("error"):
            return f"{where} {value['error']}".strip()
        rest = _fmt(
            {k: v for k, v in value.items() if k not in ("ok", "connected", "host", "port")}
        )
        return ", ".join(x for x in (where, rest) if x) or "ok"
    return _fmt(value)


_DEPLOY_FIRST = (
    "deploy first: 'cityedge node deploy --board BOARD' (or 'cityedge node provision "
    "--deploy ...'), then verify again."
)
_NOT_AUTHORISED = ("CONNACK refused, code 4", "CONNACK refused, code 5")
_UNREACHABLE = (
    "ECONNREFUSED",
    "ETIMEDOUT",
    "EHOSTUNREACH",
    "ENETUNREACH",
    "Errno 111",
    "Errno 110",
    "Errno 113",
    "timed out",
    "timeout",
)


def _mqtt_check(value: Any) -> Check:
    """The broker check, said the way a technician acts on it."""
    where = f"{value.get('host')}:{value.get('port')}" if isinstance(value, dict) else "?"
    error = str(value.get("error") or "") if isinstance(value, dict) else ""
    if _ok(value):
        return Check("mqtt", True, _status_detail(value))
    if any(e in error for e in _NOT_AUTHORISED):
        return Check(
            "mqtt",
            False,
            f"{where} not authorised ({error})",
            "The gateway's Mosquitto does not know this node's credential: copy the "
            "broker files (passwd, acl) to the gateway and reload Mosquitto "
            "(docs/technician.md, step 5).",
        )
    if any(e in error for e in _UNREACHABLE):
        return Check(
            "mqtt",
            False,
            f"{where} unreachable ({error})",
            f"Nothing answers at {where}: check the gateway's address given to "
            "'provision --broker HOST[:PORT]', that the gateway is on and on this "
            "WiFi, and that its Mosquitto runs.",
        )
    if "no WiFi" in error:
        return Check("mqtt", False, f"{where} {error}", "Fix the WiFi first (the row above).")
    return Check(
        "mqtt",
        False,
        f"{where} {error}".strip(),
        "Check the gateway's address and its broker files (docs/technician.md).",
    )


def _sensor_hint(name: str, reading: Any, board: str | None) -> str:
    driver = reading.get("driver") if isinstance(reading, dict) else None
    where = f"boards/{board}.json" if board else "the board file in boards/"
    what = f"{name} ({driver})" if driver else name
    return (
        f"Check the wiring of {what} against {where}: its bus pins, address and power; "
        "then verify again."
    )


def parse_selftest(output: str, port: str = "", board: str | None = None) -> SelfTest:
    """Find the `SELFTEST {json}` line in the board's output and read it. `board` (the board
    definition's name) makes the wiring hints name its file."""
    data = _selftest_json(output, port)
    checks = _sensor_checks(data, board) + _other_checks(data)
    fw = data.get("fw") or data.get("fw_version") or data.get("firmware")
    return SelfTest(
        port=port,
        passed=bool(data.get("pass")),
        firmware=str(fw) if fw is not None else None,
        device_id=data.get("device_id"),
        checks=checks,
        raw=data,
    )


def _selftest_json(output: str, port: str) -> dict[str, Any]:
    line = next((ln for ln in reversed(output.splitlines()) if ln.startswith(MARKER)), None)
    if line is None:
        tail = " | ".join(output.strip().splitlines()[-3:]) or "nothing"
        raise BoardCommandError(
            f"the self-test on {port} printed no SELFTEST line (it printed: {tail})",
            hint=f"The firmware on the board is missing or too old: {_DEPLOY_FIRST}",
        )
    try:
        data = json.loads(line[len(MARKER) :])
    except ValueError as exc:
        raise BoardCommandError(f"the self-test on {port} printed unreadable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BoardCommandError(
            f"the self-test on {port} printed {type(data).__name__}, not an object"
        )
    return data


def _sensor_checks(data: dict[str, Any], board: str | None) -> list[Check]:
    checks: list[Check] = []
    sensors = data.get("sensors", {})
    items = (
        sensors.items()
        if isinstance(sensors, dict)
        else ((str(s.get("name", i)), s) for i, s in enumerate(sensors) if isinstance(s, dict))
    )
    for name, reading in items:
        if isinstance(reading, dict):
            ok = _ok(reading)
            values = reading.get("reading", reading.get("values"))
            detail = str(reading["error"]) if reading.get("error") else _fmt(values or {})
            if reading.get("driver"):
                detail = f"{reading['driver']}: {detail}"
        else:
            ok, detail = bool(reading), _fmt(reading)
        hint = "" if ok else _sensor_hint(str(name), reading, board)
        checks.append(Check(f"sensor {name}", ok, detail, hint))
    if not checks:
        checks.append(
            Check("sensors", False, "no sensor answered", _sensor_hint("the sensors", {}, board))
        )
    return checks


def _other_checks(data: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    if "config_error" in data:
        err = data["config_error"]
        checks.append(
            Check(
                "config",
                err is None,
                str(err) if err else "ok",
                ""
                if err is None
                else "Provision the node again "
                "('cityedge node provision ...'): its /config.json is not valid.",
            )
        )
    if data.get("battery_v") is not None:
        checks.append(Check("battery", True, f"{data['battery_v']} V"))
    if "wifi" in data:
        wifi_ok = _ok(data["wifi"])
        checks.append(
            Check(
                "wifi",
                wifi_ok,
                _status_detail(data["wifi"]),
                ""
                if wifi_ok
                else "Check the WiFi name and password given to provision (--ssid, "
                "CITYEDGE_WIFI_PASSWORD) and the distance to the access point.",
            )
        )
    if "mqtt" in data:
        checks.append(_mqtt_check(data["mqtt"]))
    if data.get("error"):
        checks.append(
            Check(
                "self-test",
                False,
                str(data["error"]),
                f"The self-test itself failed: {_DEPLOY_FIRST}",
            )
        )
    return checks


def run_selftest(board: Board, timeout_s: float = 60.0, board_name: str | None = None) -> SelfTest:
    try:
        out = board.exec(SELFTEST_CODE, timeout_s=timeout_s)
    except BoardCommandError as exc:
        if "no module named 'node" in str(exc):  # MicroPython only: nothing deployed yet
            raise BoardCommandError(
                f"the board on {board.port} has no CityEdge firmware (deploy first)",
                hint=_DEPLOY_FIRST.capitalize(),
            ) from exc
        raise
    return parse_selftest(out, board.port, board_name)
