"""Standard encodings of a CityEdge observation, and back where the format allows.

- SenML (RFC 8428) packs: one base record (``bn`` = ``"<device_id>:"``, ``bt`` = sample time),
  then one record per value. Names resolve (``bn`` + ``n``) to RFC 8428 §4.5.1 names.
- FIWARE NGSI-LD entities (normalized form, or key-values): ``AirQualityObserved``,
  ``FloodMonitoring`` (level = reference level − measured distance) and ``ParkingSpot``.
- OGC SensorThings API 1.1 Observations, one per Datastream (a calibrated quantity or a raw
  channel of a Thing, the device).

The calibration record id and the QARTOD flag of every calibrated value travel in each format.
The mapping is documented in docs/integrators.md ("Formats"). Pure functions, no I/O; the
contract's observation dict in, plain JSON-ready dicts out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from calibration.qc import Flag

__all__ = [
    "FormatError",
    "check_senml",
    "ngsi_ld_entity",
    "observation_from_ngsi_ld",
    "observation_from_senml",
    "observation_from_sensorthings",
    "resolve_senml",
    "senml_pack",
    "sensorthings_observations",
]


class FormatError(ValueError):
    """A payload that breaks the format's rules; the message names the record or attribute."""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _epoch(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise FormatError(f"{text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise FormatError(f"{text!r} has no UTC offset")
    return when.timestamp()


# --- SenML (RFC 8428) -------------------------------------------------------------------------

