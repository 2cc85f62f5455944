"""The real node firmware under the real MicroPython unix port on the simulated board
(host_tools/simnode.py), against a real Mosquitto. A small paho peer plays the gateway: it
validates every message against the contract, records readings and sends custody acks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest

from edge_gateway import contract
from host_tools.brokers import MosquittoBroker
from host_tools.simnode import SimNode

pytestmark = [pytest.mark.micropython, pytest.mark.broker]

HEAP = "256k"


class Gateway:
    """Test peer: validates, records (de-duplicated on (device, boot, seq)), acks custody."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Condition()
        self.readings: dict[str, list[dict[str, Any]]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.acks: dict[str, list[dict[str, Any]]] = {}
        self.states: dict[str, list[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.duplicates = 0
        self._seen: set[tuple[str, int, int]] = set()
        self.client: paho.Client | None = None

    def start(self) -> Gateway:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-gateway")
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("cityedge/v1/node/+/+", 1)
        c.on_message = self._on_message
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        self.client = c
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def _on_message(self, c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        parsed = contract.parse_node_topic(m.topic)
        if parsed is None:
            return
        device, leaf = parsed
        schema = {"reading": "reading", "status": "node_status", "ack": "command_ack",
                  "state": "node_state"}.get(leaf)
        if schema is None:
            return
        try:
            msg = json.loads(m.payload)
            contract.validate(schema, msg)
        except (ValueError, contract.ContractError) as e:
            with self.lock:
                self.errors.append(f"{leaf}: {e}: {m.payload[:300]!r}")
            return
        with self.lock:
            if leaf == "reading":
                key = (device, msg["boot"], msg["seq"])
                if key in self._seen:
                    self.duplicates += 1
                else:
                    self._seen.add(key)
                    self.readings.setdefault(device, []).append(msg)
            elif leaf == "status":
                self.statuses.setdefault(device, []).append(msg)
            elif leaf == "ack":
                self.acks.setdefault(device, []).append(msg)
            else:
                self.states.setdefault(device, []).append(msg)
            self.lock.notify_all()
        if leaf == "reading":
            # "Stored durably" (recorded above), now take custody.
            ack = {"v": 1, "boot": msg["boot"], "from": msg["seq"], "to": msg["seq"]}
            c.publish(contract.node_topic(device, "custody"), json.dumps(ack), qos=1)

    def wait(self, pred: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; errors: {self.errors[:3]}")
                self.lock.wait(min(left, 0.2))

    def n_readings(self, device: str) -> int:
        return len(self.readings.get(device, []))

    def command(self, device: str, cmd: dict[str, Any]) -> None:
        assert self.client is not None
        self.client.publish(contract.node_topic(device, "cmd"), json.dumps(cmd), qos=1)


def assert_complete(readings: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Per boot: seqs arrive in order, with no gap from the first to the last."""
    per_boot: dict[int, list[int]] = {}
    for r in readings:
        per_boot.setdefault(r["boot"], []).append(r["seq"])
    for boot, seqs in per_boot.items():
        assert seqs == sorted(seqs), f"boot {boot}: out of order {seqs}"
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"boot {boot}: gap in {seqs}"
    return per_boot


@pytest.fixture
def broker(broker_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    return broker_factory("site")


@pytest.fixture
def gateway(broker: MosquittoBroker) -> Iterator[Gateway]:
    g = Gateway(broker.port).start()
    yield g
    g.stop()


@pytest.fixture
def nodes() -> Iterator[list[SimNode]]:
    made: list[SimNode] = []
    yield made
    for n in made:
        n.close()


def _node(nodes: list[SimNode], kind: str, broker: MosquittoBroker, **kw: Any) -> SimNode:
    kw.setdefault("heap", HEAP)
    kw.setdefault("seed", 11 + len(nodes))
    n = SimNode(kind, broker=broker.address, **kw)
    nodes.append(n)
    return n


def test_every_kind_publishes_valid_readings_and_status(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode]
) -> None:
    fast = {"intervals": {"sample_s": 10, "report_s": 30, "status_s": 120, "heartbeat_s": 60}}
    made = [_node(nodes, k, broker, speed=60, config_overrides=fast).start()
            for k in ("air", "water", "parking")]
    for n in made:
        gateway.wait(lambda n=n: gateway.n_readings(n.device_id) >= 4, 40, f"{n.kind} readings")
        gateway.wait(lambda n=n: len(gateway.statuses.get(n.device_id, [])) >= 1, 20, "status")
    assert not gateway.errors, gateway.errors[:3]
    channels = {
        "air": {"pm1_cf1", "pm25_cf1", "pm10_cf1", "pm1_atm", "pm25_atm", "pm10_atm", "temp", "rh"},
        "water": {"distance", "air_temp"},
        "parking": {"mag_x", "mag_y", "mag_z", "field_delta", "occupied"},
    }
    for n in made:
        rs = gateway.readings[n.device_id]
        assert {r["kind"] for r in rs} == {n.kind}
        assert channels[n.kind] <= set(rs[-1]["raw"]), rs[-1]["raw"]
        assert_complete(rs)
        assert rs[0]["seq"] == 0
        st = gateway.statuses[n.device_id][-1]
        assert st["config_error"] is None
        assert st["outbox"]["capacity"] == 512
    air = gateway.readings[made[0].device_id]
    assert all(r["synced"] for r in air[1:]), "NTP set the clock once WiFi was up"
    assert all(0 < r["raw"]["pm25_atm"]["v"] < 1000 for r in air)
    assert all(abs(r["window_s"] - 30) <= 2 and r["n"] == 3 for r in air[1:]), [(r["window_s"], r["n"], r["t"]) for r in air]
    water = gateway.readings[made[1].device_id]
    assert all(0.03 < r["raw"]["distance"]["v"] < 4.5 for r in water)
    assert gateway.states[made[0].device_id][0]["state"] == "online"
