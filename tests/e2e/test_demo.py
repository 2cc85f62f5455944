"""The README's first command: `cityedge demo` shows calibrated readings flowing and leaves no
stray processes behind, whether it ends by --duration or by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.micropython, pytest.mark.slow]


def _processes_under(directory: Path) -> list[int]:
    """PIDs whose working directory is inside `directory` (simulated nodes run in their flash dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(directory)):
            found.append(int(entry.name))
    return found


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, COLUMNS="160", TERM="dumb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_shows_calibrated_readings_and_stops_by_itself(tmp_path: Path, broker: str) -> None:
    extra = ["--embedded-broker"] if broker == "embedded" else []
    proc = _demo(tmp_path, "--duration", "35", "--nodes", "air:1,water:1", *extra)
    out, _ = proc.communicate(timeout=150)
    assert proc.returncode == 0, out[-3000:]
    assert ("Mosquitto" if broker == "mosquitto" else "embedded amqtt") in out
    assert "Thai AQI" in out, out[-3000:]
    assert "calibration" in out
    last = [line for line in out.splitlines() if line.startswith("done:")]
    assert last, out[-2000:]
    count = int(last[-1].split()[1])
    assert count >= 3, last
    assert _processes_under(tmp_path) == []


def test_demo_ctrl_c_leaves_no_stray_processes(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--nodes", "air:1,parking:1")
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if line.startswith("nodes:"):
            break
    assert "nodes:" in seen, seen
    time.sleep(5)
    assert _processes_under(tmp_path), "the demo's nodes were not running"
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-2000:]
    time.sleep(0.5)
    assert _processes_under(tmp_path) == []
