"""QARTOD-style QC: single tests, aggregation, and streaming equals batch."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.errors import CalibrationError, InputError
from calibration.qc import (
    DEFAULTS,
    Flag,
    QcConfig,
    QcStream,
    flat_line,
    gross_range,
    qc_series,
    rate_of_change,
    spike,
    worst,
)

CFG = QcConfig(
    fail_span=(0.0, 1000.0),
    suspect_span=(0.0, 300.0),
    spike_suspect=20.0,
    spike_fail=60.0,
    rate_suspect_per_s=1.0,
    flat_tolerance=0.05,
    flat_suspect_n=4,
    flat_fail_n=6,
)


def test_worst_wins_order() -> None:
    assert worst([Flag.GOOD, Flag.SUSPECT, Flag.UNKNOWN]) == Flag.SUSPECT
    assert worst([Flag.SUSPECT, Flag.FAIL]) == Flag.FAIL
    assert worst([Flag.UNKNOWN, Flag.GOOD]) == Flag.GOOD
    assert worst([Flag.MISSING, Flag.UNKNOWN]) == Flag.UNKNOWN
    assert worst([Flag.MISSING]) == Flag.MISSING
    assert worst([]) == Flag.UNKNOWN
    assert [int(f) for f in Flag] == [1, 2, 3, 4, 9]


def test_gross_range() -> None:
    assert gross_range([10.0, 400.0, 1200.0, -1.0, None, math.nan], CFG) == [
        Flag.GOOD, Flag.SUSPECT, Flag.FAIL, Flag.FAIL, Flag.MISSING, Flag.MISSING,
    ]  # fmt: skip
    assert gross_range([5.0], QcConfig()) == [Flag.UNKNOWN]


def test_spike() -> None:
    assert spike([10.0, 10.0, 40.0, 10.0, 10.0, 100.0, 10.0, 10.0], CFG) == [
        Flag.UNKNOWN, Flag.GOOD, Flag.SUSPECT, Flag.GOOD, Flag.SUSPECT, Flag.FAIL, Flag.SUSPECT,
        Flag.UNKNOWN,
    ]  # fmt: skip
    # A spike of height h sits h/2 from its neighbours' mean... and they sit h/2 from theirs,
    # so a FAIL spike of 90 leaves its neighbours SUSPECT (45 > 20): QARTOD's known behaviour.
    assert spike([10.0, None, 10.0, 10.0], CFG)[2] == Flag.UNKNOWN  # neighbour missing


def test_rate_of_change_uses_previous_present_reading() -> None:
    flags = rate_of_change([0.0, 10.0, 20.0, 30.0], [0.0, 5.0, None, 40.0], CFG)
    # 5/10 s fine; the gap is MISSING; 35 over 20 s = 1.75/s > 1 → SUSPECT.
    assert flags == [Flag.UNKNOWN, Flag.GOOD, Flag.MISSING, Flag.SUSPECT]


def test_flat_line() -> None:
    values = [5.0, 6.0, 7.0, 7.0, 7.01, 7.0, 7.0, 7.0, 9.0]
    assert flat_line(values, CFG) == [
        Flag.UNKNOWN, Flag.UNKNOWN, Flag.UNKNOWN, Flag.GOOD, Flag.GOOD, Flag.SUSPECT,
        Flag.SUSPECT, Flag.FAIL, Flag.GOOD,
    ]  # fmt: skip


def test_stream_settles_previous_and_gives_provisional() -> None:
    s = QcStream(CFG)
    first = s.push(0.0, 10.0)
    assert first.settled is None
    assert not first.provisional.final and first.provisional.flags["spike"] == Flag.UNKNOWN
    s.push(60.0, 10.0)
    step = s.push(120.0, 80.0)  # a spike, but only known once the next reading arrives
    assert step.provisional.flags["spike"] == Flag.UNKNOWN
    # The reading before it is settled now: |10 − (10 + 80)/2| = 35 > 20 → SUSPECT.
    assert step.settled is not None and step.settled.value == 10.0
    assert step.settled.flags["spike"] == Flag.SUSPECT
    step = s.push(180.0, 10.0)
    assert step.settled is not None and step.settled.value == 80.0
    assert step.settled.flags["spike"] == Flag.FAIL and step.settled.flag == Flag.FAIL
    last = s.flush()
    assert last is not None and last.final and last.flags["spike"] == Flag.UNKNOWN
    assert s.flush() is None


def test_out_of_order_reading_stays_out_of_history() -> None:
    s = QcStream(CFG)
    s.push(100.0, 10.0)
    late = s.push(50.0, 2000.0)
    assert late.settled is None
    assert late.provisional.flags["gross_range"] == Flag.FAIL
    assert late.provisional.flags["spike"] == Flag.UNKNOWN
    step = s.push(160.0, 11.0)
    assert step.settled is not None and step.settled.timestamp == 100.0


def test_config_validation() -> None:
    with pytest.raises(CalibrationError):
        QcConfig(fail_span=(10.0, 0.0))
    with pytest.raises(CalibrationError):
        QcConfig(fail_span=(0.0, 10.0), suspect_span=(-1.0, 5.0))
    with pytest.raises(CalibrationError):
        QcConfig(spike_suspect=10.0)
    with pytest.raises(CalibrationError):
        QcConfig(flat_tolerance=0.1, flat_suspect_n=5, flat_fail_n=3)
    with pytest.raises(InputError):
        QcStream(CFG).push(datetime(2026, 1, 1), 1.0)
    assert set(DEFAULTS) == {"pm25", "pm10", "temp", "rh", "level"}


readings = st.lists(
    st.tuples(
        st.integers(-30, 300),  # seconds since the previous reading; ≤ 0 = out of order
        st.one_of(st.none(), st.just(math.nan), st.floats(-50.0, 1200.0), st.sampled_from([7.0])),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(readings)
def test_stream_matches_batch(steps: list[tuple[int, float | None]]) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    times: list[datetime] = []
    t = t0
    for dt, _ in steps:
        t = t + timedelta(seconds=dt)
        times.append(t)
    values = [v for _, v in steps]
    batch = qc_series(times, values, CFG)

    stream = QcStream(CFG)
    streamed: dict[int, list[Flag]] = {}
    order = {id(ts): i for i, ts in enumerate(times)}
    for ts, v in zip(times, values, strict=True):
        step = stream.push(ts, v)
        if step.settled is not None:
            streamed[order[id(step.settled.timestamp)]] = _flags(step.settled.flags)
        if step.provisional.final:  # out of order: final at once
            streamed[order[id(ts)]] = _flags(step.provisional.flags)
    last = stream.flush()
    if last is not None:
        streamed[order[id(last.timestamp)]] = _flags(last.flags)
    assert [streamed[i] for i in range(len(values))] == [_flags(r.flags) for r in batch]


def _flags(flags: object) -> list[Flag]:
    assert isinstance(flags, dict)
    return [flags[k] for k in ("gross_range", "spike", "rate_of_change", "flat_line")]
