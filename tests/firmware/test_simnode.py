"""The node launcher: flash preparation, identity, time scaling, process hygiene, and the
`cityedge node simulate` command."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from boards import load_board
from host_tools.field.build import build_firmware
from host_tools.sim.brokers import free_port
from host_tools.sim.simnode import (
    HARD_RESET,
    PWRON_RESET,
    LinkProxy,
    SimError,
    SimNode,
    compile_tree,
    firmware_intervals,
    parse_heap,
    parse_time,
)
from tests.support.tools import FIRMWARE, REPO, micropython

pytestmark = pytest.mark.micropython

BROKER = "127.0.0.1:9"  # nothing listens: these nodes never get MQTT up


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has no resources left.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1].startswith("Z")


def test_config_scales_every_firmware_interval_and_keeps_identity(tmp_path: Path) -> None:
    node = SimNode(
        "air",
        broker="10.0.0.5:1884",
        speed=60,
        seed=5,
        username="ce-user",
        password="s3cret",
        flash_dir=tmp_path,
        config_overrides={"intervals": {"sample_s": 30}, "location": {"lat": 12.68}},
    )
    cfg = node.node_config()
    defaults = firmware_intervals(micropython(), str(FIRMWARE))
    assert set(cfg["intervals"]) == set(defaults), "only keys the firmware knows"
    assert cfg["intervals"]["sample_s"] == pytest.approx(0.5)  # 30 simulated s at 60x
    assert cfg["intervals"]["report_s"] == pytest.approx(defaults["report_s"] / 60)
    # The node reaches the broker through the launcher's relay (so WiFi drops cut the link).
    assert node.link is not None and node.link.target == ("10.0.0.5", 1884)
    assert cfg["mqtt"] == {
        "host": "127.0.0.1",
        "port": node.link.port,
        "username": "ce-user",
        "password": "s3cret",
        "tls": False,
        "keepalive_s": 60,
    }
    direct = SimNode("air", broker="10.0.0.5:1884", seed=5, link_relay=False).node_config()
    assert (direct["mqtt"]["host"], direct["mqtt"]["port"]) == ("10.0.0.5", 1884)
    node.close()
    assert cfg["location"] == {"lat": 12.68}
    assert re.fullmatch(r"ce-240ac4[0-9a-f]{6}", node.device_id)
    assert cfg["device_id"] == node.device_id and cfg["kind"] == "air"
    assert SimNode("air", broker=BROKER, seed=5).device_id == node.device_id
    assert SimNode("air", broker=BROKER, seed=6).device_id != node.device_id
    assert SimNode("air", broker=BROKER, device_id="ce-a1b2c3d4e5f6").mac == "a1b2c3d4e5f6"


def test_flash_dir_is_prepared_and_identity_survives_a_new_launcher(tmp_path: Path) -> None:
    script = tmp_path / "idle.py"
    script.write_text("import machine\nprint('id', machine.unique_id().hex())\n")
    flash = tmp_path / "flash"
    with SimNode(
        "parking",
        broker=BROKER,
        flash_dir=flash,
        seed=9,
        speed=2.0,
        main=script,
        start="2026-03-01T00:00:00Z",
    ) as node:
        assert node.wait_for("^id ") == "id " + node.mac
        first_id = node.device_id
        sim = json.loads((flash / "sim.json").read_text())
        assert sim["speed"] == 2.0 and sim["seed"] == 9 and sim["unique_id"] == node.mac
        assert sim["clock"]["sim_t0"] == parse_time("2026-03-01T00:00:00Z")
        assert re.fullmatch(r"127\.0\.0\.1:\d+", sim["hw"])
        assert json.loads((flash / "board.json").read_text()) == load_board("sim")
        assert json.loads((flash / "config.json").read_text())["kind"] == "parking"
    # A new launcher on the same flash (no seed, no id given) is the same device rebooting.
    again = SimNode("parking", broker=BROKER, flash_dir=flash, main=script)
    assert again.device_id == first_id


def test_stop_and_kill_leave_no_process(tmp_path: Path) -> None:
    script = tmp_path / "busy.py"
    script.write_text(
        "import machine, time\nmachine.WDT(timeout=60000)\nprint('up')\n"
        "while True:\n    time.sleep_ms(50)\n"
    )
    node = SimNode("air", broker=BROKER, main=script, flash_dir=tmp_path / "f")
    node.start()
    node.wait_for("^up$")
    pid = node.pid
    assert pid is not None and node.running
    node.stop()
    assert not node.running and node.state == "off" and _gone(pid)
    node.start()
    node.wait_for("^up$", start=len(node.log) - 2)
    pid2 = node.pid
    assert pid2 is not None and pid2 != pid
    node.kill()
    assert _gone(pid2) and node.returncode == -signal.SIGKILL
    node.start()
    node.reboot()
    node.wait_for("hard reset")
    assert node.reset_causes[-2:] == [PWRON_RESET, HARD_RESET]
    node.close()
    assert not node.running


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "traffic"}, "unknown node kind"),
        ({"broker": "localhost"}, "is not host:port"),
        ({"heap": "lots"}, "heap size"),
        ({"start": "yesterday"}, "cannot read the start time"),
        ({"device_id": "ce-XYZ"}, "is not ce- plus 12"),
        ({"board": "esp32-nonesuch"}, "no board file"),
        ({"speed": 0}, "speed must be positive"),
        ({"events": [{"type": "earthquake", "at": 0}]}, "scenario event"),
    ],
)
def test_bad_settings_say_what_to_do(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"kind": "air", "broker": BROKER, **kwargs}
    with pytest.raises(SimError, match=message) as err:
        SimNode(**args)  # type: ignore[arg-type]
    assert err.value.hint


def test_small_parsers() -> None:
    assert parse_heap("64k") == 65536 and parse_heap(1000) == 1000 and parse_heap("1m") == 1 << 20
    assert parse_time("2026-02-20") == parse_time("2026-02-20T00:00:00Z") == 1771545600.0
    assert parse_time(12.5) == 12.5 and parse_time(None) is None


def test_compiled_tree_is_cached(tmp_path: Path) -> None:
    a = compile_tree(cache_root=tmp_path)
    assert (a / "firmware" / "main.py").exists()
    assert (a / "simboard" / "machine.mpy").exists()
    assert not (a / "simboard" / "signals.mpy").exists()  # runs in the launcher, not the node
    assert compile_tree(cache_root=tmp_path) == a


def test_the_simulation_runs_what_deploy_writes(tmp_path: Path) -> None:
    """One build: the simulated node's firmware/ is the deploy build (the files a release bundle
    carries too), file for file; compiled by the same function, its bytes are deploy's built
    with the simulation's import path as each module's source name."""
    tree = compile_tree(cache_root=tmp_path)
    on_disk = {
        "/" + p.relative_to(tree / "firmware").as_posix(): p.read_bytes()
        for p in sorted((tree / "firmware").rglob("*"))
        if p.is_file()
    }
    deployed = build_firmware()
    assert sorted(on_disk) == sorted(deployed.files)
    assert "/main.py" in on_disk and "/node/app.mpy" in on_disk
    assert on_disk["/main.py"] == deployed.files["/main.py"]  # source stays source
    assert on_disk == build_firmware(loaded_from=f"{tree}/firmware/").files
    # the only difference from deploy's bytes: the source name, the path the module runs from
    app = on_disk["/node/app.mpy"]
    assert f"{tree}/firmware/node/app.mpy".encode() in app
    assert (
        b"node/app.mpy" in deployed.files["/node/app.mpy"]
        and str(tree).encode() not in (deployed.files["/node/app.mpy"])
    )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "host_tools.cli", "node", "simulate", *args]


def test_cli_runs_streams_and_stops_after_duration(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    out = subprocess.run(
        _cli(
            "--kind",
            "water",
            "--broker",
            BROKER,
            "--duration",
            "2",
            "--seed",
            "3",
            "--flash-dir",
            str(flash),
            "--speed",
            "30",
            "--flash-flood",
            "2026-09-01T03:00:00Z",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "[sim] boot 1: power-on" in out.stdout
    assert "[sim] stopped" in out.stdout
    pid = int(re.search(r"power-on \(pid (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    assert _gone(pid)
    sim = json.loads((flash / "sim.json").read_text())
    assert sim["events"] == [{"type": "flash_flood", "at": parse_time("2026-09-01T03:00:00Z")}]
    cfg = json.loads((flash / "config.json").read_text())
    assert cfg["kind"] == "water" and cfg["intervals"]["sample_s"] == pytest.approx(
        firmware_intervals(micropython(), str(FIRMWARE))["sample_s"] / 30
    )


def test_cli_ctrl_c_stops_the_node(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _cli("--kind", "air", "--broker", BROKER, "--flash-dir", str(tmp_path / "f")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    pid = None
    deadline = time.monotonic() + 30
    while pid is None and time.monotonic() < deadline:
        m = re.search(r"power-on \(pid (\d+)", proc.stdout.readline())
        pid = int(m.group(1)) if m else None
    assert pid is not None
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "interrupted" in rest
    assert _gone(pid)


def test_cli_bad_broker_is_a_clear_error() -> None:
    out = subprocess.run(
        _cli("--kind", "air", "--broker", "nowhere"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 1
    assert "is not host:port" in out.stderr and "what to do" in out.stderr


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def _roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def _assert_reset(port: int) -> None:
    # Reset during the handshake, on the first write, or (as EOF) on the first read.
    with (
        pytest.raises((ConnectionResetError, BrokenPipeError)),
        socket.create_connection(("127.0.0.1", port), timeout=2) as sock,
    ):
        sock.sendall(b"CONNECT")
        if not sock.recv(10):
            raise ConnectionResetError


def test_wifi_drop_silences_the_link_to_the_broker() -> None:
    srv, port = _echo_server()
    relay = LinkProxy("127.0.0.1", port).start()
    try:
        old = socket.create_connection(("127.0.0.1", relay.port), timeout=2)
        assert _roundtrip(old, b"CONNECT") == b"CONNECT"
        relay.up(False)
        # An open connection goes silent: nothing comes back, nothing is closed.
        old.settimeout(0.3)
        old.sendall(b"PINGREQ")
        with pytest.raises(TimeoutError):
            old.recv(10)
        # A new connection is reset at once.
        _assert_reset(relay.port)
        relay.up(True)
        again = socket.create_connection(("127.0.0.1", relay.port), timeout=2)
        assert _roundtrip(again, b"CONNECT again") == b"CONNECT again"
        with pytest.raises(TimeoutError):
            old.recv(10)  # the connection from before the drop stays dead
        assert relay.connections == 2
    finally:
        relay.stop()
        srv.close()


def test_broker_down_refuses_the_node() -> None:
    relay = LinkProxy("127.0.0.1", free_port()).start()  # nothing listens there
    try:
        _assert_reset(relay.port)
    finally:
        relay.stop()


def test_hardware_server_answers_bad_requests_with_errors(tmp_path: Path) -> None:
    node = SimNode("air", broker=BROKER, seed=2, flash_dir=tmp_path)
    hw = node.hardware
    assert hw.handle("U 1 17 16 9600") == "ok pm"
    assert hw.handle("U 2 4 5 9600") == "ok -"  # nothing wired to those pins
    assert hw.handle("zap") == "err 22"
    assert hw.handle("u nosuch a") == "err 22"
    handle = hw.handle("I 0 22 21").split()[1]
    assert hw.handle(f"i {handle} -1 s") == "ok 68"
    assert hw.handle(f"i {handle} 80 r 2") == "err 19"
    # The PMS5003's SET pin: low puts it to sleep (no frames), high wakes it.
    assert hw.handle("p -1 list") == "ok 4"
    hw.handle("u pm w 424de100000170")  # passive mode, as the driver sets it
    assert hw.handle("u pm r -1") == "ok 424d0004e1000174"  # the mode change's reply
    assert hw.handle("p 4 w 0") == "ok 0" and hw.device("pm").asleep
    hw.handle("u pm w 424de200000171")  # passive read request: a sleeping sensor ignores it
    assert hw.handle("u pm a") == "ok 0"
    assert hw.handle("p 4 w 1") == "ok 1" and hw.handle("p 4 v") == "ok 1"
    hw.handle("u pm w 424de200000171")
    assert hw.handle("u pm a") == "ok 32"
    hw.board = {
        **hw.board,
        "sensors": {"air": [{"name": "pm", "driver": "laser-9000", "bus": "uart1"}]},
    }
    hw.power_on()
    assert hw.handle("u pm a") == "err 5"  # no fake for that driver: EIO, not a hung node


def test_compile_cache_keeps_only_recent_trees(tmp_path: Path) -> None:
    for i in range(12):
        old = tmp_path / f"{i:016x}"
        old.mkdir()
        os.utime(old, (1000 + i, 1000 + i))
    (tmp_path / "build-abandoned").mkdir()
    os.utime(tmp_path / "build-abandoned", (1000, 1000))
    tree = compile_tree(cache_root=tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert tree.name in left and "build-abandoned" not in left
    assert len(left) == 8
    assert f"{11:016x}" in left and f"{0:016x}" not in left


def test_node_dies_with_its_launcher(tmp_path: Path) -> None:
    script = tmp_path / "forever.py"
    script.write_text("import time\nprint('up')\nwhile True:\n    time.sleep_ms(50)\n")
    launcher = (
        "import sys, time\n"
        "from host_tools.sim.simnode import SimNode\n"
        f"n = SimNode('air', broker='{BROKER}', main={str(script)!r}, flash_dir={str(tmp_path / 'f')!r})\n"
        "n.start()\n"
        "n.wait_for('^up$')\n"
        "print(n.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert not _gone(pid)
    proc.kill()  # the launcher is killed outright: no stop(), no cleanup code runs
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the node outlived its launcher"
