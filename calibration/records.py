"""Calibration records and the registry the gateway looks them up in.

A calibration is data, not code (calibration reference §6). A record file is TOML holding one
or more ``[[record]]`` tables, validated against ``calibration/schema/record.schema.json`` and
then against the rules below; any problem raises :class:`RecordError` naming the file and the
field (``sites/cm.toml: record[1].valid_to: ...``).

Usage (the gateway's interface, see ``docs/architecture.md``)::

    from calibration.records import Registry
    registry = Registry.load("calibrations/")            # one TOML file or a directory of *.toml
    record = registry.find("ce-a1b2c3d4e5f6", "pm25", when)  # CalibrationRecord | None
    value = record.apply({"pm25_cf1": 20.0, "rh": 50.0})

Rules checked on load:

* ``valid_from`` (inclusive) and ``valid_to`` (exclusive, optional = open-ended) carry a UTC
  offset; ``valid_to`` > ``valid_from``; a record with ``superseded_by`` must have ``valid_to``.
* Validity periods of records for the same device + quantity never overlap (in one file or
  across the files of a directory); record ids are unique.
* ``hydrostatic`` names one extra input, the barometer channel (``baro``), and gives
  ``z_sensor + (pressure − baro)/(ρ·g)``.
* ``device_id = "*"`` is a fleet-wide default; :meth:`Registry.find` prefers a record for the
  device itself and falls back to ``"*"``.
* The unit matches the quantity (``pm25``/``pm10`` → ``ug/m3``, ``temp`` → ``Cel``,
  ``rh`` → ``%RH``, ``level`` → ``m``); forms that use humidity (``linear_rh``,
  ``epa_us_2021``, ``epa_fire_smoke_2021``, ``kohler``) name exactly one extra input, the RH
  channel, and the EPA forms take the channel they were fitted on (``*_cf1`` / ``*_atm``).

:meth:`CalibrationRecord.apply` is deterministic: the same raw inputs and record always give
the same number, so a stored value can be re-derived from its raw value and record id.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import jsonschema.exceptions

from calibration import models, pm, water
from calibration._checks import finite, non_negative, relative_humidity
from calibration.errors import CalibrationError, InputError, RecordError

__all__ = [
    "FORMS",
    "QUANTITY_UNITS",
    "CalibrationError",
    "CalibrationRecord",
    "Collocation",
    "RecordError",
    "Registry",
    "dump_records",
    "load_schema",
    "parse_records",
]

FORMS = (
    "linear",
    "linear_rh",
    "polynomial",
    "piecewise_linear",
    "epa_us_2021",
    "epa_fire_smoke_2021",
    "kohler",
    "stage",
    "hydrostatic",
    "scale_offset",
)
"""Model forms a record may use."""

QUANTITY_UNITS: Mapping[str, str] = {
    "pm25": "ug/m3",
    "pm10": "ug/m3",
    "temp": "Cel",
    "rh": "%RH",
    "level": "m",
}
"""Calibrated quantities and the SenML unit each is published in."""

_RH_FORMS = frozenset({"linear_rh", "epa_us_2021", "epa_fire_smoke_2021", "kohler"})
_ONE_EXTRA_FORMS = _RH_FORMS | {"hydrostatic"}  # hydrostatic: the barometer channel
_REQUIRED_COEFFICIENTS: Mapping[str, tuple[str, ...]] = {
    "linear": ("slope", "intercept"),
    "linear_rh": ("slope", "rh", "intercept"),
    "polynomial": ("ascending",),
    "piecewise_linear": ("measured", "true"),
    "kohler": ("kappa",),
    "stage": ("z_sensor", "datum"),
    "hydrostatic": ("z_sensor", "datum"),
    "scale_offset": ("scale", "offset"),
}
_PM_QUANTITIES = frozenset({"pm25", "pm10"})
_RH_CHANNELS = frozenset({"rh"})
_NON_NEGATIVE_CHANNEL_SUFFIXES = ("_cf1", "_atm")
_NON_NEGATIVE_CHANNELS = frozenset({"distance", "pressure", "baro", "field_delta"})


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON Schema for record files, shipped as ``calibration/schema/record.schema.json``."""
    text = resources.files("calibration").joinpath("schema/record.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True)
class Collocation:
    """How and how well a record was fitted against a reference (all fields optional)."""

    start: datetime | None = None
    end: datetime | None = None
    n: int | None = None
    averaging: str | None = None
    r2: float | None = None
    rmse: float | None = None
    mae: float | None = None
    slope: float | None = None
    intercept: float | None = None
    n_24h: int | None = None
    r2_24h: float | None = None
    rmse_24h: float | None = None
    slope_24h: float | None = None
    intercept_24h: float | None = None
    meets_epa_targets: bool | None = None


@dataclass(frozen=True)
class CalibrationRecord:
    """One dated calibration: a model form with coefficients for one device and quantity.

    ``apply`` takes raw readings keyed by the firmware's channel names (contract v1, e.g.
    ``pm25_cf1``, ``rh``, ``distance``) and returns the calibrated value in ``unit``.
    """

    id: str
    device_id: str
    quantity: str
    unit: str
    input_channel: str
    form: str
    coefficients: Mapping[str, Any]
    valid_from: datetime
    author: str
    extra_inputs: tuple[str, ...] = ()
    valid_to: datetime | None = None
    superseded_by: str | None = None
    sensor_model: str | None = None
    sensor_serial: str | None = None
    reference: Mapping[str, str] = field(default_factory=dict)
    collocation: Collocation | None = None
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    notes: str | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        # Freeze the mappings: a record must not change after a value was derived from it.
        frozen = {
            k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in self.coefficients.items()
        }
        object.__setattr__(self, "coefficients", MappingProxyType(frozen))
        object.__setattr__(self, "reference", MappingProxyType(dict(self.reference)))
        object.__setattr__(self, "ranges", MappingProxyType(dict(self.ranges)))
        object.__setattr__(self, "extra_inputs", tuple(self.extra_inputs))
        _check_record(self)

    def __hash__(self) -> int:
        return hash((self.id, self.device_id, self.quantity, self.valid_from))

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every raw channel :meth:`apply` needs: the input channel, then the extra inputs."""
        return (self.input_channel, *self.extra_inputs)

    @property
    def rh_channel(self) -> str | None:
        """The humidity channel for forms that use one, else ``None``."""
        return self.extra_inputs[0] if self.form in _RH_FORMS else None

    @property
    def datum(self) -> str | None:
        """For a ``stage`` or ``hydrostatic`` record, the datum of the level (``"MSL"`` or ``"staff_gauge"``)."""
        return str(self.coefficients["datum"]) if self.form in ("stage", "hydrostatic") else None

    def covers(self, when: datetime) -> bool:
        """True if ``when`` (timezone-aware) is within ``[valid_from, valid_to)``."""
        _require_aware(when, "when")
        if when < self.valid_from:
            return False
        return self.valid_to is None or when < self.valid_to

    def apply(self, inputs: Mapping[str, float]) -> float:
        """Calibrate one reading from raw channel values.

        Raises :class:`InputError` (a :class:`CalibrationError`) if a needed channel is
        missing, is not a finite number, or is impossible (negative PM or distance, RH outside
        0–100 %). A PM result below 0 µg/m³ is floored at 0; a ``scale_offset`` result is
        clamped to its ``min``/``max`` coefficients when given (e.g. RH to 0–100).
        """
        values: dict[str, float] = {}
        for channel in self.inputs:
            if channel not in inputs:
                raise InputError(
                    f"record {self.id!r} needs input channel {channel!r} "
                    f"(needs {', '.join(self.inputs)}; got {', '.join(sorted(inputs)) or 'none'})"
                )
            values[channel] = _check_channel(self.id, channel, inputs[channel])
        x = values[self.input_channel]
        extra = values[self.extra_inputs[0]] if self.extra_inputs else math.nan
        out = _evaluate(self.form, self.coefficients, x, extra)
        if self.quantity in _PM_QUANTITIES:
            out = max(0.0, out)
        if not math.isfinite(out):
            raise CalibrationError(f"record {self.id!r} produced a non-finite value from {values}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data, in the layout of a ``[[record]]`` table (datetimes kept)."""
        d: dict[str, Any] = {
            "id": self.id,
            "device_id": self.device_id,
            "quantity": self.quantity,
            "unit": self.unit,
            "input_channel": self.input_channel,
        }
        if self.extra_inputs:
            d["extra_inputs"] = list(self.extra_inputs)
        d["author"] = self.author
        d["valid_from"] = self.valid_from
        if self.valid_to is not None:
            d["valid_to"] = self.valid_to
        if self.superseded_by is not None:
            d["superseded_by"] = self.superseded_by
        if self.notes is not None:
            d["notes"] = self.notes
        sensor = {
            k: v for k, v in (("model", self.sensor_model), ("serial", self.sensor_serial)) if v
        }
        if sensor:
            d["sensor"] = sensor
        d["model"] = {"form": self.form, "coefficients": _plain(self.coefficients)}
        if self.reference:
            d["reference"] = dict(self.reference)
        if self.collocation is not None:
            colloc = {
                k: getattr(self.collocation, k)
                for k in Collocation.__dataclass_fields__
                if getattr(self.collocation, k) is not None
            }
            if colloc:
                d["collocation"] = colloc
        if self.ranges:
            d["ranges"] = {k: [lo, hi] for k, (lo, hi) in self.ranges.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<memory>") -> CalibrationRecord:
        """Build and check one record from a ``[[record]]`` table; see :func:`parse_records`."""
        return parse_records({"record": [dict(data)]}, source)[0]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _require_aware(when: datetime, name: str) -> None:
    if not isinstance(when, datetime):
        raise CalibrationError(f"{name} must be a datetime, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise CalibrationError(
            f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), got {when!r}"
        )


def _check_channel(record_id: str, channel: str, value: object) -> float:
    name = f"record {record_id!r}: input {channel!r}"
    if channel in _RH_CHANNELS:
        return relative_humidity(name, value)
    if channel.endswith(_NON_NEGATIVE_CHANNEL_SUFFIXES) or channel in _NON_NEGATIVE_CHANNELS:
        return non_negative(name, value)
    return finite(name, value)


def _evaluate(form: str, c: Mapping[str, Any], x: float, rh: float) -> float:
    """``rh`` is the record's one extra input: RH for the PM forms, barometer for hydrostatic."""
    if form == "linear":
        return models.linear(x, float(c["slope"]), float(c["intercept"]))
    if form == "linear_rh":
        return models.linear_rh(x, rh, float(c["slope"]), float(c["rh"]), float(c["intercept"]))
    if form == "polynomial":
        return models.polynomial(x, [float(v) for v in c["ascending"]])
    if form == "piecewise_linear":
        return models.piecewise_linear(x, _points(c))
    if form == "epa_us_2021":
        return pm.us_wide_2021(x, rh)
    if form == "epa_fire_smoke_2021":
        return pm.fire_smoke_2021(x, rh)
    if form == "kohler":
        return pm.kohler_correct(
            x,
            rh,
            float(c["kappa"]),
            float(c.get("density", pm.DEFAULT_DENSITY_GCM3)),
            float(c.get("rh_max", pm.DEFAULT_RH_MAX_PCT)),
        )
    if form == "stage":
        # Calibration reference §3: level = z_sensor − d, in the datum z_sensor was surveyed in.
        return water.stage_level_m(float(c["z_sensor"]), x)
    if form == "hydrostatic":
        # Calibration reference §3: level = z_sensor + (P_abs − P_baro)/(ρ·g).
        depth = water.hydrostatic_depth_m(x, rh, float(c.get("density", 997.0)))
        return float(c["z_sensor"]) + depth
    if form == "scale_offset":
        out = float(c["scale"]) * x + float(c["offset"])
        if "min" in c:
            out = max(float(c["min"]), out)
        if "max" in c:
            out = min(float(c["max"]), out)
        return out
    raise CalibrationError(f"unknown model form {form!r}; use one of {', '.join(FORMS)}")


def _points(c: Mapping[str, Any]) -> list[tuple[float, float]]:
    return [(float(m), float(t)) for m, t in zip(c["measured"], c["true"], strict=True)]


def _fail(r: CalibrationRecord, fieldname: str, msg: str) -> RecordError:
    """A ``RecordError`` naming the record and the field."""
    return RecordError(
        f"{r.source}: record {r.id!r}: {fieldname}: {msg}", field=fieldname, detail=msg
    )


def _check_kind(r: CalibrationRecord) -> None:
    """Form, quantity and unit are known and agree."""
    if r.form not in FORMS:
        raise _fail(r, "model.form", f"unknown form {r.form!r}; use one of {', '.join(FORMS)}")
    expected_unit = QUANTITY_UNITS.get(r.quantity)
    if expected_unit is None:
        raise _fail(
            r,
            "quantity",
            f"unknown quantity {r.quantity!r}; use one of {', '.join(QUANTITY_UNITS)}",
        )
    if r.unit != expected_unit:
        raise _fail(r, "unit", f"{r.quantity} is published in {expected_unit!r}, not {r.unit!r}")


def _check_validity(r: CalibrationRecord) -> None:
    """The validity window has offsets, is ordered, and supersession is consistent."""
    for name, when in (("valid_from", r.valid_from), ("valid_to", r.valid_to)):
        if when is not None and (when.tzinfo is None or when.utcoffset() is None):
            raise _fail(r, name, "needs a UTC offset, e.g. 2026-01-15T00:00:00+07:00")
    if r.valid_to is not None and r.valid_to <= r.valid_from:
        raise _fail(r, "valid_to", f"{r.valid_to.isoformat()} is not after valid_from")
    if r.superseded_by is not None:
        if not r.superseded_by:
            raise _fail(r, "superseded_by", "is empty; leave it out if the record is current")
        if r.valid_to is None:
            raise _fail(r, "valid_to", "a superseded record must end: set valid_to")
        if r.superseded_by == r.id:
            raise _fail(r, "superseded_by", "a record cannot supersede itself")


def _check_inputs(r: CalibrationRecord) -> None:
    """Input channels and quantity suit the form."""
    if r.input_channel in r.extra_inputs:
        raise _fail(r, "extra_inputs", f"repeats input_channel {r.input_channel!r}")
    if r.form in _ONE_EXTRA_FORMS:
        if len(r.extra_inputs) != 1:
            what = '"baro"' if r.form == "hydrostatic" else '"rh"'
            which = "barometer" if r.form == "hydrostatic" else "RH"
            raise _fail(
                r,
                "extra_inputs",
                f"form {r.form} needs exactly one, the {which} channel, e.g. [{what}]",
            )
    elif r.extra_inputs:
        raise _fail(r, "extra_inputs", f"form {r.form} uses no extra inputs; remove them")
    if r.form == "epa_us_2021" and not r.input_channel.endswith("_cf1"):
        raise _fail(
            r, "input_channel", "epa_us_2021 was fitted on the cf_1 channel; use e.g. pm25_cf1"
        )
    if r.form == "epa_fire_smoke_2021" and not r.input_channel.endswith("_atm"):
        raise _fail(
            r,
            "input_channel",
            "epa_fire_smoke_2021 was fitted on the cf_atm channel; use e.g. pm25_atm",
        )
    if (
        r.form in ("epa_us_2021", "epa_fire_smoke_2021", "kohler")
        and r.quantity not in _PM_QUANTITIES
    ):
        raise _fail(r, "quantity", f"form {r.form} corrects PM; quantity must be pm25 or pm10")
    if r.form in ("stage", "hydrostatic") and r.quantity != "level":
        raise _fail(r, "quantity", f"form {r.form} gives a water level; quantity must be level")


def _check_coefficients(r: CalibrationRecord) -> None:
    """The form's coefficients are present, finite and consistent."""
    c = r.coefficients
    for key in _REQUIRED_COEFFICIENTS.get(r.form, ()):
        if key not in c:
            raise _fail(r, f"model.coefficients.{key}", f"is required for form {r.form}")
    for key, value in c.items():
        if key == "datum":
            if value not in ("MSL", "staff_gauge"):
                raise _fail(r, "model.coefficients.datum", 'must be "MSL" or "staff_gauge"')
            continue
        vals = value if isinstance(value, (list, tuple)) else [value]
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise _fail(r, f"model.coefficients.{key}", f"must be a finite number, got {v!r}")
    if r.form == "piecewise_linear":
        if len(c["measured"]) != len(c["true"]):
            raise _fail(r, "model.coefficients.true", "must have as many values as measured")
        try:
            models.check_piecewise_points(_points(c))
        except CalibrationError as exc:
            raise _fail(r, "model.coefficients.measured", str(exc)) from exc
    if r.form == "scale_offset" and "min" in c and "max" in c and c["min"] >= c["max"]:
        raise _fail(r, "model.coefficients.max", "must be greater than min")


def _check_extents(r: CalibrationRecord) -> None:
    """Ranges and the collocation window run low to high."""
    for key, (lo, hi) in r.ranges.items():
        if lo > hi:
            raise _fail(r, f"ranges.{key}", f"low end {lo} is above high end {hi}")
    colloc = r.collocation
    if colloc is not None and colloc.start and colloc.end and colloc.end < colloc.start:
        raise _fail(r, "collocation.end", "is before collocation.start")


def _check_record(r: CalibrationRecord) -> None:
    """Semantic checks beyond the schema; raises ``RecordError`` naming the field."""
    _check_kind(r)
    _check_validity(r)
    _check_inputs(r)
    _check_coefficients(r)
    _check_extents(r)


def _json_ready(value: Any) -> Any:
    """TOML values → JSON-schema-checkable values (datetimes as RFC 3339 strings)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # fails the "number" type with a clear message
    return value


def _path(parts: Iterable[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _schema_error(source: str, doc: Any) -> RecordError | None:
    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return None
    parts: list[str | int] = list(error.absolute_path)
    message = error.message
    inst = error.instance
    if error.validator == "required" and isinstance(inst, dict):
        missing = [k for k in error.validator_value if k not in inst]
        if missing:
            parts.append(missing[0])
            message = "is required"
            if parts == ["record"]:
                message += " (a record file holds one or more [[record]] tables)"
    elif error.validator == "additionalProperties" and isinstance(inst, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in allowed)
        if extra:
            parts.append(extra[0])
            message = f"is not a known field (known: {', '.join(sorted(allowed)) or 'none'})"
    elif error.validator == "pattern" and "offset date-time" in str(
        error.schema.get("description", "")
    ):
        message = f"{inst!r} needs a date, a time and a UTC offset, e.g. 2026-01-15T00:00:00+07:00"
    where = _path(parts) or "(file)"
    rid = ""
    if len(parts) >= 2 and parts[0] == "record" and isinstance(parts[1], int):
        records = doc.get("record") if isinstance(doc, dict) else None
        if isinstance(records, list) and parts[1] < len(records):
            rec = records[parts[1]]
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                rid = f" (id {rec['id']!r})"
    return RecordError(f"{source}: {where}{rid}: {message}")


def parse_records(doc: Mapping[str, Any], source: str = "<memory>") -> list[CalibrationRecord]:
    """Validate a parsed record document (``{"record": [...]}``) and build its records.

    Raises :class:`RecordError` naming ``source`` and the field. Does not check overlaps
    between records; :class:`Registry` does.
    """
    err = _schema_error(source, _json_ready(dict(doc)))
    if err is not None:
        raise err
    out: list[CalibrationRecord] = []
    for i, raw in enumerate(doc["record"]):
        try:
            out.append(_build(raw, source))
        except RecordError as exc:
            if exc.field is None:
                raise
            raise RecordError(
                f"{source}: record[{i}].{exc.field} (id {raw['id']!r}): {exc.detail}",
                field=f"record[{i}].{exc.field}",
                detail=exc.detail,
            ) from None
    return out


def _opt_dt(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _build(raw: Mapping[str, Any], source: str) -> CalibrationRecord:
    model = raw["model"]
    colloc_raw = raw.get("collocation")
    colloc = None
    if colloc_raw is not None:
        colloc = Collocation(
            start=_opt_dt(colloc_raw.get("start")),
            end=_opt_dt(colloc_raw.get("end")),
            n=colloc_raw.get("n"),
            averaging=colloc_raw.get("averaging"),
            r2=_opt_float(colloc_raw.get("r2")),
            rmse=_opt_float(colloc_raw.get("rmse")),
            mae=_opt_float(colloc_raw.get("mae")),
            slope=_opt_float(colloc_raw.get("slope")),
            intercept=_opt_float(colloc_raw.get("intercept")),
            n_24h=colloc_raw.get("n_24h"),
            r2_24h=_opt_float(colloc_raw.get("r2_24h")),
            rmse_24h=_opt_float(colloc_raw.get("rmse_24h")),
            slope_24h=_opt_float(colloc_raw.get("slope_24h")),
            intercept_24h=_opt_float(colloc_raw.get("intercept_24h")),
            meets_epa_targets=colloc_raw.get("meets_epa_targets"),
        )
    sensor = raw.get("sensor", {})
    ranges = {str(k): (float(v[0]), float(v[1])) for k, v in raw.get("ranges", {}).items()}
    return CalibrationRecord(
        id=raw["id"],
        device_id=raw["device_id"],
        quantity=raw["quantity"],
        unit=raw["unit"],
        input_channel=raw["input_channel"],
        extra_inputs=tuple(raw.get("extra_inputs", ())),
        form=model["form"],
        coefficients=dict(model.get("coefficients", {})),
        valid_from=raw["valid_from"],
        valid_to=raw.get("valid_to"),
        superseded_by=raw.get("superseded_by"),
        author=raw["author"],
        sensor_model=sensor.get("model"),
        sensor_serial=sensor.get("serial"),
        reference=dict(raw.get("reference", {})),
        collocation=colloc,
        ranges=ranges,
        notes=raw.get("notes"),
        source=source,
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_file(path: str | Path) -> list[CalibrationRecord]:
    """Read and check one TOML record file (no overlap check; see :class:`Registry`)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise RecordError(f"{p}: cannot read the file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecordError(f"{p}: not valid TOML: {exc}") from exc
    return parse_records(doc, str(p))


class Registry:
    """All loaded calibration records, checked for duplicate ids and overlapping validity."""

    def __init__(self, records: Iterable[CalibrationRecord]) -> None:
        self._records: list[CalibrationRecord] = []
        self._by_id: dict[str, CalibrationRecord] = {}
        self._by_key: dict[tuple[str, str], list[CalibrationRecord]] = {}
        for rec in records:
            self._add(rec)
        for recs in self._by_key.values():
            recs.sort(key=lambda r: r.valid_from)

    def _add(self, rec: CalibrationRecord) -> None:
        prior = self._by_id.get(rec.id)
        if prior is not None:
            raise RecordError(
                f"{rec.source}: record {rec.id!r}: id: duplicate of the record in {prior.source}"
            )
        key = (rec.device_id, rec.quantity)
        for other in self._by_key.get(key, []):
            if _overlaps(rec, other):
                raise RecordError(
                    f"{rec.source}: record {rec.id!r}: valid_from/valid_to: "
                    f"[{_fmt(rec.valid_from)}, {_fmt(rec.valid_to)}) overlaps record "
                    f"{other.id!r} in {other.source} [{_fmt(other.valid_from)}, "
                    f"{_fmt(other.valid_to)}) for device {rec.device_id!r} quantity "
                    f"{rec.quantity!r}; end the older record (valid_to) where the new one starts"
                )
        self._records.append(rec)
        self._by_id[rec.id] = rec
        self._by_key.setdefault(key, []).append(rec)

    @classmethod
    def load(cls, path: str | Path) -> Registry:
        """Load a TOML record file, or every ``*.toml`` directly inside a directory (sorted).

        Raises :class:`RecordError` naming the file and field for any malformed record,
        duplicate id or overlapping validity. An empty directory gives an empty registry.
        """
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.glob("*.toml") if f.is_file())
        elif p.exists():
            files = [p]
        else:
            raise RecordError(
                f"{p}: no such file or directory (give a .toml file or a folder of them)"
            )
        records: list[CalibrationRecord] = []
        for f in files:
            records.extend(load_file(f))
        return cls(records)

    def find(self, device_id: str, quantity: str, when: datetime) -> CalibrationRecord | None:
        """The record valid for ``device_id`` and ``quantity`` at ``when`` (timezone-aware).

        A record for the device itself wins over a fleet-wide ``"*"`` record. Returns
        ``None`` when neither covers ``when``.
        """
        _require_aware(when, "when")
        for dev in (device_id, "*"):
            for rec in self._by_key.get((dev, quantity), []):
                if rec.covers(when):
                    return rec
        return None

    def get(self, record_id: str) -> CalibrationRecord | None:
        """The record with this id (to re-derive a stored value from raw), or ``None``."""
        return self._by_id.get(record_id)

    def __iter__(self) -> Iterator[CalibrationRecord]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"Registry({len(self._records)} records)"


def _overlaps(a: CalibrationRecord, b: CalibrationRecord) -> bool:
    a_end_after_b_start = a.valid_to is None or a.valid_to > b.valid_from
    b_end_after_a_start = b.valid_to is None or b.valid_to > a.valid_from
    return a_end_after_b_start and b_end_after_a_start


def _fmt(when: datetime | None) -> str:
    return "open" if when is None else when.isoformat()


# --- writing ------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError(f"cannot write the non-finite number {value!r} to a record")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise RecordError(f"cannot write {type(value).__name__} values to a record")


def _toml_table(lines: list[str], header: str, table: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    subtables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    lines.append(header)
    for k, v in scalars.items():
        lines.append(f"{k} = {_toml_value(v)}")
    name = header.strip("[]")
    for k, v in subtables.items():
        lines.append("")
        _toml_table(lines, f"[{name}.{k}]", v)


def dump_records(records: Iterable[CalibrationRecord], header: str = "") -> str:
    """Serialise records as a TOML document that :func:`load_file` reads back identically."""
    lines: list[str] = [f"# {line}".rstrip() for line in header.splitlines()]
    for rec in records:
        if lines:
            lines.append("")
        d = rec.to_dict()
        scalars = {k: v for k, v in d.items() if not isinstance(v, Mapping)}
        lines.append("[[record]]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in d.items():
            if isinstance(v, Mapping):
                lines.append("")
                _toml_table(lines, f"[record.{k}]", v)
    return "\n".join(lines) + "\n"
