"""Fit a PM calibration from a collocation: node CSV + reference CSV → models, metrics, record.

The library behind ``cityedge calibrate fit``; nothing here prints or exits. Steps:

1. Read the node CSV (UTC) and the reference CSV (PCD hourly, local Asia/Bangkok time).
2. Hourly means of the node: an hour counts if it holds ≥ 75 % of the samples expected at the
   node's sampling interval (the median spacing of its timestamps).
3. Align node hours with reference hours (PCD labels an hourly mean by the hour's *end*).
4. Fit ``linear``, ``linear_rh`` and ``polynomial`` (degree 2) with numpy least squares.
5. Score each: hourly R², RMSE, MAE in-sample and a day-blocked 5-fold cross-validated RMSE;
   and on 24-h means (local days with ≥ 75 % of hours, i.e. 18 of 24) the EPA 2021
   performance targets — R² ≥ 0.70, slope 1 ± 0.35, |intercept| ≤ 5 µg/m³, RMSE ≤ 7 µg/m³ —
   with slope and intercept from regressing the calibrated sensor on the reference.
6. Recommend one (:func:`recommend`) and build its :class:`CalibrationRecord`.

:func:`write_outputs` writes the record TOML and the PNG report atomically (temporary files,
then ``os.replace``) and only after every step, the overlap check against records already in
the output folder included, has succeeded.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from calibration.errors import FitError, RecordError
from calibration.records import CalibrationRecord, Collocation, Registry, dump_records

__all__ = [
    "EPA_TARGETS",
    "FORMS",
    "Candidate",
    "FitResult",
    "Metrics",
    "Paired",
    "Series",
    "align",
    "collocate",
    "daily_means",
    "fit_candidates",
    "hourly_means",
    "metrics",
    "read_reference_csv",
    "read_sensor_csv",
    "recommend",
    "write_outputs",
]

Array = npt.NDArray[np.float64]
FORMS = ("linear", "linear_rh", "polynomial")
"""Model forms the fitting tool tries, simplest first."""

BANGKOK = ZoneInfo("Asia/Bangkok")
MIN_COMPLETENESS = 0.75
MISSING_MARKS = frozenset({"", "-", "--", "n/a", "na", "nan", "null", "none"})


@dataclass(frozen=True)
class EpaTargets:
    """US EPA performance targets for PM2.5 sensors (2021), on 24-h averages."""

    r2_min: float = 0.70
    slope_lo: float = 0.65
    slope_hi: float = 1.35
    intercept_abs_max: float = 5.0
    rmse_max: float = 7.0


EPA_TARGETS = EpaTargets()


@dataclass(frozen=True)
class Series:
    """A time series: UTC timestamps with one or more value columns (NaN = missing)."""

    times: tuple[datetime, ...]
    columns: Mapping[str, Array]
    source: str


@dataclass(frozen=True)
class Metrics:
    """Agreement of a sensor series (y) with the reference (x)."""

    n: int
    r2: float
    rmse: float
    mae: float
    slope: float
    intercept: float

    def meets(self, t: EpaTargets = EPA_TARGETS) -> dict[str, bool]:
        """Each EPA target: passed or not."""
        return {
            "r2": self.r2 >= t.r2_min,
            "slope": t.slope_lo <= self.slope <= t.slope_hi,
            "intercept": abs(self.intercept) <= t.intercept_abs_max,
            "rmse": self.rmse <= t.rmse_max,
        }


@dataclass(frozen=True)
class Paired:
    """Hours where both the node and the reference have a valid mean."""

    hours: tuple[datetime, ...]  # hour start, UTC
    raw: Array
    rh: Array
    reference: Array
    sensor_hours: int
    reference_hours: int


@dataclass(frozen=True)
class Candidate:
    """One fitted model form with its scores."""

    form: str
    coefficients: Mapping[str, float | list[float]]
    hourly: Metrics
    daily: Metrics | None
    cv_rmse: float
    predict: Callable[[Array, Array], Array] = field(repr=False, compare=False)

    @property
    def meets_targets(self) -> bool:
        """All four EPA targets met on 24-h means (False when there are too few days)."""
        return self.daily is not None and all(self.daily.meets().values())


@dataclass(frozen=True)
class FitResult:
    """Everything a fit produced; :func:`write_outputs` turns it into files."""

    device_id: str
    quantity: str
    channel: str
    rh_channel: str
    station: str
    paired: Paired
    raw_hourly: Metrics
    raw_daily: Metrics | None
    candidates: tuple[Candidate, ...]
    chosen: Candidate
    reason: str
    record: CalibrationRecord


# --- reading ------------------------------------------------------------------------------


def _parse_float(text: str, where: str) -> float:
    t = text.strip()
    if t.lower() in MISSING_MARKS:
        return math.nan
    try:
        v = float(t)
    except ValueError:
        raise FitError(
            f"{where}: {text!r} is not a number (use empty or '-' for missing)"
        ) from None
    if not math.isfinite(v):
        return math.nan
    return v


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [h.strip() for h in (reader.fieldnames or [])]
    except FileNotFoundError:
        raise FitError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FitError(f"{path}: cannot read it as a CSV file ({exc})") from exc
    if not header:
        raise FitError(f"{path}: empty file; expected a header row and data")
    clean = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in rows]
    return header, clean


def _need(path: Path, header: Sequence[str], columns: Sequence[str], hint: str) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise FitError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header)}). {hint}"
        )


def read_sensor_csv(
    path: str | Path, channels: Sequence[str], device_id: str | None = None
) -> Series:
    """Read a node CSV: ``timestamp`` (ISO 8601, UTC; naive times are taken as UTC) and the
    raw channel columns in ``channels`` (e.g. ``pm25_cf1``, ``rh``).

    If the file has a ``device_id`` column and ``device_id`` is given, every row must be for
    that device (a mixed-up export is an error, not a silently wrong calibration).
    """
    p = Path(path)
    header, rows = _read_rows(p)
    _need(p, header, ["timestamp", *channels], "See docs/calibration.md for the node CSV layout.")
    if device_id is not None and "device_id" in header:
        others = sorted({r["device_id"].strip() for r in rows} - {device_id})
        if others:
            raise FitError(
                f"{p}: holds readings of {', '.join(others[:3])}, not only {device_id}; "
                "export one device per file or give the right --device"
            )
    times: list[datetime] = []
    cols: dict[str, list[float]] = {c: [] for c in channels}
    for i, row in enumerate(rows, start=2):
        stamp = row["timestamp"].strip()
        try:
            t = datetime.fromisoformat(stamp)  # Python 3.11 reads a trailing "Z"
        except ValueError:
            raise FitError(
                f"{p}:{i}: timestamp {stamp!r} is not ISO 8601 (e.g. 2026-02-20T01:05:00Z)"
            ) from None
        times.append(t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC))
        for c in channels:
            cols[c].append(_parse_float(row[c], f"{p}:{i}: {c}"))
    if not times:
        raise FitError(f"{p}: no data rows")
    # Sort by time; a repeated timestamp (a replayed reading) keeps its last row, once.
    last_row = {t: k for k, t in enumerate(times)}
    order = [last_row[t] for t in sorted(last_row)]
    return Series(
        tuple(times[k] for k in order),
        {c: np.asarray([v[k] for k in order], dtype=np.float64) for c, v in cols.items()},
        str(p),
    )


def read_reference_csv(
    path: str | Path,
    column: str = "pm25",
    *,
    tz: str = "Asia/Bangkok",
    label: Literal["end", "start"] = "end",
) -> tuple[Series, str]:
    """Read a PCD-style hourly reference CSV; returns (series keyed by hour *start*, station).

    Columns: ``date`` (YYYY-MM-DD) and ``time`` (HH:MM, ``24:00`` allowed) in local time
    ``tz`` — or one ``datetime`` column — plus ``column`` (µg/m³; empty, ``-`` or ``N/A`` =
    missing) and optionally ``station``. ``label="end"`` (PCD's convention) means the value
    written at 01:00 is the mean of 00:00–01:00.
    """
    p = Path(path)
    header, rows = _read_rows(p)
    hint = "See docs/calibration.md for the reference CSV layout."
    if "datetime" in header:
        _need(p, header, ["datetime", column], hint)
    else:
        _need(p, header, ["date", "time", column], hint)
    zone = ZoneInfo(tz)
    shift = timedelta(hours=1) if label == "end" else timedelta(0)
    times: list[datetime] = []
    values: list[float] = []
    stations: set[str] = set()
    for i, row in enumerate(rows, start=2):
        try:
            if "datetime" in header:
                local = datetime.fromisoformat(row["datetime"].strip())
            else:
                d = date.fromisoformat(row["date"].strip())
                hh, mm = row["time"].strip().split(":")[:2]
                local = datetime(d.year, d.month, d.day) + timedelta(hours=int(hh), minutes=int(mm))
        except ValueError:
            raise FitError(
                f"{p}:{i}: cannot read the date/time {row.get('date', '')} {row.get('time', '')}"
                f"{row.get('datetime', '')!s} (expected 2026-02-20 and 13:00)"
            ) from None
        aware = local.replace(tzinfo=zone) if local.tzinfo is None else local
        start = aware.astimezone(UTC) - shift
        if start.minute or start.second:
            raise FitError(f"{p}:{i}: reference values must be on the hour, got {local}")
        times.append(start)
        values.append(_parse_float(row[column], f"{p}:{i}: {column}"))
        if row.get("station", "").strip():
            stations.add(row["station"].strip())
    if not times:
        raise FitError(f"{p}: no data rows")
    order = sorted(range(len(times)), key=times.__getitem__)
    series = Series(
        tuple(times[k] for k in order),
        {column: np.asarray([values[k] for k in order], dtype=np.float64)},
        str(p),
    )
    return series, ",".join(sorted(stations))


# --- averaging and alignment --------------------------------------------------------------


def _interval_s(times: Sequence[datetime]) -> float:
    if len(times) < 2:
        raise FitError("the node CSV needs at least two samples to tell its sampling interval")
    diffs = np.diff(np.asarray([t.timestamp() for t in times]))
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise FitError("all node timestamps are equal; cannot tell the sampling interval")
    return float(np.median(diffs))


def hourly_means(
    series: Series, interval_s: float | None = None, min_completeness: float = MIN_COMPLETENESS
) -> dict[datetime, dict[str, float]]:
    """Mean of each column per UTC clock hour, for hours with ≥ ``min_completeness`` of the
    expected samples (``3600 / interval_s``; interval = median sample spacing if not given).

    Completeness is judged on the samples where *every* column is present, so an hour's PM
    and RH means come from the same samples.
    """
    step = interval_s if interval_s is not None else _interval_s(series.times)
    expected = 3600.0 / step
    names = list(series.columns)
    stacked = np.vstack([series.columns[c] for c in names])
    buckets: dict[datetime, list[int]] = {}
    for k, t in enumerate(series.times):
        if np.all(np.isfinite(stacked[:, k])):
            buckets.setdefault(t.replace(minute=0, second=0, microsecond=0), []).append(k)
    out: dict[datetime, dict[str, float]] = {}
    for hour, idx in buckets.items():
        if len(idx) >= min_completeness * expected:
            out[hour] = {c: float(np.mean(stacked[j, idx])) for j, c in enumerate(names)}
    return out


def align(
    sensor: Series,
    reference: Series,
    channel: str,
    rh_channel: str,
    ref_column: str,
    *,
    min_hours: int = 72,
) -> Paired:
    """Pair node hourly means with reference hours; raises :class:`FitError` if too few."""
    node = hourly_means(
        Series(sensor.times, {c: sensor.columns[c] for c in (channel, rh_channel)}, sensor.source)
    )
    ref = {
        t: float(v)
        for t, v in zip(reference.times, reference.columns[ref_column], strict=True)
        if math.isfinite(float(v))
    }
    hours = sorted(set(node) & set(ref))
    if not hours:
        s0, s1 = sensor.times[0], sensor.times[-1]
        r0, r1 = reference.times[0], reference.times[-1]
        raise FitError(
            f"no overlapping hours: the node covers {s0:%Y-%m-%d %H:%M} – {s1:%Y-%m-%d %H:%M} "
            f"UTC, the reference {r0:%Y-%m-%d %H:%M} – {r1:%Y-%m-%d %H:%M} UTC. Check that the "
            "files are from the same period, that node times are UTC and reference times are "
            "local (Asia/Bangkok) time."
        )
    if len(hours) < min_hours:
        raise FitError(
            f"only {len(hours)} overlapping valid hours (need >= {min_hours}): collocate the node "
            "beside the reference for longer (EPA suggests 30 days), or check for gaps and the "
            "75 % per-hour completeness rule"
        )
    return Paired(
        tuple(hours),
        np.asarray([node[h][channel] for h in hours]),
        np.asarray([node[h][rh_channel] for h in hours]),
        np.asarray([ref[h] for h in hours]),
        sensor_hours=len(node),
        reference_hours=len(ref),
    )


MAX_LAG_H = 12
"""Lags (hours, either way) :func:`check_time_alignment` tries."""


def _lag_correlations(
    node: Mapping[datetime, float], ref: Mapping[datetime, float], min_pairs: int = 24
) -> dict[int, float]:
    """Pearson r between node hour h and reference hour h − lag, for lags ±MAX_LAG_H."""
    out: dict[int, float] = {}
    for lag in range(-MAX_LAG_H, MAX_LAG_H + 1):
        shift = timedelta(hours=lag)
        pairs = [(v, ref[h - shift]) for h, v in node.items() if h - shift in ref]
        if len(pairs) < min_pairs:
            continue
        x, y = np.asarray(pairs, dtype=np.float64).T
        if float(np.std(x)) > 0.0 and float(np.std(y)) > 0.0:
            out[lag] = float(np.corrcoef(x, y)[0, 1])
    return out


def check_time_alignment(
    sensor: Series, reference: Series, channel: str, ref_column: str, *, tz: str = "Asia/Bangkok"
) -> None:
    """Refuse a collocation whose node times are shifted against the reference (a node CSV in
    local time read as UTC is 7 h late in Bangkok): the hourly series are cross-correlated over
    ±12 h, and a best match 2 h or more away from lag 0 that correlates clearly better
    (r at least 0.1 higher) is an error, not a silently poor calibration. A 1-hour offset is
    not judged: smooth air makes neighbouring lags nearly as good."""
    node = {
        h: v[channel]
        for h, v in hourly_means(
            Series(sensor.times, {channel: sensor.columns[channel]}, sensor.source)
        ).items()
    }
    ref = {
        t: float(v)
        for t, v in zip(reference.times, reference.columns[ref_column], strict=True)
        if math.isfinite(float(v))
    }
    r = _lag_correlations(node, ref)
    if 0 not in r:
        return  # too little overlap to judge: align() says so
    best = max(r, key=r.__getitem__)
    if abs(best) < 2 or r[best] - r[0] < 0.1:
        return
    # The peak between whole hours (parabola through the best lag and its neighbours).
    peak = float(best)
    if best - 1 in r and best + 1 in r:
        curve = r[best - 1] - 2.0 * r[best] + r[best + 1]
        if curve < 0.0:
            peak += 0.5 * (r[best - 1] - r[best + 1]) / curve
    offset = min(node).astimezone(ZoneInfo(tz)).utcoffset()
    zone_h = round(offset.total_seconds() / 3600.0) if offset is not None else 0
    hours = next((s for s in (zone_h, -zone_h) if s and abs(peak - s) <= 1.0), round(peak))
    later = "later" if hours > 0 else "earlier"
    raise FitError(
        f"node times look shifted by {hours:+d} h against the reference (the node series "
        f"matches the reference best {abs(hours)} h {later}: r = {r[best]:.2f} there, "
        f"{r[0]:.2f} as written); are they UTC? Node times must be UTC (a trailing Z, or an "
        f"offset such as +07:00); reference times are local ({tz}). Fix the node export and "
        "run again; nothing was written."
    )


def daily_means(
    hours: Sequence[datetime], *arrays: Array, tz: ZoneInfo = BANGKOK
) -> tuple[list[date], list[Array]]:
    """24-h means per local calendar day for days with ≥ 75 % (18) of their hours present."""
    by_day: dict[date, list[int]] = {}
    for k, h in enumerate(hours):
        by_day.setdefault(h.astimezone(tz).date(), []).append(k)
    days = sorted(d for d, idx in by_day.items() if len(idx) >= MIN_COMPLETENESS * 24)
    out = [np.asarray([float(np.mean(a[by_day[d]])) for d in days]) for a in arrays]
    return days, out


# --- models and scores --------------------------------------------------------------------


def metrics(sensor: Array, reference: Array) -> Metrics:
    """R² (squared Pearson r), RMSE, MAE, and the OLS line of sensor (y) on reference (x)."""
    if sensor.size < 3:
        raise FitError("need at least 3 points to score a calibration")
    slope, intercept = np.polyfit(reference, sensor, 1)
    r = float(np.corrcoef(reference, sensor)[0, 1]) if np.std(sensor) > 0 else 0.0
    err = sensor - reference
    return Metrics(
        n=int(sensor.size),
        r2=r * r,
        rmse=float(np.sqrt(np.mean(err**2))),
        mae=float(np.mean(np.abs(err))),
        slope=float(slope),
        intercept=float(intercept),
    )


def _fit_form(form: str, x: Array, rh: Array, y: Array) -> dict[str, float | list[float]]:
    if form == "linear":
        a = np.column_stack([x, np.ones_like(x)])
        (slope, intercept), *_ = np.linalg.lstsq(a, y, rcond=None)
        return {"slope": float(slope), "intercept": float(intercept)}
    if form == "linear_rh":
        a = np.column_stack([x, rh, np.ones_like(x)])
        (slope, rh_coef, intercept), *_ = np.linalg.lstsq(a, y, rcond=None)
        return {"slope": float(slope), "rh": float(rh_coef), "intercept": float(intercept)}
    if form == "polynomial":
        c2, c1, c0 = np.polyfit(x, y, 2)
        return {"ascending": [float(c0), float(c1), float(c2)]}
    raise FitError(f"unknown form {form!r}; the fitting tool fits {', '.join(FORMS)}")


def _num(c: Mapping[str, float | list[float]], key: str) -> float:
    v = c[key]
    if isinstance(v, list):
        raise FitError(f"coefficient {key!r} must be a number")
    return float(v)


def _predictor(form: str, c: Mapping[str, float | list[float]]) -> Callable[[Array, Array], Array]:
    if form == "polynomial":
        asc = c["ascending"]
        if not isinstance(asc, list):
            raise FitError("polynomial coefficients must be a list")
        c0, c1, c2 = (float(v) for v in asc)
    else:
        c0 = _num(c, "intercept")
        c1 = _num(c, "slope")
        c2 = _num(c, "rh") if form == "linear_rh" else 0.0

    def predict(x: Array, rh: Array) -> Array:
        if form == "polynomial":
            y = c0 + c1 * x + c2 * x * x
        else:
            y = c1 * x + c2 * rh + c0
        return np.maximum(np.asarray(y, dtype=np.float64), 0.0)  # PM floored at 0, as records

    return predict


def _cv_rmse(form: str, paired: Paired, folds: int = 5) -> float:
    """Day-blocked k-fold cross-validation RMSE (hourly): whole local days are held out."""
    days = [h.astimezone(BANGKOK).date() for h in paired.hours]
    unique = sorted(set(days))
    k = min(folds, len(unique))
    if k < 2:
        return math.nan
    fold_of = {d: i * k // len(unique) for i, d in enumerate(unique)}
    fold = np.asarray([fold_of[d] for d in days])
    sq: list[float] = []
    for f in range(k):
        train, test = fold != f, fold == f
        if train.sum() < 10 or test.sum() == 0:
            continue
        c = _fit_form(form, paired.raw[train], paired.rh[train], paired.reference[train])
        pred = _predictor(form, c)(paired.raw[test], paired.rh[test])
        sq.extend(((pred - paired.reference[test]) ** 2).tolist())
    return float(math.sqrt(sum(sq) / len(sq))) if sq else math.nan


def fit_candidates(paired: Paired, forms: Sequence[str] = FORMS) -> tuple[Candidate, ...]:
    """Fit and score each form on the paired hours."""
    out: list[Candidate] = []
    for form in forms:
        c = _fit_form(form, paired.raw, paired.rh, paired.reference)
        predict = _predictor(form, c)
        cal = predict(paired.raw, paired.rh)
        days, (d_cal, d_ref) = daily_means(paired.hours, cal, paired.reference)
        daily = metrics(d_cal, d_ref) if len(days) >= 3 else None
        out.append(
            Candidate(
                form, c, metrics(cal, paired.reference), daily, _cv_rmse(form, paired), predict
            )
        )
    return tuple(out)


def recommend(candidates: Sequence[Candidate], min_gain: float = 0.05) -> tuple[Candidate, str]:
    """Pick one candidate and say why.

    Rule: consider the candidates that meet all four EPA targets on 24-h means (all of them if
    none does). Walk from the simplest form (linear → linear_rh → polynomial) and move to a
    more complex form only if it lowers the cross-validated hourly RMSE by at least
    ``min_gain`` (5 %) relative to the current choice — extra terms must earn their keep on
    days they were not fitted on.
    """
    if not candidates:
        raise FitError("no candidate models to choose from")
    passing = [c for c in candidates if c.meets_targets]
    pool = passing or list(candidates)
    best = pool[0]
    for cand in pool[1:]:
        if math.isfinite(cand.cv_rmse) and cand.cv_rmse < best.cv_rmse * (1.0 - min_gain):
            best = cand
    others = ", ".join(f"{c.form} {c.cv_rmse:.2f}" for c in pool if c is not best)
    basis = "meets all EPA 24-h targets" if passing else "NO model meets all EPA 24-h targets"
    reason = f"{best.form}: {basis}; cross-validated hourly RMSE {best.cv_rmse:.2f} µg/m³" + (
        f" (others: {others}); a more complex form must cut it by ≥ {min_gain:.0%}"
        if others
        else ""
    )
    return best, reason


# --- the whole pipeline -------------------------------------------------------------------


_DEVICE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,40}$")  # the contract's device id


def check_device_id(device_id: str) -> None:
    """A calibration record for a device id no node has would never apply: check the form."""
    if not _DEVICE_RE.match(device_id):
        raise FitError(
            f"--device {device_id!r} is not a device id: give the node's id as 'cityedge node "
            "inventory' lists it, 'ce-' and 12 lower-case hex digits (e.g. ce-a1b2c3d4e5f6)"
        )


def check_out_dir(out_dir: str | Path) -> Path:
    """The folder the record and report go to, checked before any fitting."""
    out = Path(out_dir)
    if not out.exists():
        raise FitError(f"{out}: output folder does not exist; create it or pick another --out-dir")
    if not out.is_dir():
        raise FitError(f"{out}: is not a folder; give a folder as --out-dir")
    if not os.access(out, os.W_OK | os.X_OK):
        raise FitError(f"{out}: cannot write there; pick another --out-dir")
    return out


def _choose_form(candidates: Sequence[Candidate], form: str | None) -> tuple[Candidate, str]:
    """The recommended candidate, or the one ``--form`` names (with the rule's pick noted)."""
    chosen, reason = recommend(candidates)
    if form is not None:
        match = [c for c in candidates if c.form == form]
        if not match:
            raise FitError(f"--form {form!r} is not one of {', '.join(FORMS)}")
        chosen = match[0]
        reason = f"{form}: chosen with --form (the rule would pick: {reason})"
    return chosen, reason


def _collocation(chosen: Candidate, start: datetime, end: datetime) -> Collocation:
    """The record's collocation block: the chosen fit's hourly and 24 h metrics, rounded."""
    daily = chosen.daily
    return Collocation(
        start=start,
        end=end,
        n=chosen.hourly.n,
        averaging="1h",
        r2=round(chosen.hourly.r2, 4),
        rmse=round(chosen.hourly.rmse, 3),
        mae=round(chosen.hourly.mae, 3),
        slope=round(chosen.hourly.slope, 4),
        intercept=round(chosen.hourly.intercept, 3),
        n_24h=daily.n if daily else None,
        r2_24h=round(daily.r2, 4) if daily else None,
        rmse_24h=round(daily.rmse, 3) if daily else None,
        slope_24h=round(daily.slope, 4) if daily else None,
        intercept_24h=round(daily.intercept, 3) if daily else None,
        meets_epa_targets=chosen.meets_targets,
    )


def _ranges(paired: Paired) -> dict[str, tuple[float, float]]:
    """The min/max of reference, raw input and RH seen in the collocation."""
    return {
        "concentration": (float(paired.reference.min()), float(paired.reference.max())),
        "input": (float(paired.raw.min()), float(paired.raw.max())),
        "rh": (float(paired.rh.min()), float(paired.rh.max())),
    }


def collocate(
    sensor_csv: str | Path,
    reference_csv: str | Path,
    device_id: str,
    *,
    quantity: Literal["pm25", "pm10"] = "pm25",
    channel: str | None = None,
    rh_channel: str = "rh",
    reference_column: str | None = None,
    reference_label: Literal["end", "start"] = "end",
    station: str | None = None,
    form: str | None = None,
    record_id: str | None = None,
    author: str = "cityedge calibrate fit",
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    min_hours: int = 72,
    sensor_model: str | None = "PMS5003",
) -> FitResult:
    """Run the whole fit (no files written); ``form=None`` takes the recommended model."""
    check_device_id(device_id)
    ch = channel or f"{quantity}_cf1"
    ref_col = reference_column or quantity
    sensor = read_sensor_csv(sensor_csv, [ch, rh_channel], device_id)
    reference, stations = read_reference_csv(reference_csv, ref_col, label=reference_label)
    check_time_alignment(sensor, reference, ch, ref_col)
    paired = align(sensor, reference, ch, rh_channel, ref_col, min_hours=min_hours)
    raw_hourly = metrics(paired.raw, paired.reference)
    days, (d_raw, d_ref) = daily_means(paired.hours, paired.raw, paired.reference)
    raw_daily = metrics(d_raw, d_ref) if len(days) >= 3 else None
    candidates = fit_candidates(paired)
    chosen, reason = _choose_form(candidates, form)
    station_code = station or stations or "unknown"
    start, end = paired.hours[0], paired.hours[-1] + timedelta(hours=1)
    rid = record_id or f"{device_id}-{quantity}-{start.astimezone(BANGKOK):%Y%m%d}-{chosen.form}"
    record = CalibrationRecord(
        id=rid,
        device_id=device_id,
        quantity=quantity,
        unit="ug/m3",
        input_channel=ch,
        extra_inputs=(rh_channel,) if chosen.form == "linear_rh" else (),
        form=chosen.form,
        coefficients=dict(chosen.coefficients),
        valid_from=valid_from or start,
        valid_to=valid_to,
        author=author,
        sensor_model=sensor_model,
        reference={"station": station_code, "operator": "PCD"},
        collocation=_collocation(chosen, start, end),
        ranges=_ranges(paired),
        notes=reason,
        source="(fit)",
    )
    return FitResult(
        device_id, quantity, ch, rh_channel, station_code, paired, raw_hourly, raw_daily,
        candidates, chosen, reason, record,
    )  # fmt: skip


def _atomic_pair(out: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write each file to a temporary sibling, then rename all into place."""
    temps: list[tuple[Path, Path]] = []
    try:
        for final, writer in out:
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            os.close(fd)
            temps.append((Path(name), final))
            writer(Path(name))
        for tmp_path, final in temps:
            os.replace(tmp_path, final)
    finally:
        for tmp_path, _ in temps:
            if tmp_path.exists():
                tmp_path.unlink()


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_outputs(
    result: FitResult, out_dir: str | Path, *, report_path: str | Path | None = None
) -> tuple[Path, Path]:
    """Write ``<record id>.toml`` and the PNG report into ``out_dir``; returns both paths.

    Checks first that the record loads back identically and does not overlap a record
    already in ``out_dir``; on any error nothing is written.
    """
    from calibration import report  # matplotlib is only needed here

    out = check_out_dir(out_dir)
    record_path = out / f"{result.record.id}.toml"
    png_path = Path(report_path) if report_path else out / f"{result.record.id}.png"
    if record_path.exists():
        raise FitError(f"{record_path} already exists; give a new --record-id or remove it")
    text = dump_records(
        [result.record],
        header=(
            f"Calibration record written by `cityedge calibrate fit` for {result.device_id}.\n"
            f"Reference station {result.station}; {result.reason}"
        ),
    )
    try:
        import tomllib

        from calibration.records import parse_records

        again = parse_records(tomllib.loads(text), str(record_path))[0]
        existing = list(Registry.load(out)) if any(out.glob("*.toml")) else []
        Registry([*existing, again])
    except RecordError as exc:
        raise FitError(f"the new record cannot join {out}: {exc}") from exc
    if not png_path.parent.is_dir():
        raise FitError(f"{png_path.parent}: folder for the report does not exist")
    try:
        _atomic_pair(
            [
                (record_path, lambda p: _write_text(p, text)),
                (png_path, lambda p: report.write_png(result, p)),
            ]
        )
    except OSError as exc:
        raise FitError(f"cannot write to {out}: {exc}; nothing was written") from exc
    return record_path, png_path
