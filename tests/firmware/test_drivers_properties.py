"""Property tests: every parser and driver under random bytes and corrupted frames.

A parser may only raise ValueError; a frame whose checksum/CRC no longer matches never
yields a value; a driver fed a hostile byte stream never raises and only returns values
that a genuinely valid frame in the stream carried."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "firmware", _ROOT / "host_tools" / "sim" / "models"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import fakes

from drivers import bme280, pms5003, qmc5883l, sht3x, ultrasonic, ultrasonic_pulse

FAST = settings(max_examples=300, deadline=None)


class StreamUART:
    """A UART that plays back fixed bytes in chunks of random size, then goes quiet."""

    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self.data = bytearray(data)
        self.chunk = max(1, chunk)
        self.written = bytearray()

    def write(self, buf: bytes) -> int:
        self.written += buf
        return len(buf)

    def any(self) -> int:
        return min(len(self.data), self.chunk)

    def read(self, n: int | None = None) -> bytes | None:
        if not self.data:
            return None
        n = min(n or len(self.data), self.chunk, len(self.data))
        out = bytes(self.data[:n])
        del self.data[:n]
        return out


def _pms_frame(words: list[int]) -> bytes:
    b = bytearray(b"\x42\x4d\x00\x1c")
    for w in words:
        b += w.to_bytes(2, "big")
    b += (sum(b) & 0xFFFF).to_bytes(2, "big")
    return bytes(b)


def _valid_pms_values(stream: bytes) -> set[tuple[int, ...]]:
    found = set()
    for i in range(len(stream) - 31):
        try:
            found.add(pms5003.parse_frame(stream[i : i + 32]))
        except ValueError:
            pass
    return found


words13 = st.lists(st.integers(0, 0xFFFF), min_size=13, max_size=13)


# -- PMS5003 ----------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=80))
def test_pms_parse_random_bytes_only_valueerror(data: bytes) -> None:
    try:
        values = pms5003.parse_frame(data)
    except ValueError:
        return
    assert len(data) >= 32 and pms5003.checksum(data, 30) == int.from_bytes(data[30:32], "big")
    assert len(values) == 12


@FAST
@given(words13, st.integers(0, 31), st.integers(1, 255))
def test_pms_single_byte_corruption_always_rejected(words: list[int], i: int, x: int) -> None:
    frame = bytearray(_pms_frame(words))
    assert pms5003.parse_frame(frame) == tuple(words[:12])
    frame[i] ^= x
    try:
        pms5003.parse_frame(frame)
    except ValueError:
        return
    raise AssertionError("corrupted frame accepted")


@FAST
@given(words13, st.lists(st.tuples(st.integers(0, 31), st.integers(0, 255)), max_size=6))
def test_pms_multi_byte_corruption_never_passes_a_bad_checksum(
    words: list[int], edits: list[tuple[int, int]]
) -> None:
    frame = bytearray(_pms_frame(words))
    for i, v in edits:
        frame[i] = v
    ok_sum = pms5003.checksum(frame, 30) == (frame[30] << 8 | frame[31])
    try:
        pms5003.parse_frame(frame)
    except ValueError:
        return
    assert ok_sum and frame[:4] == b"\x42\x4d\x00\x1c"


@FAST
@given(
    st.lists(st.one_of(st.binary(max_size=40), words13.map(_pms_frame)), max_size=6),
    st.integers(1, 40),
    st.booleans(),
)
def test_pms_driver_on_hostile_stream(parts: list[bytes], chunk: int, passive: bool) -> None:
    stream = b"".join(parts)
    drv = pms5003.PMS5003(StreamUART(stream, chunk), passive=passive, tries=3, check=False)
    for _ in range(8):
        r = drv.read()
        if r is not None:
            assert r in _valid_pms_values(stream)
        else:
            assert drv.last_error in pms5003.REASONS
    # Every failed read was counted under exactly one reason.
    assert all(v >= 0 for v in drv.errors.values())


@FAST
@given(st.lists(st.sampled_from(fakes.FakePMS5003.FAULTS), max_size=12), st.booleans())
def test_pms_driver_with_random_fake_faults(faults: list[str], passive: bool) -> None:
    fake = fakes.FakePMS5003(lambda: {"pm1": 1.0, "pm25": 2.0, "pm10": 3.0}, passive=passive)
    drv = pms5003.PMS5003(fake, passive=passive, check=False, tries=5)
    failures = 0
    for f in faults:
        fake.inject(f)
        r = drv.read()
        if r is None:
            failures += 1
        else:
            assert r[3:6] == (1, 2, 3)
    assert failures == sum(v for k, v in drv.errors.items() if k != "resync")


# -- SHT3x ------------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=10))
def test_sht_parse_random_bytes(data: bytes) -> None:
    try:
        t, rh = sht3x.parse_measurement(data)
    except ValueError:
        return
    assert sht3x.crc8(data, 0, 2) == data[2] and sht3x.crc8(data, 3, 5) == data[5]
    assert -45.0 <= t <= 130.0 and 0.0 <= rh <= 100.0


@FAST
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 5), st.integers(1, 255))
def test_sht_single_byte_corruption_always_rejected(t: int, h: int, i: int, x: int) -> None:
    b = bytearray(t.to_bytes(2, "big") + b"\x00" + h.to_bytes(2, "big") + b"\x00")
    b[2] = sht3x.crc8(b, 0, 2)
    b[5] = sht3x.crc8(b, 3, 5)
    sht3x.parse_measurement(b)
    b[i] ^= x
    try:
        sht3x.parse_measurement(b)
    except ValueError:
        return
    raise AssertionError("corrupted SHT3x frame accepted")


class RandomI2C:
    """An I2C device that answers every read with hypothesis-chosen bytes or an OSError."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    def on_write(self, buf: bytes) -> None:
        if self.data and self.data[0] == 0xEE:
            del self.data[0]
            raise OSError(5)

    def on_read(self, n: int) -> bytes:
        if len(self.data) < n:
            raise OSError(19)
        out = bytes(self.data[:n])
        del self.data[:n]
        return out


