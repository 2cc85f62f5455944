"""The node's own MQTT client (firmware/node/mqtt.py) under the real MicroPython unix port
against a real Mosquitto: QoS 1 both ways, last will, keepalive, and a broker restart that the
reconnecting link survives, re-subscribing so commands still arrive."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from host_tools.sim.brokers import MosquittoBroker
from tests.support.tools import FIRMWARE, micropython

pytestmark = [pytest.mark.micropython, pytest.mark.broker]

CLIENT = r"""
import asyncio, time
from node import mqtt

def on_msg(topic, payload):
    print("MSG", topic.decode(), bytes(payload).decode())

async def connected():
    print("UP", link.connects)

core = mqtt.Core("ce-mqtttest1", USER, PASS, 2, "t/state", '{"state":"offline"}')
link = mqtt.Link(core, "127.0.0.1", PORT, [(b"t/cmd", 1)], on_msg, connected,
                 backoff_min_ms=200, backoff_max_ms=1000, timeout_ms=2000,
                 puback_timeout_ms=1000)

async def main():
    asyncio.create_task(link.run(time.ticks_ms, time.ticks_diff, asyncio.sleep_ms))
    i = 0
    while True:
        try:
            await link.publish("t/data", "n=%d" % i, 1)
            print("PUB", i)
            i += 1
        except OSError as e:
            await asyncio.sleep_ms(100)
        await asyncio.sleep_ms(50)

asyncio.run(main())
"""


class Lines:
    """stdout of the MicroPython process, line by line, with waits."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.q: queue.Queue[str] = queue.Queue()
        self.all: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for ln in self.proc.stdout:
            self.q.put(ln.rstrip("\n"))

    def wait(self, pred: Callable[[str], bool], timeout_s: float = 15.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ln = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            self.all.append(ln)
            if pred(ln):
                return ln
        raise AssertionError(f"timed out; output so far: {self.all[-20:]}")


class Peer:
    """A paho client that records what it receives."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.msgs: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="peer")
        self.topics = topics
        self.c.on_message = lambda c, u, m: self.msgs.put((m.topic, m.payload, m.retain))
        self.c.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, 1) for t in self.topics]
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def get(self, topic: str, timeout_s: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                t, p, _ = self.msgs.get(timeout=0.1)
            except queue.Empty:
                continue
            if t == topic:
                return p
        raise AssertionError(f"nothing on {topic}")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _start(tmp: Path, port: int, user: str = "None", pw: str = "None") -> subprocess.Popen[str]:
    script = CLIENT.replace("PORT", str(port)).replace("USER", user).replace("PASS", pw)
    (tmp / "client.py").write_text(script)
    return subprocess.Popen(
        [micropython(), "-X", "heapsize=128k", "client.py"],
        cwd=tmp,
        env={"MICROPYPATH": f"{FIRMWARE}:.frozen"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )


@pytest.fixture
def node_proc() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_qos1_will_and_reconnect_after_broker_restart(
    tmp_path: Path,
    broker_factory: Callable[..., MosquittoBroker],
    node_proc: list[subprocess.Popen[str]],
) -> None:
    broker = broker_factory("mqtt")
    peer = Peer(broker.port, ["t/data", "t/state"])
    proc = _start(tmp_path, broker.port)
    node_proc.append(proc)
    out = Lines(proc)
    out.wait(lambda ln: ln == "UP 1")
    out.wait(lambda ln: ln == "PUB 3")

    # A QoS 1 command reaches the node (it acknowledges with PUBACK; paho sees it completed).
    info = peer.c.publish("t/cmd", b"hello-1", qos=1)
    info.wait_for_publish(5)
    out.wait(lambda ln: ln == "MSG t/cmd hello-1")

    # Keepalive is 2 s: idle past several keepalives and the connection is still the first.
    time.sleep(5)
    assert not any(ln.startswith("UP 2") for ln in out.all)

    # The broker goes away and comes back on the same port: the link reconnects, and
    # re-subscribes (clean session), so a command sent afterwards still arrives.
    broker.stop(kill=True)
    time.sleep(1.5)
    broker.start()
    out.wait(lambda ln: ln == "UP 2", timeout_s=20)
    peer.close()
    peer = Peer(broker.port, ["t/data", "t/state"])
    time.sleep(0.5)
    peer.c.publish("t/cmd", b"hello-2", qos=1).wait_for_publish(5)
    out.wait(lambda ln: ln == "MSG t/cmd hello-2")
    last = int(out.wait(lambda ln: ln.startswith("PUB ")).split()[1])
    seen = set()
    while True:
        p = peer.get("t/data").decode()
        n = int(p.split("=")[1])
        seen.add(n)
        if n >= last:
            break

    # Power cut: the broker publishes the node's last will (retained).
    proc.kill()
    proc.wait()
    assert peer.get("t/state", timeout_s=10) == b'{"state":"offline"}'
    peer.close()


def test_wrong_password_is_refused_and_retried_without_crashing(
    tmp_path: Path,
    broker_factory: Callable[..., MosquittoBroker],
    node_proc: list[subprocess.Popen[str]],
) -> None:
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "ce-mqtttest1", "right"], check=True)
    # Running as root, Mosquitto would drop to its own user, which cannot read pytest's tmp.
    broker = broker_factory("auth", password_file=pwfile, extra_config=["user root"])
    proc = _start(tmp_path, broker.port, '"ce-mqtttest1"', '"wrong"')
    node_proc.append(proc)
    time.sleep(3)
    assert proc.poll() is None, "a refused CONNECT must not end the firmware"
    proc.kill()
    proc.wait()
    proc = _start(tmp_path, broker.port, '"ce-mqtttest1"', '"right"')
    node_proc.append(proc)
    Lines(proc).wait(lambda ln: ln == "UP 1")
