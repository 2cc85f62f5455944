"""Small synchronous MQTT helpers (paho-mqtt 2) for the field-tool tests."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

# Run as root (CI containers), Mosquitto drops to the 'mosquitto' user, which cannot read
# pytest's 0700 temporary directories; 'user root' keeps it as the invoking user. Mosquitto
# ignores the option when it is not started as root.
ROOT_SAFE = ["user root"]


class Client:
    """A connected paho client that queues what it receives."""

    def __init__(self, port: int, username: str, password: str, client_id: str | None = None):
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[Any] = queue.Queue()
        self._subacked = threading.Event()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{username}-{time.monotonic_ns()}",
        )
        self.c.username_pw_set(username, password)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.received.put((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self._subacked.set()
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        rc = self.connack.get(timeout=10)
        self.reason = rc
        self.ok = not rc.is_failure

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subacked.clear()
        self.c.subscribe(topic, qos)
        assert self._subacked.wait(10)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def connect_refused(port: int, username: str, password: str) -> bool:
    c = Client(port, username, password)
    c.close()
    return not c.ok
