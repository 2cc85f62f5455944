"""The words of an incident's messages (English and Thai, from the templates) and its CAP
document: part of :class:`edge_gateway.notify.incidents.Incidents`."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from edge_gateway.notify.settings import NotifySettings
from edge_gateway.notify.templates import Templates, render

if TYPE_CHECKING:
    from edge_gateway.notify.incidents import _Open


def parse_t(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def _advice(alert: Mapping[str, Any], lang: str) -> str:
    message = str(alert.get("message_th" if lang == "th" else "message") or "")
    # The gateway's pm25_band message ends with the band's advice (after the colour).
    match = re.search(r"\)\.? (.+)$", message)
    return match.group(1).strip() if match else ""


def fmt_num(value: Any, unit: str | None = None) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        return f"{value:.2f}" if unit in ("m", "m/h") else f"{value:.1f}"
    return str(value)


def fmt_duration(seconds: float, lang: str) -> str:
    minutes = max(0, round(seconds / 60))
    h, m = divmod(minutes, 60)
    if lang == "th":
        return f"{h} ชม. {m} นาที" if h else f"{m} นาที"
    return f"{h} h {m} min" if h else f"{m} min"


class IncidentWording:
    """What an incident's messages say (a mixin of ``Incidents``)."""

    settings: NotifySettings
    templates: Templates
    places: dict[str, str]
    aqi: dict[str, dict[str, Any]]
    last_obs: dict[str, deque[Mapping[str, Any]]]

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

    def _trend(self, lang: str, device: str, family: str, a: Mapping[str, Any]) -> str:
        """Rising, falling or steady (water), from the alert or the last observation."""
        w = self.templates.word
        value = a.get("value")
        derived_rate = a.get("rate_m_per_h")
        if family == "water_rising" and isinstance(value, (int, float)):
            derived_rate = value
        elif family == "water_level" and self.last_obs.get(device):
            state = (self.last_obs[device][-1].get("derived") or {}).get("level_state") or {}
            derived_rate = state.get("rate_m_per_h")
        if not isinstance(derived_rate, (int, float)):
            return ""
        return (
            w(lang, "rising", rate=f"{abs(derived_rate):.2f}")
            if derived_rate > 0.005
            else w(lang, "falling", rate=f"{abs(derived_rate):.2f}")
            if derived_rate < -0.005
            else w(lang, "steady")
        )

    def _context(
        self, lang: str, site: str, device: str, family: str, inc: _Open, closed_t: float | None
    ) -> dict[str, Any]:
        w = self.templates.word
        a = inc.last
        value = a.get("value")
        unit = a.get("unit") or ""
        trend = self._trend(lang, device, family, a)
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
            duration = fmt_duration(closed_t - inc.opened_t, lang)
        local = timedelta(hours=self.settings.utc_offset_h)
        when = datetime.fromtimestamp(closed_t or parse_t(a["t"]), UTC) + local
        return {
            "site": site,
            "device": device,
            "place": self.places.get(device, device),
            "what": w(lang, family),
            "value": fmt_num(value, unit),
            "unit": unit,
            "threshold": fmt_num(a.get("threshold"), unit) if family == "water_level" else "",
            "tier": w(lang, inc.max_tier),
            "trend": trend,
            "aqi": aqi,
            "advice": advice,
            "link": link,
            "duration": duration,
            "peak": fmt_num(inc.peak, unit),
            "incident": inc.no,
            "time": when.strftime("%Y-%m-%d %H:%M") + f" (UTC{self.settings.utc_offset_h:+g})",
            "title": f"{w(lang, inc.max_tier)}: {w(lang, family)} {self.places.get(device, device)}",
        }
