"""What the status page keeps per device, and the maintenance windows."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EVENTS_KEPT = 20


@dataclass
class Device:
    device_id: str
    kind: str | None = None
    first_known: float | None = None
    last_rx: float | None = None  # when the last new reading arrived (gateway clock)
    last_t: float | None = None  # its sample time
    value: float | None = None
    unit: str = ""
    calibration_id: str | None = None
    qc: str | None = None  # "stuck" / "out_of_range" from the last observation's QARTOD tests
    battery_v: float | None = None
    status: dict[str, Any] = field(default_factory=dict)  # the node's last status message
    status_rx: float | None = None
    session: str | None = None  # the node's MQTT session (retained state topic): information only
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))

    def doc(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "kind",
                "first_known",
                "last_rx",
                "last_t",
                "value",
                "unit",
                "calibration_id",
                "qc",
                "battery_v",
                "status",
                "status_rx",
                "session",
            )
        } | {"events": list(self.events)}

    @classmethod
    def from_doc(cls, device_id: str, doc: Mapping[str, Any]) -> Device:
        d = cls(device_id)
        for k, v in doc.items():
            if k == "events":
                d.events.extend(v if isinstance(v, list) else [])
            elif hasattr(d, k):
                setattr(d, k, v)
        return d


@dataclass
class Window:
    id: int
    device_id: str
    start: float
    end: float | None
    reason: str

    def active(self, now: float) -> bool:
        return self.start <= now and (self.end is None or now < self.end)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device_id": self.device_id,
            "start": self.start,
            "end": self.end,
            "reason": self.reason,
        }


def num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
