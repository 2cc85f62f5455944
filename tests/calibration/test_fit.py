"""The collocation fitting tool: reading, averaging, fitting, recommending, writing, CLI."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration import cli, fit
from calibration.errors import FitError
from calibration.records import Registry

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "calibration" / "data"
SENSOR = DATA / "collocation_sensor.csv"
REFERENCE = DATA / "collocation_reference.csv"
DEVICE = "ce-cm0000000001"


@pytest.fixture(scope="module")
def shipped() -> fit.FitResult:
    return fit.collocate(SENSOR, REFERENCE, DEVICE, author="test")


def test_shipped_data_fit(shipped: fit.FitResult) -> None:
    assert len(shipped.paired.hours) > 400
    assert [c.form for c in shipped.candidates] == ["linear", "linear_rh", "polynomial"]
    # The data set is humid-biased PMS5003 data: the RH term is needed to meet the targets.
    assert shipped.chosen.form == "linear_rh" and shipped.chosen.meets_targets
    assert not shipped.raw_daily or not all(shipped.raw_daily.meets().values())
    rh_coef = shipped.chosen.coefficients["rh"]
    assert isinstance(rh_coef, float) and rh_coef < 0  # humid air over-reads → negative term
    rec = shipped.record
    assert rec.inputs == ("pm25_cf1", "rh") and rec.form == "linear_rh"
    assert rec.collocation is not None and rec.collocation.meets_epa_targets is True
    assert rec.reference["station"] == "35t"


def test_record_rederives_the_fitted_values(shipped: fit.FitResult) -> None:
    p = shipped.paired
    fitted = shipped.chosen.predict(p.raw, p.rh)
    for k in range(0, len(p.hours), 37):
        value = shipped.record.apply({"pm25_cf1": float(p.raw[k]), "rh": float(p.rh[k])})
        assert value == pytest.approx(float(fitted[k]), rel=1e-12)


def test_write_outputs_atomic_and_valid(shipped: fit.FitResult, tmp_path: Path) -> None:
    record_path, png_path = fit.write_outputs(shipped, tmp_path)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reg = Registry.load(tmp_path)
    rec = reg.find(DEVICE, "pm25", datetime(2026, 3, 1, tzinfo=UTC))
    assert rec is not None and rec.to_dict() == shipped.record.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([record_path.name, png_path.name])
    # A second run would overlap the record now in the folder: refused, nothing written.
    with pytest.raises(FitError, match="already exists"):
        fit.write_outputs(shipped, tmp_path)
    other = fit.collocate(SENSOR, REFERENCE, DEVICE, record_id="second", form="linear")
    with pytest.raises(FitError, match="overlaps"):
        fit.write_outputs(other, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def _write_node_csv(
    path: Path, start: datetime, hours: int, raw: list[float], rh: list[float]
) -> None:
    lines = ["timestamp,pm25_cf1,rh"]
    for h in range(hours):
        for m in range(0, 60, 5):
            t = start + timedelta(hours=h, minutes=m)
            lines.append(f"{t:%Y-%m-%dT%H:%M:%SZ},{raw[h]:.4f},{rh[h]:.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_reference_csv(path: Path, start: datetime, ref: list[float]) -> None:
    from zoneinfo import ZoneInfo

    bkk = ZoneInfo("Asia/Bangkok")
    lines = ["date,time,station,pm25"]
    for h, v in enumerate(ref):
        end = (start + timedelta(hours=h + 1)).astimezone(bkk)  # hour-ending, local time
        lines.append(f"{end:%Y-%m-%d},{end:%H:%M},99t,{v:.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _synthetic(tmp_path: Path, hours: int = 24 * 8, seed: int = 1) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 10, tzinfo=UTC)
    raw = rng.uniform(10.0, 200.0, hours)
    rh = rng.uniform(20.0, 95.0, hours)
    ref = 0.6 * raw - 0.15 * rh + 4.0 + rng.normal(0.0, 0.2, hours)
    node, reference = tmp_path / "node.csv", tmp_path / "ref.csv"
    _write_node_csv(node, start, hours, list(raw), list(rh))
    _write_reference_csv(reference, start, list(ref))
    return node, reference


def test_csv_end_to_end_recovers_known_coefficients(tmp_path: Path) -> None:
    node, reference = _synthetic(tmp_path)
    result = fit.collocate(node, reference, "ce-x", form="linear_rh")
    c = result.chosen.coefficients
    assert c["slope"] == pytest.approx(0.6, abs=0.005)
    assert c["rh"] == pytest.approx(-0.15, abs=0.005)
    assert c["intercept"] == pytest.approx(4.0, abs=0.3)
    assert len(result.paired.hours) == 24 * 8  # UTC node hours line up with local hour-ending
    assert result.station == "99t"


@settings(max_examples=25, deadline=None)
@given(
    slope=st.floats(0.3, 2.0),
    rh_coef=st.floats(-0.5, 0.2),
    intercept=st.floats(-5.0, 10.0),
    seed=st.integers(0, 10_000),
)
def test_fit_recovers_known_coefficients(
    slope: float, rh_coef: float, intercept: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    raw = rng.uniform(20.0, 300.0, n)
    rh = rng.uniform(20.0, 95.0, n)
    ref = slope * raw + rh_coef * rh + intercept + rng.normal(0.0, 0.1, n)
    hours = tuple(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=k) for k in range(n))
    paired = fit.Paired(hours, raw, rh, ref, n, n)
    by_form = {c.form: c for c in fit.fit_candidates(paired)}
    c = by_form["linear_rh"].coefficients
    assert c["slope"] == pytest.approx(slope, abs=0.01)
    assert c["rh"] == pytest.approx(rh_coef, abs=0.01)
    assert c["intercept"] == pytest.approx(intercept, abs=0.5)
    poly = by_form["polynomial"].coefficients["ascending"]
    assert isinstance(poly, list)
    if rh_coef == 0.0:
        assert poly[1] == pytest.approx(slope, abs=0.05)


def test_hourly_completeness_rule() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times: list[datetime] = []
    # Hour 0: 12 of 12 samples; hour 1: 9 (75 %); hour 2: 8 (67 %) → dropped.
    for hour, count in ((0, 12), (1, 9), (2, 8)):
        times += [start + timedelta(hours=hour, minutes=5 * k) for k in range(count)]
    values = np.arange(len(times), dtype=np.float64)
    series = fit.Series(tuple(times), {"x": values}, "mem")
    means = fit.hourly_means(series, interval_s=300.0)
    assert sorted(means) == [start, start + timedelta(hours=1)]
    assert means[start]["x"] == pytest.approx(np.mean(values[:12]))


def test_replayed_rows_count_once(tmp_path: Path) -> None:
    p = tmp_path / "node.csv"
    p.write_text(
        "timestamp,pm25_cf1,rh\n"
        "2026-01-01T00:05:00Z,20,50\n2026-01-01T00:00:00+07:00,5,40\n2026-01-01T00:05:00Z,22,50\n",
        encoding="utf-8",
    )
    series = fit.read_sensor_csv(p, ["pm25_cf1", "rh"])
    assert series.times == (
        datetime(2025, 12, 31, 17, tzinfo=UTC),  # an offset is honoured and converted to UTC
        datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
    )
    assert series.columns["pm25_cf1"].tolist() == [5.0, 22.0]


def test_daily_completeness_rule() -> None:
    start = datetime(2026, 1, 1, 17, tzinfo=UTC)  # 00:00 Bangkok
    hours = [start + timedelta(hours=k) for k in range(24)]  # one full local day
    hours += [start + timedelta(days=1, hours=k) for k in range(17)]  # 17 of 24: dropped
    days, (means,) = fit.daily_means(hours, np.ones(len(hours)))
    assert [d.isoformat() for d in days] == ["2026-01-02"]
    assert means.tolist() == [1.0]


def test_reference_time_is_local_and_hour_ending(tmp_path: Path) -> None:
    p = tmp_path / "ref.csv"
    p.write_text("date,time,pm25\n2026-02-20,01:00,10\n2026-02-20,24:00,-\n", encoding="utf-8")
    series, _ = fit.read_reference_csv(p)
    # 01:00 Bangkok is 18:00 UTC; hour-ending, so the hour started at 17:00 UTC.
    assert series.times[0] == datetime(2026, 2, 19, 17, tzinfo=UTC)
    assert series.times[1] == datetime(2026, 2, 20, 16, tzinfo=UTC)
    assert np.isnan(series.columns["pm25"][1])
    start_label, _ = fit.read_reference_csv(p, label="start")
    assert start_label.times[0] == datetime(2026, 2, 19, 18, tzinfo=UTC)


def _candidate(form: str, cv: float, meets: bool) -> fit.Candidate:
    good = fit.Metrics(30, 0.95, 2.0, 1.5, 1.0, 0.5)
    bad = fit.Metrics(30, 0.5, 9.0, 8.0, 0.5, 9.0)
    return fit.Candidate(form, {}, good, good if meets else bad, cv, lambda x, rh: x)


def test_recommend_rule() -> None:
    lin, rh, poly = (
        _candidate("linear", 6.0, True),
        _candidate("linear_rh", 5.8, True),
        _candidate("polynomial", 5.0, True),
    )
    best, why = fit.recommend([lin, rh, poly])
    assert best is poly and "meets all" in why
    # linear_rh is only 3 % better than linear: not worth the extra term.
    best, _ = fit.recommend([lin, rh])
    assert best is lin
    # A form that misses the targets is not chosen over one that meets them.
    failing = _candidate("polynomial", 1.0, False)
    assert fit.recommend([lin, failing])[0] is lin
    best, why = fit.recommend([_candidate("linear", 9.0, False), failing])
    assert best.form == "polynomial" and "NO model" in why


# --- error cases: clear message, nothing written ------------------------------------------


def _run_cli(argv: list[str]) -> int:
    return cli.main(argv)


def _fit_argv(node: Path, ref: Path, out: Path) -> list[str]:
    return ["fit", "--sensor", str(node), "--reference", str(ref), "--device", "ce-x",
            "--out-dir", str(out)]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_overlap", "no overlapping hours"),
        ("too_few", "only 30 overlapping valid hours"),
        ("garbage", "not ISO 8601"),
        ("missing_column", "missing column"),
        ("bad_number", "is not a number"),
        ("missing_file", "no such file"),
        ("other_device", "not only ce-x"),
    ],
)
def test_errors_write_nothing(
    tmp_path: Path, case: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    node, reference = _synthetic(tmp_path, hours=24 * 4)
    if case == "no_overlap":
        text = reference.read_text(encoding="utf-8").replace("2026-01-", "2025-01-")
        reference.write_text(text, encoding="utf-8")
    elif case == "too_few":
        _write_node_csv(node, datetime(2026, 1, 10, tzinfo=UTC), 30, [50.0] * 30, [50.0] * 30)
    elif case == "garbage":
        node.write_text("timestamp,pm25_cf1,rh\nyesterday,1,2\n", encoding="utf-8")
    elif case == "missing_column":
        node.write_text("time,pm25,rh\n2026-01-10T00:00:00Z,1,2\n", encoding="utf-8")
    elif case == "bad_number":
        lines = reference.read_text(encoding="utf-8").splitlines()
        lines[5] = lines[5].rsplit(",", 1)[0] + ",twelve"
        reference.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif case == "missing_file":
        node.unlink()
    elif case == "other_device":
        node.write_text(
            "timestamp,device_id,pm25_cf1,rh\n2026-01-10T00:00:00Z,ce-y,1,2\n", encoding="utf-8"
        )
    out = tmp_path / "out"
    out.mkdir()
    assert _run_cli(_fit_argv(node, reference, out)) == 1
    assert message in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_png_failure_leaves_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shipped: fit.FitResult
) -> None:
    from calibration import report

    def broken(result: fit.FitResult, path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(report, "write_png", broken)
    with pytest.raises(FitError, match="disk full.*nothing was written"):
        fit.write_outputs(shipped, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_via_cityedge_add_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="cityedge")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = parser.parse_args(
        ["calibrate", "fit", "--sensor", str(SENSOR), "--reference", str(REFERENCE),
         "--device", DEVICE, "--out-dir", str(tmp_path), "--record-id", "cm-doc",
         "--author", "test"]
    )  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "linear_rh ★" in out and "wrote" in out
    assert (tmp_path / "cm-doc.toml").exists() and (tmp_path / "cm-doc.png").exists()
    doc = tomllib.loads((tmp_path / "cm-doc.toml").read_text(encoding="utf-8"))
    assert doc["record"][0]["author"] == "test"

    args = parser.parse_args(["calibrate", "check", str(tmp_path), str(DATA / "records")])
    assert args.func(args) == 0
    assert "cm-doc" in capsys.readouterr().out

    args = parser.parse_args(["calibrate", "aqi", "pm25", "50"])
    assert args.func(args) == 0
    assert "134" in capsys.readouterr().out

    args = parser.parse_args(["calibrate"])
    assert args.func(args) == 2


def test_check_reports_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[record]]\nid = "x"\n', encoding="utf-8")
    assert cli.main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.toml" in err and "record[0].device_id" in err.replace("\n", "")


def test_python_dash_m(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "calibration", "aqi", "pm25", "35.9", "--index", "us"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "US AQI 102" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "calibration", *_fit_argv(SENSOR, REFERENCE, tmp_path / "nope")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "output folder does not exist" in proc.stderr
    assert not (tmp_path / "nope").exists()
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "calibration", "fit", "--sensor", str(SENSOR),
         "--reference", str(REFERENCE), "--device", DEVICE, "--out-dir", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.suffix for p in out.iterdir())
    assert written == [".png", ".toml"]
    assert len(Registry.load(out)) == 1
