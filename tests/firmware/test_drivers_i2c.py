"""SHT3x, BME280 and QMC5883L drivers against the register/command-level fakes (CPython)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "firmware", _ROOT / "host_tools" / "sim" / "models"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import fakes

from drivers import bme280, qmc5883l, sht3x


def _no_sleep(ms: int) -> None:
    return None


def _src(**v: float):
    return lambda: v


# -- SHT3x ------------------------------------------------------------------------------------


def test_sht3x_crc_datasheet_example() -> None:
    # Sensirion SHT3x datasheet, "Checksum Calculation": CRC of 0xBEEF is 0x92.
    assert sht3x.crc8(b"\xbe\xef") == 0x92
    assert sht3x.crc8(b"\x00\x00") == 0x81


def test_sht3x_convert_endpoints() -> None:
    assert sht3x.convert(0, 0) == (-45.0, 0.0)
    assert sht3x.convert(65535, 65535) == (130.0, 100.0)


def test_sht3x_parse_rejects_bad_crc() -> None:
    good = bytes([0x66, 0x66, sht3x.crc8(b"\x66\x66"), 0x80, 0x00, sht3x.crc8(b"\x80\x00")])
    t, rh = sht3x.parse_measurement(good)
    assert t == pytest.approx(-45 + 175 * 0x6666 / 65535)
    assert rh == pytest.approx(100 * 0x8000 / 65535)
    for i in (2, 5):
        bad = bytearray(good)
        bad[i] ^= 1
        with pytest.raises(ValueError, match="crc"):
            sht3x.parse_measurement(bad)


@pytest.mark.parametrize("address", [0x44, 0x45])
@pytest.mark.parametrize(("temp", "rh"), [(-10.0, 5.0), (24.3, 61.2), (41.7, 98.0)])
def test_sht3x_round_trip(address: int, temp: float, rh: float) -> None:
    bus = fakes.I2CBus({address: fakes.FakeSHT3x(_src(temp=temp, rh=rh))})
    drv = sht3x.SHT3x(bus, address)
    t, h = drv.read(_no_sleep)
    # One LSB: 175/65535 C and 100/65535 %RH.
    assert abs(t - temp) <= 175 / 65535
    assert abs(h - rh) <= 100 / 65535
    assert sum(drv.errors.values()) == 0


def test_sht3x_absent_raises_naming_the_address() -> None:
    with pytest.raises(OSError, match="0x45"):
        sht3x.SHT3x(fakes.I2CBus({0x44: fakes.FakeSHT3x(_src(temp=1, rh=1))}), 0x45)


@pytest.mark.parametrize(("fault", "reason"), [("crc", "crc"), ("garbage", "crc"), ("stop", "bus")])
def test_sht3x_faults_counted(fault: str, reason: str) -> None:
    fake = fakes.FakeSHT3x(_src(temp=20.0, rh=50.0))
    drv = sht3x.SHT3x(fakes.I2CBus({0x44: fake}))
    fake.inject(fault)
    assert drv.read(_no_sleep) is None
    assert drv.errors[reason] == 1 and drv.last_error == reason
    assert drv.read(_no_sleep) is not None


def test_sht3x_read_before_measurement_nacks_and_is_counted() -> None:
    drv = sht3x.SHT3x(fakes.I2CBus({0x44: fakes.FakeSHT3x(_src(temp=20.0, rh=50.0))}))
    assert drv.read_result() is None
    assert drv.errors["bus"] == 1
    assert drv.start()
    assert drv.read_result() is not None


# -- BME280 -----------------------------------------------------------------------------------

DATASHEET_TRIM = (
    27504,
    26435,
    -1000,
    36477,
    -10685,
    3024,
    2855,
    140,
    -7,
    15500,
    -14600,
    6000,
    75,
    362,
    0,
    313,
    50,
    30,
)


def test_bme280_compensation_datasheet_example() -> None:
    # Bosch BMP280 datasheet "Calculating pressure and temperature" worked example (same T/P formulas as the BME280):
    # adc_T = 519888 -> 25.08 C, adc_P = 415148 -> 100653.27 Pa (float version).
    t, t_fine = bme280.compensate_t(519888, DATASHEET_TRIM)
    assert t == pytest.approx(25.08, abs=0.005)
    assert t_fine == pytest.approx(128422.3, abs=0.1)
    assert bme280.compensate_p(415148, t_fine, DATASHEET_TRIM) == pytest.approx(100653.27, abs=0.01)


def test_bme280_trim_parsing_matches_register_layout() -> None:
    fake = fakes.FakeBME280(
        _src(temp=25.0, rh=50.0, pressure=1000.0),
        trim=dict(fakes.BME280_TRIM, H4=-200, H5=-7, H6=-3),
    )
    tp = fake.regs[0x88 : 0x88 + 26]
    h = fake.regs[0xE1 : 0xE1 + 7]
    trim = bme280.parse_trim(tp, h)
    assert trim[:12] == DATASHEET_TRIM[:12]
    assert trim[12:] == (75, 362, 0, -200, -7, -3)


@pytest.mark.parametrize(
    ("temp", "rh", "hpa"), [(24.5, 50.0, 1013.25), (35.2, 88.8, 1005.1), (-5.0, 20.0, 950.0)]
)
def test_bme280_round_trip(temp: float, rh: float, hpa: float) -> None:
    bus = fakes.I2CBus({0x76: fakes.FakeBME280(_src(temp=temp, rh=rh, pressure=hpa))})
    drv = bme280.BME280(bus)
    t, h, p = drv.read(_no_sleep)
    # Fake inverts the datasheet integer code, the driver uses the float code: they agree to
    # the integer code's resolution (0.01 C, 1/1024 %RH, 1/256 Pa) plus one ADC step.
    assert t == pytest.approx(temp, abs=0.01)
    assert h == pytest.approx(rh, abs=0.02)
    assert p == pytest.approx(hpa, abs=0.02)
    assert sum(drv.errors.values()) == 0


def test_bme280_wrong_chip_and_absent() -> None:
    fake = fakes.FakeBME280(_src(temp=25.0, rh=50.0, pressure=1000.0))
    fake.inject("chip_id")
    with pytest.raises(OSError, match="0x76.*0x58"):
        bme280.BME280(fakes.I2CBus({0x76: fake}))
    with pytest.raises(OSError, match="0x77"):
        bme280.BME280(fakes.I2CBus({0x76: fake}), 0x77)


@pytest.mark.parametrize(("fault", "reason"), [("skipped", "skipped"), ("stop", "bus")])
def test_bme280_faults_counted(fault: str, reason: str) -> None:
    fake = fakes.FakeBME280(_src(temp=25.0, rh=50.0, pressure=1000.0))
    drv = bme280.BME280(fakes.I2CBus({0x76: fake}))
    fake.inject(fault)
    assert drv.read(_no_sleep) is None
    assert drv.errors[reason] == 1
    assert drv.read(_no_sleep) is not None


def test_bme280_never_measured_reads_as_skipped() -> None:
    drv = bme280.BME280(fakes.I2CBus({0x76: fakes.FakeBME280(_src(temp=1, rh=1, pressure=1))}))
    assert drv.read_result() is None
    assert drv.errors["skipped"] == 1


# -- QMC5883L ---------------------------------------------------------------------------------


def test_qmc_bring_up_writes_the_recommended_registers() -> None:
    fake = fakes.FakeQMC5883L(_src(x=1.0, y=2.0, z=3.0))
    qmc5883l.QMC5883L(fakes.I2CBus({0x0D: fake}))
    assert fake.regs[0x0B] == 0x01
    assert fake.regs[0x09] == 0x05  # OSR 512, +-2 G, 50 Hz, continuous


@pytest.mark.parametrize(("x", "y", "z"), [(25.0, -12.5, 40.3), (-199.9, 0.0, 199.9)])
def test_qmc_round_trip(x: float, y: float, z: float) -> None:
    drv = qmc5883l.QMC5883L(fakes.I2CBus({0x0D: fakes.FakeQMC5883L(_src(x=x, y=y, z=z))}))
    got = drv.read()
    # One LSB at +-2 G: 100/12000 uT.
    for a, b in zip(got, (x, y, z), strict=True):
        assert abs(a - b) <= 100 / 12000
    assert sum(drv.errors.values()) == 0


def test_qmc_parse_data_little_endian() -> None:
    assert qmc5883l.parse_data(b"\x01\x00\xff\xff\x00\x80") == (1, -1, -32768)
    assert qmc5883l.counts_to_ut(12000) == 100.0


def test_qmc_field_beyond_range_is_overflow_not_a_value() -> None:
    fake = fakes.FakeQMC5883L(_src(x=300.0, y=0.0, z=0.0))  # 36000 counts > int16
    drv = qmc5883l.QMC5883L(fakes.I2CBus({0x0D: fake}))
    assert drv.read() is None
    assert drv.errors["overflow"] == 1


@pytest.mark.parametrize(
    ("fault", "reason"), [("overflow", "overflow"), ("not_ready", "not_ready"), ("stop", "bus")]
)
def test_qmc_faults_counted(fault: str, reason: str) -> None:
    fake = fakes.FakeQMC5883L(_src(x=10.0, y=20.0, z=-30.0))
    drv = qmc5883l.QMC5883L(fakes.I2CBus({0x0D: fake}))
    fake.inject(fault)
    assert drv.read() is None
    assert drv.errors[reason] == 1 and drv.last_error == reason
    got = drv.read()
    assert got is not None and math.isclose(got[2], -30.0, abs_tol=0.01)


def test_qmc_wrong_chip_id() -> None:
    fake = fakes.FakeQMC5883L(_src(x=0.0, y=0.0, z=0.0))
    fake.regs[0x0D] = 0x00
    with pytest.raises(OSError, match="0x0d"):
        qmc5883l.QMC5883L(fakes.I2CBus({0x0D: fake}))
