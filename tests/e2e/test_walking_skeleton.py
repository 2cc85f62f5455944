"""Issue 2's walking skeleton, end to end on the real parts: the real firmware under the real
MicroPython unix port publishes to a real Mosquitto (the site broker); the gateway runs as its
own process, stores, calibrates and forwards to a second real Mosquitto (the city platform);
the test subscribes there as an integrator would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from calibration.records import Registry
from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from host_tools.sim.simnode import SimNode
from tests.support.calibrated_gateway import (
    linear_pm25_record,
    start_gateway_process,
    write_gateway_toml,
)

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

SITE = "skeleton-school-01"
GATEWAY = "gw-skeleton-01"


class Integrator:
    """A platform-side subscriber, like a city data platform or a start-up would run."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"integrator-{os.getpid()}"
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.raw.append((msg.topic, msg.payload))
            try:
                self.messages.append((msg.topic, json.loads(msg.payload)))
            except ValueError:
                pass

    def wait(
        self, predicate: Callable[[list[tuple[str, dict[str, Any]]]], bool], timeout_s: float
    ) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.2)
        return False

    def snapshot(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _records(tmp_path: Path, device_id: str) -> Path:
    path = tmp_path / "calibration.toml"
    path.write_text(
        linear_pm25_record("skeleton-linear-2026", device_id, "walking-skeleton test", 0.62, 1.5)
    )
    return path


def _gateway_config(
    tmp_path: Path, local: MosquittoBroker, upstream: MosquittoBroker, records: Path
) -> Path:
    return write_gateway_toml(
        tmp_path / "gateway.toml",
        gateway_id=GATEWAY,
        site_id=SITE,
        data_dir=tmp_path / "gw-data",
        location=(16.4419, 102.8360, "Khon Kaen test school"),
        local=local,
        upstream=upstream,
        records=records,
    )


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        proc = start_gateway_process(config, stdout=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def _observations(
    messages: list[tuple[str, dict[str, Any]]], device_id: str
) -> list[dict[str, Any]]:
    return [
        m for t, m in messages if t.endswith("/observation") and m.get("device_id") == device_id
    ]


def _check_garbage_dead_lettered(
    local_broker: MosquittoBroker, dead: Integrator, device_id: str
) -> None:
    # Garbage on the node's topic is refused with a reason and does not stop the gateway.
    bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="garbage-sender")
    bad.connect(local_broker.host, local_broker.port)
    bad.loop_start()
    topic = contract.node_topic(device_id, "reading")
    bad.publish(topic, b"\x00\x01 not json", qos=1).wait_for_publish(5)
    broken = contract.example("reading") | {"device_id": device_id, "seq": -5}
    bad.publish(topic, json.dumps(broken), qos=1).wait_for_publish(5)
    bad.loop_stop()
    bad.disconnect()
    assert dead.wait(lambda ms: len(ms) >= 2, timeout_s=20), "dead letters were not published"
    reasons = [m["reason"] for _, m in dead.snapshot()]
    assert any("JSON" in r for r in reasons), reasons
    assert any("seq" in r for r in reasons), reasons
    for _, m in dead.snapshot():
        contract.validate("deadletter", m)


def _check_observations(
    observations: list[dict[str, Any]], registry: Registry, device_id: str
) -> None:
    keys = [(o["boot"], o["seq"]) for o in observations]
    assert len(keys) == len(set(keys)), "an observation arrived twice"
    assert keys == sorted(keys), "observations arrived out of order"
    for obs in observations:
        contract.validate("observation", obs)
        assert obs["site_id"] == SITE and obs["gateway_id"] == GATEWAY
        assert obs["kind"] == "air"
        assert obs["location"]["lat"] == pytest.approx(16.4419)
        raw = obs["raw"]["pm25_cf1"]["v"]
        cal = obs["calibrated"]["pm25"]
        when = datetime.fromtimestamp(obs["t"], UTC)
        record = registry.find(device_id, "pm25", when)
        assert record is not None
        assert cal["calibration_id"] == "skeleton-linear-2026"
        assert cal["v"] == pytest.approx(0.62 * raw + 1.5, abs=0.01)
        assert cal["v"] == pytest.approx(record.apply({"pm25_cf1": raw}), abs=0.01)
        assert 0 <= raw < 1000
        for quantity, flag in obs["quality"].items():
            assert flag in (1, 2, 3, 4, 9), quantity


def test_readings_flow_from_firmware_through_gateway_to_platform(
    tmp_path: Path,
    local_broker: MosquittoBroker,
    upstream_broker: MosquittoBroker,
    gateway_process: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    node = SimNode(
        "air",
        broker=local_broker.address,
        speed=30,
        seed=4242,
        flash_dir=tmp_path / "node",
        site_id=SITE,
    )
    records = _records(tmp_path, node.device_id)
    registry = Registry.load(records)
    integrator = Integrator(upstream_broker, f"{contract.ROOT}/site/{SITE}/#")
    dead = Integrator(local_broker, contract.deadletter_topic(GATEWAY))
    gateway = gateway_process(_gateway_config(tmp_path, local_broker, upstream_broker, records))
    try:
        node.start()
        want = 6
        ok = integrator.wait(
            lambda ms: len(_observations(ms, node.device_id)) >= want, timeout_s=90
        )
        assert ok, "no observations reached the platform; node log:\n" + "\n".join(node.log[-30:])

        _check_garbage_dead_lettered(local_broker, dead, node.device_id)
        seen = len(_observations(integrator.snapshot(), node.device_id))
        assert integrator.wait(
            lambda ms: len(_observations(ms, node.device_id)) >= seen + 3, timeout_s=60
        ), "the gateway stopped forwarding after bad input"
        assert gateway.poll() is None, "the gateway process exited"
    finally:
        node.stop()
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(timeout=20)
        finally:
            integrator.close()
            dead.close()
    assert gateway.returncode == 0, f"gateway exit code {gateway.returncode}"

    _check_observations(
        _observations(integrator.snapshot(), node.device_id), registry, node.device_id
    )


def _run_gateway(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_gateway", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_gateway_config_errors_name_the_key_and_exit_non_zero(tmp_path: Path) -> None:
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "gateway",
            "run",
            "--config",
            str(tmp_path / "nope.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode != 0
    assert "nope.toml" in missing.stderr + missing.stdout
    assert "Traceback" not in missing.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_id = "gw-x-01"\nsite_id = "site-x-01"\n[upstream]\nport = "eighty"\n')
    result = _run_gateway(bad)
    assert result.returncode != 0
    assert "upstream.port" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr

    typo = tmp_path / "typo.toml"
    typo.write_text('gateway_id = "gw-x-01"\nsite_id = "site-x-01"\n[local]\nhots = "127.0.0.1"\n')
    result = _run_gateway(typo)
    assert result.returncode != 0
    assert "local.hots" in result.stderr + result.stdout
