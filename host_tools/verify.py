"""Run the node's self-test over the raw REPL and judge the result.

The firmware's `node.selftest.run()` prints one line `SELFTEST {json}` with each sensor's
reading, the WiFi and MQTT status, the firmware version and a `pass` boolean (docs/firmware.md).
This module runs it, parses that line, and turns it into rows a technician can read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from host_tools.board import Board
from host_tools.errors import BoardCommandError

SELFTEST_CODE = "import node.selftest\nnode.selftest.run()\n"
MARKER = "SELFTEST "


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "sensor pm", "wifi", "mqtt"
    ok: bool
    detail: str


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
        rest = _fmt({k: v for k, v in value.items() if k not in ("ok", "connected", "host", "port")})
        return ", ".join(x for x in (where, rest) if x) or "ok"
    return _fmt(value)


def parse_selftest(output: str, port: str = "") -> SelfTest:
    """Find the `SELFTEST {json}` line in the board's output and read it."""
    line = next((ln for ln in reversed(output.splitlines()) if ln.startswith(MARKER)), None)
    if line is None:
        tail = " | ".join(output.strip().splitlines()[-3:]) or "nothing"
        raise BoardCommandError(
            f"the self-test on {port} printed no SELFTEST line (it printed: {tail})",
            hint="Deploy the current firmware ('cityedge node deploy'), then verify again.",
        )
    try:
        data = json.loads(line[len(MARKER) :])
    except ValueError as exc:
        raise BoardCommandError(f"the self-test on {port} printed unreadable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BoardCommandError(f"the self-test on {port} printed {type(data).__name__}, not an object")
    checks: list[Check] = []
    sensors = data.get("sensors", {})
    items = sensors.items() if isinstance(sensors, dict) else (
        (str(s.get("name", i)), s) for i, s in enumerate(sensors) if isinstance(s, dict)
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
        checks.append(Check(f"sensor {name}", ok, detail))
    if not checks:
        checks.append(Check("sensors", False, "no sensor answered (check board.json and wiring)"))
    if "config_error" in data:
        err = data["config_error"]
        checks.append(Check("config", err is None, str(err) if err else "ok"))
    if data.get("battery_v") is not None:
        checks.append(Check("battery", True, f"{data['battery_v']} V"))
    for key in ("wifi", "mqtt"):
        if key in data:
            checks.append(Check(key, _ok(data[key]), _status_detail(data[key])))
    if data.get("error"):
        checks.append(Check("self-test", False, str(data["error"])))
    fw = data.get("fw") or data.get("fw_version") or data.get("firmware")
    return SelfTest(
        port=port,
        passed=bool(data.get("pass")),
        firmware=str(fw) if fw is not None else None,
        device_id=data.get("device_id"),
        checks=checks,
        raw=data,
    )


def run_selftest(board: Board, timeout_s: float = 60.0) -> SelfTest:
    out = board.exec(SELFTEST_CODE, timeout_s=timeout_s)
    return parse_selftest(out, board.port)
