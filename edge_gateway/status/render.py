"""Server-side HTML and SVG for the status pages. Every value from the stream or from a
technician's file goes through :func:`esc` (names and places come from CSV files)."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from edge_gateway.status.history import TZ

T: dict[str, dict[str, str]] = {
    "online": {"en": "online", "th": "ออนไลน์"},
    "late": {"en": "late", "th": "ล่าช้า"},
    "offline": {"en": "offline", "th": "ออฟไลน์"},
    "never": {"en": "never seen", "th": "ไม่เคยส่งข้อมูล"},
    "maintenance": {"en": "in maintenance", "th": "ซ่อมบำรุง"},
    "unknown": {"en": "unknown", "th": "ไม่ทราบ"},
    "down": {"en": "down", "th": "ล่ม"},
    "low_battery": {"en": "low battery", "th": "แบตเตอรี่ต่ำ"},
    "qc": {"en": "stuck / out of range", "th": "เซนเซอร์ค้าง/เกินช่วง"},
    "calibration": {"en": "calibration expired / missing", "th": "ไม่มี/หมดอายุสอบเทียบ"},
    "devices": {"en": "devices", "th": "อุปกรณ์"},
    "device": {"en": "device", "th": "อุปกรณ์"},
    "name": {"en": "name / place", "th": "ชื่อ / ที่ตั้ง"},
    "kind": {"en": "kind", "th": "ชนิด"},
    "state": {"en": "state", "th": "สถานะ"},
    "last": {"en": "last reading", "th": "ข้อมูลล่าสุด"},
    "battery": {"en": "battery", "th": "แบตเตอรี่"},
    "rssi": {"en": "RSSI", "th": "สัญญาณ"},
    "fw": {"en": "firmware", "th": "เฟิร์มแวร์"},
    "outbox": {"en": "outbox / drops", "th": "ค้างส่ง / ทิ้ง"},
    "errors": {"en": "sensor errors", "th": "ข้อผิดพลาดเซนเซอร์"},
    "cal": {"en": "calibration", "th": "การสอบเทียบ"},
    "complete": {"en": "complete today / 7 d / 30 d", "th": "ครบถ้วน วันนี้ / 7 วัน / 30 วัน"},
    "filter": {"en": "filter", "th": "ค้นหา"},
    "all": {"en": "all", "th": "ทั้งหมด"},
    "updated": {"en": "updated", "th": "ปรับปรุง"},
    "sites": {"en": "sites", "th": "สถานที่"},
    "site": {"en": "site", "th": "สถานที่"},
    "gateway": {"en": "gateway", "th": "เกตเวย์"},
    "readings": {"en": "readings", "th": "ค่าที่วัด"},
    "h24": {"en": "last 24 hours", "th": "24 ชั่วโมงล่าสุด"},
    "d7": {"en": "last 7 days", "th": "7 วันล่าสุด"},
    "per_day": {"en": "completeness per day", "th": "ความครบถ้วนรายวัน"},
    "events": {"en": "recent dead letters and commands", "th": "ข้อความที่ถูกปฏิเสธและคำสั่งล่าสุด"},
    "none": {"en": "none", "th": "ไม่มี"},
    "maint_start": {"en": "start maintenance", "th": "เริ่มซ่อมบำรุง"},
    "maint_end": {"en": "end maintenance", "th": "จบการซ่อมบำรุง"},
    "hours": {"en": "hours", "th": "ชั่วโมง"},
    "why": {"en": "reason", "th": "เหตุผล"},
    "token": {"en": "token", "th": "โทเคน"},
    "back": {"en": "all devices", "th": "อุปกรณ์ทั้งหมด"},
    "title": {"en": "CityEdge status", "th": "สถานะ CityEdge"},
    "stale": {"en": "no update from the server", "th": "ไม่ได้รับข้อมูลจากเซิร์ฟเวอร์"},
    "ok": {"en": "ok", "th": "ปกติ"},
    "missing": {"en": "missing", "th": "ไม่มี"},
    "expired": {"en": "expired", "th": "หมดอายุ"},
    "fleet": {"en": "fleet default", "th": "ค่ากลาง"},
    "incidents": {"en": "open alerts", "th": "การแจ้งเตือนที่ยังไม่จบ"},
    "unacked": {"en": "not acknowledged", "th": "ยังไม่มีผู้รับทราบ"},
    "acked_by": {"en": "acknowledged by", "th": "รับทราบโดย"},
    "ack": {"en": "acknowledge", "th": "รับทราบ"},
    "by": {"en": "your name", "th": "ชื่อผู้รับทราบ"},
}
SORTS = ("state", "name", "kind", "last", "battery", "rssi", "complete")
_ORDER = {"offline": 0, "late": 1, "never": 2, "unknown": 3, "maintenance": 4, "online": 5}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def tr(key: str, lang: str) -> str:
    return T.get(key, {}).get(lang, key)


def when(t: float | None, lang: str = "en") -> str:
    if t is None:
        return "–"
    return datetime.fromtimestamp(t, TZ).strftime("%Y-%m-%d %H:%M:%S")


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f} %"


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out = {k: 0 for k in ("online", "late", "offline", "never", "maintenance", "unknown")}
    out |= {
        "devices": len(rows),
        "low_battery": 0,
        "stuck": 0,
        "out_of_range": 0,
        "calibration_expired": 0,
        "calibration_missing": 0,
    }
    for r in rows:
        out[r["state"]] = out.get(r["state"], 0) + 1
        out["low_battery"] += bool(r.get("low_battery"))
        out["stuck"] += r.get("qc") == "stuck"
        out["out_of_range"] += r.get("qc") == "out_of_range"
        out["calibration_expired"] += r.get("calibration") == "expired"
        out["calibration_missing"] += r.get("calibration") == "missing"
    if any("incidents" in r for r in rows):  # a gateway whose alert dispatcher runs
        out["incidents"] = sum(int(r.get("incidents") or 0) for r in rows)
        out["incidents_unacked"] = sum(int(r.get("incidents_unacked") or 0) for r in rows)
    return out


def filter_rows(rows: list[dict[str, Any]], q: Mapping[str, str]) -> list[dict[str, Any]]:
    state, site, kind = q.get("state", ""), q.get("site", ""), q.get("kind", "")
    text = q.get("q", "").strip().lower()
    out = [
        r
        for r in rows
        if (not state or r["state"] == state or (state == "low_battery" and r.get("low_battery")))
        and (not site or r.get("site_id") == site)
        and (not kind or r.get("kind") == kind)
    ]
    if text:
        out = [
            r
            for r in out
            if text
            in " ".join(
                str(r.get(k) or "") for k in ("device_id", "name", "place", "site_id")
            ).lower()
        ]
    return out


def sort_rows(rows: list[dict[str, Any]], key: str, desc: bool) -> list[dict[str, Any]]:
    def k(r: Mapping[str, Any]) -> tuple[Any, ...]:
        if key == "name":
            return (str(r.get("name") or r["device_id"]).lower(),)
        if key == "kind":
            return (str(r.get("kind") or ""), r["device_id"])
        if key == "last":
            return (r.get("last_reading") or 0.0,)
        if key == "battery":
            return (r.get("battery_v") if r.get("battery_v") is not None else 99.0,)
        if key == "rssi":
            return (r.get("rssi_dbm") if r.get("rssi_dbm") is not None else 0,)
        if key == "complete":
            return (
                r.get("completeness_today") if r.get("completeness_today") is not None else -1.0,
            )
        return (_ORDER.get(r["state"], 9), str(r.get("site_id") or ""), r["device_id"])

    return sorted(rows, key=k, reverse=desc)


def _qs(q: Mapping[str, str], **change: str) -> str:
    d = {k: v for k, v in q.items() if v} | change
    return "?" + urlencode({k: v for k, v in d.items() if v})


def page(title: str, body: str, lang: str, live: str | None = None, every: float = 5.0) -> str:
    other = "en" if lang == "th" else "th"
    live_attr = f' id="live" data-src="{esc(live)}" data-every="{every:g}"' if live else ""
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="stylesheet" href="/static/style.css">'
        '<script src="/static/app.js" defer></script></head>'
        f"<body{live_attr}><header><h1>{esc(title)}</h1>"
        f'<span class="lang"><a href="?lang={other}">{"English" if other == "en" else "ไทย"}</a>'
        f'</span> <span class="muted">{tr("updated", lang)}: <span id="updated">'
        f"{esc(when(time.time()))}</span> (Asia/Bangkok)</span>"
        f'<span id="stale" class="stale" hidden>{tr("stale", lang)}</span></header>'
        f"<main>{body}</main></body></html>"
    )


def counts_html(c: Mapping[str, int], lang: str, base: str, q: Mapping[str, str]) -> str:
    cells = [
        ("online", c["online"]),
        ("late", c["late"]),
        ("offline", c["offline"]),
        ("never", c["never"]),
        ("maintenance", c["maintenance"]),
    ]
    if c.get("unknown"):
        cells.append(("unknown", c["unknown"]))
    cells += [
        ("low_battery", c["low_battery"]),
        ("qc", c["stuck"] + c["out_of_range"]),
        ("calibration", c["calibration_expired"] + c["calibration_missing"]),
    ]
    if "incidents" in c:
        cells.append(("incidents", c["incidents"]))
    out = []
    for key, n in cells:
        link = base + _qs(q, state=key) if key in _ORDER or key == "low_battery" else None
        label = f'<b data-count="{key}">{n}</b><span>{tr(key, lang)}</span>'
        out.append(
            f'<a class="count s-{key}" href="{esc(link)}">{label}</a>'
            if link
            else f'<div class="count s-{key}">{label}</div>'
        )
    return "".join(out)


def _row_html(r: Mapping[str, Any], lang: str, show_site: bool) -> str:
    """One device's row of the fleet table."""
    reason = r.get("reason_th") if lang == "th" else r.get("reason")
    value = "–" if r.get("value") is None else f"{r['value']:g} {r.get('unit') or ''}"
    bat = (
        "–"
        if r.get("battery_v") is None
        else (f"{r['battery_v']:.2f} V ({r.get('battery_pct')} %)")
    )
    age = r.get("calibration_age_s")
    cal = tr(str(r.get("calibration")), lang) if r.get("calibration") != "unknown" else "–"
    if r.get("calibration_id") and r.get("calibration_id") != "none":
        cal = f"{r['calibration_id']} ({cal}" + (
            f", {age / 86400:.0f} d)" if age is not None else ")"
        )
    href = f"/device/{esc(r['device_id'])}" + (f"?site={esc(r['site_id'])}" if show_site else "")
    cells = [
        (
            f'<td><a href="{href}">{esc(r.get("name") or r["device_id"])}</a>'
            f'<div class="muted">{esc(r["device_id"])} {esc(r.get("place") or "")}</div></td>'
        ),
        f"<td>{esc(r.get('kind') or '–')}</td>",
        (
            f'<td class="state s-{esc(r["state"])}" data-state="{esc(r["state"])}">'
            f'<b>{tr(str(r["state"]), lang)}</b><div class="reason">{esc(reason)}</div></td>'
        ),
        f"<td>{esc(when(r.get('last_reading')))}<div>{esc(value)}</div></td>",
        f'<td class="{"warn" if r.get("low_battery") else ""}">{esc(bat)}</td>',
        f"<td>{esc('–' if r.get('rssi_dbm') is None else str(r['rssi_dbm']) + ' dBm')}</td>",
        f"<td>{esc(r.get('fw') or '–')}</td>",
        f"<td>{esc(r.get('outbox_depth', '–'))} / {esc(r.get('outbox_dropped', '–'))}</td>",
        f"<td>{esc(r.get('sensor_errors', 0))}</td>",
        f"<td>{esc(cal)}</td>",
        (
            f"<td>{pct(r.get('completeness_today'))} / {pct(r.get('completeness_7d'))} / "
            f"{pct(r.get('completeness_30d'))}</td>"
        ),
    ]
    if show_site:
        cells.insert(
            0, f'<td><a href="/site/{esc(r.get("site_id"))}">{esc(r.get("site_id"))}</a></td>'
        )
    return f'<tr id="row-{esc(r["device_id"])}">{"".join(cells)}</tr>'


