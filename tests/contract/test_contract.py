"""The published contract: schemas, examples and the AsyncAPI document agree with each other and
with the topic helpers the code uses."""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_gateway import contract

NAMES = contract.SCHEMA_NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_example_validates(name: str) -> None:
    contract.validate(name, contract.example(name))


@pytest.mark.parametrize("name", NAMES)
def test_missing_required_field_is_rejected_and_named(name: str) -> None:
    required = contract.schema(name)["required"]
    for field in required:
        broken = contract.example(name)
        del broken[field]
        with pytest.raises(contract.ContractError, match=field):
            contract.validate(name, broken)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_version_is_rejected(name: str) -> None:
    broken = contract.example(name)
    broken["v"] = 2
    with pytest.raises(contract.ContractError, match="v"):
        contract.validate(name, broken)


def test_reading_rejects_bad_values() -> None:
    good = contract.example("reading")
    cases: list[tuple[str, Any]] = [
        ("seq", -1),
        ("seq", "12"),
        ("boot", 1.5),
        ("kind", "noise"),
        ("device_id", "Has Spaces"),
        ("t", "2026-11-22T00:00:00Z"),
        ("synced", "yes"),
        ("raw", {}),
    ]
    for field, value in cases:
        broken = copy.deepcopy(good)
        broken[field] = value
        with pytest.raises(contract.ContractError):
            contract.validate("reading", broken)
    broken = copy.deepcopy(good)
    broken["raw"]["pm25_cf1"] = {"v": 12.0, "u": "furlongs"}
    with pytest.raises(contract.ContractError, match="raw/pm25_cf1/u"):
        contract.validate("reading", broken)
    broken = copy.deepcopy(good)
    broken["raw"]["pm25_cf1"] = {"v": "12"}
    with pytest.raises(contract.ContractError):
        contract.validate("reading", broken)
    broken = copy.deepcopy(good)
    broken["surprise"] = 1
    with pytest.raises(contract.ContractError, match="surprise"):
        contract.validate("reading", broken)


def test_observation_requires_calibration_id_for_every_calibrated_value() -> None:
    broken = contract.example("observation")
    del broken["calibrated"]["pm25"]["calibration_id"]
    with pytest.raises(contract.ContractError, match="calibration_id"):
        contract.validate("observation", broken)
    broken = contract.example("observation")
    broken["quality"]["pm25"] = 5
    with pytest.raises(contract.ContractError):
        contract.validate("observation", broken)


def test_decode_rejects_non_json_and_non_objects() -> None:
    with pytest.raises(contract.ContractError, match="not JSON"):
        contract.decode("reading", b"\xff\xfe garbage")
    with pytest.raises(contract.ContractError, match="object"):
        contract.decode("reading", b"[1, 2, 3]")
    good = json.dumps(contract.example("reading")).encode()
    assert contract.decode("reading", good)["seq"] == 1234


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decode_of_random_bytes_raises_only_contract_error(data: bytes) -> None:
    try:
        contract.decode("reading", data)
    except contract.ContractError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_values_raise_only_contract_error(value: Any) -> None:
    for name in ("reading", "node_status", "command"):
        try:
            contract.validate(name, value)
        except contract.ContractError:
            pass


def test_every_schema_file_has_its_id_and_draft() -> None:
    for name in NAMES:
        s = contract.schema(name)
        assert s["$schema"].endswith("2020-12/schema")
        assert s["$id"].endswith(f"/v1/{name}.schema.json")


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_asyncapi_document_is_consistent() -> None:
    doc = contract.asyncapi()
    assert doc["asyncapi"].startswith("3.")
    assert doc["info"]["version"].startswith("1.")
    files = {p.name for p in resources.files(contract.__name__).iterdir()}
    payload_names = set()
    for channel_id, channel in doc["channels"].items():
        params = set(re.findall(r"{(\w+)}", channel["address"]))
        assert params == set(channel.get("parameters", {})), channel_id
        for server in channel["servers"]:
            _resolve(doc, server["$ref"])
        for message in channel["messages"].values():
            resolved = _resolve(doc, message["$ref"])
            ref = resolved["payload"]["$ref"]
            assert ref.lstrip("./") in files, ref
            payload_names.add(ref.lstrip("./").removesuffix(".schema.json"))
    assert payload_names == set(NAMES)
    for op_id, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), op_id
        _resolve(doc, op["channel"]["$ref"])


def test_topic_helpers_match_the_asyncapi_addresses() -> None:
    doc = contract.asyncapi()
    addresses = {c["address"] for c in doc["channels"].values()}
    made = {
        contract.node_topic("{device_id}", leaf)
        for leaf in ("reading", "status", "state", "cmd", "ack", "custody")
    } | {
        contract.deadletter_topic("{gateway_id}"),
        contract.observation_topic("{site_id}", "{kind}", "{device_id}"),
        contract.device_status_topic("{site_id}", "{device_id}"),
        contract.gateway_health_topic("{site_id}", "{gateway_id}"),
        contract.alert_topic("{site_id}", "{device_id}"),
    }
    assert made == addresses


def test_parse_node_topic() -> None:
    assert contract.parse_node_topic("cityedge/v1/node/ce-a1b2c3d4e5f6/reading") == (
        "ce-a1b2c3d4e5f6",
        "reading",
    )
    assert contract.parse_node_topic("cityedge/v2/node/x/reading") is None
    assert contract.parse_node_topic("cityedge/v1/node/x/reading/extra") is None
