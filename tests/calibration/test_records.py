"""Calibration records and the registry: loading, lookup, apply, rejection messages."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibration.errors import CalibrationError, InputError, RecordError
from calibration.records import (
    CalibrationRecord,
    Registry,
    dump_records,
    load_file,
    load_schema,
)

BKK = timezone(timedelta(hours=7))
DATA = Path(__file__).resolve().parents[2] / "calibration" / "data"

LINEAR = """
[[record]]
id = "cm-01-pm25-2026a"
device_id = "ce-000000000001"
quantity = "pm25"
unit = "ug/m3"
input_channel = "pm25_cf1"
author = "test"
valid_from = 2026-01-01T00:00:00+07:00
valid_to = 2026-05-01T00:00:00+07:00
superseded_by = "cm-01-pm25-2026b"

[record.model]
form = "linear"
coefficients = { slope = 0.5, intercept = 2.0 }

[[record]]
id = "cm-01-pm25-2026b"
device_id = "ce-000000000001"
quantity = "pm25"
unit = "ug/m3"
input_channel = "pm25_cf1"
extra_inputs = ["rh"]
author = "test"
valid_from = 2026-05-01T00:00:00+07:00

[record.model]
form = "linear_rh"
coefficients = { slope = 0.5, rh = -0.1, intercept = 6.0 }

[[record]]
id = "fleet-pm25"
device_id = "*"
quantity = "pm25"
unit = "ug/m3"
input_channel = "pm25_cf1"
extra_inputs = ["rh"]
author = "test"
valid_from = 2020-01-01T00:00:00Z

