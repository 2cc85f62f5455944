"""The alert state machines: when a reading raises, clears or changes an alert.

Alerts are de-bounced here: a level must fall below its threshold by the hysteresis margin and
stay there for ``hold_s`` before an alert clears, and a new PM2.5 band must hold for ``hold_s``
before it is announced, so a value hovering at a threshold does not flap.

* :class:`Alert` — one alert as the state machine decides it; :meth:`Alert.payload` is the
  contract's ``alert`` message (``cityedge/v1/site/<site>/alert/<device>``).
* :class:`WaterAlertState` — per water-level node: ``water_watch`` / ``water_warning`` /
  ``water_critical`` with hysteresis, and ``water_rising_fast`` from the rise per hour.
* :class:`BandAlertState` — per air node: ``pm25_band`` when the Thai AQI band of the 24-hour
  PM2.5 mean changes and holds.

The alert-delivery code (:mod:`edge_gateway.notify`) builds on the payloads made here. The
states are plain data: :class:`edge_gateway.processing.Processor` saves them with the rows that
changed them (after a power cut a level already above its warning is not announced again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from calibration import aqi
from edge_gateway.config import AlertsSection
from edge_gateway.ingest import iso_utc

RANK = {"normal": 0, "watch": 1, "warning": 2, "critical": 3}
_TH_NAME = {"critical": "วิกฤต", "warning": "เฝ้าระวัง", "watch": "เฝ้าดู"}


@dataclass(frozen=True)
class Alert:
    """One alert: raised, cleared or changed, at ``t`` (seconds since the epoch)."""

    alert: str  # water_watch, water_warning, water_critical, water_rising_fast, pm25_band
    state: str  # raised, cleared, changed
    severity: str  # info, warning, critical
    t: float
    message: str
    message_th: str
    value: float | None = None
    unit: str | None = None
    threshold: float | None = None
    band: dict[str, Any] | None = None

    def payload(self, site_id: str, gateway_id: str, device_id: str, kind: str) -> dict[str, Any]:
        """The contract's alert message (keys in this order: the bytes are part of it)."""
        return {
            "v": 1,
            "site_id": site_id,
            "gateway_id": gateway_id,
            "device_id": device_id,
            "kind": kind,
            "alert": self.alert,
            "state": self.state,
            "severity": self.severity,
            "t": iso_utc(self.t),
            "value": self.value,
            "unit": self.unit,
            "threshold": self.threshold,
            "band": self.band,
            "message": self.message[:500],
            "message_th": self.message_th[:500],
        }


@dataclass
class WaterAlertState:
    """The water-level alerts of one node."""

    level: str = "normal"  # normal / watch / warning / critical
    below_since: float | None = None
    rising: bool = False
    calm_since: float | None = None
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=512))

    def step(
        self,
        level: float,
        thresholds: Mapping[str, float | None],
        t: float,
        cfg: AlertsSection,
        unit_text: str,
    ) -> tuple[list[Alert], float | None]:
        """A new level reading: the alerts it raises or clears, and the rise in m/h."""
        self.history.append((t, float(level)))
        rate = rate_m_per_h(self.history, t)
        new = water_level_state(self.level, float(level), thresholds, cfg.water_hysteresis_m)

        def alert(band: str, state: str) -> Alert:
            return water_alert(band, state, level, thresholds, t, unit_text)

        alerts = self._level(new, t, cfg.hold_s, alert)
        if rate is not None:
            alerts += self._rising(rate, level, t, cfg, unit_text)
        return alerts, rate

    def _level(
        self, new: str, t: float, hold_s: float, alert: Callable[[str, str], Alert]
    ) -> list[Alert]:
        """The level bands: raised at once, cleared after ``hold_s`` below (with hysteresis)."""
        if new == self.level:
            self.below_since = None
            return []
        if RANK[new] > RANK[self.level]:
            self.below_since = None
            self.level = new
            return [alert(new, "raised")]
        if self.below_since is None:
            self.below_since = t
        if t - self.below_since < hold_s:
            return []
        alerts = [alert(self.level, "cleared")]
        self.level = new
        self.below_since = None
        if new != "normal":
            alerts.append(alert(new, "raised"))
        return alerts

    def _rising(
        self, rate: float, level: float, t: float, cfg: AlertsSection, unit_text: str
    ) -> list[Alert]:
        fast = cfg.water_rising_m_per_h
        if not self.rising and rate >= fast:
            self.rising, self.calm_since = True, None
            return [
                Alert(
                    "water_rising_fast",
                    "raised",
                    "warning",
                    t,
                    f"Water rising fast: {rate:.2f} m/h (threshold {fast:.2f} m/h), "
                    f"level {level:.2f} {unit_text}",
                    f"ระดับน้ำขึ้นเร็ว {rate:.2f} ม./ชม. ระดับ {level:.2f} ม.",
                    value=round(rate, 3),
                    unit="m/h",
                    threshold=fast,
                )
            ]
        if self.rising and rate < fast / 2:
            if self.calm_since is None:
                self.calm_since = t
            if t - self.calm_since >= cfg.hold_s:
                self.rising, self.calm_since = False, None
                return [
                    Alert(
                        "water_rising_fast",
                        "cleared",
                        "info",
                        t,
                        f"Water no longer rising fast ({rate:.2f} m/h)",
                        f"ระดับน้ำไม่ขึ้นเร็วแล้ว ({rate:.2f} ม./ชม.)",
                        value=round(rate, 3),
                        unit="m/h",
                        threshold=fast,
                    )
                ]
        elif self.rising:
            self.calm_since = None
        return []


