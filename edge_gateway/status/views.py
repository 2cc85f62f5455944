"""The status page's views of the feed: a row per device (state, reasons, battery, calibration,
completeness) and the facts the alert dispatcher's silent-node rule judges."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from edge_gateway.status import liveness
from edge_gateway.status.devicefacts import Device, Window
from edge_gateway.status.history import BUCKET_S, BUCKETS, History, day_start, local_day

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_gateway.config import GatewayConfig


def sensor_errors(status: dict[str, Any]) -> int:
    """The sum of a node status message's sensor error counts."""
    errors = 0
    for counts in (status.get("sensor_errors") or {}).values():
        if isinstance(counts, dict):
            errors += sum(v for v in counts.values() if isinstance(v, int))
    return errors


class FeedViews:
    """Part of :class:`edge_gateway.status.feed.StatusFeed` (a mixin)."""

    config: GatewayConfig
    devices: dict[str, Device]
    windows: list[Window]
    history: History
    calibration: Callable[[str], Any] | None
    alerts: Any

    if TYPE_CHECKING:

        def drain(self, now: float | None = None) -> None: ...

        def in_maintenance(self, device_id: str, now: float) -> Window | None: ...

        def maintenance_seconds(self, device_id: str, lo: float, hi: float) -> float: ...

        def incidents(self, device_id: str | None = None) -> list[dict[str, Any]]: ...

    # -- views ----------------------------------------------------------------------------------

    def cadence(self, dev: Device) -> float:
        entry = self.config.device(dev.device_id)
        return liveness.cadence_s(
            dev.kind,
            dev.status.get("intervals"),
            entry.report_s if entry else None,
            self.config.inventory.default_report_s,
        )

    def completeness(self, dev: Device, days: int, now: float, cadence: float) -> float | None:
        """Readings received ÷ expected, by sample time, over the last ``days`` Bangkok
        days (today so far included), maintenance time left out of both."""
        today = local_day(now)
        lo = day_start(today) - (days - 1) * 86400
        lo = max(lo, dev.first_known or lo)
        expected_s = (now - lo) - self.maintenance_seconds(dev.device_id, lo, now)
        expected = expected_s / cadence
        if expected < 1:
            return None
        received = 0
        day = lo
        maintained = any(w.device_id == dev.device_id for w in self.windows)
        while day < now:
            name = local_day(day)
            counts = self.history.day_counts(dev.device_id, name)
            if counts is not None and not maintained:
                received += sum(counts)
            elif counts is not None:
                start = day_start(name)
                for i in range(BUCKETS):
                    if counts[i] and not self._bucket_in_maint(dev.device_id, start + i * BUCKET_S):
                        received += counts[i]
            day = day_start(name) + 86400
        return round(received / expected, 3)

    def _bucket_in_maint(self, device_id: str, t0: float) -> bool:
        return self.maintenance_seconds(device_id, t0, t0 + BUCKET_S) >= BUCKET_S / 2

    def liveness_facts(self, now: float | None = None) -> list[dict[str, Any]]:
        """Per device what :func:`liveness.from_status` judges (the alert dispatcher's
        silent-node rule uses these, so the page and the alerts agree): the last new reading,
        the cadence, and whether a maintenance window is open."""
        now = time.time() if now is None else now
        self.drain(now)
        return [
            {
                "device_id": d.device_id,
                "last_reading": d.last_rx,
                "report_s": self.cadence(d),
                "maintenance": self.in_maintenance(d.device_id, now) is not None,
            }
            for d in list(self.devices.values())
        ]

    def row(self, dev: Device, now: float) -> dict[str, Any]:
        s = self.config.status
        cad = self.cadence(dev)
        window = self.in_maintenance(dev.device_id, now)
        state = liveness.judge(
            dev.last_rx, now, cad, s.late_grace_s, s.offline_margin_s, window is not None
        )
        entry = self.config.device(dev.device_id)
        place = entry.location.name if entry is not None and entry.location is not None else None
        st = dev.status
        ob: dict[str, Any] = st["outbox"] if isinstance(st.get("outbox"), dict) else {}
        cal_state, cal_age = self._calibration_state(dev, now)
        facts = dev.doc() | {"cadence_s": cad, "maintenance": window.as_dict() if window else None}
        bat = dev.battery_v
        out: dict[str, Any] = {
            "device_id": dev.device_id,
            "site_id": self.config.site_id,
            "gateway_id": self.config.gateway_id,
            "name": entry.name if entry is not None else None,
            "place": place,
            "kind": dev.kind,
            "state": state,
            "reason": liveness.reason(state, facts, now, "en"),
            "reason_th": liveness.reason(state, facts, now, "th"),
            "cadence_s": cad,
            "last_reading": dev.last_rx,
            "last_sample_t": dev.last_t,
            "value": dev.value,
            "unit": dev.unit,
            "battery_v": bat,
            "battery_pct": liveness.battery_percent(bat),
            "low_battery": bat is not None and bat < s.low_battery_v,
            "rssi_dbm": st.get("rssi_dbm"),
            "fw": st.get("fw"),
            "outbox_depth": ob.get("depth"),
            "outbox_dropped": ob.get("dropped"),
            "sensor_errors": sensor_errors(st),
            "qc": dev.qc,
            "calibration_id": dev.calibration_id,
            "calibration": cal_state,
            "calibration_age_s": cal_age,
            "completeness_today": self.completeness(dev, 1, now, cad),
            "completeness_7d": self.completeness(dev, 7, now, cad),
            "completeness_30d": self.completeness(dev, 30, now, cad),
            "session": dev.session,
            "maintenance": window.as_dict() if window else None,
        }
        return out

    def _calibration_state(self, dev: Device, now: float) -> tuple[str, float | None]:
        """The device's calibration for the page: missing, unknown, expired, fleet or ok, and
        the record's age."""
        rec = (
            self.calibration(dev.calibration_id)
            if (self.calibration and dev.calibration_id and dev.calibration_id != "none")
            else None
        )
        if rec is None:
            return ("unknown" if dev.last_rx is None else "missing"), None
        valid_to = getattr(rec, "valid_to", None)
        state = (
            "expired"
            if valid_to is not None and valid_to.timestamp() <= now
            else ("fleet" if getattr(rec, "device_id", "") == "*" else "ok")
        )
        return state, now - rec.valid_from.timestamp()

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        self.drain(now)
        rows = [self.row(d, now) for d in list(self.devices.values())]
        if self.alerts is not None:
            per: dict[str, list[dict[str, Any]]] = {}
            for inc in self.incidents():
                per.setdefault(str(inc["device"]), []).append(inc)
            for r in rows:
                mine = per.get(r["device_id"], [])
                r["incidents"] = len(mine)
                r["incidents_unacked"] = sum(1 for i in mine if not i.get("acked_by"))
        return rows
