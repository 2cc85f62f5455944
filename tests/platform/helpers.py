"""Platform test helpers: contract-valid payloads and a QoS 2 publisher like a gateway's."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from edge_gateway import contract


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def observation(
    site: str, gateway: str, device: str, boot: int, seq: int, t: float, pm25_cf1: float = 20.0
) -> dict[str, Any]:
    """An air observation as the gateway publishes it (calibrated with a linear record)."""
    cal = round(0.62 * pm25_cf1 + 1.5, 3)
    obs: dict[str, Any] = {
        "v": 1,
        "site_id": site,
        "gateway_id": gateway,
        "device_id": device,
        "kind": "air",
        "fw": "0.1.0",
        "boot": boot,
        "seq": seq,
        "phenomenon_time": iso(t),
        "t": t,
        "clock_synced": True,
        "received_time": iso(t + 0.5),
        "window_s": 60,
        "location": {"lat": 12.68, "lon": 101.27, "name": f"{site} roof"},
        "raw": {"pm25_cf1": {"v": pm25_cf1, "u": "ug/m3"}, "rh": {"v": 55.0, "u": "%RH"}},
        "calibrated": {"pm25": {"v": cal, "u": "ug/m3", "calibration_id": "test-linear-2026"}},
        "quality": {"pm25": 1},
        "quality_tests": {"pm25": {"gross_range": 1, "spike": 2}},
        "replay": False,
    }
    if seq > 0:
        obs["settles"] = {
            "boot": boot,
            "seq": seq - 1,
            "quality": {"pm25": 3},
            "quality_tests": {"pm25": {"gross_range": 1, "spike": 3}},
        }
    contract.validate("observation", obs)
    return obs


class Publisher:
    """Publishes with QoS 2 and waits for every PUBCOMP, as the gateway does upstream."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.connect(host, port)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError(f"publisher could not connect to {host}:{port}")
        self.pending: list[mqtt.MQTTMessageInfo] = []

    def send(self, topic: str, payload: dict[str, Any] | bytes, qos: int = 2) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.pending.append(self.client.publish(topic, data, qos=qos))

    def flush(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        for info in self.pending:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise AssertionError("the broker did not complete a QoS 2 publish in time")
        self.pending.clear()

    def close(self) -> None:
        self.flush()
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
