"""Incidents: the gateway's alerts (already de-bounced with hysteresis and hold, and only from
readings whose QC flags did not fail) grouped per device and family into incidents, each with
one "raised" and one "cleared" message (duration and peak), plus an "upgraded" message when the
tier goes up (warning → danger) and an "escalated" one when nobody acknowledged in time.

Families and tiers:

| alert (contract) | family | tier |
|---|---|---|
| ``water_warning`` / ``water_critical`` | ``water_level`` | warning / critical |
| ``water_rising_fast`` (rate-of-rise rule) | ``water_rising`` | watch |
| ``pm25_band`` (Thai AQI band of the 24-h mean) | ``pm25`` | level 3 watch, 4 warning, ≥ 5 critical; ≤ 2 clears |
| ``node_silent`` (:func:`silent_nodes`), ``gateway_offline``, ``dispatcher_quiet`` (central) | own family | warning |

The alerts of one reading are applied together: the processor's "critical cleared + warning
raised" when a level falls one band is one incident that eased, not a clear and a new raise.
Everything is written in the caller's outbox transaction, so incident state and the messages it
caused commit (fsync) together; recording the same alerts again changes nothing.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from calibration.qc import Flag
from edge_gateway.notify.outbox import Outbox
from edge_gateway.notify.settings import NotifySettings, Route
from edge_gateway.notify.templates import Templates, render

SUSPECT, FAIL = int(Flag.SUSPECT), int(Flag.FAIL)  # QARTOD flags
RANK = {None: 0, "info": 0, "watch": 1, "warning": 2, "critical": 3}
FAMILY = {
    "water_watch": "water_level",
    "water_warning": "water_level",
    "water_critical": "water_level",
    "water_rising_fast": "water_rising",
    "pm25_band": "pm25",
    "node_silent": "silent",
    "device_offline": "silent",
    "gateway_offline": "gateway",
    "dispatcher_quiet": "dispatcher",
}


def parse_t(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def pm25_tier(level: int | None) -> str | None:
    if level is None or level <= 2:
        return None
    return "watch" if level == 3 else "warning" if level == 4 else "critical"


@dataclass
class _Open:
    no: int
    tier: str
    max_tier: str
    opened_t: float
    peak: float | None
    unit: str | None
    last: dict[str, Any]
    acked: bool
    escalated: bool
    held: bool = False


def _target(family: str, current: str | None, alerts: list[dict[str, Any]]) -> str | None:
    """The family's tier after this reading's alerts."""
    tier = current
    for a in alerts:
        name, state = a["alert"], a["state"]
        if family == "water_level":
            this = {"water_critical": "critical", "water_watch": "watch"}.get(name, "warning")
            if state == "raised" and RANK[this] >= RANK[tier]:
                tier = this
            elif state == "cleared" and tier == this:
                tier = None
        elif family == "pm25":
            band = a.get("band") or {}
            tier = pm25_tier(band.get("level") if isinstance(band, dict) else None)
        else:
            tier = (
                ("warning" if family != "water_rising" else "watch") if state == "raised" else None
            )
    return tier


class Incidents:
    def __init__(
        self,
        settings: NotifySettings,
        templates: Templates | None = None,
        places: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.templates = templates or Templates(settings.templates)
        self.places: dict[str, str] = dict(places or {})
        self.aqi: dict[str, dict[str, Any]] = {}  # device -> the last observation's thai_aqi
        self.last_obs: dict[str, deque[Mapping[str, Any]]] = {}
        self.suppressed = 0  # raises dropped because the reading's settled QC flag failed

    # -- recording ----------------------------------------------------------------------------

    def record(
        self,
        db: sqlite3.Connection,
        alerts: Iterable[Mapping[str, Any]],
        observations: Iterable[Mapping[str, Any]],
        now: float,
    ) -> int:
        """Apply one batch (inside an outbox transaction); returns notifications queued."""
        queued = 0
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for alert in alerts:
            family = FAMILY.get(str(alert.get("alert")))
            if family is None:
                continue
            key = (str(alert["site_id"]), str(alert["device_id"]), family)
            groups.setdefault(key, []).append(dict(alert))
        for (site, device, family), batch in groups.items():
            queued += self._apply(db, site, device, family, batch, now)
        for obs in observations:
            self._observe(db, obs)
            queued += self._settle(db, obs, now)
        return queued

    def _find_open(
        self, db: sqlite3.Connection, site: str, device: str, family: str
    ) -> _Open | None:
        row = db.execute(
            "SELECT no, tier, max_tier, opened_t, peak, unit, last, acked_at, escalated, open "
            "FROM incidents WHERE site = ? AND device = ? AND family = ? AND open >= 1",
            (site, device, family),
        ).fetchone()
        if row is None:
            return None
        return _Open(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            json.loads(row[6]),
            row[7] is not None,
            bool(row[8]),
            row[9] == 2,
        )

    def _apply(
        self,
        db: sqlite3.Connection,
        site: str,
        device: str,
        family: str,
        batch: list[dict[str, Any]],
        now: float,
    ) -> int:
        current = self._find_open(db, site, device, family)
        target = _target(family, current.tier if current else None, batch)
        last = batch[-1]
        t = parse_t(last["t"])
        value = _peak_value(family, batch)
        if current is None and target is None:
            return 0
        if current is None:
            assert target is not None
            key = f"{site}/{device}/{family}/{last['t']}"
            held = self._suspect(device, family, t)
            cur = db.execute(
                "INSERT OR IGNORE INTO incidents(key, site, device, family, tier, max_tier, "
                "opened_t, opened_wall, peak, unit, last, open, held) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    site,
                    device,
                    family,
                    target,
                    target,
                    t,
                    now,
                    value,
                    last.get("unit"),
                    json.dumps(last, ensure_ascii=False),
                    2 if held else 1,
                    held,
                ),
            )
            if cur.rowcount == 0 or held:
                return 0
            no = int(db.execute("SELECT no FROM incidents WHERE key = ?", (key,)).fetchone()[0])
            inc = _Open(no, target, target, t, value, last.get("unit"), last, False, False)
            return self._notify(db, "raised", site, device, family, inc, now)
        peak = _max(current.peak, value)
        if current.held and target is None:  # gone before its quality settled: no message
            db.execute("DELETE FROM incidents WHERE no = ?", (current.no,))
            return 0
        if current.held:
            db.execute(
                "UPDATE incidents SET tier = ?, max_tier = ?, peak = ?, last = ? WHERE no = ?",
                (
                    target,
                    target if RANK[target] > RANK[current.max_tier] else current.max_tier,
                    peak,
                    json.dumps(last, ensure_ascii=False),
                    current.no,
                ),
            )
            return 0
        if target is None:
            db.execute(
                "UPDATE incidents SET open = 0, closed_t = ?, peak = ?, last = ? WHERE no = ?",
                (t, peak, json.dumps(last, ensure_ascii=False), current.no),
            )
            current.peak, current.last = peak, last
            return self._notify(db, "cleared", site, device, family, current, now, closed_t=t)
        upgraded = RANK[target] > RANK[current.max_tier]
        max_tier = target if upgraded else current.max_tier
        db.execute(
            "UPDATE incidents SET tier = ?, max_tier = ?, peak = ?, last = ? WHERE no = ?",
            (target, max_tier, peak, json.dumps(last, ensure_ascii=False), current.no),
        )
        if not upgraded:
            return 0
        current.tier, current.max_tier, current.peak, current.last = target, max_tier, peak, last
        return self._notify(db, "upgraded", site, device, family, current, now)

    def _suspect(self, device: str, family: str, t: float) -> str | None:
        """``boot:seq`` of the reading that raised this, if its provisional QC flag is SUSPECT
        (its spike test needs the next reading): the raise waits for the settled flag."""
        if family not in ("water_level", "pm25"):
            return None
        obs = next(
            (o for o in self.last_obs.get(device, ()) if abs(float(o.get("t", -1)) - t) <= 1.0),
            None,
        )
        if obs is None:
            return None
        quantity = "level" if family == "water_level" else "pm25"
        if (obs.get("quality") or {}).get(quantity) == SUSPECT:
            return f"{obs.get('boot')}:{obs.get('seq')}"
        return None

    def _settle(self, db: sqlite3.Connection, obs: Mapping[str, Any], now: float) -> int:
        """A held raise: sent when the breaching reading's settled flag did not fail, dropped
        (a single spike is not a flood) when it failed."""
        settles = obs.get("settles")
        if not isinstance(settles, dict):
            return 0
        ref = f"{settles.get('boot')}:{settles.get('seq')}"
        site, device = str(obs.get("site_id")), str(obs.get("device_id"))
        rows = db.execute(
            "SELECT no, family FROM incidents WHERE site = ? AND device = ? AND "
            "open = 2 AND held = ?",
            (site, device, ref),
        ).fetchall()
        n = 0
        for no, family in rows:
            quantity = "level" if family == "water_level" else "pm25"
            flag = (settles.get("quality") or {}).get(quantity)
            if flag == FAIL:
                db.execute("DELETE FROM incidents WHERE no = ?", (no,))
                self.suppressed += 1
                continue
            db.execute("UPDATE incidents SET open = 1, held = NULL WHERE no = ?", (no,))
            inc = self._find_open(db, site, device, family)
            if inc is not None:
                n += self._notify(db, "raised", site, device, family, inc, now)
        return n

    def remember(self, obs: Mapping[str, Any]) -> None:
        """The device's place name and last Thai AQI (in memory, for the messages)."""
        device = str(obs.get("device_id"))
        self.last_obs.setdefault(device, deque(maxlen=16)).append(obs)
        name = (obs.get("location") or {}).get("name")
        if name:
            self.places[device] = str(name)
        derived = obs.get("derived") or {}
        if isinstance(derived.get("thai_aqi"), dict):
            self.aqi[device] = derived["thai_aqi"]

    def _observe(self, db: sqlite3.Connection, obs: Mapping[str, Any]) -> None:
        """Track the peak of a device's open incidents."""
        device, site = str(obs.get("device_id")), str(obs.get("site_id"))
        derived = obs.get("derived") or {}
        for family, value in (
            ("water_level", (derived.get("level_state") or {}).get("level_m")),
            ("water_rising", (derived.get("level_state") or {}).get("rate_m_per_h")),
            ("pm25", (derived.get("thai_aqi") or {}).get("pm25_24h")),
        ):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                db.execute(
                    "UPDATE incidents SET peak = MAX(COALESCE(peak, ?), ?) WHERE site = ? AND "
                    "device = ? AND family = ? AND open = 1",
                    (value, value, site, device, family),
                )

    # -- messages -----------------------------------------------------------------------------

    def routes_for(self, site: str, device: str, tier: str) -> list[tuple[int, Route]]:
        return [(i, r) for i, r in enumerate(self.settings.routes) if r.matches(site, device, tier)]

    def _notify(
        self,
        db: sqlite3.Connection,
        kind: str,
        site: str,
        device: str,
        family: str,
        inc: _Open,
        now: float,
        closed_t: float | None = None,
    ) -> int:
        message = self.message(kind, site, device, family, inc, closed_t)
        n = 0
        for i, route in self.routes_for(site, device, inc.max_tier):
            chain = list(route.escalate_to) if kind == "escalated" else list(route.channels)
            if not chain:
                continue
            dedup = f"inc{inc.no}:{kind}:{inc.max_tier}:{closed_t or ''}:route{i}"
            n += Outbox.enqueue(db, dedup, kind, chain, message, now, inc.no)
        return n

    def message(
        self,
        kind: str,
        site: str,
        device: str,
        family: str,
        inc: _Open,
        closed_t: float | None = None,
    ) -> dict[str, Any]:
        a = inc.last
        per_lang = {
            lang: self._context(lang, site, device, family, inc, closed_t)
            for lang in self.settings.languages
        }
        text = render(self.templates, self.settings.languages, kind, per_lang)
        out = {
            "text": text,
            "title": per_lang[self.settings.languages[0]]["title"],
            "tier": inc.max_tier,
            "kind": kind,
            "incident": inc.no,
            "site_id": site,
            "device_id": device,
            "family": family,
            "alert": a,
        }
        if family in ("water_level", "water_rising") and self.settings.cap:
            out["cap"] = self._cap(kind, site, device, family, inc, per_lang, closed_t)
        return out

    def _cap(
        self,
        kind: str,
        site: str,
        device: str,
        family: str,
        inc: _Open,
        per_lang: Mapping[str, Mapping[str, Any]],
        closed_t: float | None,
    ) -> str:
        from edge_gateway.notify.cap import cap_xml

        a = inc.last
        recent = self.last_obs.get(device)
        location = (recent[-1].get("location") if recent else None) or None
        texts = {
            lang: {
                "event": str(c["what"]),
                "headline": str(c["title"]),
                "description": self.templates.one(lang, kind, c),
                "area": f"{c['place']} ({site})",
            }
            for lang, c in per_lang.items()
        }
        value = a.get("value") if family == "water_level" else None
        link = self.settings.status_url
        return cap_xml(
            kind=kind,
            site=site,
            device=device,
            incident=inc.no,
            tier=inc.max_tier,
            sent_t=closed_t or parse_t(a["t"]),
            first_t=inc.opened_t,
            sender=self.settings.cap_sender or f"cityedge.{site}",
            offset_h=self.settings.utc_offset_h,
            texts=texts,
            value=value if isinstance(value, (int, float)) else None,
            threshold=a.get("threshold") if family == "water_level" else None,
            unit="m",
            location=location,
            web=link.format(device_id=device, site_id=site) if link else None,
        ).decode()

    def _context(
        self, lang: str, site: str, device: str, family: str, inc: _Open, closed_t: float | None
    ) -> dict[str, Any]:
        w = self.templates.word
        a = inc.last
        value = a.get("value")
        unit = a.get("unit") or ""
        trend = ""
        derived_rate = a.get("rate_m_per_h")
        if family == "water_rising" and isinstance(value, (int, float)):
            derived_rate = value
        elif family == "water_level" and self.last_obs.get(device):
            state = (self.last_obs[device][-1].get("derived") or {}).get("level_state") or {}
            derived_rate = state.get("rate_m_per_h")
        if isinstance(derived_rate, (int, float)):
            trend = (
                w(lang, "rising", rate=f"{abs(derived_rate):.2f}")
                if derived_rate > 0.005
                else w(lang, "falling", rate=f"{abs(derived_rate):.2f}")
                if derived_rate < -0.005
                else w(lang, "steady")
            )
        aqi = advice = ""
        band = a.get("band") if isinstance(a.get("band"), dict) else None
        if family == "pm25" and band:
            seen = self.aqi.get(device, {})
            if seen.get("level") != band.get("level"):
                seen = {}
            colour = str(band.get("colour", ""))
            colour_text = w(lang, f"colour_{colour}") if lang != "en" else colour
            name = seen.get(f"name_{lang}") or band.get(f"name_{lang}") or band.get("name_en", "")
            aqi = w(lang, "aqi", aqi=seen.get("value", "-"), colour=colour_text, band=name)
            advice = str(seen.get(f"advice_{lang}") or _advice(a, lang))
        link = ""
        if self.settings.status_url:
            link = w(
                lang, "link", url=self.settings.status_url.format(device_id=device, site_id=site)
            )
        duration = ""
        if closed_t is not None:
            duration = _duration(closed_t - inc.opened_t, lang)
        local = timedelta(hours=self.settings.utc_offset_h)
        when = datetime.fromtimestamp(closed_t or parse_t(a["t"]), UTC) + local
        return {
            "site": site,
            "device": device,
            "place": self.places.get(device, device),
            "what": w(lang, family),
            "value": _num(value, unit),
            "unit": unit,
            "threshold": _num(a.get("threshold"), unit) if family == "water_level" else "",
            "tier": w(lang, inc.max_tier),
            "trend": trend,
            "aqi": aqi,
            "advice": advice,
            "link": link,
            "duration": duration,
            "peak": _num(inc.peak, unit),
            "incident": inc.no,
            "time": when.strftime("%Y-%m-%d %H:%M") + f" (UTC{self.settings.utc_offset_h:+g})",
            "title": f"{w(lang, inc.max_tier)}: {w(lang, family)} {self.places.get(device, device)}",
        }

    # -- escalation and digest ----------------------------------------------------------------

    def escalate(self, db: sqlite3.Connection, now: float) -> int:
        """Queue "escalated" for open, unacknowledged incidents older than their route's time."""
        n = 0
        rows = db.execute(
            "SELECT no, site, device, family FROM incidents WHERE open = 1 AND "
            "acked_at IS NULL AND escalated = 0"
        ).fetchall()
        for no, site, device, family in rows:
            inc = self._find_open(db, site, device, family)
            if inc is None:
                continue
            opened_wall = db.execute(
                "SELECT opened_wall FROM incidents WHERE no = ?", (no,)
            ).fetchone()[0]
            for i, route in self.routes_for(site, device, inc.max_tier):
                if (
                    route.escalate_after_s is None
                    or not route.escalate_to
                    or now - opened_wall < route.escalate_after_s
                ):
                    continue
                message = self.message("escalated", site, device, family, inc)
                n += Outbox.enqueue(
                    db,
                    f"inc{no}:escalated:route{i}",
                    "escalated",
                    list(route.escalate_to),
                    message,
                    now,
                    no,
                )
                db.execute("UPDATE incidents SET escalated = 1 WHERE no = ?", (no,))
        return n

    def digest(self, db: sqlite3.Connection, day: str, now: float) -> int:
        if not self.settings.heartbeat_channels:
            return 0
        rows = db.execute(
            "SELECT no, site, device, family, max_tier, opened_t, peak, unit "
            "FROM incidents WHERE open = 1 ORDER BY no"
        ).fetchall()
        per_lang = {}
        for lang in self.settings.languages:
            lines = [
                f"#{no} {self.templates.word(lang, fam)} {self.places.get(dev, dev)} ({site}) "
                f"{self.templates.word(lang, tier)}, "
                f"{_duration(now - opened, lang)}, peak {_num(peak, unit)} {unit or ''}".rstrip()
                for no, site, dev, fam, tier, opened, peak, unit in rows
            ]
            per_lang[lang] = {"count": len(rows), "list": "\n".join(lines) or "-"}
        text = render(self.templates, self.settings.languages, "digest", per_lang)
        return +Outbox.enqueue(
            db,
            f"digest:{day}",
            "digest",
            list(self.settings.heartbeat_channels),
            {"text": text, "title": "CityEdge digest", "tier": "info", "kind": "digest"},
            now,
        )