def water_alert(
    level_state: str,
    state: str,
    level: float,
    thresholds: Mapping[str, float | None],
    t: float,
    unit_text: str,
) -> Alert:
    threshold = thresholds[level_state]
    th_name = _TH_NAME[level_state]
    if state == "raised":
        msg = f"Water level {level:.2f} {unit_text} is above the {level_state} level {threshold:.2f} m"
        msg_th = f"ระดับน้ำ {level:.2f} ม. สูงกว่าระดับ{th_name} {threshold:.2f} ม."
    else:
        msg = f"Water level {level:.2f} {unit_text} is back below the {level_state} level {threshold:.2f} m"
        msg_th = f"ระดับน้ำ {level:.2f} ม. ต่ำกว่าระดับ{th_name} {threshold:.2f} ม. แล้ว"
    severity = {"critical": "critical", "warning": "warning"}.get(level_state, "info")
    if state == "cleared":
        severity = "info"
    return Alert(
        f"water_{level_state}",
        state,
        severity,
        t,
        msg,
        msg_th,
        value=round(level, 3),
        unit="m",
        threshold=threshold,
    )


def water_level_state(
    current: str, level: float, thresholds: Mapping[str, float | None], hysteresis: float
) -> str:
    """The level state with hysteresis: rising into a band needs the threshold, falling out of
    it needs the threshold minus the margin. Bands: watch < warning < critical (each optional)."""
    raw = "normal"
    for name in ("watch", "warning", "critical"):
        threshold = thresholds.get(name)
        if threshold is not None and level >= threshold:
            raw = name
    if RANK[raw] >= RANK[current]:
        return raw
    # Falling: stay in the highest band (not above the current one) whose threshold minus the
    # margin the level is still above.
    for name in ("critical", "warning", "watch"):
        threshold = thresholds.get(name)
        if RANK[name] <= RANK[current] and threshold is not None and level > threshold - hysteresis:
            return name
    return raw


def rate_m_per_h(history: deque[tuple[float, float]], now: float) -> float | None:
    """Rise over the last 15-60 minutes in m/h, from the oldest sample in that span."""
    base: tuple[float, float] | None = None
    for t, v in history:
        if now - 3600.0 <= t <= now - 900.0:
            base = (t, v)
            break
    if base is None:
        return None
    dt = now - base[0]
    if dt <= 0:
        return None
    return (history[-1][1] - base[1]) / dt * 3600.0


@dataclass
class BandAlertState:
    """The PM2.5 band alert of one air node: the announced band and a candidate holding."""

    band: int | None = None
    candidate: int | None = None
    candidate_since: float | None = None

    def step(self, band: aqi.AqiBand, mean: float, t: float, hold_s: float) -> Alert | None:
        """A new 24-hour mean in ``band``: a ``pm25_band`` alert once a new band has held."""
        if self.band is None:
            self.band = band.level  # the first band after start is the baseline, not a change
            return None
        if band.level == self.band:
            self.candidate = None
            return None
        if self.candidate != band.level or self.candidate_since is None:
            self.candidate, self.candidate_since = band.level, t
        if t - self.candidate_since < hold_s:
            return None
        previous = self.band
        self.band, self.candidate = band.level, None
        severity = "critical" if band.level >= 5 else "warning" if band.level >= 4 else "info"
        return Alert(
            "pm25_band",
            "changed",
            severity,
            t,
            f"PM2.5 24-hour mean {mean:.1f} ug/m3: Thai AQI band now {band.name_en} "
            f"({band.colour}, was level {previous}). {band.advice_en}",
            f"PM2.5 เฉลี่ย 24 ชม. {mean:.1f} มคก./ลบ.ม. ระดับ{band.name_th} ({band.colour}) "
            f"{band.advice_th}",
            value=round(mean, 1),
            unit="ug/m3",
            band={
                "level": band.level,
                "colour": band.colour,
                "name_en": band.name_en,
                "previous_level": previous,
            },
        )