def table_html(
    rows: Sequence[Mapping[str, Any]],
    lang: str,
    base: str,
    q: Mapping[str, str],
    show_site: bool = False,
) -> str:
    sort = q.get("sort", "state")
    desc = q.get("desc") == "1"

    def th(key: str, label: str) -> str:
        if key not in SORTS:
            return f"<th>{esc(label)}</th>"
        mark = (" ▼" if desc else " ▲") if sort == key else ""
        flip = "" if (sort == key and desc) else ("1" if sort == key else "")
        return (
            f'<th><a href="{esc(base + _qs(q, sort=key, desc=flip))}">{esc(label)}{mark}</a></th>'
        )

    head = [
        th("name", tr("name", lang)),
        th("kind", tr("kind", lang)),
        th("state", tr("state", lang)),
        th("last", tr("last", lang)),
        th("battery", tr("battery", lang)),
        th("rssi", tr("rssi", lang)),
        th("fw", tr("fw", lang)),
        th("outbox", tr("outbox", lang)),
        th("errors", tr("errors", lang)),
        th("cal", tr("cal", lang)),
        th("complete", tr("complete", lang)),
    ]
    if show_site:
        head.insert(0, th("site", tr("site", lang)))
    body = [_row_html(r, lang, show_site) for r in rows]
    if not body:
        body.append(f'<tr><td colspan="{len(head)}">{tr("none", lang)}</td></tr>')
    return f"<table><thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def filter_form(q: Mapping[str, str], lang: str, states: Sequence[str]) -> str:
    opts = "".join(
        f'<option value="{s}"{" selected" if q.get("state") == s else ""}>{tr(s, lang)}</option>'
        for s in states
    )
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
        for k, v in q.items()
        if k in ("lang", "sort", "desc", "site") and v
    )
    return (
        f'<form class="filter" method="get">{hidden}'
        f'<input name="q" value="{esc(q.get("q", ""))}" placeholder="{tr("filter", lang)}">'
        f'<select name="state"><option value="">{tr("all", lang)}</option>{opts}</select>'
        f"<button>{tr('filter', lang)}</button></form>"
    )


