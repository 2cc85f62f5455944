"""The `cityedge node` commands a technician types: parallel flashing with one bad board,
batch CSV checks, labels, inventory listing, self-test parsing and the serial monitor."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from host_tools.cli import main as cityedge
from host_tools.field import batch, labels
from host_tools.field.errors import BatchFileError, BoardCommandError
from host_tools.field.inventory import Inventory
from host_tools.field.monitor import follow
from host_tools.field.verify import parse_selftest
from host_tools.sim.fake_rom import FakeEsp32, FakeRom
from host_tools.sim.virtual_board import VirtualBoard
from tests.host_tools.site_rig import provision_argv
from tests.host_tools.test_broker_auth import _device, _store
from tests.host_tools.test_flashing import make_image


def test_parallel_flash_one_bad_board_does_not_stop_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chips = [FakeEsp32(mac=bytes.fromhex(f"246f2800aa0{i}")) for i in range(3)]
    chips[1].responding = False  # not in download mode / charge-only cable
    roms = [FakeRom(c).start() for c in chips]
    image = make_image(tmp_path)
    inv = tmp_path / "inv.sqlite"
    try:
        args = [
            "node",
            "flash",
            str(image),
            "--before",
            "no-reset",
            "--after",
            "no-reset",
            "--inventory",
            str(inv),
        ]
        for r in roms:
            args += ["--port", r.device]
        code = cityedge(args)
    finally:
        for r in roms:
            r.close()
    assert code == 1
    data = image.read_bytes()
    assert chips[0].flash[0x1000 : 0x1000 + len(data)] == data
    assert chips[2].flash[0x1000 : 0x1000 + len(data)] == data
    assert chips[1].writes == []
    text = capsys.readouterr().out
    assert "FAILED" in text and "BOOT" in text  # the summary says what to do
    with Inventory(inv) as i:
        flashed = {e.device_id for e in i.events() if e.action == "flash"}
    assert flashed == {"ce-246f2800aa00", "ce-246f2800aa02"}


def test_flash_refuses_a_bad_image_before_any_board(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = make_image(tmp_path)
    code = cityedge(["node", "flash", str(image), "--sha256", "ab" * 32, "--port", "/dev/null"])
    assert code == 1
    err = capsys.readouterr().err
    assert "SHA-256" in err and "what to do" in err


def test_usb_bridges_are_recognised() -> None:
    from host_tools.field.ports import bridge_name

    assert bridge_name(0x10C4, 0xEA60) == "Silicon Labs CP210x"
    assert bridge_name(0x1A86, 0x7523) == "WCH CH340"
    assert bridge_name(0x1A86, 0x55D4) == "WCH CH9102"
    assert bridge_name(0x0403, 0x6015) == "FTDI FT231X"
    assert bridge_name(0x303A, 0x1001) == "Espressif native USB"
    assert bridge_name(0x046D, 0xC52B) is None  # a mouse receiver
    assert bridge_name(None, None) is None


def test_batch_csv_is_checked_line_by_line(tmp_path: Path) -> None:
    good = tmp_path / "school.csv"
    good.write_text(
        "port,kind,site,lat,lon,name,board\n"
        "/dev/ttyUSB0,air,rayong-school-01,12.68,101.27,roof,esp32-devkitc\n"
        "# spare\n"
        "/dev/ttyUSB1,water,rayong-school-01,12.681,101.271,,\n"
    )
    rows = batch.read_batch_csv(good)
    assert [(r.port, r.kind, r.lat, r.name, r.board) for r in rows] == [
        ("/dev/ttyUSB0", "air", 12.68, "roof", "esp32-devkitc"),
        ("/dev/ttyUSB1", "water", 12.681, None, None),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("port,kind,site,lat,lon\n/dev/ttyUSB0,air,s,twelve,101\n")
    with pytest.raises(BatchFileError, match=r"bad.csv:2: lat 'twelve'"):
        batch.read_batch_csv(bad)
    bad.write_text("port,kind,lat,lon\n/dev/ttyUSB0,air,1,2\n")
    with pytest.raises(BatchFileError, match="missing column.*site"):
        batch.read_batch_csv(bad)
    bad.write_text("port,kind,site,lat,lon,colour\n")
    with pytest.raises(BatchFileError, match="unknown column.*colour"):
        batch.read_batch_csv(bad)


def test_run_parallel_really_runs_boards_at_the_same_time() -> None:
    barrier = threading.Barrier(3, timeout=5)

    def work(job: batch.Job[int], rep: batch.Reporter) -> tuple[str, int]:
        barrier.wait()  # deadlocks (and times out) unless all three run concurrently
        if job.spec == 1:
            raise BoardCommandError("board 1 broke")
        return "ok", job.spec

    outcomes = batch.run_parallel([batch.Job(f"p{i}", i) for i in range(3)], work)
    assert [(o.port, o.ok) for o in outcomes] == [("p0", True), ("p1", False), ("p2", True)]
    assert outcomes[1].hint and "monitor" in outcomes[1].hint


def test_labels_and_inventory_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv_path = tmp_path / "inv.sqlite"
    with Inventory(inv_path) as inv:
        _store(inv, _device("ce-aaaaaaaaaaa1", "rayong-school-01", "x"))
        _store(inv, _device("ce-bbbbbbbbbbb2", "chiang-mai-canal-02", "y"))
        dev = inv.device("ce-aaaaaaaaaaa1")
    assert dev is not None
    assert json.loads(labels.label_payload(dev)) == {
        "id": "ce-aaaaaaaaaaa1",
        "site": "rayong-school-01",
        "kind": "air",
    }
    assert (
        cityedge(
            [
                "node",
                "label",
                "--site",
                "rayong-school-01",
                "--out",
                str(tmp_path / "l"),
                "--inventory",
                str(inv_path),
            ]
        )
        == 0
    )
    png = tmp_path / "l" / "ce-aaaaaaaaaaa1.png"
    img = Image.open(png).convert("L")
    assert img.width == labels.LABEL_WIDTH_PX and img.height > img.width  # text under the code
    text_band = img.crop((0, labels.LABEL_WIDTH_PX, img.width, img.height))
    assert text_band.getextrema()[0] < 100  # something is printed there
    assert not (tmp_path / "l" / "ce-bbbbbbbbbbb2.png").exists()

    capsys.readouterr()
    assert cityedge(["node", "inventory", "canal", "--inventory", str(inv_path)]) == 0
    listing = capsys.readouterr().out
    assert "ce-bbbbbbbbbbb2" in listing and "ce-aaaaaaaaaaa1" not in listing
    assert (
        cityedge(
            ["node", "inventory", "--history", "ce-aaaaaaaaaaa1", "--inventory", str(inv_path)]
        )
        == 0
    )
    assert "provision" in capsys.readouterr().out
    assert cityedge(["node", "label", "ce-000000000000", "--inventory", str(inv_path)]) == 1


def test_selftest_parsing() -> None:
    line = {
        "v": 1,
        "device_id": "ce-246f28000011",
        "kind": "air",
        "fw": "0.1.0",
        "config_error": None,
        "sensors": {
            "pm": {
                "driver": "pms5003",
                "ok": False,
                "reading": {},
                "errors": 3,
                "error": "no frame within 2 s",
            },
            "th": {
                "driver": "sht3x",
                "ok": True,
                "reading": {"temp": 29.1, "rh": 71.0},
                "errors": 0,
                "error": None,
            },
        },
        "battery_v": None,
        "wifi": {"ok": True, "rssi_dbm": -70, "error": None},
        "mqtt": {"ok": False, "host": "10.0.0.2", "port": 1883, "error": "refused: not authorised"},
        "pass": False,
    }
    st = parse_selftest("noise\r\nSELFTEST " + json.dumps(line) + "\r\n", "/dev/ttyUSB0")
    assert not st.passed and st.firmware == "0.1.0" and st.device_id == "ce-246f28000011"
    by = {c.name: c for c in st.checks}
    assert not by["sensor pm"].ok and "no frame" in by["sensor pm"].detail
    assert by["sensor th"].ok and "temp=29.1" in by["sensor th"].detail
    assert by["wifi"].ok and not by["mqtt"].ok
    assert by["mqtt"].detail == "10.0.0.2:1883 refused: not authorised"
    with pytest.raises(BoardCommandError, match="no SELFTEST line"):
        parse_selftest("Traceback...\nImportError: no module named 'node.selftest'\n", "p")


def test_monitor_follows_the_log_and_ctrl_c_stops_main(
    vboard_factory: Callable[..., VirtualBoard],
) -> None:
    vb = vboard_factory("mon")
    vb.close()
    (vb.flash_dir / "main.py").write_text(
        "import time\nn = 0\nwhile True:\n    print('tick', n)\n    n += 1\n    time.sleep(0.05)\n"
    )
    with VirtualBoard(vb.flash_dir) as board:
        assert board.wait_for(b"tick 1")
        got: list[str] = []
        follow(board.device, got.append, duration_s=0.6)
        # Only whole lines: the window can start and end in the middle of one ("tick " alone).
        lines = "".join(got).split("\n")[1:-1]
        ticks = [int(x.split()[1]) for x in lines if x.startswith("tick ")]
        assert len(ticks) >= 3 and ticks == list(range(ticks[0], ticks[0] + len(ticks)))
        got.clear()
        follow(board.device, got.append, duration_s=1.0, interrupt=True)
        assert "KeyboardInterrupt" in "".join(got)
        time.sleep(0.3)
        assert not board.running_main


@pytest.mark.micropython
def test_batch_provision_one_bad_board_leaves_nothing_half_written(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three boards in parallel, the middle one's flash refuses the config: the other two are
    provisioned, the bad one has neither a config nor an inventory row nor a broker entry."""
    boards = [vboard_factory(f"b{i}", f"246f2800004{i}") for i in range(3)]
    (boards[1].flash_dir / "config.json.tmp").mkdir()  # its filesystem refuses the write
    site_csv = tmp_path / "school.csv"
    site_csv.write_text(
        "port,kind,site,lat,lon,name\n"
        + "".join(
            f"{vb.device},air,rayong-school-01,12.68,101.27,node {i}\n"
            for i, vb in enumerate(boards)
        )
    )
    inv_path = tmp_path / "inv.sqlite"
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    argv = provision_argv(
        "--batch",
        str(site_csv),
        broker="192.168.1.10",
        broker_dir=tmp_path / "broker",
        inventory=inv_path,
    )
    code = cityedge(argv)
    assert code == 1
    out = capsys.readouterr().out
    assert out.count("FAILED") == 1 and out.count(" ok ") == 2
    assert [(vb.flash_dir / "config.json").exists() for vb in boards] == [True, False, True]
    assert all(not (vb.flash_dir / "config.json.tmp").is_file() for vb in boards)
    with Inventory(inv_path) as inv:
        assert sorted(d.device_id for d in inv.devices()) == ["ce-246f28000040", "ce-246f28000042"]
        assert inv.events("ce-246f28000041") == []
    passwd = (tmp_path / "broker" / "passwd").read_text()
    assert "ce-246f28000040:" in passwd and "ce-246f28000041" not in passwd


def test_boards_finishing_together_all_reach_a_new_inventory(tmp_path: Path) -> None:
    """A batch's boards open the inventory in the same instant; on a new file that once made
    some fail with 'database is locked' although their board was done."""
    from host_tools.field.errors import InventoryError

    for n in range(60):
        path = tmp_path / f"inv{n}.sqlite"
        barrier = threading.Barrier(12)
        errors: list[InventoryError] = []

        def one(
            i: int,
            path: Path = path,
            barrier: threading.Barrier = barrier,
            errors: list[InventoryError] = errors,
        ) -> None:
            barrier.wait()
            try:
                with Inventory(path) as inv:
                    inv.record_event("flash", device_id=f"ce-0000000000{i:02d}")
            except InventoryError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with Inventory(path) as inv:
            assert len(inv.events()) == 12
