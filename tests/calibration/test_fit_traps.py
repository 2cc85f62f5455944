"""`cityedge calibrate fit` traps (issue 19.6): node times shifted by the time zone are refused
with the reason, a device id is checked, and the output folder is checked before any fitting."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from calibration import cli

DATA = Path(__file__).resolve().parents[2] / "calibration" / "data"
SENSOR = DATA / "collocation_sensor.csv"
REFERENCE = DATA / "collocation_reference.csv"
DEVICE = "ce-cm0000000001"


def _shifted(tmp_path: Path, hours: int, naive: bool = False) -> Path:
    """The shipped node CSV with every time moved by `hours` (a node clock set to local time
    whose export still says UTC); `naive` drops the offset, as a spreadsheet export does."""
    lines = SENSOR.read_text(encoding="utf-8").splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        stamp, rest = line.split(",", 1)
        t = datetime.fromisoformat(stamp) + timedelta(hours=hours)
        text = t.strftime("%Y-%m-%dT%H:%M:%S") + ("" if naive else "Z")
        out.append(f"{text},{rest}")
    path = tmp_path / "node.csv"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def _fit(sensor: Path, out: Path, device: str = DEVICE) -> list[str]:
    return ["fit", "--sensor", str(sensor), "--reference", str(REFERENCE), "--device", device,
            "--out-dir", str(out)]  # fmt: skip


@pytest.mark.parametrize(("hours", "naive"), [(7, True), (-7, False)])
def test_node_times_shifted_by_the_time_zone_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hours: int, naive: bool
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(_fit(_shifted(tmp_path, hours, naive), out)) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"node times look shifted by {hours:+d} h" in err, err
    assert "are they UTC?" in err
    assert list(out.iterdir()) == []  # no record, no report
    # (Aligned times still fit: tests/calibration/test_fit.py runs the shipped data through
    # the same command.)


@pytest.mark.parametrize("device", ["CE-CM0000000001", "library roof", "", "ce_cm01"])
def test_device_id_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(_fit(SENSOR, out, device)) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--device" in err and "ce-" in err
    assert list(out.iterdir()) == []


def test_out_dir_is_checked_before_fitting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from calibration import fit

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("fitted before checking --out-dir")

    monkeypatch.setattr(fit, "collocate", no_fit)
    assert cli.main(_fit(SENSOR, tmp_path / "missing")) == 1
    assert "--out-dir" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli.main(_fit(SENSOR, tmp_path / "file")) == 1
    assert "not a folder" in " ".join(capsys.readouterr().err.split())