# -- SVG plots ---------------------------------------------------------------------------------


def _time_axis(
    t0: float, t1: float, pad_l: int, pad_t: int, w: int, h: int, height: int
) -> list[str]:
    """The plot's time grid and labels: every 6 h up to two days, else daily (Bangkok time)."""
    parts = []
    span = max(1.0, t1 - t0)
    step = 6 * 3600 if span <= 2 * 86400 else 86400
    first = math.ceil((t0 + 7 * 3600) / step) * step - 7 * 3600  # Bangkok: UTC+7, no DST
    tick = first
    while tick <= t1:
        x = pad_l + (tick - t0) / span * w
        label = datetime.fromtimestamp(tick, TZ).strftime("%H:%M" if step < 86400 else "%d/%m")
        parts.append(
            f'<line x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{pad_t + h}" class="grid"/>'
            f'<text x="{x:.1f}" y="{height - 5}" class="ax" text-anchor="middle">'
            f"{label}</text>"
        )
        tick += step
    return parts


def svg_plot(
    points: Sequence[tuple[float, float]],
    t0: float,
    t1: float,
    title: str,
    unit: str,
    width: int = 640,
    height: int = 150,
    bars: bool = False,
) -> str:
    pad_l, pad_b, pad_t = 48, 20, 18
    w, h = width - pad_l - 6, height - pad_b - pad_t
    vals = [v for _, v in points if math.isfinite(v)]
    parts = [
        (
            f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
            f' role="img" aria-label="{esc(title)}"><text x="4" y="12" class="pt">{esc(title)}'
            f"{' (' + esc(unit) + ')' if unit else ''}</text>"
        )
    ]
    parts.append(f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" class="frame"/>')
    span = max(1.0, t1 - t0)
    parts += _time_axis(t0, t1, pad_l, pad_t, w, h, height)
    if not vals:
        parts.append(
            f'<text x="{pad_l + w / 2}" y="{pad_t + h / 2}" text-anchor="middle" '
            'class="ax">–</text></svg>'
        )
        return "".join(parts)
    lo, hi = (0.0, max(vals)) if bars else (min(vals), max(vals))
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + h - frac * h
        parts.append(
            f'<text x="{pad_l - 4}" y="{y + 4:.1f}" class="ax" text-anchor="end">'
            f"{lo + frac * (hi - lo):.3g}</text>"
        )

    def xy(t: float, v: float) -> tuple[float, float]:
        return pad_l + (t - t0) / span * w, pad_t + h - (v - lo) / (hi - lo) * h

    if bars:
        bw = max(2.0, w / max(1, len(points)) - 2)
        for t, v in points:
            x, y = xy(t, v)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" '
                f'height="{pad_t + h - y:.1f}" class="bar"/>'
            )
    else:
        pts = " ".join(
            f"{x:.1f},{y:.1f}" for x, y in (xy(t, v) for t, v in points if math.isfinite(v))
        )
        parts.append(f'<polyline points="{pts}" class="line"/>')
    parts.append("</svg>")
    return "".join(parts)