[record.model]
form = "epa_us_2021"
"""


def write(tmp_path: Path, text: str, name: str = "records.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_load_find_apply_linear_and_rh(tmp_path: Path) -> None:
    reg = Registry.load(write(tmp_path, LINEAR))
    assert len(reg) == 3
    rec = reg.find("ce-000000000001", "pm25", datetime(2026, 2, 1, tzinfo=UTC))
    assert rec is not None and rec.id == "cm-01-pm25-2026a"
    assert rec.inputs == ("pm25_cf1",)
    assert rec.unit == "ug/m3" and rec.quantity == "pm25" and rec.input_channel == "pm25_cf1"
    assert rec.apply({"pm25_cf1": 20.0, "rh": 50.0}) == pytest.approx(12.0)
    later = reg.find("ce-000000000001", "pm25", datetime(2026, 6, 1, tzinfo=BKK))
    assert later is not None and later.id == "cm-01-pm25-2026b"
    assert later.inputs == ("pm25_cf1", "rh")
    assert later.apply({"pm25_cf1": 20.0, "rh": 50.0}) == pytest.approx(11.0)


def test_valid_to_is_exclusive_and_boundary_switches_record(tmp_path: Path) -> None:
    reg = Registry.load(write(tmp_path, LINEAR))
    edge = datetime(2026, 5, 1, tzinfo=BKK)
    rec = reg.find("ce-000000000001", "pm25", edge)
    assert rec is not None and rec.id == "cm-01-pm25-2026b"
    before = reg.find("ce-000000000001", "pm25", edge - timedelta(microseconds=1))
    assert before is not None and before.id == "cm-01-pm25-2026a"


def test_fleet_default_used_when_no_device_record(tmp_path: Path) -> None:
    reg = Registry.load(write(tmp_path, LINEAR))
    when = datetime(2026, 2, 1, tzinfo=UTC)
    rec = reg.find("ce-0000000000ff", "pm25", when)
    assert rec is not None and rec.id == "fleet-pm25"
    assert rec.apply({"pm25_cf1": 20.0, "rh": 50.0}) == pytest.approx(11.92)
    # Before the device's first record the fleet default applies to it too.
    early = reg.find("ce-000000000001", "pm25", datetime(2025, 1, 1, tzinfo=UTC))
    assert early is not None and early.id == "fleet-pm25"
    assert reg.find("ce-000000000001", "pm10", when) is None


def test_find_requires_aware_datetime(tmp_path: Path) -> None:
    reg = Registry.load(write(tmp_path, LINEAR))
    with pytest.raises(CalibrationError, match="timezone-aware"):
        reg.find("ce-000000000001", "pm25", datetime(2026, 2, 1))


def test_empty_registry_and_empty_directory(tmp_path: Path) -> None:
    assert Registry([]).find("x", "pm25", datetime.now(UTC)) is None
    assert len(Registry.load(tmp_path)) == 0


def test_directory_load_and_shipped_fleet_defaults() -> None:
    fleet = Registry.load(DATA / "records")
    when = datetime(2026, 3, 1, tzinfo=UTC)
    pm25 = fleet.find("ce-anything", "pm25", when)
    assert pm25 is not None and pm25.inputs == ("pm25_cf1", "rh")
    pm10 = fleet.find("ce-anything", "pm10", when)
    assert pm10 is not None and pm10.form == "kohler"
    assert fleet.find("ce-anything", "rh", when) is None  # SHT3x RH needs no fleet correction
    reg = Registry.load(DATA / "examples")
    rec = reg.find("ce-anything", "rh", when)
    assert rec is not None
    assert rec.apply({"rh": 40.0}) == pytest.approx(1.259 * 40 + 7.34)
    assert rec.apply({"rh": 80.0}) == 100.0  # clamped by the record's max, documented


def test_apply_missing_and_invalid_inputs(tmp_path: Path) -> None:
    reg = Registry.load(write(tmp_path, LINEAR))
    rec = reg.get("cm-01-pm25-2026b")
    assert rec is not None
    with pytest.raises(InputError, match="'rh'"):
        rec.apply({"pm25_cf1": 20.0})
    for bad in (
        {"pm25_cf1": math.nan, "rh": 50.0},
        {"pm25_cf1": -1.0, "rh": 50.0},
        {"pm25_cf1": 10.0, "rh": 100.5},
        {"pm25_cf1": 10.0, "rh": -0.1},
        {"pm25_cf1": math.inf, "rh": 50.0},
        {"pm25_cf1": "12", "rh": 50.0},
    ):
        with pytest.raises(CalibrationError):
            rec.apply(bad)  # type: ignore[arg-type]


def test_pm_result_floored_at_zero(tmp_path: Path) -> None:
    reg = Registry.load(write(tmp_path, LINEAR))
    rec = reg.get("fleet-pm25")
    assert rec is not None
    assert rec.apply({"pm25_cf1": 0.0, "rh": 95.0}) == 0.0


def test_overlap_rejected_naming_file_and_field(tmp_path: Path) -> None:
    text = LINEAR.replace(
        "valid_from = 2026-05-01T00:00:00+07:00", "valid_from = 2026-04-01T00:00:00+07:00"
    )
    path = write(tmp_path, text, "overlap.toml")
    with pytest.raises(RecordError) as info:
        Registry.load(path)
    msg = str(info.value)
    assert "overlap.toml" in msg and "valid_from/valid_to" in msg
    assert "cm-01-pm25-2026a" in msg and "cm-01-pm25-2026b" in msg


def test_overlap_across_files_in_directory(tmp_path: Path) -> None:
    write(tmp_path, LINEAR, "a.toml")
    second = LINEAR.replace("cm-01-pm25-2026a", "x-a").replace("cm-01-pm25-2026b", "x-b")
    second = second.replace('id = "fleet-pm25"', 'id = "fleet-pm25-2"')
    write(tmp_path, second, "b.toml")
    with pytest.raises(RecordError, match=r"b\.toml.*overlaps.*a\.toml"):
        Registry.load(tmp_path)


def test_open_ended_records_for_same_key_overlap(tmp_path: Path) -> None:
    text = LINEAR.replace(
        'id = "cm-01-pm25-2026b"\ndevice_id = "ce-000000000001"', 'id = "b"\ndevice_id = "*"'
    )
    with pytest.raises(RecordError, match="fleet-pm25|'b'"):
        Registry.load(write(tmp_path, text))


def test_duplicate_id_rejected(tmp_path: Path) -> None:
    text = LINEAR.replace('id = "fleet-pm25"', 'id = "cm-01-pm25-2026a"')
    with pytest.raises(RecordError, match=r"records\.toml.*cm-01-pm25-2026a.*id: duplicate"):
        Registry.load(write(tmp_path, text))


MALFORMED = [
    # (replace old, with new, expected fragment naming the field)
    (
        'quantity = "pm25"\nunit = "ug/m3"\ninput_channel = "pm25_cf1"\nauthor',
        'quantity = "pm25"\nunit = "ug/m3"\nauthor',
        r"record\[0\]\.input_channel",
    ),
    (
        "coefficients = { slope = 0.5, intercept = 2.0 }",
        "coefficients = { slope = 0.5 }",
        r"record\[0\]\.model\.coefficients\.intercept",
    ),
    (
        "coefficients = { slope = 0.5, intercept = 2.0 }",
        'coefficients = { slope = "half", intercept = 2.0 }',
        r"record\[0\]\.model\.coefficients\.slope",
    ),
    ('form = "linear"', 'form = "cubic_spline"', r"record\[0\]\.model\.form"),
    (
        "valid_from = 2026-01-01T00:00:00+07:00",
        "valid_from = 2026-01-01T00:00:00",
        r"record\[0\]\.valid_from.*UTC offset",
    ),
    (
        "valid_from = 2026-01-01T00:00:00+07:00",
        "valid_from = 2026-01-01",
        r"record\[0\]\.valid_from",
    ),
    (
        "valid_to = 2026-05-01T00:00:00+07:00",
        "valid_to = 2025-05-01T00:00:00+07:00",
        r"record\[0\]\.valid_to .*not after",
    ),
    ('unit = "ug/m3"', 'unit = "mg/m3"', r"record\[0\]\.unit .*ug/m3"),
    (
        'author = "test"\nvalid_from = 2026-01-01',
        'author = "test"\ncolour = "red"\nvalid_from = 2026-01-01',
        r"record\[0\]\.colour.*not a known field",
    ),
    (
        "valid_to = 2026-05-01T00:00:00+07:00\n",
        "",
        r"record\[0\]\.valid_to .*superseded record must end",
    ),
    (
        'form = "epa_us_2021"',
        'form = "epa_fire_smoke_2021"',
        r"record\[2\]\.input_channel .*cf_atm",
    ),
    (
        'extra_inputs = ["rh"]\nauthor = "test"\nvalid_from = 2020',
        'author = "test"\nvalid_from = 2020',
        r"record\[2\]\.extra_inputs .*RH channel",
    ),
]


@pytest.mark.parametrize(("old", "new", "fragment"), MALFORMED)
def test_malformed_record_names_file_and_field(
    tmp_path: Path, old: str, new: str, fragment: str
) -> None:
    assert old in LINEAR  # the fixture edit must really change the record
    path = write(tmp_path, LINEAR.replace(old, new, 1), "bad.toml")
    with pytest.raises(RecordError) as info:
        Registry.load(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    import re

    assert re.search(fragment, msg), msg


def test_not_toml_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"broken\.toml: not valid TOML"):
        Registry.load(write(tmp_path, "[[record]\nid=", "broken.toml"))
    with pytest.raises(RecordError, match="no such file"):
        Registry.load(tmp_path / "missing.toml")
    with pytest.raises(RecordError, match=r"empty\.toml: record: is required.*\[\[record\]\]"):
        Registry.load(write(tmp_path, "", "empty.toml"))


def test_dump_round_trip_and_schema(tmp_path: Path) -> None:
    reg = Registry.load(write(tmp_path, LINEAR))
    text = dump_records(reg, header="round trip")
    again = load_file(write(tmp_path, text, "again.toml"))
    assert [r.to_dict() for r in again] == [r.to_dict() for r in reg]
    jsonschema.Draft202012Validator.check_schema(load_schema())


def _record(form: str, coefficients: dict[str, object], **kw: object) -> CalibrationRecord:
    base: dict[str, object] = {
        "id": f"t-{form}",
        "device_id": "ce-1",
        "quantity": "pm25",
        "unit": "ug/m3",
        "input_channel": "pm25_cf1",
        "author": "test",
        "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
        "model": {"form": form, "coefficients": coefficients},
    }
    base.update(kw)
    return CalibrationRecord.from_dict(base)


def test_every_form_applies() -> None:
    poly = _record("polynomial", {"ascending": [1.0, 0.5, 0.01]})
    assert poly.apply({"pm25_cf1": 10.0}) == pytest.approx(1 + 5 + 1)
    pw = _record("piecewise_linear", {"measured": [0.0, 10.0, 100.0], "true": [0.0, 8.0, 60.0]})
    assert pw.apply({"pm25_cf1": 5.0}) == pytest.approx(4.0)
    assert pw.apply({"pm25_cf1": 55.0}) == pytest.approx(34.0)
    koh = _record("kohler", {"kappa": 0.4, "density": 1.65}, extra_inputs=["rh"])
    assert koh.apply({"pm25_cf1": 13.636363636, "rh": 60.0}) == pytest.approx(10.0)
    fs = _record("epa_fire_smoke_2021", {}, input_channel="pm25_atm", extra_inputs=["rh"])
    assert fs.apply({"pm25_atm": 40.0, "rh": 50.0}) == pytest.approx(27.64)
    stage = _record(
        "stage",
        {"z_sensor": 2.5, "datum": "MSL"},
        quantity="level",
        unit="m",
        input_channel="distance",
    )
    assert stage.apply({"distance": 0.874}) == pytest.approx(1.626)
    assert stage.datum == "MSL"
    hydro = _record(
        "hydrostatic",
        {"z_sensor": -0.5, "datum": "staff_gauge", "density": 997.05},
        quantity="level",
        unit="m",
        input_channel="pressure",
        extra_inputs=["baro"],
    )
    assert hydro.inputs == ("pressure", "baro") and hydro.datum == "staff_gauge"
    assert hydro.apply({"pressure": 111.325, "baro": 101.325}) == pytest.approx(
        -0.5 + 1.0227, abs=5e-5
    )
    with pytest.raises(InputError, match="'baro'"):
        hydro.apply({"pressure": 111.325})
    with pytest.raises(RecordError, match="barometer"):
        _record(
            "hydrostatic",
            {"z_sensor": 0.0, "datum": "MSL"},
            quantity="level",
            unit="m",
            input_channel="pressure",
        )
    with pytest.raises(InputError):
        stage.apply({"distance": -0.1})
    temp = _record(
        "scale_offset",
        {"scale": 1.0, "offset": -1.5},
        quantity="temp",
        unit="Cel",
        input_channel="temp",
    )
    assert temp.apply({"temp": 31.5}) == pytest.approx(30.0)


def test_record_is_immutable() -> None:
    rec = _record("polynomial", {"ascending": [1.0, 0.5]})
    with pytest.raises(TypeError):
        rec.coefficients["ascending"] = [9.0]  # type: ignore[index]
    assert rec.apply({"pm25_cf1": 2.0}) == 2.0
    assert len({rec, rec}) == 1  # hashable, e.g. as a cache key


def test_stage_form_requires_level_and_datum() -> None:
    with pytest.raises(RecordError, match="quantity"):
        _record("stage", {"z_sensor": 2.5, "datum": "MSL"}, input_channel="distance")
    with pytest.raises(RecordError, match=r"coefficients\.datum"):
        _record(
            "stage",
            {"z_sensor": 2.5, "datum": "WGS84"},
            quantity="level",
            unit="m",
            input_channel="distance",
        )


@given(
    slope=st.floats(0.1, 3.0),
    rh_coef=st.floats(-0.5, 0.5),
    intercept=st.floats(-10.0, 10.0),
    x=st.floats(0.0, 500.0),
    rh=st.floats(0.0, 100.0),
)
def test_rederive_from_raw_after_round_trip(
    slope: float, rh_coef: float, intercept: float, x: float, rh: float
) -> None:
    rec = _record(
        "linear_rh", {"slope": slope, "rh": rh_coef, "intercept": intercept}, extra_inputs=["rh"]
    )
    stored = rec.apply({"pm25_cf1": x, "rh": rh})
    import tomllib

    from calibration.records import parse_records

    again = parse_records(tomllib.loads(dump_records([rec])))[0]
    assert again.apply({"pm25_cf1": x, "rh": rh}) == stored  # bit-identical, not approx
    assert stored == max(0.0, slope * x + rh_coef * rh + intercept)
