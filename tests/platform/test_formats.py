"""Encodings: observation -> SenML / NGSI-LD / SensorThings and back, as property tests, and
the NGSI-LD entities checked against the Smart Data Models shipped in pysmartdatamodels."""

from __future__ import annotations

import json
import string
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from city_platform import formats
from city_platform.formats import FormatError
from edge_gateway import contract

FLAGS = st.sampled_from([1, 2, 3, 4, 9])
UNITS = ["ug/m3", "Cel", "%RH", "m", "kPa", "hPa", "uT", "V", "%", "count", "/", "s", "dBm", "m/s"]
NUMBER = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
QUANTITIES = {
    "air": {"pm25": "ug/m3", "pm10": "ug/m3", "temp": "Cel", "rh": "%RH"},
    "water": {"level": "m"},
    "parking": {"occupied": "/"},
}
CHANNEL = st.from_regex(r"\A[a-z][a-z0-9_]{0,15}\Z")
CAL_ID = st.text(string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=40)


@st.composite
def observations(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(QUANTITIES)))
    quantities = draw(st.lists(st.sampled_from(sorted(QUANTITIES[kind])), min_size=1, unique=True))
    calibrated: dict[str, Any] = {}
    for q in quantities:
        if q == "occupied":
            v: Any = draw(st.one_of(st.booleans(), st.none()))
        elif q == "rh":
            v = round(draw(st.floats(0, 100)), 2)
        else:
            v = draw(st.one_of(NUMBER, st.none()))
        calibrated[q] = {"v": v, "u": QUANTITIES[kind][q], "calibration_id": draw(CAL_ID)}
        if q == "level" and draw(st.booleans()):
            calibrated[q]["datum"] = "MSL"
    raw = draw(
        st.dictionaries(
            CHANNEL,
            st.fixed_dictionaries(
                {"v": st.one_of(NUMBER, st.booleans()), "u": st.sampled_from(UNITS)}
            ),
            min_size=1,
            max_size=6,
        )
    )
    t = draw(st.floats(1.5e9, 2.5e9))
    obs = {
        "v": 1,
        "site_id": "site-" + draw(st.from_regex(r"\A[a-z0-9]{3,8}\Z")),
        "gateway_id": "gw-test-01",
        "device_id": "ce-" + draw(st.from_regex(r"\A[0-9a-f]{12}\Z")),
        "kind": kind,
        "boot": draw(st.integers(0, 2**31)),
        "seq": draw(st.integers(0, 2**40)),
        "phenomenon_time": formats._iso(t),
        "t": t,
        "clock_synced": True,
        "received_time": formats._iso(t + 1),
        "replay": False,
        "location": {"lat": draw(st.floats(-90, 90)), "lon": draw(st.floats(-180, 180))},
        "raw": raw,
        "calibrated": calibrated,
        "quality": {q: draw(FLAGS) for q in quantities},
        "quality_tests": {
            q: {"gross_range": draw(FLAGS), "spike": draw(FLAGS)} for q in quantities
        },
    }
    contract.validate("observation", obs)
    return obs


def _json(x: Any) -> Any:
    return json.loads(json.dumps(x))


@settings(max_examples=60, deadline=None)
@given(observations())
def test_senml_round_trip_keeps_everything(obs: dict[str, Any]) -> None:
    pack = _json(formats.senml_pack(obs))
    formats.check_senml(pack)
    for r in formats.resolve_senml(pack):
        assert formats.SENML_NAME.match(r["n"])
        assert r["t"] == obs["t"]
    back = formats.observation_from_senml(pack)
    for key in (
        "device_id",
        "boot",
        "seq",
        "kind",
        "site_id",
        "gateway_id",
        "t",
        "raw",
        "calibrated",
        "quality",
        "quality_tests",
        "location",
    ):
        assert back[key] == obs[key], key


@settings(max_examples=60, deadline=None)
@given(observations())
def test_ngsi_ld_round_trip_keeps_value_unit_time_flag_and_calibration_id(
    obs: dict[str, Any],
) -> None:
    entity = _json(formats.ngsi_ld_entity(obs))
    back = formats.observation_from_ngsi_ld(entity)
    assert (back["device_id"], back["boot"], back["seq"], back["kind"]) == (
        obs["device_id"],
        obs["boot"],
        obs["seq"],
        obs["kind"],
    )
    assert back["t"] == pytest.approx(obs["t"], abs=2e-6)  # ISO 8601 to the microsecond
    want = {q: c for q, c in obs["calibrated"].items() if c["v"] is not None or q == "occupied"}
    assert back["calibrated"] == want
    assert back["quality"] == {q: f for q, f in obs["quality"].items() if q in want}
    assert back["location"] == obs["location"]
    check_smart_data_model(entity)


@settings(max_examples=60, deadline=None)
@given(observations())
def test_sensorthings_round_trip(obs: dict[str, Any]) -> None:
    items = _json(formats.sensorthings_observations(obs))
    back = formats.observation_from_sensorthings(items)
    assert back["t"] == pytest.approx(obs["t"], abs=2e-6)
    for key in (
        "device_id",
        "boot",
        "seq",
        "kind",
        "raw",
        "calibrated",
        "quality",
        "quality_tests",
    ):
        assert back[key] == obs[key], key


