"""Processing: a validated node reading → the contract's ``observation`` plus any alerts.

Calibration comes from ``calibration.records`` (a per-device record valid at the sample time,
else a fleet default, else ``"none"`` and the raw value passed through); indices from
``calibration.aqi``; quality flags from ``calibration.qc`` (streaming, provisional). Alerts come
from the state machines of :mod:`edge_gateway.alerts` (de-bounced there).

A :class:`Processor` is used from one thread (the store thread) and is not thread-safe.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from calibration import aqi
from calibration.errors import CalibrationError
from calibration.qc import Flag
from calibration.records import CalibrationRecord, Registry
from edge_gateway import contract
from edge_gateway.alerts import RANK, Alert, BandAlertState, WaterAlertState
from edge_gateway.config import DeviceEntry, GatewayConfig, Location
from edge_gateway.ingest import iso_utc
from edge_gateway.quality import StreamingQuality

log = logging.getLogger(__name__)

GOOD, UNKNOWN, SUSPECT, FAIL, MISSING = (int(f) for f in Flag)  # calibration.qc's QARTOD flags

# Calibrated quantities per node kind, and the raw channel passed through when no record applies.
QUANTITIES: Mapping[str, Mapping[str, str | None]] = {
    "air": {"pm25": "pm25_atm", "pm10": "pm10_atm", "temp": "temp", "rh": "rh"},
    "water": {"level": None},
    "parking": {"occupied": "occupied"},
}
UNITS = {
    "pm25": "ug/m3",
    "pm10": "ug/m3",
    "temp": "Cel",
    "rh": "%RH",
    "level": "m",
    "occupied": "/",
}


class QualityChecker(Protocol):
    """The seam to ``calibration.qc``: flags for one value of one quantity of one device —
    (flag, tests) provisional, and the settled (flag, tests) of the stream's previous value."""

    def check(
        self, device_id: str, quantity: str, t: float, value: float | None
    ) -> tuple[int, dict[str, int], tuple[int, dict[str, int]] | None]: ...


@dataclass
class Processed:
    observation: dict[str, Any]
    payload: bytes
    alerts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _AirState:
    rolling: aqi.Rolling24h
    alerts: BandAlertState = field(default_factory=BandAlertState)


def load_registries(config: GatewayConfig) -> tuple[Registry | None, Registry | None]:
    """(site records, fleet defaults); either may be None."""
    site = Registry.load(config.calibration.records) if config.calibration.records else None
    fleet = None
    if config.calibration.fleet_defaults:
        base = resources.files("calibration").joinpath("data/records")
        path = Path(str(base))
        if path.exists():
            fleet = Registry.load(path)
    return site, fleet


