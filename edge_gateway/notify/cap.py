"""OASIS Common Alerting Protocol 1.2 XML for water incidents, for national dissemination
systems (http://docs.oasis-open.org/emergency/cap/v1.2/CAP-v1.2-os.html).

One ``<alert>`` per notification: ``msgType`` Alert when an incident is raised, Update when its
tier goes up, Cancel when it clears (each later message ``references`` the first). Two
``<info>`` blocks, Thai (``th-TH``) and English (``en-US``). Mapping (CAP §3.2.2):

| tier | urgency | severity |
|---|---|---|
| watch | Future | Minor |
| warning | Expected | Moderate |
| critical (danger) | Immediate | Severe |
| cleared | Past | Minor |

``certainty`` is Observed (a measured level); the area is a 1 km circle around the gauge
(``lat,lon radius-km``, WGS 84) with the place name as ``areaDesc``. Times carry the local
offset (``2026-05-29T03:26:40+07:00``): CAP does not allow ``Z``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

NS = "urn:oasis:names:tc:emergency:cap:1.2"
_URGENCY = {"watch": "Future", "warning": "Expected", "critical": "Immediate"}
_SEVERITY = {"watch": "Minor", "warning": "Moderate", "critical": "Severe"}
_MSGTYPE = {"raised": "Alert", "upgraded": "Update", "escalated": "Update", "cleared": "Cancel"}
_LANG = {"th": "th-TH", "en": "en-US"}


def cap_time(t: float, offset_h: float) -> str:
    tz = timezone(timedelta(hours=offset_h))
    return datetime.fromtimestamp(int(t), UTC).astimezone(tz).isoformat()


def identifier(site: str, device: str, incident: int, kind: str) -> str:
    return f"cityedge-{site}-{device}-{incident}-{kind}"


def _sub(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{NS}}}{name}")
    if text is not None:
        el.text = text
    return el


def _info(
    alert: ET.Element,
    lang: str,
    text: Mapping[str, str],
    kind: str,
    tier: str,
    site: str,
    web: str | None,
    value: float | None,
    threshold: float | None,
    location: Mapping[str, Any] | None,
) -> None:
    """One ``<info>`` block, in one language."""
    info = _sub(alert, "info")
    _sub(info, "language", _LANG.get(lang, lang))
    _sub(info, "category", "Met")
    _sub(info, "event", text["event"])
    _sub(info, "responseType", "AllClear" if kind == "cleared" else "Monitor")
    _sub(info, "urgency", "Past" if kind == "cleared" else _URGENCY.get(tier, "Unknown"))
    _sub(info, "severity", "Minor" if kind == "cleared" else _SEVERITY.get(tier, "Unknown"))
    _sub(info, "certainty", "Observed")
    _sub(info, "senderName", f"CityEdge {site}")
    _sub(info, "headline", text["headline"][:160])
    _sub(info, "description", text["description"])
    if web:
        _sub(info, "web", web)
    for name, v in (("water_level_m", value), ("threshold_m", threshold)):
        if v is not None:
            p = _sub(info, "parameter")
            _sub(p, "valueName", name)
            _sub(p, "value", f"{v:.3f}")
    area = _sub(info, "area")
    _sub(area, "areaDesc", text["area"])
    if location and "lat" in location and "lon" in location:
        _sub(area, "circle", f"{float(location['lat']):.5f},{float(location['lon']):.5f} 1.0")


def cap_xml(
    *,
    kind: str,
    site: str,
    device: str,
    incident: int,
    tier: str,
    sent_t: float,
    first_t: float,
    sender: str,
    offset_h: float,
    texts: Mapping[str, Mapping[str, str]],
    value: float | None,
    threshold: float | None,
    unit: str,
    location: Mapping[str, Any] | None,
    web: str | None,
) -> bytes:
    """``texts``: per language ``{"event", "headline", "description", "area"}``."""
    ET.register_namespace("", NS)
    sub = _sub
    alert = ET.Element(f"{{{NS}}}alert")
    sub(alert, "identifier", identifier(site, device, incident, kind))
    sub(alert, "sender", sender)
    sub(alert, "sent", cap_time(sent_t, offset_h))
    sub(alert, "status", "Actual")
    sub(alert, "msgType", _MSGTYPE.get(kind, "Alert"))
    sub(alert, "scope", "Public")
    if kind != "raised":
        first = identifier(site, device, incident, "raised")
        sub(alert, "references", f"{sender},{first},{cap_time(first_t, offset_h)}")
    for lang, text in texts.items():
        _info(alert, lang, text, kind, tier, site, web, value, threshold, location)
    body = ET.tostring(alert, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()
