"""Quality-control flags after IOOS QARTOD: gross range, spike, rate of change, flat line.

Flags (QARTOD convention): 1 GOOD, 2 UNKNOWN (not evaluated), 3 SUSPECT, 4 FAIL, 9 MISSING.
Combined, the worst wins in the order FAIL > SUSPECT > GOOD > UNKNOWN > MISSING
(:func:`worst`), so a test that could not run never hides one that passed.

Two ways to run the same tests, which give the same flags:

* :func:`qc_series` — a whole series at once (reports, reprocessing).
* :class:`QcStream` — one reading at a time; the gateway keeps one per device + quantity.

The spike test ``|x_n − (x_{n−1} + x_{n+1})/2|`` needs the *next* reading. The stream
therefore answers every :meth:`QcStream.push` of ``x_n`` with two results:

* ``settled`` — the final flags of the previous reading ``x_{n−1}``, now that its spike test
  could run (``None`` on the first push);
* ``provisional`` — flags for ``x_n`` from the tests that need no future data, with
  ``spike = UNKNOWN``; publish it now if latency matters and the settled one later, or
  publish only settled results one reading late. :meth:`QcStream.flush` settles the last
  reading (its spike stays UNKNOWN, as at the end of a batch series).

Rules both paths share:

* A missing reading (``None`` or NaN) gets MISSING from every test. It still counts as a
  neighbour position for the spike test (a spike next to a gap is UNKNOWN); rate of change
  compares with the previous *present* reading; flat line looks at present readings only.
* A reading whose timestamp is not after the previous accepted one (out of order or a
  duplicate replay) gets its gross-range flag and UNKNOWN for the history tests, and does
  not enter the history.
* A test whose thresholds are not configured gives UNKNOWN.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from calibration.errors import CalibrationError, InputError

__all__ = [
    "DEFAULTS",
    "TESTS",
    "Flag",
    "QcConfig",
    "QcResult",
    "QcStep",
    "QcStream",
    "flat_line",
    "gross_range",
    "qc_series",
    "rate_of_change",
    "spike",
    "worst",
]


class Flag(IntEnum):
    """QARTOD flag values."""

    GOOD = 1
    UNKNOWN = 2
    SUSPECT = 3
    FAIL = 4
    MISSING = 9


_SEVERITY = {Flag.MISSING: 0, Flag.UNKNOWN: 1, Flag.GOOD: 2, Flag.SUSPECT: 3, Flag.FAIL: 4}

TESTS = ("gross_range", "spike", "rate_of_change", "flat_line")
"""Test names, the keys of :attr:`QcResult.flags`."""


def worst(flags: Iterable[Flag]) -> Flag:
    """Aggregate flags: FAIL > SUSPECT > GOOD > UNKNOWN > MISSING; no flags → UNKNOWN."""
    out: Flag | None = None
    for f in flags:
        if out is None or _SEVERITY[f] > _SEVERITY[out]:
            out = f
    return Flag.UNKNOWN if out is None else out


Span = tuple[float, float]


@dataclass(frozen=True)
class QcConfig:
    """Thresholds for one quantity at one site; ``None`` switches a test off (UNKNOWN).

    ``fail_span`` is the sensor's physical span, ``suspect_span`` the site's plausible one.
    Spike thresholds are in the reading's unit; ``rate_suspect_per_s`` in unit per second;
    flat line: ``flat_suspect_n`` / ``flat_fail_n`` present readings whose range (max − min)
    is below ``flat_tolerance``.
    """

    fail_span: Span | None = None
    suspect_span: Span | None = None
    spike_suspect: float | None = None
    spike_fail: float | None = None
    rate_suspect_per_s: float | None = None
    flat_tolerance: float | None = None
    flat_suspect_n: int | None = None
    flat_fail_n: int | None = None

    def __post_init__(self) -> None:
        for name in ("fail_span", "suspect_span"):
            span = getattr(self, name)
            if span is not None and not (
                len(span) == 2 and all(math.isfinite(v) for v in span) and span[0] < span[1]
            ):
                raise CalibrationError(f"QcConfig.{name} must be (low, high) with low < high")
        if (
            self.fail_span
            and self.suspect_span
            and not (
                self.fail_span[0] <= self.suspect_span[0]
                and self.suspect_span[1] <= self.fail_span[1]
            )
        ):
            raise CalibrationError("QcConfig.suspect_span must lie inside fail_span")
        for name in ("spike_suspect", "spike_fail", "rate_suspect_per_s", "flat_tolerance"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise CalibrationError(f"QcConfig.{name} must be a positive number")
        if (self.spike_suspect is None) != (self.spike_fail is None):
            raise CalibrationError("QcConfig: give both spike_suspect and spike_fail, or neither")
        if (
            self.spike_suspect is not None
            and self.spike_fail is not None
            and self.spike_fail < self.spike_suspect
        ):
            raise CalibrationError("QcConfig.spike_fail must be >= spike_suspect")
        flat = (self.flat_tolerance, self.flat_suspect_n, self.flat_fail_n)
        if any(v is not None for v in flat) and any(v is None for v in flat):
            raise CalibrationError(
                "QcConfig: give flat_tolerance, flat_suspect_n and flat_fail_n together"
            )
        if (
            self.flat_suspect_n is not None
            and self.flat_fail_n is not None
            and not 2 <= self.flat_suspect_n <= self.flat_fail_n
        ):
            raise CalibrationError("QcConfig: need 2 <= flat_suspect_n <= flat_fail_n")


# Starting points per calibrated quantity; tune per site. Spans: PMS5003 datasheet (0–1000
# µg/m³ maximum range), SHT3x-class T/RH sensors (−40…125 °C, 0–100 %RH).
DEFAULTS: Mapping[str, QcConfig] = {
    "pm25": QcConfig((0.0, 1000.0), (0.0, 500.0), 60.0, 200.0, 2.0, 0.01, 60, 240),
    "pm10": QcConfig((0.0, 1000.0), (0.0, 600.0), 80.0, 300.0, 3.0, 0.01, 60, 240),
    "temp": QcConfig((-40.0, 85.0), (10.0, 50.0), 3.0, 8.0, 0.05, 0.001, 60, 240),
    "rh": QcConfig((0.0, 100.0), (5.0, 100.0), 10.0, 30.0, 0.2, 0.001, 120, 480),
    "level": QcConfig(None, None, 0.2, 0.5, 0.01, 0.0005, 72, 288),
}


def _is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _seconds(t: float | datetime) -> float:
    if isinstance(t, datetime):
        if t.tzinfo is None or t.utcoffset() is None:
            raise InputError(f"timestamps must be timezone-aware, got {t!r}")
        return t.timestamp()
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise InputError(f"timestamp must be epoch seconds or a datetime, got {t!r}")
    return float(t)


def _value(value: float | None) -> float | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(value):
        raise InputError(f"reading must be a finite number, None or NaN, got {value!r}")
    return float(value)


# --- single tests (batch form) --------------------------------------------------------------


def gross_range(values: Sequence[float | None], config: QcConfig) -> list[Flag]:
    """FAIL outside the sensor span, SUSPECT outside the site span, else GOOD."""
    return [_gross(_value(v), config) for v in values]


def _gross(x: float | None, c: QcConfig) -> Flag:
    if x is None:
        return Flag.MISSING
    if c.fail_span is None and c.suspect_span is None:
        return Flag.UNKNOWN
    if c.fail_span is not None and not c.fail_span[0] <= x <= c.fail_span[1]:
        return Flag.FAIL
    if c.suspect_span is not None and not c.suspect_span[0] <= x <= c.suspect_span[1]:
        return Flag.SUSPECT
    return Flag.GOOD


def _spike_flag(prev: float | None, x: float | None, nxt: float | None, c: QcConfig) -> Flag:
    if x is None:
        return Flag.MISSING
    if c.spike_suspect is None or c.spike_fail is None or prev is None or nxt is None:
        return Flag.UNKNOWN
    # QARTOD spike test: |x_n − (x_{n−1} + x_{n+1})/2|.
    d = abs(x - (prev + nxt) / 2.0)
    if d > c.spike_fail:
        return Flag.FAIL
    if d > c.spike_suspect:
        return Flag.SUSPECT
    return Flag.GOOD


def spike(values: Sequence[float | None], config: QcConfig) -> list[Flag]:
    """Spike flags for an in-order series; the first and last readings are UNKNOWN."""
    xs = [_value(v) for v in values]
    out: list[Flag] = []
    for i, x in enumerate(xs):
        prev = xs[i - 1] if i > 0 else None
        nxt = xs[i + 1] if i + 1 < len(xs) else None
        out.append(_spike_flag(prev, x, nxt, config))
    return out


def rate_of_change(
    times: Sequence[float | datetime], values: Sequence[float | None], config: QcConfig
) -> list[Flag]:
    """``|Δx/Δt|`` against the previous present reading above the threshold → SUSPECT.

    ``times`` must increase strictly (use :func:`qc_series` for unordered input).
    """
    ts = [_seconds(t) for t in times]
    xs = [_value(v) for v in values]
    out: list[Flag] = []
    last: tuple[float, float] | None = None
    for t, x in zip(ts, xs, strict=True):
        if x is None:
            out.append(Flag.MISSING)
            continue
        if config.rate_suspect_per_s is None or last is None:
            out.append(Flag.UNKNOWN)
        else:
            rate = abs(x - last[1]) / (t - last[0])
            out.append(Flag.SUSPECT if rate > config.rate_suspect_per_s else Flag.GOOD)
        last = (t, x)
    return out


def flat_line(values: Sequence[float | None], config: QcConfig) -> list[Flag]:
    """Flat-line flags: the range of the last N present readings (this one included) below the
    tolerance → SUSPECT (N = ``flat_suspect_n``) or FAIL (N = ``flat_fail_n``)."""
    xs = [_value(v) for v in values]
    out: list[Flag] = []
    present: list[float] = []
    for x in xs:
        if x is None:
            out.append(Flag.MISSING)
            continue
        present.append(x)
        out.append(_flat(present, config))
    return out


def _flat(history: Sequence[float], c: QcConfig) -> Flag:
    """Flat-line flag for the newest of ``history`` (present readings, oldest first)."""
    if c.flat_tolerance is None or c.flat_suspect_n is None or c.flat_fail_n is None:
        return Flag.UNKNOWN
    n = len(history)
    for count, flag in ((c.flat_fail_n, Flag.FAIL), (c.flat_suspect_n, Flag.SUSPECT)):
        if n >= count:
            window = history[n - count :]
            if max(window) - min(window) < c.flat_tolerance:
                return flag
    return Flag.GOOD if n >= c.flat_suspect_n else Flag.UNKNOWN


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QcResult:
    """Flags for one reading: one per test (:data:`TESTS`) and the aggregate ``flag``."""

    timestamp: float | datetime
    value: float | None
    flags: Mapping[str, Flag]
    flag: Flag
    final: bool
    """False for a provisional result whose spike test still waits for the next reading."""


def _result(
    t: float | datetime, x: float | None, flags: Mapping[str, Flag], final: bool
) -> QcResult:
    return QcResult(t, x, dict(flags), worst(flags.values()), final)


def _standalone(t: float | datetime, x: float | None, c: QcConfig) -> QcResult:
    """An out-of-order reading: gross range only, history tests UNKNOWN."""
    g = _gross(x, c)
    other = Flag.MISSING if x is None else Flag.UNKNOWN
    flags = {"gross_range": g, "spike": other, "rate_of_change": other, "flat_line": other}
    return _result(t, x, flags, True)


def qc_series(
    times: Sequence[float | datetime], values: Sequence[float | None], config: QcConfig
) -> list[QcResult]:
    """Run every test over a whole series; one final :class:`QcResult` per reading, in order.

    Timestamps are epoch seconds or timezone-aware datetimes. See the module docs for missing
    and out-of-order readings.
    """
    if len(times) != len(values):
        raise InputError(f"times and values differ in length ({len(times)} vs {len(values)})")
    secs = [_seconds(t) for t in times]
    accepted: list[int] = []
    last_t: float | None = None
    for i, s in enumerate(secs):
        if last_t is None or s > last_t:
            accepted.append(i)
            last_t = s
    acc_t = [secs[i] for i in accepted]
    acc_v = [values[i] for i in accepted]
    per_test = {
        "gross_range": gross_range(acc_v, config),
        "spike": spike(acc_v, config),
        "rate_of_change": rate_of_change(acc_t, acc_v, config),
        "flat_line": flat_line(acc_v, config),
    }
    results: list[QcResult | None] = [None] * len(values)
    for k, i in enumerate(accepted):
        flags = {name: per_test[name][k] for name in TESTS}
        results[i] = _result(times[i], _value(values[i]), flags, True)
    out: list[QcResult] = []
    for i, r in enumerate(results):
        out.append(r if r is not None else _standalone(times[i], _value(values[i]), config))
    return out


@dataclass(frozen=True)
class QcStep:
    """What :meth:`QcStream.push` returns: the previous reading settled, this one provisional."""

    settled: QcResult | None
    provisional: QcResult


@dataclass
class QcStream:
    """Streaming QC for one device + quantity; state is a few numbers and a short window.

    ``QcStream(DEFAULTS["pm25"])`` or ``QcStream(QcConfig(...))``; then for each reading
    ``step = stream.push(timestamp, value)`` (timestamp: epoch seconds or aware datetime;
    value: number, or None/NaN when missing).
    """

    config: QcConfig
    _pending: tuple[float | datetime, float | None, dict[str, Flag]] | None = field(
        default=None, init=False, repr=False
    )
    _before_pending: float | None = field(default=None, init=False, repr=False)
    _last_t: float | None = field(default=None, init=False, repr=False)
    _last_present: tuple[float, float] | None = field(default=None, init=False, repr=False)
    _present: deque[float] = field(default_factory=deque, init=False, repr=False)

    def push(self, timestamp: float | datetime, value: float | None) -> QcStep:
        """Evaluate one reading; see the module docs for ``settled`` and ``provisional``."""
        t = _seconds(timestamp)
        x = _value(value)
        c = self.config
        if self._last_t is not None and t <= self._last_t:
            return QcStep(None, _standalone(timestamp, x, c))
        self._last_t = t
        settled = None
        if self._pending is not None:
            p_time, p_x, p_flags = self._pending
            p_flags["spike"] = _spike_flag(self._before_pending, p_x, x, c)
            settled = _result(p_time, p_x, p_flags, True)
            self._before_pending = p_x
        flags: dict[str, Flag] = {"gross_range": _gross(x, c)}
        if x is None:
            flags["spike"] = flags["rate_of_change"] = flags["flat_line"] = Flag.MISSING
        else:
            flags["spike"] = Flag.UNKNOWN
            if c.rate_suspect_per_s is None or self._last_present is None:
                flags["rate_of_change"] = Flag.UNKNOWN
            else:
                lt, lx = self._last_present
                rate = abs(x - lx) / (t - lt)
                flags["rate_of_change"] = Flag.SUSPECT if rate > c.rate_suspect_per_s else Flag.GOOD
            self._last_present = (t, x)
            keep = max(c.flat_fail_n or 0, c.flat_suspect_n or 0, 1)
            self._present.append(x)
            while len(self._present) > keep:
                self._present.popleft()
            flags["flat_line"] = _flat(list(self._present), c)
        self._pending = (timestamp, x, dict(flags))
        return QcStep(settled, _result(timestamp, x, flags, False))

    def flush(self) -> QcResult | None:
        """Settle the last reading (its spike test stays UNKNOWN); ``None`` if none waits."""
        if self._pending is None:
            return None
        p_time, p_x, p_flags = self._pending
        self._pending = None
        self._before_pending = p_x
        p_flags["spike"] = _spike_flag(None, p_x, None, self.config)
        return _result(p_time, p_x, p_flags, True)