class Processor:
    """Turns readings into observations; holds per-device streaming state."""

    def __init__(
        self,
        config: GatewayConfig,
        registries: tuple[Registry | None, Registry | None] | None = None,
        quality: QualityChecker | None = None,
    ) -> None:
        self.config = config
        self.site_registry, self.fleet_registry = (
            registries if registries is not None else load_registries(config)
        )
        self.quality: QualityChecker = quality if quality is not None else StreamingQuality()
        self._water: dict[str, WaterAlertState] = {}
        self._air: dict[str, _AirState] = {}
        self._previous: dict[str, tuple[int, int]] = {}  # device -> (boot, seq) last processed
        self._saved_bands: dict[str, int] = {}
        self.calibration_errors = 0
        # Where a node says it was provisioned (DeviceTracker.location); a location in the
        # gateway's [[inventory.device]] wins, the site's location is the fallback.
        self.node_location: Callable[[str], Location | None] = lambda _device_id: None

    def alert_state(self) -> dict[str, Any]:
        """The alert states (not the rolling data) as plain data, to survive a restart: after a
        power cut a water level already above its warning must not be announced again."""
        return {
            "water": {d: {"level": w.level, "rising": w.rising} for d, w in self._water.items()},
            "pm25_band": {
                d: a.alerts.band for d, a in self._air.items() if a.alerts.band is not None
            },
        }

    def restore_alert_state(self, saved: Mapping[str, Any]) -> None:
        for dev, w in (saved.get("water") or {}).items():
            if w.get("level") in RANK:
                state = self._water.setdefault(str(dev), WaterAlertState())
                state.level, state.rising = str(w["level"]), bool(w.get("rising"))
        self._saved_bands = {
            str(d): int(b) for d, b in (saved.get("pm25_band") or {}).items() if isinstance(b, int)
        }

    def reconfigure(
        self, config: GatewayConfig, registries: tuple[Registry | None, Registry | None]
    ) -> None:
        """Apply a reloaded config; streaming state (rolling means, alert states) is kept."""
        self.config = config
        self.site_registry, self.fleet_registry = registries

    # -- calibration --------------------------------------------------------------------------

    def find_record(
        self, device_id: str, quantity: str, when: datetime
    ) -> CalibrationRecord | None:
        for registry in (self.site_registry, self.fleet_registry):
            if registry is not None:
                record = registry.find(device_id, quantity, when)
                if record is not None:
                    return record
        return None

    def _calibrate(
        self, device_id: str, kind: str, raw: Mapping[str, Any], when: datetime
    ) -> dict[str, dict[str, Any]]:
        numbers = {
            k: float(v["v"])
            for k, v in raw.items()
            if isinstance(v["v"], (int, float)) and not isinstance(v["v"], bool)
        }
        out: dict[str, dict[str, Any]] = {}
        for quantity, passthrough in QUANTITIES.get(kind, {}).items():
            record = self.find_record(device_id, quantity, when)
            if record is not None and all(ch in numbers for ch in record.inputs):
                entry: dict[str, Any] = {"v": None, "u": record.unit, "calibration_id": record.id}
                try:
                    entry["v"] = round(record.apply(numbers), 4)
                except CalibrationError as exc:
                    self.calibration_errors += 1
                    log.debug("%s %s: %s", device_id, quantity, exc)
                if record.datum is not None:
                    entry["datum"] = record.datum
                out[quantity] = entry
            elif passthrough is not None and passthrough in raw:
                out[quantity] = {
                    "v": raw[passthrough]["v"],
                    "u": raw[passthrough]["u"],
                    "calibration_id": "none",
                }
        return out

    # -- the whole reading --------------------------------------------------------------------

    def process(self, device_id: str, reading: Mapping[str, Any], received: float) -> Processed:
        cfg = self.config
        device = cfg.device(device_id)
        kind = str(reading["kind"])
        t = float(reading["t"])
        synced = bool(reading["synced"])
        # An unsynced node clock is uptime-based: look records up at the time we received it.
        when = datetime.fromtimestamp(t if synced else received, UTC)
        raw = reading["raw"]
        calibrated = self._calibrate(device_id, kind, raw, when)
        quality, quality_tests, settles_quality, settles_tests = self._quality(
            device_id, calibrated, t
        )
        t_eval = t if synced else received
        derived, alerts = self._derive(device_id, device, kind, calibrated, quality, t_eval)
        place = device.location if device and device.location else self.node_location(device_id)
        location = (place or cfg.location).as_contract()
        obs: dict[str, Any] = {
            "v": 1,
            "site_id": cfg.site_id,
            "gateway_id": cfg.gateway_id,
            "device_id": device_id,
            "kind": kind,
            "fw": reading["fw"],
            "boot": reading["boot"],
            "seq": reading["seq"],
            "phenomenon_time": iso_utc(t),
            "t": t,
            "clock_synced": synced,
            "received_time": iso_utc(received, millis=True),
        }
        if "window_s" in reading:
            obs["window_s"] = reading["window_s"]
        obs["location"] = location
        obs["raw"] = raw
        obs["calibrated"] = calibrated
        obs["quality"] = quality
        if quality_tests:
            obs["quality_tests"] = quality_tests
        previous = self._previous.get(device_id)
        if settles_quality and previous is not None:
            # The spike test of the device's previous reading, now that this one is here.
            obs["settles"] = {
                "boot": previous[0],
                "seq": previous[1],
                "quality": settles_quality,
                "quality_tests": settles_tests,
            }
        self._previous[device_id] = (reading["boot"], reading["seq"])
        if derived:
            obs["derived"] = derived
        obs["replay"] = False  # must stay the last key: the forwarder flips it in the bytes
        payload = json.dumps(obs, separators=(",", ":"), ensure_ascii=False).encode()
        return Processed(obs, payload, alerts)

    def _quality(
        self, device_id: str, calibrated: Mapping[str, Mapping[str, Any]], t: float
    ) -> tuple[
        dict[str, int], dict[str, dict[str, int]], dict[str, int], dict[str, dict[str, int]]
    ]:
        """QC flags per quantity (and their tests), and the settled flags of the stream's
        previous value (the spike test needs the value after it)."""
        quality: dict[str, int] = {}
        quality_tests: dict[str, dict[str, int]] = {}
        settles_quality: dict[str, int] = {}
        settles_tests: dict[str, dict[str, int]] = {}
        for quantity, entry in calibrated.items():
            value = entry["v"]
            if value is None:
                quality[quantity] = MISSING
                continue
            if isinstance(value, bool):
                quality[quantity] = UNKNOWN
                continue
            flag, tests, settled = self.quality.check(device_id, quantity, t, float(value))
            quality[quantity] = flag
            if tests:
                quality_tests[quantity] = tests
            if settled is not None:
                settles_quality[quantity], settles_tests[quantity] = settled
        return quality, quality_tests, settles_quality, settles_tests

    # -- derived values and alerts ------------------------------------------------------------

    def _derive(
        self,
        device_id: str,
        device: DeviceEntry | None,
        kind: str,
        calibrated: Mapping[str, Mapping[str, Any]],
        quality: Mapping[str, int],
        t: float,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if kind == "air":
            return self._derive_air(device_id, device, kind, calibrated, quality, t)
        if kind == "water":
            return self._derive_water(device_id, device, kind, calibrated, quality, t)
        if kind == "parking":
            occ = calibrated.get("occupied", {}).get("v")
            if isinstance(occ, bool):
                return {"status": "occupied" if occ else "free"}, []
        return {}, []

    def _payloads(self, device_id: str, kind: str, alerts: list[Alert]) -> list[dict[str, Any]]:
        cfg = self.config
        return [a.payload(cfg.site_id, cfg.gateway_id, device_id, kind) for a in alerts]

    def _derive_air(
        self,
        device_id: str,
        device: DeviceEntry | None,
        kind: str,
        calibrated: Mapping[str, Mapping[str, Any]],
        quality: Mapping[str, int],
        t: float,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        pm25 = calibrated.get("pm25", {}).get("v")
        if not isinstance(pm25, (int, float)) or isinstance(pm25, bool) or not math.isfinite(pm25):
            return {}, []
        if quality.get("pm25") == FAIL or pm25 < 0:
            return {}, []
        state = self._air.get(device_id)
        if state is None:
            report_s = (
                device.report_s if device else None
            ) or self.config.inventory.default_report_s
            interval = timedelta(seconds=min(report_s, 86400.0))
            band_state = BandAlertState(self._saved_bands.pop(device_id, None))
            state = _AirState(aqi.Rolling24h(interval), band_state)
            self._air[device_id] = state
        # One sample per expected interval (the slot of t): a node, or anything sending as one,
        # that reports faster than its interval replaces its slot's value instead of growing
        # the 24-hour window without bound (memory, issue 11). A node on schedule is unchanged.
        slot = state.rolling.expected_interval.total_seconds()
        mean = state.rolling.add(
            datetime.fromtimestamp(math.floor(t / slot) * slot, UTC), float(pm25)
        )
        if mean.mean is None:
            return {}, []
        derived: dict[str, Any] = {}
        alerts: list[dict[str, Any]] = []
        try:
            thai = aqi.thai_aqi_detail("pm25", mean.mean)
        except CalibrationError:
            return {}, []
        band = thai.band
        derived["thai_aqi"] = _thai_aqi(thai.aqi, band, mean.mean, mean.completeness)
        try:
            us = aqi.us_aqi("pm25", mean.mean)
            us_b = aqi.us_band(us)
            derived["us_aqi"] = {"value": us, "category": us_b.name_en, "colour": us_b.colour}
        except CalibrationError:
            derived["us_aqi"] = {"value": None, "category": "Beyond the AQI", "colour": "maroon"}
        if self.config.alerts.pm25_band_alerts:
            alert = state.alerts.step(band, mean.mean, t, self.config.alerts.hold_s)
            if alert is not None:
                alerts += self._payloads(device_id, kind, [alert])
        return derived, alerts

    def _derive_water(
        self,
        device_id: str,
        device: DeviceEntry | None,
        kind: str,
        calibrated: Mapping[str, Mapping[str, Any]],
        quality: Mapping[str, int],
        t: float,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        entry = calibrated.get("level")
        level = entry.get("v") if entry else None
        if (
            not isinstance(level, (int, float))
            or isinstance(level, bool)
            or quality.get("level") == FAIL
        ):
            return {}, []
        a = self.config.alerts
        watch = (
            device.water_watch_m if device and device.water_watch_m is not None else a.water_watch_m
        )
        warning = (
            device.water_warning_m
            if device and device.water_warning_m is not None
            else a.water_warning_m
        )
        critical = (
            device.water_critical_m
            if device and device.water_critical_m is not None
            else a.water_critical_m
        )
        state = self._water.setdefault(device_id, WaterAlertState())
        datum = str(entry.get("datum", "")) if entry else ""
        unit_text = "m MSL" if datum == "MSL" else "m (staff gauge)"
        thresholds = {"watch": watch, "warning": warning, "critical": critical}
        raised, rate = state.step(level, thresholds, t, a, unit_text)
        derived: dict[str, Any] = {
            "level_state": {
                "state": state.level,
                "level_m": level,
                "datum": datum or None,
                "warning_m": warning,
                "critical_m": critical,
                **({"watch_m": watch} if watch is not None else {}),
                "rate_m_per_h": None if rate is None else round(rate, 3),
                "rising_fast": state.rising,
            }
        }
        return derived, self._payloads(device_id, kind, raised)


def _thai_aqi(value: Any, band: aqi.AqiBand, mean: float, completeness: float) -> dict[str, Any]:
    return {
        "value": value,
        "level": band.level,
        "name_en": band.name_en,
        "name_th": band.name_th,
        "colour": band.colour,
        "colour_hex": band.colour_hex,
        "advice_en": band.advice_en,
        "advice_th": band.advice_th,
        "pm25_24h": round(mean, 1),
        "completeness_24h": round(completeness, 3),
    }


def validate_observation(obs: Mapping[str, Any]) -> None:
    """Raise contract.ContractError if the observation breaks the contract (tests use it)."""
    contract.validate("observation", obs)