# §4.5.1: the resolved name uses only these characters and starts with a letter or digit.
SENML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:./_-]*$")
_BASE_FIELDS = {"bn", "bt", "bu", "bv", "bs", "bver"}
_REGULAR_FIELDS = {"n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}
_VALUE_FIELDS = ("v", "vs", "vb", "vd")
SENML_VERSION = 10


def senml_pack(obs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The observation as a SenML pack (JSON representation, RFC 8428 §5).

    Names: ``meta/boot``, ``meta/seq``, ``meta/kind``, ``meta/site``, ``meta/gateway``;
    ``lat``/``lon``/``elev``; ``raw/<channel>`` for each raw value; ``<quantity>`` for each
    calibrated value with ``<quantity>/calibration_id`` (``vs``), ``<quantity>/datum`` and
    ``<quantity>/qc`` (the QARTOD flag) and ``<quantity>/qc/<test>``. A calibrated value that
    is null is ``<quantity>/missing`` (``vb`` true) with its unit.
    """
    device = str(obs["device_id"])
    records: list[dict[str, Any]] = [
        {"bn": f"{device}:", "bt": obs["t"], "n": "meta/boot", "v": obs["boot"]},
        {"n": "meta/seq", "v": obs["seq"]},
        {"n": "meta/kind", "vs": obs["kind"]},
    ]
    if "site_id" in obs:
        records.append({"n": "meta/site", "vs": obs["site_id"]})
    if "gateway_id" in obs:
        records.append({"n": "meta/gateway", "vs": obs["gateway_id"]})
    loc = obs.get("location") or {}
    if "lat" in loc:
        records += [
            {"n": "lat", "u": "lat", "v": loc["lat"]},
            {"n": "lon", "u": "lon", "v": loc["lon"]},
        ]
        if loc.get("elev_m") is not None:
            records.append({"n": "elev", "u": "m", "v": loc["elev_m"]})
    for channel, value in obs.get("raw", {}).items():
        records.append(_senml_value(f"raw/{channel}", value["v"], value["u"]))
    for quantity, c in obs.get("calibrated", {}).items():
        if c["v"] is None:
            records.append({"n": f"{quantity}/missing", "u": c["u"], "vb": True})
        else:
            records.append(_senml_value(quantity, c["v"], c["u"]))
        records.append({"n": f"{quantity}/calibration_id", "vs": c["calibration_id"]})
        if "datum" in c:
            records.append({"n": f"{quantity}/datum", "vs": c["datum"]})
    for quantity, flag in obs.get("quality", {}).items():
        records.append({"n": f"{quantity}/qc", "v": flag})
    for quantity, tests in (obs.get("quality_tests") or {}).items():
        for test, flag in tests.items():
            records.append({"n": f"{quantity}/qc/{test}", "v": flag})
    thai = (obs.get("derived") or {}).get("thai_aqi") or {}
    if isinstance(thai.get("value"), int):
        records.append({"n": "thai_aqi", "v": thai["value"]})
    check_senml(records)
    return records


def _senml_value(name: str, v: Any, unit: str) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"n": name, "u": unit, "vb": v}
    return {"n": name, "u": unit, "v": v}


def check_senml(pack: Sequence[Mapping[str, Any]]) -> None:
    """Raise FormatError unless ``pack`` follows RFC 8428's record, base and name rules."""
    if not isinstance(pack, Sequence) or not pack:
        raise FormatError("a SenML pack is a non-empty JSON array of records")
    for i, rec in enumerate(pack):
        if not isinstance(rec, Mapping):
            raise FormatError(f"record {i} is not an object")
        unknown = set(rec) - _BASE_FIELDS - _REGULAR_FIELDS
        if unknown:
            # §4.4: unknown fields (must-understand ones end in "_") make the pack invalid here.
            raise FormatError(f"record {i}: fields not in RFC 8428: {', '.join(sorted(unknown))}")
        values = [f for f in _VALUE_FIELDS if f in rec]
        if len(values) > 1:
            raise FormatError(f"record {i}: more than one value field ({', '.join(values)})")
        if not values and "s" not in rec and not (set(rec) <= _BASE_FIELDS):
            raise FormatError(f"record {i}: no value (v, vs, vb, vd) and no sum (s)")
        if "bver" in rec and (not isinstance(rec["bver"], int) or rec["bver"] > SENML_VERSION):
            raise FormatError(f"record {i}: unsupported bver {rec['bver']!r}")
        for f, kind in (
            ("v", (int, float)),
            ("vs", str),
            ("vb", bool),
            ("vd", str),
            ("n", str),
            ("bn", str),
            ("u", str),
            ("bu", str),
        ):
            if f in rec and (
                not isinstance(rec[f], kind) or (f == "v" and isinstance(rec[f], bool))
            ):
                raise FormatError(f"record {i}: {f} has the wrong type")
    for rec in resolve_senml(pack, check=False):
        if not SENML_NAME.match(rec["n"]):
            raise FormatError(f"resolved name {rec['n']!r} breaks RFC 8428 §4.5.1")


def resolve_senml(pack: Sequence[Mapping[str, Any]], *, check: bool = True) -> list[dict[str, Any]]:
    """RFC 8428 §4.6 resolved records: base name, time, unit, value and sum applied, each
    record with its absolute ``n``, ``t`` and (when any) ``u``; base-only records dropped."""
    if check:
        check_senml(pack)
    bn, bt, bu, bv, bs = "", 0.0, None, 0.0, 0.0
    out: list[dict[str, Any]] = []
    for rec in pack:
        bn = rec.get("bn", bn)
        bt = rec.get("bt", bt)
        bu = rec.get("bu", bu)
        bv = rec.get("bv", bv)
        bs = rec.get("bs", bs)
        if not (set(rec) - _BASE_FIELDS):
            continue
        r: dict[str, Any] = {"n": bn + rec.get("n", ""), "t": bt + rec.get("t", 0)}
        unit = rec.get("u", bu)
        if unit is not None:
            r["u"] = unit
        if "v" in rec:
            r["v"] = bv + rec["v"] if bv else rec["v"]
        for f in ("vs", "vb", "vd"):
            if f in rec:
                r[f] = rec[f]
        if "s" in rec:
            r["s"] = bs + rec["s"]
        out.append(r)
    return out


def observation_from_senml(pack: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The observation's identity, time, location, raw, calibrated and quality from a pack
    made by :func:`senml_pack` (other names are ignored)."""
    records = resolve_senml(pack)
    first = records[0]["n"]
    device = first.split(":", 1)[0]
    prefix = f"{device}:"
    obs: dict[str, Any] = {
        "device_id": device,
        "t": records[0]["t"],
        "raw": {},
        "calibrated": {},
        "quality": {},
        "quality_tests": {},
        "location": {},
    }
    ids: dict[str, str] = {}
    datums: dict[str, str] = {}
    for r in records:
        if not r["n"].startswith(prefix):
            continue
        name = r["n"][len(prefix) :]
        value: Any = r.get("v", r.get("vb", r.get("vs")))
        parts = name.split("/")
        if parts[0] == "meta":
            key = {
                "boot": "boot",
                "seq": "seq",
                "kind": "kind",
                "site": "site_id",
                "gateway": "gateway_id",
            }.get(parts[1])
            if key:
                obs[key] = int(value) if key in ("boot", "seq") else value
        elif name in ("lat", "lon"):
            obs["location"][name] = value
        elif name == "elev":
            obs["location"]["elev_m"] = value
        elif parts[0] == "raw" and len(parts) == 2:
            obs["raw"][parts[1]] = {"v": value, "u": r.get("u")}
        elif len(parts) == 1 and name != "thai_aqi":
            obs["calibrated"][name] = {"v": value, "u": r.get("u")}
        elif parts[1:] == ["missing"]:
            obs["calibrated"][parts[0]] = {"v": None, "u": r.get("u")}
        elif parts[1:] == ["calibration_id"]:
            ids[parts[0]] = str(value)
        elif parts[1:] == ["datum"]:
            datums[parts[0]] = str(value)
        elif parts[1:] == ["qc"]:
            obs["quality"][parts[0]] = int(value)
        elif len(parts) == 3 and parts[1] == "qc":
            obs["quality_tests"].setdefault(parts[0], {})[parts[2]] = int(value)
    for quantity, entry in obs["calibrated"].items():
        if quantity not in ids:
            raise FormatError(f"{quantity}: no {quantity}/calibration_id record")
        entry["calibration_id"] = ids[quantity]
        if quantity in datums:
            entry["datum"] = datums[quantity]
    return obs


# --- FIWARE NGSI-LD (Smart Data Models) -------------------------------------------------------

NGSI_LD_CONTEXT = [
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
]
ENTITY_TYPE = {"air": "AirQualityObserved", "water": "FloodMonitoring", "parking": "ParkingSpot"}
TIME_ATTRIBUTE = {"air": "dateObserved", "water": "observationDateTime", "parking": "timeInstant"}
# CityEdge quantity -> Smart Data Model attribute.
ATTRIBUTE = {
    "pm25": "pm25",
    "pm10": "pm10",
    "pm1": "pm1",
    "temp": "temperature",
    "rh": "relativeHumidity",
    "level": "currentLevel",
    "occupied": "status",
}
QUANTITY = {v: k for k, v in ATTRIBUTE.items()}
# SenML unit -> UN/CEFACT common code (NGSI-LD unitCode).
UNIT_CODE = {
    "ug/m3": "GQ",
    "Cel": "CEL",
    "m": "MTR",
    "kPa": "KPA",
    "hPa": "A97",
    "V": "VLT",
    "%": "P1",
    "/": "C62",
    "uT": "D33",
    "s": "SEC",
    "m/s": "MTS",
    "dBm": "2Q",
}
UNIT_FROM_CODE = {v: k for k, v in UNIT_CODE.items()}
# QARTOD flag -> Smart Data Models `reliability` (0..1): the contract maps flag 1 to 1.0.
RELIABILITY: dict[int, float] = {
    Flag.GOOD: 1.0,
    Flag.UNKNOWN: 0.5,
    Flag.SUSPECT: 0.3,
    Flag.FAIL: 0.0,
    Flag.MISSING: 0.0,
}


def _prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


def ngsi_ld_entity(obs: Mapping[str, Any], *, key_values: bool = False) -> dict[str, Any]:
    """The observation as one NGSI-LD entity of the kind's Smart Data Model.

    The entity id names the reading (``urn:ngsi-ld:<Type>:<device_id>:<boot>:<seq>``); each
    calibrated attribute carries ``unitCode``, ``observedAt`` and the sub-properties
    ``calibrationId``, ``qualityFlag`` (QARTOD) and, for levels, ``datum``. ``key_values=True``
    gives the simplified form (no sub-properties) that Smart Data Models' schemas describe.
    """
    kind = str(obs["kind"])
    etype = ENTITY_TYPE[kind]
    when = _iso(float(obs["t"]))
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:{etype}:{obs['device_id']}:{obs['boot']}:{obs['seq']}",
        "type": etype,
        TIME_ATTRIBUTE[kind]: _prop(when),
    }
    loc = obs.get("location") or {}
    if "lat" in loc:
        coords = [loc["lon"], loc["lat"]] + (
            [loc["elev_m"]] if loc.get("elev_m") is not None else []
        )
        entity["location"] = {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": coords},
        }
    if "site_id" in obs:
        entity["areaServed"] = _prop(obs["site_id"])
    if "gateway_id" in obs:
        entity["dataProvider"] = _prop(obs["gateway_id"])
    quality: Mapping[str, int] = obs.get("quality", {})
    for quantity, c in obs.get("calibrated", {}).items():
        p = _attribute(quantity, c, when, quality)
        if p is not None:
            entity[ATTRIBUTE.get(quantity, quantity)] = p
    if quality and kind == "air":  # only AirQualityObserved has `reliability`
        entity["reliability"] = _prop(min(RELIABILITY[f] for f in quality.values()))
    derived = obs.get("derived") or {}
    if kind == "air":
        _air_extra(entity, derived)
    elif kind == "water":
        _water_extra(entity, obs, derived)
    device_urn = f"urn:ngsi-ld:Device:{obs['device_id']}"
    if kind == "air":
        entity["refDevice"] = {"type": "Relationship", "object": device_urn}
    elif kind == "parking":  # ParkingSpot's refDevice is a list
        entity["refDevice"] = {"type": "Relationship", "object": [device_urn]}
    else:
        entity["stationID"] = _prop(obs["device_id"])
    entity["@context"] = NGSI_LD_CONTEXT
    return _key_values(entity) if key_values else entity


def _attribute(
    quantity: str, c: Mapping[str, Any], when: str, quality: Mapping[str, int]
) -> dict[str, Any] | None:
    """One calibrated quantity as an NGSI-LD property (None: no value to give)."""
    value, unit = c["v"], c["u"]
    if quantity == "rh" and isinstance(value, (int, float)):
        value, unit = value / 100.0, "/"  # the model's relativeHumidity is a 0..1 fraction
    if quantity == "occupied":
        value = "unknown" if value is None else "occupied" if value else "free"
    elif value is None:
        return None  # NGSI-LD has no null value (null deletes an attribute)
    p = _prop(value, observedAt=when)
    if unit in UNIT_CODE and quantity != "occupied":
        p["unitCode"] = UNIT_CODE[unit]
    p["calibrationId"] = _prop(c["calibration_id"])
    if quantity in quality:
        p["qualityFlag"] = _prop(quality[quantity])
    if "datum" in c:
        p["datum"] = _prop(c["datum"])
    return p


def _air_extra(entity: dict[str, Any], derived: Mapping[str, Any]) -> None:
    thai = derived.get("thai_aqi") or {}
    if isinstance(thai.get("value"), int):
        from calibration.aqi import thai_band

        entity["airQualityIndex"] = _prop(thai["value"])
        entity["airQualityLevel"] = _prop(thai_band(thai["value"]).name_en.lower())


def _water_extra(
    entity: dict[str, Any], obs: Mapping[str, Any], derived: Mapping[str, Any]
) -> None:
    distance = (obs.get("raw") or {}).get("distance", {}).get("v")
    level = (obs.get("calibrated") or {}).get("level", {}).get("v")
    if isinstance(distance, (int, float)) and not isinstance(distance, bool):
        entity["measuredDistance"] = _prop(distance, unitCode="MTR")
        if isinstance(level, (int, float)) and not isinstance(level, bool):
            # FloodMonitoring: currentLevel = referenceLevel − measuredDistance.
            entity["referenceLevel"] = _prop(round(level + distance, 4), unitCode="MTR")
    state = derived.get("level_state") or {}
    if state.get("warning_m") is not None:
        entity["alertLevel"] = _prop(state["warning_m"], unitCode="MTR")
    if state.get("critical_m") is not None:
        entity["dangerLevel"] = _prop(state["critical_m"], unitCode="MTR")
    if state.get("state"):
        entity["floodLevelStatus"] = _prop(state["state"])


def _key_values(entity: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in entity.items():
        if isinstance(v, Mapping) and v.get("type") in ("Property", "GeoProperty"):
            out[k] = v["value"]
        elif isinstance(v, Mapping) and v.get("type") == "Relationship":
            out[k] = v["object"]
        else:
            out[k] = v
    return out


def observation_from_ngsi_ld(entity: Mapping[str, Any]) -> dict[str, Any]:
    """Identity, time, location, calibrated values (with their record ids) and QC flags from a
    normalized entity made by :func:`ngsi_ld_entity`."""
    try:
        _, _, etype, device, boot, seq = str(entity["id"]).split(":")
        kind = {v: k for k, v in ENTITY_TYPE.items()}[etype]
    except (KeyError, ValueError):
        raise FormatError(f"entity id {entity.get('id')!r} is not a CityEdge reading id") from None
    obs: dict[str, Any] = {
        "device_id": device,
        "boot": int(boot),
        "seq": int(seq),
        "kind": kind,
        "t": _epoch(entity[TIME_ATTRIBUTE[kind]]["value"]),
        "calibrated": {},
        "quality": {},
    }
    if "location" in entity:
        coords = entity["location"]["value"]["coordinates"]
        obs["location"] = {"lat": coords[1], "lon": coords[0]}
        if len(coords) > 2:
            obs["location"]["elev_m"] = coords[2]
    if "areaServed" in entity:
        obs["site_id"] = entity["areaServed"]["value"]
    if "dataProvider" in entity:
        obs["gateway_id"] = entity["dataProvider"]["value"]
    for attr, p in entity.items():
        if not isinstance(p, Mapping) or "calibrationId" not in p:
            continue
        quantity = QUANTITY.get(attr, attr)
        value = p["value"]
        unit = UNIT_FROM_CODE.get(p.get("unitCode", ""), None)
        if quantity == "rh" and isinstance(value, (int, float)):
            value, unit = round(value * 100.0, 10), "%RH"
        if quantity == "occupied":
            value, unit = {"occupied": True, "free": False}.get(value), "/"
        entry: dict[str, Any] = {
            "v": value,
            "u": unit,
            "calibration_id": p["calibrationId"]["value"],
        }
        if "datum" in p:
            entry["datum"] = p["datum"]["value"]
        obs["calibrated"][quantity] = entry
        if "qualityFlag" in p:
            obs["quality"][quantity] = p["qualityFlag"]["value"]
    return obs


# --- OGC SensorThings API 1.1 -----------------------------------------------------------------


def datastream_id(device_id: str, name: str) -> str:
    """A Datastream per calibrated quantity (``<device>:pm25``) or raw channel (``<device>:raw:pm25_cf1``)."""
    return f"{device_id}:{name}"


def sensorthings_observations(obs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One SensorThings Observation per calibrated quantity and per raw channel.

    ``resultQuality`` holds the QARTOD flag and tests; ``parameters`` the reading's identity
    (device_id, boot, seq, kind, site_id) and, for calibrated values, ``calibration_id``.
    """
    device = str(obs["device_id"])
    when = _iso(float(obs["t"]))
    received = obs.get("received_time")
    ident = {"device_id": device, "boot": obs["boot"], "seq": obs["seq"], "kind": obs["kind"]}
    if "site_id" in obs:
        ident["site_id"] = obs["site_id"]
    out: list[dict[str, Any]] = []
    quality = obs.get("quality", {})
    tests = obs.get("quality_tests") or {}
    for quantity, c in obs.get("calibrated", {}).items():
        o: dict[str, Any] = {
            "phenomenonTime": when,
            "result": c["v"],
            "parameters": {**ident, "calibration_id": c["calibration_id"], "unit": c["u"]},
            "Datastream": {"@iot.id": datastream_id(device, quantity)},
        }
        if "datum" in c:
            o["parameters"]["datum"] = c["datum"]
        if received:
            o["resultTime"] = received
        if quantity in quality:
            o["resultQuality"] = {"qartod": quality[quantity], "tests": tests.get(quantity, {})}
        out.append(o)
    for channel, r in obs.get("raw", {}).items():
        o = {
            "phenomenonTime": when,
            "result": r["v"],
            "parameters": {**ident, "unit": r["u"]},
            "Datastream": {"@iot.id": datastream_id(device, f"raw:{channel}")},
        }
        if received:
            o["resultTime"] = received
        out.append(o)
    return out


def observation_from_sensorthings(observations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Re-assemble the observation from the Observations :func:`sensorthings_observations` made."""
    if not observations:
        raise FormatError("no SensorThings Observations given")
    p0 = observations[0]["parameters"]
    obs: dict[str, Any] = {
        "device_id": p0["device_id"],
        "boot": p0["boot"],
        "seq": p0["seq"],
        "kind": p0["kind"],
        "t": _epoch(observations[0]["phenomenonTime"]),
        "raw": {},
        "calibrated": {},
        "quality": {},
        "quality_tests": {},
    }
    if "site_id" in p0:
        obs["site_id"] = p0["site_id"]
    for o in observations:
        name = str(o["Datastream"]["@iot.id"]).split(":", 1)[1]
        params = o["parameters"]
        if name.startswith("raw:"):
            obs["raw"][name[4:]] = {"v": o["result"], "u": params["unit"]}
            continue
        entry = {"v": o["result"], "u": params["unit"], "calibration_id": params["calibration_id"]}
        if "datum" in params:
            entry["datum"] = params["datum"]
        obs["calibrated"][name] = entry
        if "resultQuality" in o:
            obs["quality"][name] = o["resultQuality"]["qartod"]
            if o["resultQuality"]["tests"]:
                obs["quality_tests"][name] = o["resultQuality"]["tests"]
    return obs
