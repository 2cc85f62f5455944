"""Traps a technician new to the field tools fell into (issue 19), on virtual boards.

Each test follows what the technician typed, literally, and checks what they rely on: a good
board's credential is never rotated behind their back, a typo never writes a lock-out file, a
failure says what to do.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from host_tools.cli import main as cityedge
from host_tools.field.inventory import Inventory
from host_tools.sim.virtual_board import VirtualBoard
from tests.host_tools.site_rig import place, provision_argv

SITE = "rayong-school-01"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide terminal, so table cells do not wrap the words the tests look for."""
    from rich.console import Console

    from host_tools import cli
    from host_tools.field import field_cli

    monkeypatch.setattr(field_cli, "out", Console(width=400))
    monkeypatch.setattr(field_cli, "err", Console(stderr=True, width=400))
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, width=400))


def _school(tmp_path: Path, boards: list[VirtualBoard]) -> Path:
    site_csv = tmp_path / "school.csv"
    site_csv.write_text(
        "port,kind,site,lat,lon,name\n"
        + "".join(
            f"{vb.device},air,{SITE},12.68{i},101.27{i},node {i}\n" for i, vb in enumerate(boards)
        )
    )
    return site_csv


def _provision_argv(tmp_path: Path, site_csv: Path) -> list[str]:
    return provision_argv(
        "--batch",
        str(site_csv),
        broker="192.168.1.10",
        broker_dir=tmp_path / "broker",
        inventory=tmp_path / "inv.sqlite",
    )


def _configs(boards: list[VirtualBoard]) -> list[bytes | None]:
    return [
        (vb.flash_dir / "config.json").read_bytes()
        if (vb.flash_dir / "config.json").is_file()
        else None
        for vb in boards
    ]


# --- 1. provision --batch with --port: only that port, never a silent rotation --------------


