"""Board files load, and a broken board file is refused with a message naming the key."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from boards import BoardError, list_boards, load_board, validate_board


def test_shipped_boards_load() -> None:
    assert {"esp32-devkitc", "lolin-d32", "sim", "sim-battery"} <= set(list_boards())
    for name in list_boards():
        board = load_board(name)
        assert board["name"] == name
    sim = load_board("sim")
    assert sim["mcu"] == "sim"
    assert set(sim["sensors"]) == {"air", "water", "parking"}
    battery = load_board("lolin-d32")["power"]
    assert battery["deep_sleep"] is True and battery["battery"]["adc_pin"] == 35
    assert "datasheet" in battery["sources"]


def test_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(load_board("sim")))
    assert load_board(path)["name"] == "sim"
    assert load_board(str(path))["name"] == "sim"


def test_missing_board_names_the_known_ones() -> None:
    with pytest.raises(BoardError) as err:
        load_board("esp32-nonesuch")
    assert "esp32-nonesuch" in str(err.value)
    assert "lolin-d32" in err.value.hint


def test_invalid_json_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"name": "x",')
    with pytest.raises(BoardError, match="not valid JSON"):
        load_board(path)


def _broken(change: Any) -> dict[str, Any]:
    board = copy.deepcopy(load_board("sim"))
    change(board)
    return board


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(colour="red"), "colour: unknown key"),
        (lambda b: b.pop("buses"), "buses: missing"),
        (lambda b: b.update(psram="no"), "psram: expected true/false"),
        (lambda b: b.update(mcu="esp8266"), "mcu: 'esp8266' is not supported"),
        (lambda b: b["buses"]["uart1"].update(tx=6), "buses.uart1.tx: GPIO 6 cannot be used"),
        (lambda b: b["buses"]["i2c0"].update(sda=35), "buses.i2c0.sda: GPIO 35 is input-only"),
        (lambda b: b["buses"]["uart2"].update(rx=21), "GPIO 21 is already used by buses.uart2.rx"),
        (lambda b: b["buses"]["uart1"].update(id=3), "buses.uart1.id: an ESP32 has uart 0..2"),
        (lambda b: b["buses"]["uart1"].update(type="spi"), "buses.uart1.type"),
        (
            lambda b: b["sensors"]["air"][0].update(bus="uart9"),
            "sensors.air[0].bus: 'uart9' is not a bus",
        ),
        (lambda b: b["sensors"]["air"][0].update(bus="i2c0"), "pms5003 needs a uart bus"),
        (lambda b: b["sensors"]["air"][1].update(address=0x144), "address: 324 is not a 7-bit"),
        (lambda b: b["sensors"]["air"][1].pop("address"), "sensors.air[1].address: missing"),
        (
            lambda b: b["sensors"]["air"][1].update(driver="dht22"),
            'driver: "dht22" is not a known driver',
        ),
        (lambda b: b["sensors"]["air"][1].update(name="pm"), "'pm' is used twice"),
        (lambda b: b["sensors"]["air"][0].update(set_pin=21), "set_pin: GPIO 21 is already used"),
        (lambda b: b["sensors"].update(traffic=[]), "sensors.traffic: unknown node kind"),
        (
            lambda b: b["sensors"]["water"].append(
                {"name": "depth", "driver": "pressure", "adc_pin": 26}
            ),
            "GPIO 26 is not on ADC1",
        ),
        (
            lambda b: b["sensors"]["water"].append(
                {"name": "r2", "driver": "hc-sr04", "trigger_pin": 36, "echo_pin": 39}
            ),
            "trigger_pin: GPIO 36 is input-only",
        ),
        (
            lambda b: b.update(power={"source": "battery", "deep_sleep": True}),
            "power.battery: missing",
        ),
        (lambda b: b.update(power={"source": "nuclear", "deep_sleep": False}), "power.source"),
        (lambda b: b["status_led"].update(pin=True), "status_led.pin: expected a whole number"),
    ],
)
def test_broken_board_names_the_key(change: Any, message: str) -> None:
    with pytest.raises(BoardError) as err:
        validate_board(_broken(change), "boards/x.json")
    assert message in str(err.value)
    assert str(err.value).startswith("boards/x.json: ")


def test_battery_board_needs_its_figures() -> None:
    board = load_board("lolin-d32")
    del board["power"]["sleep_current_ua"]
    with pytest.raises(BoardError, match="power.sleep_current_ua: missing"):
        validate_board(board)
    board = load_board("lolin-d32")
    board["power"]["battery"]["adc_pin"] = 4
    with pytest.raises(BoardError, match="ADC1") as err:
        validate_board(board)
    assert "WiFi" in err.value.hint


def test_sensors_of_different_kinds_may_share_pins() -> None:
    # Only one kind's sensors are attached at a time, so water and air may reuse GPIO 4.
    board = load_board("sim")
    board["sensors"]["water"].append(
        {"name": "r2", "driver": "hc-sr04", "trigger_pin": 4, "echo_pin": 34}
    )
    validate_board(board)
