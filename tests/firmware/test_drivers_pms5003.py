"""PMS5003 driver against the byte-level fake (CPython tier)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "firmware", _ROOT / "host_tools" / "sim" / "models"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import fakes

from drivers import pms5003

AIR = {"pm1": 7.0, "pm25": 18.0, "pm10": 31.0}


def _source(values: dict[str, float] | None = None):
    v = dict(AIR if values is None else values)
    return lambda: v


def _driver(passive: bool = True, **kw: object) -> tuple[fakes.FakePMS5003, pms5003.PMS5003]:
    fake = fakes.FakePMS5003(_source(), **kw)  # type: ignore[arg-type]
    return fake, pms5003.PMS5003(fake, passive=passive)


def test_commands_match_the_manual() -> None:
    # Plantower manual appendix II: 42 4D E1 00 00 01 70 = passive, E2 read, E4 00/01 sleep/wake.
    assert pms5003.CMD_PASSIVE == bytes.fromhex("424de100000170")
    assert pms5003.CMD_ACTIVE == bytes.fromhex("424de100010171")
    assert pms5003.CMD_READ == bytes.fromhex("424de200000171")
    assert pms5003.CMD_SLEEP == bytes.fromhex("424de400000173")
    assert pms5003.CMD_WAKE == bytes.fromhex("424de400010174")


def test_parse_known_frame() -> None:
    words = [1, 2, 3, 4, 5, 6, 600, 500, 400, 30, 20, 10, 0x9700]
    frame = bytearray(b"\x42\x4d\x00\x1c")
    for w in words:
        frame += w.to_bytes(2, "big")
    frame += (sum(frame) & 0xFFFF).to_bytes(2, "big")
    assert pms5003.parse_frame(frame) == tuple(words[:12])
    assert pms5003.as_dict(pms5003.parse_frame(frame))["pm25_atm"] == 5


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [(0, 0x41, "start"), (1, 0x00, "start"), (3, 0x1D, "length"), (10, 0xFF, "checksum")],
)
def test_parse_frame_names_the_reason(index: int, value: int, reason: str) -> None:
    fake = fakes.FakePMS5003(_source())
    frame = fake.frame()
    frame[index] = value
    with pytest.raises(ValueError, match=reason):
        pms5003.parse_frame(frame)
    with pytest.raises(ValueError, match="truncated"):
        pms5003.parse_frame(fake.frame()[:31])


@pytest.mark.parametrize("passive", [True, False])
def test_round_trip_both_channels(passive: bool) -> None:
    values = {
        "pm1": 3.0,
        "pm25": 41.0,
        "pm10": 77.0,
        "pm1_cf1": 4.0,
        "pm25_cf1": 55.0,
        "pm10_cf1": 90.0,
        "n03": 5000,
        "n05": 1500,
        "n10": 300,
        "n25": 40,
        "n50": 9,
        "n100": 2,
    }
    fake = fakes.FakePMS5003(_source(values))
    drv = pms5003.PMS5003(fake, passive=passive)
    d = pms5003.as_dict(drv.read())
    assert d == {
        "pm1_cf1": 4,
        "pm25_cf1": 55,
        "pm10_cf1": 90,
        "pm1_atm": 3,
        "pm25_atm": 41,
        "pm10_atm": 77,
        "n03": 5000,
        "n05": 1500,
        "n10": 300,
        "n25": 40,
        "n50": 9,
        "n100": 2,
    }
    assert sum(drv.errors.values()) == 0


def test_bring_up_selects_passive_mode_and_skips_the_ack() -> None:
    fake, drv = _driver()
    assert fake.passive
    assert fake.commands[0] == (0xE1, 0)
    assert drv.read() is not None
    assert drv.errors["start"] == 0 and drv.errors["length"] == 0


def test_bring_up_fails_with_oserror_naming_the_port() -> None:
    fake = fakes.FakePMS5003(_source())
    fake.inject("stop", None)
    with pytest.raises(OSError, match="PMS5003"):
        pms5003.PMS5003(fake)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("checksum", "checksum"),
        ("truncated", "truncated"),
        ("length", "length"),
        ("start", "start"),
        ("stop", "timeout"),
    ],
)
def test_each_fault_is_counted_and_not_returned(fault: str, reason: str) -> None:
    fake, drv = _driver()
    fake.inject(fault)
    assert drv.read() is None
    assert drv.last_error == reason
    assert drv.errors[reason] == 1
    assert sum(drv.errors.values()) == 1
    assert drv.read() == (7, 18, 31, 7, 18, 31, 1050, 315, 144, 18, 6, 2)
    assert drv.last_error is None


def test_garbage_before_a_frame_is_skipped_and_counted() -> None:
    fake, drv = _driver()
    fake.inject("garbage", 3)
    for _ in range(3):
        assert drv.read() is not None
    assert drv.errors["resync"] >= 1
    assert fake.injected["garbage"] == 3


def test_active_mode_stream_with_faults_keeps_going() -> None:
    fake, drv = _driver(passive=False)
    good = bad = 0
    for i in range(60):
        if i % 4 == 0:
            fake.inject(("checksum", "garbage", "truncated", "length")[i // 4 % 4])
        r = drv.read()
        if r is None:
            bad += 1
        else:
            assert r[4] == 18
            good += 1
    assert good >= 45
    assert bad == sum(v for k, v in drv.errors.items() if k != "resync")


def test_sleep_means_no_frames_and_wake_resumes() -> None:
    fake, drv = _driver()
    drv.sleep()
    assert fake.asleep
    assert drv.read() is None
    assert drv.errors["timeout"] == 1
    drv.wake()
    assert not fake.asleep
    assert drv.read() is not None


def test_active_mode_with_a_clock_emits_one_frame_per_second() -> None:
    now = [0.0]
    fake = fakes.FakePMS5003(_source(), clock=lambda: now[0])
    fake.any()
    now[0] = 3.5
    assert fake.any() == 3 * 32
    drv = pms5003.PMS5003(fake, passive=False, check=False)
    assert drv.read() is not None


def test_bus_oserror_is_counted() -> None:
    class Broken:
        def write(self, buf: bytes) -> int:
            raise OSError(5)

        def any(self) -> int:
            raise OSError(5)

        def read(self, n: int) -> bytes:
            raise OSError(5)

    drv = pms5003.PMS5003(Broken(), check=False)
    assert drv.read() is None
    assert drv.errors["bus"] == 1


def test_read_without_readinto_uses_read() -> None:
    class ReadOnly:
        def __init__(self, inner: fakes.FakePMS5003) -> None:
            self.inner = inner

        def write(self, buf: bytes) -> int:
            return self.inner.write(buf)

        def any(self) -> int:
            return self.inner.any()

        def read(self, n: int) -> bytes | None:
            return self.inner.read(n)

    fake = fakes.FakePMS5003(_source())
    drv = pms5003.PMS5003(ReadOnly(fake))
    fake.inject("garbage")
    assert drv.read() is not None


class LyingUART:
    """any() claims bytes that read() never delivers: the driver must still give up."""

    def write(self, buf: bytes) -> int:
        return len(buf)

    def any(self) -> int:
        return 5

    def read(self, n: int) -> None:
        return None

    def readinto(self, buf: memoryview) -> None:
        return None


def test_uart_that_promises_bytes_it_never_delivers_times_out() -> None:
    from drivers import ultrasonic

    drv = pms5003.PMS5003(LyingUART(), check=False)
    assert drv.read() is None
    assert drv.errors["timeout"] == 1
    us = ultrasonic.UltrasonicUART(LyingUART(), check=False)
    assert us.read() is None
    assert us.errors["timeout"] == 1
