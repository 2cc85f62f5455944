"""Per-device status the gateway publishes (retained): last seen, battery, signal, outbox,
and completeness = readings received ÷ readings expected over the last 24 hours.

Completeness counts readings by **sample time** (the reading's ``t``; its receive time when the
node's clock is not synced), de-duplicated, in 10-minute buckets that the store keeps
(:meth:`edge_gateway.store.Store.sample_counts`), so a backlog upload counts where its readings
belong and a restart forgets nothing:

    received_24h = new readings whose sample time is in the last 24 h
    expected_24h = max(1, floor(min(24 h, now - first sample time) / report_s))
    completeness = received_24h / expected_24h   (above 1 with alarm-driven extra readings)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from boards import KINDS
from edge_gateway.config import GatewayConfig, Location
from edge_gateway.ingest import iso_utc
from edge_gateway.store import SAMPLE_BUCKET_S, SAMPLE_DAY_S

_DAY_S = float(SAMPLE_DAY_S)


@dataclass
class DeviceState:
    device_id: str
    kind: str | None = None
    fw: str | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    last_reading: float | None = None  # a reading, not a status or session: what liveness means
    presence: str = "unknown"  # from the node's retained state topic
    battery_v: float | None = None
    rssi_dbm: int | None = None
    outbox_depth: int | None = None
    outbox_dropped: int | None = None
    report_s: float | None = None
    sensor_errors: dict[str, Any] = field(default_factory=dict)
    location: Location | None = None  # as provisioned, from the node's retained state
    buckets: dict[int, int] = field(default_factory=dict)  # sample-time bucket start -> count
    first_sample: float | None = None  # earliest sample time ever counted (kept in the store)
    dirty: bool = True

    def count(self, t: float, now: float) -> None:
        """One new reading with sample time ``t``."""
        start = int(t // SAMPLE_BUCKET_S) * SAMPLE_BUCKET_S
        self.buckets[start] = self.buckets.get(start, 0) + 1
        self.first_sample = t if self.first_sample is None else min(self.first_sample, t)
        for old in [b for b in self.buckets if b <= now - _DAY_S]:
            del self.buckets[old]

    def received_24h(self, now: float) -> int:
        return sum(c for s, c in self.buckets.items() if now - _DAY_S < s <= now)


class DeviceTracker:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.devices: dict[str, DeviceState] = {}
        self.started = time.time()
        # Completeness counts from the store, for devices not heard from since the start: a
        # device joins ``devices`` (and gets a status message) when it is heard from again.
        self._restored: dict[str, DeviceState] = {}

    def restore(self, counts: dict[str, dict[int, int]], firsts: dict[str, float]) -> None:
        """Load the stored completeness buckets (:meth:`Store.sample_counts`)."""
        for dev in set(counts) | set(firsts):
            target = self.devices.get(dev) or self._restored.setdefault(dev, DeviceState(dev))
            target.buckets = dict(counts.get(dev, {}))
            target.first_sample = firsts.get(dev)

    def _get(self, device_id: str) -> DeviceState:
        state = self.devices.get(device_id)
        if state is None:
            state = self._restored.pop(device_id, None) or DeviceState(device_id)
            entry = self.config.device(device_id)
            if entry is not None:
                state.kind = entry.kind
            self.devices[device_id] = state
        return state

    def seen(
        self, device_id: str, now: float, kind: str | None = None, fw: str | None = None
    ) -> None:
        state = self._get(device_id)
        if state.first_seen is None:
            state.first_seen = now
        state.last_seen = now
        if kind:
            state.kind = kind
        if fw:
            state.fw = fw
        state.dirty = True

    def reading(self, device_id: str, body: dict[str, Any], now: float) -> None:
        self.seen(device_id, now, body.get("kind"), body.get("fw"))
        self._get(device_id).last_reading = now
        battery = body.get("raw", {}).get("battery")
        if battery is not None and isinstance(battery.get("v"), (int, float)):
            self._get(device_id).battery_v = float(battery["v"])

    def counted(self, device_id: str, sample_time: float, now: float) -> None:
        """A new (not duplicate) reading was committed."""
        self._get(device_id).count(sample_time, now)

    def status(self, device_id: str, body: dict[str, Any], now: float) -> None:
        self.seen(device_id, now, body.get("kind"), body.get("fw"))
        state = self._get(device_id)
        if body.get("battery_v") is not None:
            state.battery_v = float(body["battery_v"])
        if "rssi_dbm" in body:
            state.rssi_dbm = body["rssi_dbm"]
        outbox = body.get("outbox") or {}
        state.outbox_depth = outbox.get("depth")
        state.outbox_dropped = outbox.get("dropped")
        report = (body.get("intervals") or {}).get("report_s")
        if isinstance(report, (int, float)) and report > 0:
            state.report_s = float(report)
        state.sensor_errors = body.get("sensor_errors") or {}
        state.presence = "online"

    # -- where each node is: provisioned on the node, in its retained state message -----------

    @staticmethod
    def _set_location(state: DeviceState, loc: Any) -> None:
        """Take the location a state message carries (schema-checked already). A node
        provisioned without one reports lat = lon = 0 and gets the site's location."""
        if not isinstance(loc, dict):
            return
        lat, lon, elev = loc.get("lat"), loc.get("lon"), loc.get("elev_m")
        if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
            return
        state.location = None
        if (lat, lon) != (0, 0) and -90 <= lat <= 90 and -180 <= lon <= 180:
            state.location = Location(
                float(lat),
                float(lon),
                float(elev) if isinstance(elev, (int, float)) else None,
                str(loc.get("name") or "")[:120] or None,
            )

    def location(self, device_id: str) -> Location | None:
        """The location the node reported (None: not yet known, or not provisioned)."""
        state = self.devices.get(device_id)
        return state.location if state is not None else None

    def presence(self, device_id: str, body: dict[str, Any], now: float) -> None:
        state = self._get(device_id)
        state.presence = str(body.get("state", "unknown"))
        if body.get("fw"):
            state.fw = body["fw"]
        if "location" in body:  # retained: known from the moment the gateway subscribes
            self._set_location(state, body["location"])
        if state.presence == "online":
            self.seen(device_id, now)
        state.dirty = True

    def payload(self, device_id: str, now: float) -> dict[str, Any]:
        state = self._get(device_id)
        entry = self.config.device(device_id)
        report_s = (
            (entry.report_s if entry and entry.report_s else None)
            or state.report_s
            or self.config.inventory.default_report_s
        )
        # Expected readings: over 24 h, or since the device's first sample if that is shorter.
        span = _DAY_S
        first = state.first_sample if state.first_sample is not None else state.first_seen
        if first is not None:
            span = min(_DAY_S, max(report_s, now - first))
        expected = max(1, int(span / report_s))
        received = state.received_24h(now)
        state_name = state.presence
        if state.last_seen is None:
            state_name = "unknown"
        elif now - state.last_seen > self.config.health.device_offline_s:
            state_name = "offline"
        elif state_name == "unknown":
            state_name = "online"
        body: dict[str, Any] = {
            "v": 1,
            "site_id": self.config.site_id,
            "gateway_id": self.config.gateway_id,
            "device_id": device_id,
            "state": state_name,
            "last_seen": None if state.last_seen is None else iso_utc(state.last_seen),
            "battery_v": state.battery_v,
            "rssi_dbm": state.rssi_dbm,
            "outbox_depth": state.outbox_depth,
            "outbox_dropped": state.outbox_dropped,
            "completeness": round(received / expected, 3),
            "received_24h": received,
            "expected_24h": expected,
            "sensor_errors": state.sensor_errors,
            "fw": state.fw,
            "report_s": report_s,  # the cadence the fleet view judges liveness by
            "last_reading": None if state.last_reading is None else iso_utc(state.last_reading),
        }
        if state.kind in KINDS:
            body["kind"] = state.kind
        return body
