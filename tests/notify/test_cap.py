"""CAP 1.2: the water notifications' XML validates against the OASIS CAP 1.2 schema."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import xmlschema

from edge_gateway.notify.dispatcher import Dispatcher
from tests.notify.conftest import settings_of
from tests.notify.test_rules import T0, _drain, _feed, _noise, _processor
from tests.support.fake_services import FakeLine, WebhookReceiver

XSD = Path(__file__).parent / "data" / "CAP-v1.2.xsd"


def test_cap_of_a_water_incident_validates_against_the_oasis_schema(
    tmp_path: Path, alerts_config: Any, line: FakeLine, hook: WebhookReceiver
) -> None:
    schema = xmlschema.XMLSchema(str(XSD))
    proc = _processor(tmp_path)
    d = Dispatcher(settings_of(alerts_config(routes='[[routes]]\nchannels = ["hook"]\n')))
    # warning, then critical, then back to normal: Alert, Update, Cancel.
    levels = [(T0 + 60 * i, 1.5 + 0.1 * i + _noise(i)) for i in range(20)]
    levels += [(T0 + 1200 + 60 * i, 1.0 + _noise(i)) for i in range(12)]
    _feed(d, proc, levels, batch=1)
    asyncio.run(_drain(d, line, 0))
    caps = [m["cap"] for m in hook.received if m["family"] == "water_level"]
    assert len(caps) == 3  # (the 6 m/h rise is its own incident, with its own CAP messages)
    decoded = []
    for xml in caps:
        schema.validate(xml)  # raises with the offending element on any violation
        decoded.append(schema.to_dict(xml))
    assert [c["msgType"] for c in decoded] == ["Alert", "Update", "Cancel"]
    first = decoded[0]
    assert decoded[2]["references"] == f"{first['sender']},{first['identifier']},{first['sent']}"
    assert first["sent"].endswith("+07:00")
    info = {i["language"]: i for i in first["info"]}
    assert set(info) == {"th-TH", "en-US"}
    assert info["en-US"]["severity"] == "Moderate" and decoded[1]["info"][0]["severity"] == "Severe"
    assert decoded[2]["info"][0]["urgency"] == "Past"
    params = {p["valueName"]: float(p["value"]) for p in info["en-US"]["parameter"]}
    assert params["threshold_m"] == 2.0 and params["water_level_m"] >= 2.0
    assert not math.isnan(params["water_level_m"])
    area = info["th-TH"]["area"][0]
    assert area["circle"] == ["13.82370,100.61050 1.0"] and "Khlong Lat Phrao" in area["areaDesc"]
    d.close()
