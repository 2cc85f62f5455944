"""Ultrasonic (UART and trigger/echo), pressure transducer and battery drivers (CPython)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
for _p in (_ROOT / "firmware", _ROOT / "host_tools" / "sim" / "models"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import fakes

from drivers import battery, pressure, ultrasonic, ultrasonic_pulse


def _src(**v: float):
    return lambda: v


def _no_sleep(us: int) -> None:
    return None


# -- pure functions ---------------------------------------------------------------------------


def test_speed_of_sound_vector() -> None:
    # calibration-reference section 8: T = 30 C, echo 5000 us -> c = 349.48 m/s, d = 0.8737 m.
    assert ultrasonic.speed_of_sound(30.0) == pytest.approx(349.48)
    assert ultrasonic_pulse.echo_to_m(5000, 30.0) == pytest.approx(0.8737, abs=5e-5)


def test_uart_frame_vector() -> None:
    # 0x07A1 = 1953 mm; SUM = (0xFF + 0x07 + 0xA1) & 0xFF = 0xA7.
    assert ultrasonic.parse_frame(b"\xff\x07\xa1\xa7") == 1953
    with pytest.raises(ValueError, match="checksum"):
        ultrasonic.parse_frame(b"\xff\x07\xa1\xa8")
    with pytest.raises(ValueError, match="start"):
        ultrasonic.parse_frame(b"\xfe\x07\xa1\xa7")


def test_median() -> None:
    v = [5, 1, 4, 2, 3]
    assert ultrasonic_pulse.median(v, 5) == 3
    assert ultrasonic_pulse.median([4, 1, 3, 2, 99], 4) == 2.5


def test_hydrostatic_vector() -> None:
    # calibration-reference section 8: dP = 10.000 kPa, rho = 997.05 -> 1.0227 m.
    assert pressure.head_m(111.325, 101.325, rho=997.05) == pytest.approx(1.0227, abs=5e-5)


def test_ratiometric_conversion() -> None:
    assert pressure.volts_to_kpa(0.5, 5.0, 100.0) == pytest.approx(0.0)
    assert pressure.volts_to_kpa(2.5, 5.0, 100.0) == pytest.approx(50.0)
    assert pressure.volts_to_kpa(4.5, 5.0, 100.0) == pytest.approx(100.0)


def test_battery_percent_linear_and_clamped() -> None:
    assert battery.percent(3.6) == pytest.approx(50.0)
    assert battery.percent(2.0) == 0.0
    assert battery.percent(4.4) == 100.0


# -- UART ultrasonic --------------------------------------------------------------------------


@pytest.mark.parametrize("d", [0.3, 1.234, 2.5, 4.4])
def test_uart_round_trip(d: float) -> None:
    drv = ultrasonic.UltrasonicUART(fakes.FakeUltrasonicUART(_src(distance_m=d)))
    assert drv.read() == pytest.approx(d, abs=0.001)  # 1 mm resolution
    assert sum(drv.errors.values()) == 0


def test_uart_triggered_mode() -> None:
    fake = fakes.FakeUltrasonicUART(_src(distance_m=1.0), continuous=False)
    drv = ultrasonic.UltrasonicUART(fake, trigger=True)
    assert drv.read() == pytest.approx(1.0)
    assert fake.frames == 2  # bring-up + one read, each asked for with 0x55


def test_uart_low_byte_ff_is_not_a_header() -> None:
    fake = fakes.FakeUltrasonicUART(_src(distance_m=0.511))  # 0x01FF mm
    drv = ultrasonic.UltrasonicUART(fake)
    fake.inject("garbage", 5)
    for _ in range(5):
        assert drv.read() == pytest.approx(0.511)


@pytest.mark.parametrize(
    ("fault", "reason"), [("checksum", "checksum"), ("stop", "timeout"), ("truncated", "truncated")]
)
def test_uart_faults_counted(fault: str, reason: str) -> None:
    fake = fakes.FakeUltrasonicUART(_src(distance_m=2.0), continuous=False)
    drv = ultrasonic.UltrasonicUART(fake, trigger=True)
    fake.inject(fault)
    assert drv.read() is None
    assert drv.errors[reason] == 1
    assert drv.read() == pytest.approx(2.0)


def test_uart_truncated_frame_in_a_stream_is_resynchronised() -> None:
    fake = fakes.FakeUltrasonicUART(_src(distance_m=2.0))
    drv = ultrasonic.UltrasonicUART(fake)
    fake.inject("truncated")
    results = [drv.read() for _ in range(3)]
    assert results.count(None) <= 1
    assert all(r == pytest.approx(2.0) for r in results if r is not None)


@pytest.mark.parametrize(("d", "reason"), [(0.12, "blind"), (5.5, "range")])
def test_uart_limits(d: float, reason: str) -> None:
    drv = ultrasonic.UltrasonicUART(fakes.FakeUltrasonicUART(_src(distance_m=d)))
    assert drv.read() is None
    assert drv.errors[reason] == 1


def test_uart_uncompensated_sensor_rescaled_once() -> None:
    fake = fakes.FakeUltrasonicUART(_src(distance_m=2.0))
    comp = ultrasonic.UltrasonicUART(fake)
    raw = ultrasonic.UltrasonicUART(fake, compensates=False)
    assert comp.read(temp_c=35.0) == pytest.approx(2.0)
    assert raw.read(temp_c=35.0) == pytest.approx(2.0 * (331.3 + 0.606 * 35) / 343.42)


def test_uart_absent_sensor_fails_bring_up() -> None:
    fake = fakes.FakeUltrasonicUART(_src(distance_m=2.0))
    fake.inject("stop", None)
    with pytest.raises(OSError, match="no valid frame"):
        ultrasonic.UltrasonicUART(fake)


# -- trigger/echo -----------------------------------------------------------------------------


def _pulse(d: float, temp: float = 30.0, **kw: object):
    fake = fakes.FakeRanger(_src(distance_m=d, temp=temp))
    drv = ultrasonic_pulse.UltrasonicPulse(fake.trigger, fake.echo, fake.pulse_us, _no_sleep, **kw)
    return fake, drv


@pytest.mark.parametrize(("d", "temp"), [(0.8737, 30.0), (2.0, 10.0), (4.0, 38.0)])
def test_pulse_round_trip(d: float, temp: float) -> None:
    fake, drv = _pulse(d, temp)
    # 1 us echo resolution ~ 0.17 mm.
    assert drv.read(temp) == pytest.approx(d, abs=2e-4)
    assert fake.pings == 5
    assert fake.trigger.rising == 5


def test_pulse_temperature_matters_when_not_compensated() -> None:
    _, drv = _pulse(2.0, 35.0)
    assert abs(drv.read(20.0) - 2.0) > 0.015  # 15 C error ~ 2.6 %


def test_pulse_internally_compensated_sensor_ignores_temperature() -> None:
    class HRXL:
        def __init__(self) -> None:
            self.trigger = fakes.FakePin()
            self.echo = fakes.FakePin()

        def pulse_us(self, pin: object, level: int, timeout_us: int) -> int:
            return 1750  # 1 us per mm

    h = HRXL()
    drv = ultrasonic_pulse.UltrasonicPulse(
        h.trigger, h.echo, h.pulse_us, _no_sleep, compensates=True
    )
    assert drv.read(40.0) == pytest.approx(1.75)
    assert drv.read(None) == pytest.approx(1.75)


def test_pulse_median_rejects_a_wall_echo_and_counts_it() -> None:
    fake, drv = _pulse(1.5)
    fake.inject("near")
    assert drv.read(30.0) == pytest.approx(1.5, abs=2e-4)
    assert drv.errors["blind"] == 1


def test_pulse_timeouts_counted_and_majority_required() -> None:
    fake, drv = _pulse(1.5)
    fake.inject("timeout", 2)
    assert drv.read(30.0) == pytest.approx(1.5, abs=2e-4)
    assert drv.errors["timeout"] == 2
    fake.inject("stop", None)
    assert drv.read(30.0) is None
    assert drv.errors["timeout"] == 7 and drv.errors["too_few"] == 1


def test_pulse_out_of_range_and_blind() -> None:
    _, far = _pulse(5.0)
    assert far.read(30.0) is None
    assert far.errors["range"] == 5 and far.errors["too_few"] == 1
    _, near = _pulse(0.2)
    assert near.read(30.0) is None
    assert near.errors["blind"] == 5


def test_pulse_echo_longer_than_timeout() -> None:
    _, drv = _pulse(4.0, timeout_us=10000)
    assert drv.read(30.0) is None
    assert drv.errors["timeout"] == 5


def test_pulse_needs_odd_pings() -> None:
    fake = fakes.FakeRanger(_src(distance_m=1.0))
    with pytest.raises(ValueError):
        ultrasonic_pulse.UltrasonicPulse(fake.trigger, fake.echo, fake.pulse_us, _no_sleep, pings=4)


def test_pulse_without_trigger_gets_no_echo() -> None:
    fake = fakes.FakeRanger(_src(distance_m=1.0))
    assert fake.pulse_us(fake.echo, 1, 30000) == -2


# -- ADC sensors ------------------------------------------------------------------------------


@pytest.mark.parametrize("kpa", [0.0, 12.5, 60.0, 100.0])
def test_pressure_round_trip(kpa: float) -> None:
    volts = 5.0 * (0.1 + 0.8 * kpa / 100.0)
    adc = fakes.FakeADC(_src(volts=volts), divider=1.5)
    drv = pressure.PressureTransducer(adc, 100.0, divider=1.5)
    assert drv.read() == pytest.approx(kpa, abs=1e-3)


@pytest.mark.parametrize(("fault", "reason"), [("open", "open"), ("rail", "over")])
def test_pressure_faults_counted(fault: str, reason: str) -> None:
    adc = fakes.FakeADC(_src(volts=2.5), divider=1.5)
    drv = pressure.PressureTransducer(adc, 100.0, divider=1.5, samples=1)
    adc.inject(fault)
    assert drv.read() is None
    assert drv.errors[reason] == 1
    assert drv.read() == pytest.approx(50.0)


def test_pressure_broken_wire_averaged_is_still_caught() -> None:
    drv = pressure.PressureTransducer(fakes.FakeADC(_src(volts=0.05)), 100.0)
    assert drv.read() is None
    assert drv.errors["open"] == 1


@pytest.mark.parametrize("v", [3.3, 3.7, 4.15])
def test_battery_round_trip(v: float) -> None:
    drv = battery.Battery(fakes.FakeADC(_src(volts=v), divider=2.0), divider=2.0)
    volts, pct = drv.read()
    assert volts == pytest.approx(v, abs=1e-5)
    assert pct == pytest.approx(battery.percent(v), abs=1e-3)


def test_battery_absent_counted() -> None:
    adc = fakes.FakeADC(_src(volts=3.9), divider=2.0)
    drv = battery.Battery(adc, divider=2.0)
    adc.inject("open", 8)
    assert drv.read() is None
    assert drv.errors["absent"] == 1


def test_adc_bus_error_counted() -> None:
    class Dead:
        def read_uv(self) -> int:
            raise OSError(5)

    b = battery.Battery(Dead())
    p = pressure.PressureTransducer(Dead(), 100.0)
    assert b.read() is None and b.errors["bus"] == 1
    assert p.read() is None and p.errors["bus"] == 1