def downsample(
    points: Sequence[tuple[float, float]], t0: float, t1: float, n: int = 320
) -> list[tuple[float, float]]:
    """Mean per time slot: at most ``n`` points, whatever the history holds."""
    if len(points) <= n:
        return list(points)
    slot = (t1 - t0) / n
    sums: dict[int, list[float]] = {}
    for t, v in points:
        i = int((t - t0) // slot)
        s = sums.setdefault(i, [0.0, 0.0, 0.0])
        s[0] += t
        s[1] += v
        s[2] += 1
    return [(s[0] / s[2], s[1] / s[2]) for _, s in sorted(sums.items())]


CSS = """
body{font-family:"Noto Sans Thai","Loma","Garuda",system-ui,sans-serif;margin:0;color:#222}
header{background:#1f3b57;color:#fff;padding:.5em 1em;display:flex;gap:1em;align-items:baseline;
flex-wrap:wrap}header h1{font-size:1.2em;margin:0}header a{color:#cde}.muted{color:#777;
font-size:.85em}header .muted{color:#cde}main{padding:1em}.stale{background:#c00;color:#fff;
padding:0 .5em}#counts{display:flex;flex-wrap:wrap;gap:.5em;margin-bottom:1em}.count{display:flex;
flex-direction:column;min-width:7em;padding:.4em .6em;border-radius:4px;background:#eee;
color:#222;text-decoration:none}.count b{font-size:1.6em}.s-online{background:#dfd}
.s-late{background:#ffd}.s-offline,.s-down{background:#fcc}.s-never{background:#e4e4e4}
.s-maintenance{background:#dde8ff}.s-unknown{background:#eee}table{border-collapse:collapse;
width:100%;font-size:.9em}th,td{border-bottom:1px solid #ddd;padding:.3em;text-align:left;
vertical-align:top}th a{color:#222}.reason{font-size:.85em;color:#444}.warn{color:#b00;
font-weight:bold}.filter{margin:.5em 0}.plot{max-width:100%;height:auto;display:block;
margin:.3em 0}.plot .frame{fill:#fafafa;stroke:#ccc}.plot .grid{stroke:#e3e3e3}.plot .line{
fill:none;stroke:#1f5f9f;stroke-width:1.5}.plot .bar{fill:#4a8}.plot .ax{font-size:10px;
fill:#555}.plot .pt{font-size:12px;font-weight:bold}dl{display:grid;grid-template-columns:
max-content auto;gap:.2em 1em}dt{font-weight:bold}form.maint{border:1px solid #ccc;
padding:.5em;margin:.5em 0}form.maint input{margin:.2em}
"""

JS = """
(function () {
  var body = document.body, src = body.getAttribute('data-src');
  if (!src) return;
  var every = (parseFloat(body.getAttribute('data-every')) || 5) * 1000;
  function tick() {
    fetch(src, {cache: 'no-store'}).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.json();
    }).then(function (d) {
      Object.keys(d.parts).forEach(function (id) {
        var el = document.getElementById(id);
        if (el) el.innerHTML = d.parts[id];
      });
      document.getElementById('updated').textContent = d.updated;
      document.getElementById('stale').hidden = true;
    }).catch(function () {
      document.getElementById('stale').hidden = false;
    }).then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
"""
