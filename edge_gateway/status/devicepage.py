"""The HTML parts of the status page's device page: its facts, plots and open incidents."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from edge_gateway.status import render
from edge_gateway.status.history import day_start, local_day
from edge_gateway.status.render import esc, tr


def facts_html(d: Mapping[str, Any], lang: str) -> str:
    """The device page's facts list."""
    state = str(d["state"])
    reason = d.get("reason_th") if lang == "th" else d.get("reason")
    rows = [
        (
            tr("state", lang),
            (
                f'<b class="state s-{esc(state)}" data-state="{esc(state)}">'
                f'{tr(state, lang)}</b> <span class="reason">{esc(reason)}</span>'
            ),
        ),
        (tr("site", lang), esc(d.get("site_id"))),
        (tr("kind", lang), esc(d.get("kind") or "–")),
        (
            tr("last", lang),
            esc(render.when(d.get("last_reading")))
            + " · "
            + esc("–" if d.get("value") is None else f"{d['value']:g} {d.get('unit') or ''}"),
        ),
        (
            tr("battery", lang),
            esc(
                "–"
                if d.get("battery_v") is None
                else f"{d['battery_v']:.2f} V ({d.get('battery_pct')} %)"
            ),
        ),
        (tr("rssi", lang), esc("–" if d.get("rssi_dbm") is None else f"{d['rssi_dbm']} dBm")),
        (tr("fw", lang), esc(d.get("fw") or "–")),
        (
            tr("outbox", lang),
            (f"{esc(d.get('outbox_depth', '–'))} / {esc(d.get('outbox_dropped', '–'))}"),
        ),
        (tr("errors", lang), esc(d.get("sensor_errors", 0))),
        (
            tr("cal", lang),
            esc(f"{d.get('calibration_id') or '–'} ({tr(str(d.get('calibration')), lang)})"),
        ),
        (
            tr("complete", lang),
            " / ".join(
                render.pct(d.get(k))
                for k in ("completeness_today", "completeness_7d", "completeness_30d")
            ),
        ),
    ]
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def plots_html(src: Any, device_id: str, d: Mapping[str, Any], lang: str) -> str:
    """The device page's plots (24 h, 7 days) and readings per day, from the source's history."""
    if not hasattr(src, "history"):
        return ""
    now = time.time()
    out = []
    for key, span in (("h24", 86400.0), ("d7", 7 * 86400.0)):
        t0 = now - span
        samples = src.history.samples(device_id, t0)
        out.append(f"<h3>{tr(key, lang)}</h3>")
        for label, unit, attr in (
            (tr("readings", lang), str(d.get("unit") or ""), "value"),
            (tr("battery", lang), "V", "battery"),
            (tr("rssi", lang), "dBm", "rssi"),
        ):
            pts = [(s.t, float(v)) for s in samples if (v := getattr(s, attr)) is not None]
            out.append(render.svg_plot(render.downsample(pts, t0, now), t0, now, label, unit))
    days = []
    cad = float(d.get("cadence_s") or 60.0)
    for i in range(29, -1, -1):
        name = local_day(now - i * 86400)
        start = day_start(name)
        counts = src.history.day_counts(device_id, name)
        got = sum(counts) if counts is not None else 0
        length = min(86400.0, now - start)
        exp = (length - src.maintenance_seconds(device_id, start, start + length)) / cad
        days.append((start + 43200, min(1.5, got / exp) * 100 if exp >= 1 else float("nan")))
    out.append(f"<h3>{tr('per_day', lang)}</h3>")
    out.append(
        render.svg_plot(days, now - 30 * 86400, now + 43200, tr("per_day", lang), "%", bars=True)
    )
    return "".join(out)


def incidents_html(device_id: str, d: Mapping[str, Any], lang: str) -> str:
    """The device's open alert incidents, each with its acknowledge form (the token)."""
    if not isinstance(d.get("incidents"), list):
        return ""
    items = []
    for inc in d["incidents"]:
        head = (
            f"#{esc(inc['no'])} {esc(inc['family'])} · {esc(inc['max_tier'])} · "
            f"{esc(render.when(inc.get('opened_t')))}"
        )
        if inc.get("acked_by"):
            items.append(
                f'<li class="incident" data-incident="{esc(inc["no"])}">{head} · '
                f"{tr('acked_by', lang)} <b>{esc(inc['acked_by'])}</b></li>"
            )
            continue
        items.append(
            f'<li class="incident" data-incident="{esc(inc["no"])}">{head} · '
            f'{tr("unacked", lang)}<form class="ack" method="post" action="/device/'
            f'{esc(device_id)}/ack"><input type="hidden" name="incident" value='
            f'"{esc(inc["no"])}"><label>{tr("by", lang)} <input name="by" maxlength="100">'
            f'</label> <label>{tr("token", lang)} <input type="password" name="token" '
            f'autocomplete="off"></label> <button>{tr("ack", lang)}</button></form></li>'
        )
    return (
        f'<h3>{tr("incidents", lang)}</h3><ul id="incidents">'
        f"{''.join(items) or tr('none', lang)}</ul>"
    )
