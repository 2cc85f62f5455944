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
| ``node_silent`` (:func:`edge_gateway.notify.silence.silent_nodes`), ``gateway_offline``, ``dispatcher_quiet`` (central) | own family | warning |

The alerts of one reading are applied together: the processor's "critical cleared + warning
raised" when a level falls one band is one incident that eased, not a clear and a new raise.
Everything is written in the caller's outbox transaction, so incident state and the messages it
caused commit (fsync) together; recording the same alerts again changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from calibration.qc import Flag
from edge_gateway.notify.outbox import Outbox
from edge_gateway.notify.settings import NotifySettings, Route
from edge_gateway.notify.templates import Templates, render
from edge_gateway.notify.wording import IncidentWording, fmt_duration, fmt_num
from edge_gateway.notify.wording import parse_t as parse_t

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


class Incidents(IncidentWording):
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
            return self._open(db, site, device, family, target, last, t, value, now)
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

    def _open(
        self,
        db: sqlite3.Connection,
        site: str,
        device: str,
        family: str,
        target: str,
        last: dict[str, Any],
        t: float,
        value: float | None,
        now: float,
    ) -> int:
        """A new incident (held, without a message, while its reading's QC is suspect)."""
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
                f"{fmt_duration(now - opened, lang)}, peak {fmt_num(peak, unit)} {unit or ''}".rstrip()
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


def _peak_value(family: str, batch: list[dict[str, Any]]) -> float | None:
    values = [a.get("value") for a in batch]
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(nums) if nums else None


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)
