"""The silent-node rule (``node_silent``) and the system alerts made without a reading: the
same in the gateway (its device tracker) and centrally (device status messages)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from edge_gateway.notify.wording import parse_t


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