@pytest.mark.micropython
def test_readme_recovery_run_the_same_command_for_its_port_alone(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README: 'one bad board does not stop the rest. Fix it and run the same command for its
    port alone.' Doing exactly that provisions the fixed board and leaves the good ones' configs
    and credentials untouched (rotating them would lock them out until the broker files are
    copied again)."""
    boards = [vboard_factory(f"b{i}", f"246f2800005{i}") for i in range(3)]
    (boards[1].flash_dir / "config.json.tmp").mkdir()  # its filesystem refuses the write
    site_csv = _school(tmp_path, boards)
    argv = _provision_argv(tmp_path, site_csv)
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    assert cityedge(argv) == 1
    capsys.readouterr()
    good = _configs(boards)
    assert good[1] is None and good[0] and good[2]

    (boards[1].flash_dir / "config.json.tmp").rmdir()  # fix it
    assert cityedge([*argv, "--port", boards[1].device]) == 0  # ... for its port alone
    captured = capsys.readouterr()
    after = _configs(boards)
    assert after[0] == good[0] and after[2] == good[2], "a good board was re-provisioned"
    assert after[1] is not None
    assert json.loads(after[1])["device_id"] == "ce-246f28000051"
    with Inventory(tmp_path / "inv.sqlite") as inv:
        versions = {d.device_id: d.credential_version for d in inv.devices()}
        assert versions == {f"ce-246f2800005{i}": 1 for i in range(3)}
        assert [e.action for e in inv.events("ce-246f28000050")] == ["provision"]
    passwd = (tmp_path / "broker" / "passwd").read_text()
    assert all(f"ce-246f2800005{i}:" in passwd for i in range(3))
    assert boards[0].device not in captured.out and boards[1].device in captured.out


@pytest.mark.micropython
def test_batch_port_not_in_the_csv_is_refused_before_any_board(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boards = [vboard_factory("b0", "246f28000060")]
    site_csv = _school(tmp_path, boards)
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    code = cityedge([*_provision_argv(tmp_path, site_csv), "--port", "/dev/ttyUSB7"])
    assert code == 1
    err = capsys.readouterr().err
    assert "/dev/ttyUSB7" in err and boards[0].device in err  # names the ports the file has
    assert _configs(boards) == [None]


@pytest.mark.micropython
def test_rotating_a_credential_is_said_loudly(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    boards = [vboard_factory("b0", "246f28000070")]
    argv = _provision_argv(tmp_path, _school(tmp_path, boards))
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    assert cityedge(argv) == 0
    assert "rotated" not in capsys.readouterr().err
    assert cityedge(argv) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "ce-246f28000070" in err and "credential rotated (v1 → v2)" in err
    assert "locked out until" in err and "passwd" in err


# --- 2. broker-files for a site with no devices: refused, the known sites listed -------------


def _broker_files(site: str, out: Path, inventory: str, *more: str) -> int:
    """`cityedge node broker-files` for ``site`` into ``out``."""
    argv = ["node", "broker-files", "--site", site, "--out", str(out), *more]
    return cityedge([*argv, "--inventory", inventory])


@pytest.mark.micropython
def test_broker_files_for_a_mistyped_site_is_refused(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty passwd installed on the gateway locks every node out: a site without devices
    is refused (listing the sites the inventory knows), and nothing is written."""
    boards = [vboard_factory("b0", "246f28000080")]
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    assert cityedge(_provision_argv(tmp_path, _school(tmp_path, boards))) == 0
    capsys.readouterr()
    inv = str(tmp_path / "inv.sqlite")
    out_dir = tmp_path / "typo"
    code = _broker_files("rayong-scool-01", out_dir, inv)
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "rayong-scool-01" in err and "no devices" in err and SITE in err
    assert "--gateway-user" in err
    assert not (out_dir / "passwd").exists() and not (out_dir / "acl").exists()

    # The real site still works, and a first install with --gateway-user is allowed.
    assert _broker_files(SITE, tmp_path / "ok", inv) == 0
    assert "ce-246f28000080:" in (tmp_path / "ok" / "passwd").read_text()
    new_site = "chonburi-school-02"
    assert _broker_files(new_site, tmp_path / "new", inv, "--gateway-user", "gw-chonburi-02") == 0
    assert (tmp_path / "new" / "passwd").read_text().startswith("gw-chonburi-02:")
    capsys.readouterr()
    # Once the gateway account exists the site is known, but it still has no devices: refused
    # again without --gateway-user (a passwd with only the gateway in it locks no node out,
    # but this is most likely the wrong site).
    code = _broker_files(new_site, tmp_path / "new2", inv)
    assert code == 1 and not (tmp_path / "new2").exists()


# --- 4. a failed verify shows the self-test's table, with what to do per failed check -------


def _provision_one(tmp_path: Path, vb: VirtualBoard, broker: str, kind: str = "air") -> None:
    argv = provision_argv(
        "--deploy",
        *place(kind),
        "--port",
        vb.device,
        broker=broker,
        broker_dir=tmp_path / "broker",
        inventory=tmp_path / "inv.sqlite",
    )
    assert cityedge(argv) == 0


def _verify(tmp_path: Path, vb: VirtualBoard, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = cityedge(
        [
            "node",
            "verify",
            "--port",
            vb.device,
            "--timeout",
            "60",
            "--inventory",
            str(tmp_path / "inv.sqlite"),
        ]
    )
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert code == 1, text
    return text


@pytest.mark.micropython
@pytest.mark.broker
def test_failed_verify_prints_the_table_and_a_hint_per_check(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from host_tools.field.provision import create_gateway_credential, export_broker_files
    from host_tools.sim.brokers import MosquittoBroker
    from tests.host_tools.mqtt_helpers import ROOT_SAFE

    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    # The gateway's broker holds files from before this node was provisioned.
    with Inventory(tmp_path / "inv.sqlite") as inv:
        create_gateway_credential(inv, "gw-rayong-01", SITE)
        export_broker_files(inv, tmp_path / "installed", site_id=SITE)
    broker = MosquittoBroker(
        "site",
        workdir=tmp_path / "site-broker",
        password_file=tmp_path / "installed" / "passwd",
        acl_file=tmp_path / "installed" / "acl",
        extra_config=ROOT_SAFE,
    )
    vb = vboard_factory("b0", "246f280000a0", "air")
    _provision_one(tmp_path, vb, f"127.0.0.1:{broker.port}")
    broker.start()
    try:
        text = _verify(tmp_path, vb, capsys)
    finally:
        broker.stop(kill=True)
    assert re.search(r"sensor pm\W+ok", text) and re.search(r"wifi\W+ok", text)  # the table
    assert re.search(r"mqtt\W+FAIL\W+127.0.0.1:\d+ not authorised", text), text
    assert "copy the broker files" in text  # the hint for this check

    # Nothing listens at the broker address: the hint is the gateway's address.
    text = _verify(tmp_path, vb, capsys)
    assert re.search(r"mqtt\W+FAIL\W+127.0.0.1:\d+ unreachable", text), text
    assert f"127.0.0.1:{broker.port}" in text and "gateway's address" in text


@pytest.mark.micropython
def test_failed_verify_names_the_wiring_of_a_sensor_with_a_bus_error(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    vb = vboard_factory("b0", "246f280000a1")  # no sensor on its buses: none answers
    _provision_one(tmp_path, vb, "127.0.0.1:9")
    text = _verify(tmp_path, vb, capsys)
    assert re.search(r"sensor pm\W+FAIL\W+pms5003: \[Errno 19\] ENODEV", text), text
    assert "Check the wiring of pm (pms5003) against boards/sim.json" in text


@pytest.mark.micropython
def test_verify_on_an_undeployed_board_says_deploy_first(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    capsys: pytest.CaptureFixture[str],
) -> None:
    vb = vboard_factory("b0", "246f280000a2")
    text = _verify(tmp_path, vb, capsys)
    assert "deploy first" in text and "cityedge node deploy" in text


# --- 5. Thai names on labels: Thai letters, never missing-glyph boxes -------------------------

THAI_NAME = "ห้องสมุด ชั้น 2"  # "library, floor 2"


def _thai_device(tmp_path: Path) -> Path:
    from host_tools.field import broker_auth
    from host_tools.field.inventory import Device, utc_now

    inv_path = tmp_path / "inv.sqlite"
    now = utc_now()
    device = Device(
        "ce-246f280000c0",
        "246f280000c0",
        "ESP32",
        "air",
        "sim",
        SITE,
        THAI_NAME,
        12.68,
        101.27,
        None,
        "0.1.0",
        1,
        broker_auth.hash_password("x"),
        now,
        now,
    )
    with Inventory(inv_path) as inv, inv.provisioning(device, port=None):
        pass
    return inv_path


def _label(tmp_path: Path, inv_path: Path) -> int:
    """`cityedge node label` for the Thai-named device, into ``tmp_path / "l"``."""
    out = ["--out", str(tmp_path / "l"), "--inventory", str(inv_path)]
    return cityedge(["node", "label", "ce-246f280000c0", *out])


def _glyph_shapes(band: Any) -> list[bytes]:
    """The ink of each run of non-blank columns of a text line, left to right."""
    import numpy as np

    ink = np.asarray(band) < 128
    cols = ink.any(axis=0)
    shapes, start = [], None
    for x, on in enumerate([*cols, False]):
        if on and start is None:
            start = x
        elif not on and start is not None:
            part = ink[:, start:x]
            rows = part.any(axis=1)
            shapes.append(part[rows.argmax() : len(rows) - rows[::-1].argmax()].tobytes())
            start = None
    return shapes


def test_label_prints_a_thai_name_in_thai_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from host_tools.field import labels

    inv_path = _thai_device(tmp_path)
    assert _label(tmp_path, inv_path) == 0
    assert "warning" not in capsys.readouterr().err
    img = Image.open(tmp_path / "l" / "ce-246f280000c0.png").convert("L")
    name_band = img.crop((0, labels.LABEL_WIDTH_PX + 52 + 40, img.width, img.height))
    shapes = _glyph_shapes(name_band)
    # Missing glyphs all draw the same box; Thai letters are different shapes.
    assert len(shapes) >= 6 and len(set(shapes)) >= 6, f"{len(set(shapes))} distinct glyphs"
    font = labels.font_for(THAI_NAME, 30)
    assert font is not None
    box = font.getmask("\U0010fffd")
    for letter in "หองสมดชน":
        mask = font.getmask(letter)
        assert (mask.size, bytes(mask)) != (box.size, bytes(box)), letter


def test_label_warns_when_no_thai_font_is_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from host_tools.field import labels

    inv_path = _thai_device(tmp_path)
    monkeypatch.setattr(labels, "FONT_DIRS", [tmp_path / "no-fonts"])
    labels._font_files.cache_clear()
    try:
        assert _label(tmp_path, inv_path) == 0
    finally:
        labels._font_files.cache_clear()
    err = " ".join(capsys.readouterr().err.split())
    assert "warning" in err and THAI_NAME in err and "fonts-thai-tlwg" in err
    img = Image.open(tmp_path / "l" / "ce-246f280000c0.png")
    assert img.height == labels.LABEL_WIDTH_PX + 52 + 40 + 20  # id and site; no line of boxes


# --- 7. smaller traps -----------------------------------------------------------------------


def test_record_file_messages_keep_their_brackets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "x"\n', encoding="utf-8")
    assert cityedge(["calibrate", "check", str(bad)]) == 1
    assert "[[record]]" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("broker", ["http://192.168.1.10", "mqtt://192.168.1.10:1883"])
def test_broker_with_a_url_scheme_says_host_and_port(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    broker: str,
) -> None:
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    argv = provision_argv(
        *place("air"), "--port", "/dev/null-board", broker=broker, inventory=tmp_path / "inv.sqlite"
    )
    code = cityedge(argv)
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "HOST[:PORT]" in err and "without" in err and "--broker 192.168.1.10" in err, err


def test_verify_timeout_applies_to_entering_the_raw_repl_and_no_raw_bytes_leak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port where a board only prints its log and never answers the raw REPL: --timeout 1
    gives up in about a second, not after the raw REPL's own 15 s default, and what mpremote
    read on the failed attempts (b'node: ...', b'') is not dumped on the terminal."""
    import os
    import threading
    import time

    leader, follower = os.openpty()
    os.set_blocking(leader, False)  # a full pty buffer drops the chatter, never blocks it
    stop = threading.Event()

    # A node's log line a second, and nothing else. (Faster than one byte per 0.5 s, mpremote's
    # read_until never reaches its overall timeout on a pty: it checks it only between bytes.)
    def chatter() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(OSError):
                os.write(leader, b"node: mqtt down: OSError(111,), retry in 1000 ms\r\n")

    talker = threading.Thread(target=chatter, daemon=True)
    talker.start()
    try:
        t0 = time.monotonic()
        code = cityedge(
            [
                "node",
                "verify",
                "--port",
                os.ttyname(follower),
                "--timeout",
                "1",
                "--inventory",
                str(tmp_path / "inv.sqlite"),
            ]
        )
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        talker.join()
        os.close(follower)
        os.close(leader)
    captured = capsys.readouterr()
    assert code == 1
    assert "raw REPL" in " ".join(captured.out.split())
    assert "b'" not in captured.out and "b'" not in captured.err, captured.out
    assert elapsed < 10.0, f"verify --timeout 1 took {elapsed:.1f} s"