def ack(outbox: Outbox, incident: int, by: str, now: float) -> bool:
    with outbox.transaction() as db:
        cur = db.execute(
            "UPDATE incidents SET acked_at = ?, acked_by = ? WHERE no = ? AND acked_at IS NULL",
            (now, by, incident),
        )
        return cur.rowcount > 0


def open_incidents(outbox: Outbox) -> list[dict[str, Any]]:
    with outbox.lock:
        rows = outbox.db.execute(
            "SELECT no, site, device, family, tier, max_tier, opened_t, peak, unit, acked_by, "
            "escalated FROM incidents WHERE open = 1 ORDER BY no"
        ).fetchall()
    keys = (
        "no",
        "site",
        "device",
        "family",
        "tier",
        "max_tier",
        "opened_t",
        "peak",
        "unit",
        "acked_by",
        "escalated",
    )
    return [dict(zip(keys, r, strict=True)) for r in rows]


def silent_nodes(
    statuses: Iterable[Mapping[str, Any]],
    now: float,
    grace_s: float,
    default_interval_s: float = 60.0,
) -> list[tuple[str, str, float]]:
    """Devices *late* or *offline* by the status page's liveness rule
    (:func:`edge_gateway.status.liveness.from_status`: the last reading against the device's
    cadence, ``grace_s`` as the late grace), from device status messages or the gateway's own
    view of them: (site, device, seconds past one cadence + ``grace_s``). A device in
    maintenance or never heard from is not silent."""
    from edge_gateway.status.liveness import from_status

    late = []
    for s in statuses:
        state, last, cadence = from_status(s, now, grace_s, 60.0, default_interval_s)
        if state in ("late", "offline") and last is not None:
            late.append(
                (str(s.get("site_id")), str(s.get("device_id")), now - last - cadence - grace_s)
            )
    return late


