"""The same flows against a real ESP32 running MicroPython: `pytest -m hil --port /dev/ttyUSB0`.

Skipped without --port (tests/conftest.py). Set CITYEDGE_HIL_BOARD to the board definition
(default esp32-devkitc). The board keeps what is deployed; its config.json is replaced by a
test identity with a broker that does not exist, so verify reports MQTT as failing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from host_tools.field import build as fb
from host_tools.field import deploy as dp
from host_tools.field.board import Board
from host_tools.field.inventory import Inventory
from host_tools.field.provision import BrokerTarget, NodeSpec, device_id_from_mac, provision_board
from host_tools.field.verify import run_selftest

pytestmark = pytest.mark.hil


@pytest.fixture
def port(request: pytest.FixtureRequest) -> str:
    value: str = request.config.getoption("--port")
    return value


def test_hil_deploy_provision_verify(port: str, tmp_path: Path) -> None:
    board_name = os.environ.get("CITYEDGE_HIL_BOARD", "esp32-devkitc")
    build = fb.build_firmware()
    inv = Inventory(tmp_path / "inv.sqlite")
    with Board(port) as board:
        info = board.info()
        assert info.platform == "esp32" and info.mpy == fb.find_mpy_cross().mpy
        dp.deploy(board, build, board_name)
        assert dp.deploy(board, build, board_name).copied == []  # second run: nothing to copy
        kind = next(iter(json.loads(dp.board_json(board_name))["sensors"]))
        spec = NodeSpec(
            kind=kind,
            site_id="hil-bench",
            board=board_name,
            lat=13.75,
            lon=100.5,
            wifi_ssid="hil-none",
            wifi_password="x",
            broker=BrokerTarget("192.0.2.1", 1883),
        )  # TEST-NET-1: unreachable
        result = provision_board(board, spec, inv, firmware_version=build.label)
        assert result.device_id == device_id_from_mac(board.mac())
        st = run_selftest(board, timeout_s=90)
    assert st.device_id == result.device_id and st.firmware == build.version
    assert any(c.name.startswith("sensor ") for c in st.checks)
    assert not st.passed  # WiFi "hil-none" and a TEST-NET broker cannot pass


def test_hil_probe_and_flash(port: str, tmp_path: Path) -> None:
    """Needs CITYEDGE_HIL_IMAGE: a MicroPython .bin with its .sha256 beside it."""
    from host_tools.field import flashing

    image = os.environ.get("CITYEDGE_HIL_IMAGE")
    if not image:
        pytest.fail("set CITYEDGE_HIL_IMAGE to a MicroPython .bin (with IMAGE.sha256) to run this")
    info = flashing.probe(port)
    assert len(info.mac) == 12
    result = flashing.flash_image(port, Path(image))
    assert result.chip.mac == info.mac
    with Board(port) as board:  # MicroPython answers again after the hard reset
        assert board.mac() == info.mac
