"""What the contract promises beyond plain jsonschema: RFC 3339 date-times are checked in every
date-time field, id patterns end at the end of the string (no trailing newline), and the schemas
compile in ajv's strict mode and give ajv's verdicts (checked with the real ajv when node and
npm are on the machine)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge_gateway import contract

BAD_DATE_TIMES = [
    "yesterday",
    "2026-13-01T00:00:00Z",  # month 13
    "2026-02-30T00:00:00Z",  # 30 February
    "2026-11-22T24:00:00Z",
    "2026-11-22T03:60:00Z",
    "2026-11-22T03:20:00",  # no offset: a local time of unknown zone
    "2026-11-22 03:20:00Z ",
    "2026-11-22",
    "1795320000",
    "2026-11-22T03:20:00+25:00",
]
GOOD_DATE_TIMES = [
    "2026-11-22T03:20:00Z",
    "2026-11-22T03:20:00.204Z",
    "2026-11-22T10:20:00+07:00",
    "2028-02-29T00:00:00Z",
    "2016-12-31T23:59:60Z",  # a leap second
]


def _top_level(name: str, rule: str) -> list[str]:
    props = contract.schema(name)["properties"]
    return [k for k, v in props.items() if rule in v]


DATE_FIELDS = [
    (n, f)
    for n in contract.SCHEMA_NAMES
    for f in _top_level(n, "format")
    if contract.schema(n)["properties"][f]["format"] == "date-time"
]
ID_FIELDS = [
    (n, f)
    for n in contract.SCHEMA_NAMES
    for f in _top_level(n, "pattern")
    if isinstance(contract.example(n).get(f), str)
]


def test_the_six_date_time_fields_are_all_found() -> None:
    assert {
        ("alert", "t"),
        ("deadletter", "t"),
        ("device_status", "last_seen"),
        ("gateway_health", "t"),
        ("observation", "phenomenon_time"),
        ("observation", "received_time"),
    } <= set(DATE_FIELDS)


@pytest.mark.parametrize(("name", "field"), DATE_FIELDS)
def test_bad_date_times_are_rejected_in_every_date_time_field(name: str, field: str) -> None:
    for bad in BAD_DATE_TIMES:
        body = copy.deepcopy(contract.example(name))
        body[field] = bad
        with pytest.raises(contract.ContractError, match=field):
            contract.validate(name, body)
    for good in GOOD_DATE_TIMES:
        body = copy.deepcopy(contract.example(name))
        body[field] = good
        contract.validate(name, body)


@pytest.mark.parametrize(("name", "field"), ID_FIELDS)
def test_ids_with_a_trailing_newline_are_rejected(name: str, field: str) -> None:
    body = copy.deepcopy(contract.example(name))
    body[field] += "\n"
    with pytest.raises(contract.ContractError, match=field):
        contract.validate(name, body)


def test_channel_names_with_a_trailing_newline_are_rejected() -> None:
    body = copy.deepcopy(contract.example("reading"))
    body["raw"]["pm25_cf1\n"] = body["raw"].pop("pm25_cf1")
    with pytest.raises(contract.ContractError):
        contract.validate("reading", body)


def test_ecma_pattern_translates_only_the_end_anchor() -> None:
    p = contract.ecma_pattern(r"^[a-z$]+\$x$")
    assert p.pattern == r"^[a-z$]+\$x\Z"
    assert p.search("ab$$x") and not p.search("ab$x\n")
    assert contract.ecma_pattern(r"^a(b|$)").search("a") is not None
    assert contract.ecma_pattern(r"^a(b|$)").search("a\n") is None


# --- the real ajv ------------------------------------------------------------------------------

AJV_SCRIPT = r"""
const Ajv2020 = require("ajv/dist/2020");
const addFormats = require("ajv-formats");
const fs = require("fs");
const path = require("path");
const [dir, casesFile] = process.argv.slice(2);
// strict: true turns on every strict rule (strictTypes and strictTuples too, which the default
// only logs); no allowUnionTypes, no other option.
const ajv = new Ajv2020({strict: true, allErrors: false});
addFormats(ajv);
const validators = {};
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".schema.json"))) {
  const schema = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
  validators[f.replace(".schema.json", "")] = ajv.compile(schema);
}
const cases = JSON.parse(fs.readFileSync(casesFile, "utf8"));
console.log(JSON.stringify(cases.map(([name, body]) => validators[name](body))));
"""


@pytest.fixture(scope="session")
def ajv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ajv 8 and ajv-formats 3 installed by npm into a temporary directory."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not installed: the ajv cross-check needs them (Debian: nodejs npm)")
    where = tmp_path_factory.mktemp("ajv")
    out = subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "--prefix",
            str(where),
            "ajv@8",
            "ajv-formats@3",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if out.returncode != 0:
        pytest.skip(f"npm could not install ajv (offline registry?): {out.stderr.strip()[-300:]}")
    return where


def test_ajv_strict_mode_compiles_every_schema_and_agrees_on_the_verdicts(
    ajv_dir: Path, tmp_path: Path
) -> None:
    cases: list[tuple[str, Any]] = [(n, contract.example(n)) for n in contract.SCHEMA_NAMES]
    for name, field in DATE_FIELDS:
        for value in BAD_DATE_TIMES + GOOD_DATE_TIMES:
            body = copy.deepcopy(contract.example(name))
            body[field] = value
            cases.append((name, body))
    for name, field in ID_FIELDS:
        body = copy.deepcopy(contract.example(name))
        body[field] += "\n"
        cases.append((name, body))
    for v in (12.5, True, "12", None):
        body = copy.deepcopy(contract.example("reading"))
        body["raw"]["pm25_cf1"]["v"] = v
        cases.append(("reading", body))
    expected = []
    for name, body in cases:
        try:
            contract.validate(name, body)
            expected.append(True)
        except contract.ContractError:
            expected.append(False)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = ajv_dir / "check.js"
    script.write_text(AJV_SCRIPT)
    schemas = Path(contract.__file__).parent
    out = subprocess.run(
        ["node", str(script), str(schemas), str(tmp_path / "cases.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"NODE_PATH": str(ajv_dir / "node_modules"), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]  # strict mode refuses a schema by throwing
    verdicts = json.loads(out.stdout)
    assert all(verdicts[: len(contract.SCHEMA_NAMES)]), "ajv rejects a shipped example"
    disagree = [
        (c[0], json.dumps(c[1])[:200], e)
        for c, v, e in zip(cases, verdicts, expected, strict=True)
        if v != e
    ]
    assert not disagree, disagree
    assert expected.count(False) > len(BAD_DATE_TIMES)  # the bad cases were there and refused


def test_example_times_agree() -> None:
    """The example observation was sampled when it says (t and phenomenon_time are one time),
    received a moment later, from the example reading."""
    from datetime import datetime

    obs, reading = contract.example("observation"), contract.example("reading")
    sampled = datetime.fromisoformat(obs["phenomenon_time"]).timestamp()
    assert obs["t"] == sampled == reading["t"]
    assert 0 <= datetime.fromisoformat(obs["received_time"]).timestamp() - sampled < 60