@FAST
@given(st.binary(max_size=60))
def test_i2c_drivers_never_raise_on_garbage(data: bytes) -> None:
    bus = fakes.I2CBus({0x44: RandomI2C(data), 0x0D: RandomI2C(data), 0x76: RandomI2C(data)})
    s = sht3x.SHT3x(bus, check=False)
    q = qmc5883l.QMC5883L(bus, check=False)
    b = bme280.BME280(bus, check=False)
    for _ in range(3):
        r = s.read(lambda ms: None)
        assert r is None or (-45 <= r[0] <= 130 and 0 <= r[1] <= 100)
        r = q.read()
        assert r is None or all(abs(v) <= 32768 * 100 / 12000 for v in r)
        b.read(lambda ms: None)
    for d, mod in ((s, sht3x), (q, qmc5883l), (b, bme280)):
        assert set(d.errors) == set(mod.REASONS)


# -- QMC5883L, BME280 pure parsing ------------------------------------------------------------


@FAST
@given(st.binary(max_size=12))
def test_qmc_parse_data(data: bytes) -> None:
    try:
        x, y, z = qmc5883l.parse_data(data)
    except ValueError:
        assert len(data) < 6
        return
    for v, off in zip((x, y, z), (0, 2, 4), strict=True):
        assert v == int.from_bytes(data[off : off + 2], "little", signed=True)


@FAST
@given(
    st.binary(min_size=26, max_size=26),
    st.binary(min_size=7, max_size=7),
    st.integers(0, (1 << 20) - 1),
    st.integers(0, (1 << 20) - 1),
    st.integers(0, 0xFFFF),
)
def test_bme_compensation_total_on_any_trim(tp: bytes, h: bytes, ap: int, at: int, ah: int) -> None:
    trim = bme280.parse_trim(tp, h)
    t, rh, p = bme280.compensate(ap, at, ah, trim)
    assert 0.0 <= rh <= 100.0
    assert isinstance(t, float) and isinstance(p, float)


# -- ultrasonic -------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=8))
def test_ultrasonic_parse_random_bytes(data: bytes) -> None:
    try:
        mm = ultrasonic.parse_frame(data)
    except ValueError:
        return
    assert data[0] == 0xFF and (0xFF + data[1] + data[2]) & 0xFF == data[3]
    assert mm == data[1] << 8 | data[2]


@FAST
@given(st.integers(0, 0xFFFF), st.integers(1, 3), st.integers(1, 255))
def test_ultrasonic_corruption_rejected(mm: int, i: int, x: int) -> None:
    f = bytearray((0xFF, mm >> 8, mm & 0xFF, (0xFF + (mm >> 8) + (mm & 0xFF)) & 0xFF))
    assert ultrasonic.parse_frame(f) == mm
    f[i] ^= x
    try:
        ultrasonic.parse_frame(f)
    except ValueError:
        return
    raise AssertionError("corrupted ultrasonic frame accepted")


@FAST
@given(st.binary(max_size=40), st.integers(1, 9))
def test_ultrasonic_driver_on_random_stream(data: bytes, chunk: int) -> None:
    drv = ultrasonic.UltrasonicUART(
        StreamUART(data, chunk), min_m=0.0, max_m=70.0, tries=2, check=False
    )
    valid = set()
    for i in range(len(data) - 3):
        try:
            valid.add(ultrasonic.parse_frame(data[i : i + 4]) / 1000.0)
        except ValueError:
            pass
    for _ in range(4):
        r = drv.read()
        assert r is None or r in valid


@FAST
@given(st.lists(st.integers(-2, 40000), min_size=5, max_size=5), st.floats(-20, 50))
def test_pulse_driver_result_within_limits(echoes: list[int], temp: float) -> None:
    it = iter(echoes)
    pin = fakes.FakePin()
    drv = ultrasonic_pulse.UltrasonicPulse(pin, pin, lambda p, lvl, t: next(it), lambda us: None)
    r = drv.read(temp)
    assert r is None or drv.min_m <= r <= drv.max_m