def test_senml_rules_are_enforced() -> None:
    good = [{"bn": "ce-a1b2c3d4e5f6:", "bt": 1.8e9, "n": "pm25", "u": "ug/m3", "v": 1.0}]
    formats.check_senml(good)
    with pytest.raises(FormatError, match="4.5.1"):
        formats.check_senml([{"bn": "-bad:", "n": "x", "v": 1}])
    with pytest.raises(FormatError, match="4.5.1"):
        formats.check_senml([{"bn": "ce-1:", "n": "pm 25", "v": 1}])
    with pytest.raises(FormatError, match="more than one value"):
        formats.check_senml([{"n": "x", "v": 1, "vs": "a"}])
    with pytest.raises(FormatError, match="not in RFC 8428"):
        formats.check_senml([{"n": "x", "v": 1, "calibration_id": "a"}])
    with pytest.raises(FormatError, match="no value"):
        formats.check_senml([{"n": "x", "u": "m"}])
    # Base values and relative times resolve as RFC 8428 §4.6 says.
    resolved = formats.resolve_senml(
        [
            {"bn": "dev:", "bt": 100.0, "bu": "m", "bv": 10.0, "n": "a", "v": 1.5},
            {"n": "b", "t": 5, "v": -1.0, "u": "Cel"},
        ]
    )
    assert resolved == [
        {"n": "dev:a", "t": 100.0, "u": "m", "v": 11.5},
        {"n": "dev:b", "t": 105.0, "u": "Cel", "v": 9.0},
    ]


def test_example_observation_in_every_format() -> None:
    obs = contract.example("observation")
    pack = formats.senml_pack(obs)
    assert pack[0]["bn"] == "ce-a1b2c3d4e5f6:" and pack[0]["bt"] == obs["t"]
    names = {r["n"]: r for r in formats.resolve_senml(pack)}
    assert names["ce-a1b2c3d4e5f6:pm25"]["v"] == 11.92
    assert names["ce-a1b2c3d4e5f6:pm25/calibration_id"]["vs"] == "epa-us-2021-default"
    entity = formats.ngsi_ld_entity(obs)
    assert entity["type"] == "AirQualityObserved"
    assert entity["pm25"]["value"] == 11.92 and entity["pm25"]["unitCode"] == "GQ"
    assert entity["relativeHumidity"]["value"] == 0.5
    assert entity["airQualityIndex"]["value"] == 20
    assert entity["airQualityLevel"]["value"] == "very good"
    assert entity["reliability"]["value"] == 1.0
    check_smart_data_model(entity)
    water = dict(
        obs,
        kind="water",
        raw={"distance": {"v": 0.874, "u": "m"}},
        calibrated={"level": {"v": 1.626, "u": "m", "calibration_id": "stage-01", "datum": "MSL"}},
        quality={"level": 1},
        derived={"level_state": {"state": "normal", "warning_m": 1.8, "critical_m": 2.2}},
    )
    flood = formats.ngsi_ld_entity(water)
    # FloodMonitoring: currentLevel = referenceLevel - measuredDistance (the sensor face at 2.500 m).
    assert flood["referenceLevel"]["value"] == 2.5
    assert flood["currentLevel"]["value"] - flood["referenceLevel"]["value"] == pytest.approx(
        -0.874
    )
    assert flood["floodLevelStatus"]["value"] == "normal"
    check_smart_data_model(flood)
    parking = dict(
        obs,
        kind="parking",
        calibrated={"occupied": {"v": True, "u": "/", "calibration_id": "none"}},
        quality={"occupied": 1},
        derived={"status": "occupied"},
    )
    spot = formats.ngsi_ld_entity(parking)
    assert spot["status"]["value"] == "occupied"
    check_smart_data_model(spot)


# --- Smart Data Models, offline --------------------------------------------------------------

SUBJECT = {
    "AirQualityObserved": "dataModel.Environment",
    "FloodMonitoring": "dataModel.Environment",
    "ParkingSpot": "dataModel.Parking",
}
KV_TYPE = {"number": (int, float), "string": str, "object": dict, "array": list}


@cache
def _models() -> dict[tuple[str, str], dict[str, Any]]:
    """(model, attribute) -> the attribute's entry in the database pysmartdatamodels ships
    (JSON type, NGSI-LD type, enum), read in one pass: its per-attribute look-ups scan all
    165 000 entries on every call."""
    pytest.importorskip("pysmartdatamodels")
    from pysmartdatamodels.pysmartdatamodels import _load_attributes_db

    index: dict[tuple[str, str], dict[str, Any]] = {}
    for item in _load_attributes_db():
        etype = item.get("dataModel")
        if etype in SUBJECT and item.get("repoName") == SUBJECT[etype]:
            index[(etype, item["property"])] = item
    return index


def check_smart_data_model(entity: dict[str, Any]) -> None:
    """pysmartdatamodels' `validate_payload` downloads each model's schema.json at validation
    time, which cannot work offline. It ships the models' attribute database, though: every
    attribute must be one of the model's, with the model's NGSI-LD type (Property /
    GeoProperty / Relationship) and, in key-values form, the model's JSON type."""
    etype = entity["type"]
    models = _models()
    kv = formats._key_values(entity)
    for attr, value in entity.items():
        if attr in ("id", "type", "@context"):
            continue
        assert (etype, attr) in models, f"{etype} has no attribute {attr!r}"
        item = models[(etype, attr)]
        assert value["type"] == item["typeNGSI"], (attr, value["type"], item["typeNGSI"])
        json_type = item["type"]
        assert isinstance(kv[attr], KV_TYPE[json_type]) and not isinstance(kv[attr], bool), (
            attr,
            kv[attr],
            json_type,
        )
        if item.get("enum"):
            assert kv[attr] in item["enum"], (attr, kv[attr], item["enum"])
    assert entity["id"].startswith(f"urn:ngsi-ld:{etype}:")