def synthetic(
    site: str, device: str, name: str, state: str, t: float, message: str, kind: str = "system"
) -> dict[str, Any]:
    return {
        "v": 1,
        "site_id": site,
        "gateway_id": device,
        "device_id": device,
        "kind": kind,
        "alert": name,
        "state": state,
        "severity": "warning" if state == "raised" else "info",
        "t": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "value": None,
        "unit": None,
        "message": message,
    }


class SilenceRules:
    """The silent-node rule, the same in the gateway (its device tracker) and centrally (device
    status messages): ``node_silent`` raised when :func:`silent_nodes` finds a device late,
    cleared when it reports again. Devices in ``frozen`` (their gateway is offline) keep their
    state."""

    def __init__(self, grace_s: float, default_report_s: float) -> None:
        self.grace_s = grace_s
        self.default_report_s = default_report_s
        self.silent: set[tuple[str, str]] = set()

    def evaluate(
        self,
        statuses: Sequence[Mapping[str, Any]],
        now: float,
        frozen: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    ) -> list[dict[str, Any]]:
        by_key = {(str(s.get("site_id")), str(s.get("device_id"))): s for s in statuses}
        late = {
            (site, dev)
            for site, dev, _ in silent_nodes(
                [s for k, s in by_key.items() if k not in frozen],
                now,
                self.grace_s,
                self.default_report_s,
            )
        }
        late |= self.silent & set(frozen)
        alerts = [
            synthetic(*key, "node_silent", "raised", now, f"{key[1]} silent")
            for key in sorted(late - self.silent)
        ]
        for key in sorted(self.silent - late):
            body = by_key.get(key, {})
            last = body.get("last_reading", body.get("last_seen"))
            alerts.append(
                synthetic(
                    *key,
                    "node_silent",
                    "cleared",
                    parse_t(last) if last else now,
                    f"{key[1]} reporting again",
                )
            )
        self.silent = late
        return alerts


def _advice(alert: Mapping[str, Any], lang: str) -> str:
    message = str(alert.get("message_th" if lang == "th" else "message") or "")
    # The gateway's pm25_band message ends with the band's advice (after the colour).
    match = re.search(r"\)\.? (.+)$", message)
    return match.group(1).strip() if match else ""


def _peak_value(family: str, batch: list[dict[str, Any]]) -> float | None:
    values = [a.get("value") for a in batch]
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(nums) if nums else None


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _num(value: Any, unit: str | None = None) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        return f"{value:.2f}" if unit in ("m", "m/h") else f"{value:.1f}"
    return str(value)


def _duration(seconds: float, lang: str) -> str:
    minutes = max(0, round(seconds / 60))
    h, m = divmod(minutes, 60)
    if lang == "th":
        return f"{h} ชม. {m} นาที" if h else f"{m} นาที"
    return f"{h} h {m} min" if h else f"{m} min"
