"""Liveness from data: a device is judged by when its readings arrived, against its own
configured cadence, never by a TCP session or a retained message.

* ``online``: the last reading arrived at most one cadence + ``late_grace_s`` ago;
* ``late``: later than that, up to two cadences + ``offline_margin_s`` (60 s by default);
* ``offline``: later still;  ``never``: no reading ever;  ``maintenance``: a technician said so.

The cadence is the interval the node itself reports in its status (``intervals``): a parking
node's ``heartbeat_s``, a battery board's radio ``batch_s`` when its status carries them, else
its ``report_s``; before the first status, the inventory's ``report_s`` or the default.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

STATES = ("online", "late", "offline", "never", "maintenance")

# Li-ion open-circuit voltage to state of charge (a typical 18650 cell at rest; a load sags
# the voltage, so this is an estimate): (volts, percent), ascending.
_LIION = (
    (3.0, 0.0),
    (3.3, 5.0),
    (3.6, 20.0),
    (3.7, 40.0),
    (3.8, 55.0),
    (3.9, 70.0),
    (4.0, 82.0),
    (4.1, 92.0),
    (4.2, 100.0),
)


def cadence_s(
    kind: str | None,
    intervals: Mapping[str, Any] | None,
    inventory_s: float | None,
    default_s: float,
) -> float:
    """The longest a healthy device goes between readings arriving at the gateway."""
    iv = intervals or {}

    def num(key: str) -> float | None:
        v = iv.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
        return None

    picks = [num("batch_s")]
    if kind == "parking":
        picks.append(num("heartbeat_s"))
    found = [p for p in picks if p is not None]
    if found:
        return max(found)
    if kind == "parking" and inventory_s:
        return float(inventory_s)
    report = num("report_s")
    if report is not None:
        return report
    return float(inventory_s or default_s)


def judge(
    last_rx: float | None,
    now: float,
    cadence: float,
    late_grace_s: float,
    offline_margin_s: float,
    in_maintenance: bool,
) -> str:
    if in_maintenance:
        return "maintenance"
    if last_rx is None:
        return "never"
    age = now - last_rx
    if age <= cadence + late_grace_s:
        return "online"
    if age <= 2 * cadence + offline_margin_s:
        return "late"
    return "offline"


def timestamp(value: Any) -> float | None:
    """A time in a status message: epoch seconds or an ISO 8601 string; None if neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def from_status(
    body: Mapping[str, Any],
    now: float,
    late_grace_s: float,
    offline_margin_s: float,
    default_s: float = 60.0,
) -> tuple[str, float | None, float]:
    """(state, last reading, cadence) of a device from a device status message (the retained
    one the gateway publishes, or the gateway's own view of it): the one rule the city view
    and the silent-node alert (edge_gateway.notify) judge by. Liveness is the last *reading*
    (``last_reading``; ``last_seen``, which counts status heartbeats too, only from a gateway
    too old to send it), against ``report_s`` (else ``86400 / expected_24h``, else
    ``default_s``); ``maintenance`` true puts it in maintenance."""
    last = timestamp(body["last_reading"] if "last_reading" in body else body.get("last_seen"))
    exp = body.get("expected_24h")
    rep = body.get("report_s")
    cadence = (
        float(rep)
        if isinstance(rep, (int, float)) and not isinstance(rep, bool) and rep > 0
        else 86400.0 / exp
        if isinstance(exp, int) and exp > 1
        else float(default_s)
    )
    state = judge(last, now, cadence, late_grace_s, offline_margin_s, bool(body.get("maintenance")))
    return state, last, cadence


def battery_percent(volts: float | None) -> int | None:
    if volts is None:
        return None
    if volts <= _LIION[0][0]:
        return 0
    for (v0, p0), (v1, p1) in itertools.pairwise(_LIION):
        if volts <= v1:
            return round(p0 + (p1 - p0) * (volts - v0) / (v1 - v0))
    return 100


def duration_words(seconds: float, lang: str) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s" if lang == "en" else f"{s} วินาที"
    if s < 2 * 3600:
        m = s // 60
        return f"{m} min" if lang == "en" else f"{m} นาที"
    if s < 2 * 86400:
        h = s // 3600
        return f"{h} h" if lang == "en" else f"{h} ชั่วโมง"
    d = s // 86400
    return f"{d} days" if lang == "en" else f"{d} วัน"


def reason(state: str, dev: Mapping[str, Any], now: float, lang: str) -> str:
    """Why the device is in its state, in words (from the facts the stream gave)."""
    th = lang != "en"
    parts: list[str] = []
    last_rx = dev.get("last_rx")
    cad = float(dev.get("cadence_s") or 0)
    if state == "maintenance":
        m = dev.get("maintenance") or {}
        why = str(m.get("reason") or "")
        parts.append(("อยู่ระหว่างซ่อมบำรุง" if th else "in maintenance") + (f": {why}" if why else ""))
    elif state == "never":
        parts.append("ยังไม่เคยส่งข้อมูล" if th else "no reading ever received")
    elif last_rx is not None:
        age = duration_words(now - float(last_rx), lang)
        every = duration_words(cad, lang)
        if state == "online":
            parts.append(
                f"ข้อมูลล่าสุด {age} ที่แล้ว (ส่งทุก {every})"
                if th
                else f"last reading {age} ago (every {every})"
            )
        else:
            parts.append(
                f"ไม่มีข้อมูลมา {age} (ควรส่งทุก {every})"
                if th
                else f"no reading for {age} (expected every {every})"
            )
    status = dev.get("status") or {}
    if state in ("late", "offline", "never") and status:
        facts: list[str] = []
        rssi = status.get("rssi_dbm")
        if isinstance(rssi, int):
            facts.append(f"สัญญาณ WiFi {rssi} dBm" if th else f"WiFi RSSI {rssi} dBm")
        bat = status.get("battery_v")
        if isinstance(bat, (int, float)):
            facts.append(f"แบตเตอรี่ {bat:.2f} V" if th else f"battery {bat:.2f} V")
        ob = status.get("outbox") or {}
        if isinstance(ob.get("depth"), int) and ob["depth"]:
            facts.append(f"ค้างส่ง {ob['depth']}" if th else f"outbox {ob['depth']} waiting")
        if status.get("config_error"):
            facts.append(("ค่าตั้งผิด: " if th else "config error: ") + str(status["config_error"]))
        if facts:
            parts.append(("สถานะล่าสุดแจ้งว่า " if th else "last status said ") + ", ".join(facts))
    if state in ("late", "offline") and dev.get("session") == "offline":
        parts.append(
            "MQTT ของโหนดหลุด (last will)" if th else "node's MQTT session ended (last will)"
        )
    qc = dev.get("qc")
    if qc == "stuck":
        parts.append("เซนเซอร์ค้าง (ค่าคงที่)" if th else "sensor stuck (flat line)")
    elif qc == "out_of_range":
        parts.append("ค่าเกินช่วงที่เป็นไปได้" if th else "value out of range")
    return "; ".join(parts)
