"""The real node firmware under the real MicroPython unix port on the simulated board
(host_tools/sim/simnode.py), against a real Mosquitto. A small paho peer plays the gateway: it
validates every message against the contract, records readings and sends custody acks."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as paho
import pytest

from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from host_tools.sim.simnode import SOFT_RESET, SimNode

pytestmark = [pytest.mark.micropython, pytest.mark.broker]

# Every simulation runs in the ESP32 budget, + the simulated board's own allowance (SimNode adds
# it); see docs/firmware.md "Heap".
HEAP = "64k"
# The battery board's water node (pulse ranger + pressure + barometer + battery + deep sleep)
# interns more names than the 64 KB budget allows (docs/firmware.md "Heap").
BATTERY_HEAP = "80k"


class Gateway:
    """Test peer: validates, stores readings in order (de-duplicated on (device, boot, seq)),
    then acks custody, as the gateway does."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Condition()
        self.readings: dict[str, list[dict[str, Any]]] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.acks: dict[str, list[dict[str, Any]]] = {}
        self.states: dict[str, list[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.duplicates = 0
        self.out_of_order = 0
        self._next: dict[tuple[str, int], int] = {}
        self.client: paho.Client | None = None

    def start(self) -> Gateway:
        # A persistent session, as a gateway has: while it is away the broker keeps its QoS 1
        # readings, so nothing published meanwhile is lost or overtaken.
        c = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="test-gateway", clean_session=False
        )
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
        schema = {
            "reading": "reading",
            "status": "node_status",
            "ack": "command_ack",
            "state": "node_state",
        }.get(leaf)
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
                # Store in order: seq == next expected of its boot. A duplicate is acked again
                # (its first ack may be lost); a reading past a gap (an earlier one was lost on
                # the way, e.g. while this peer re-subscribed) is neither stored nor acked:
                # the node resends from its oldest unconfirmed reading.
                key = (device, msg["boot"])
                expected = self._next.get(key, 0)
                if msg["seq"] < expected:
                    self.duplicates += 1
                elif msg["seq"] > expected:
                    self.out_of_order += 1
                    return
                else:
                    self._next[key] = expected + 1
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


def _wait_for_stored(gateway: Gateway, node: SimNode, dev: str, what: str) -> None:
    """Wait until the gateway has every reading the node's flash says it stored, per boot."""
    gateway.wait(
        lambda: all(
            any(r["boot"] == b and r["seq"] >= s for r in gateway.readings[dev])
            for b, s in _stored(node).items()
        ),
        30,
        what,
    )


def test_every_kind_publishes_valid_readings_and_status(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode]
) -> None:
    fast = {"intervals": {"sample_s": 10, "report_s": 30, "status_s": 120, "heartbeat_s": 60}}
    made = [
        _node(nodes, k, broker, speed=60, config_overrides=fast).start()
        for k in ("air", "water", "parking")
    ]
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
        assert isinstance(st["rssi_dbm"], int) and -100 < st["rssi_dbm"] < -20
        assert st["reset_cause"] == "power_on" and st["uptime_s"] >= 0
        assert st["outbox"]["capacity"] == 512
        # The cadence the gateway's status page judges liveness by (edge_gateway/status).
        assert st["intervals"].get("heartbeat_s") == (1.0 if n.kind == "parking" else None)
        assert "batch_s" not in st["intervals"]
    air = gateway.readings[made[0].device_id]
    assert all(r["synced"] for r in air[1:]), "NTP set the clock once WiFi was up"
    assert all(0 < r["raw"]["pm25_atm"]["v"] < 1000 for r in air)
    assert all(abs(r["window_s"] - 30) <= 2 and r["n"] == 3 for r in air[1:]), [
        (r["window_s"], r["n"], r["t"]) for r in air
    ]
    water = gateway.readings[made[1].device_id]
    assert all(0.03 < r["raw"]["distance"]["v"] < 4.5 for r in water)
    assert gateway.states[made[0].device_id][0]["state"] == "online"


def _stored(node: SimNode) -> dict[int, int]:
    """Per boot, the highest seq the node logged as written to its flash outbox."""
    out: dict[int, int] = {}
    for ln in node.log:
        if ln.startswith("node: stored "):
            boot, seq = (int(x) for x in ln.split()[2].split("/"))
            out[boot] = max(out.get(boot, -1), seq)
    return out


def test_outage_and_power_cut_lose_nothing_and_duplicate_nothing(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode]
) -> None:
    """The gateway goes away, then the broker too; the node loses power and boots again
    in between. Afterwards every reading the node stored arrives exactly once, in order."""
    cfg = {"intervals": {"sample_s": 10, "report_s": 30, "status_s": 600}}
    node = _node(nodes, "air", broker, speed=60, config_overrides=cfg).start()
    dev = node.device_id
    gateway.wait(lambda: gateway.n_readings(dev) >= 3, 30, "first readings")
    gateway.stop()  # the custody peer is down, the broker up: readings go nowhere
    time.sleep(2.0)
    gateway.start()
    time.sleep(1.0)
    broker.stop(kill=True)  # now the broker too
    time.sleep(1.5)
    node.kill()  # power cut while offline, with readings waiting in the outbox
    node.start()
    time.sleep(2.0)
    broker.start()
    gateway.wait(
        lambda: any(r["boot"] == 1 and r["seq"] >= 4 for r in gateway.readings.get(dev, [])),
        40,
        "readings of the second boot",
    )
    stored = _stored(node)
    assert set(stored) == {0, 1}, stored
    _wait_for_stored(gateway, node, dev, "the backlog")
    per_boot = assert_complete(gateway.readings[dev])
    for boot, last in stored.items():
        assert per_boot[boot][0] == 0, f"boot {boot} starts at seq 0"
        assert per_boot[boot][-1] >= last, (
            f"boot {boot}: stored up to {last}, got {per_boot[boot][-1]}"
        )
    # Exactly once after de-dup; the resends the gateway threw away are the proof of retries.
    assert gateway.duplicates + gateway.out_of_order > 0, "readings were resent after the outage"
    assert not gateway.errors, gateway.errors[:3]


def _ack(
    gateway: Gateway, dev: str, cid: str, timeout_s: float = 20, node: SimNode | None = None
) -> dict[str, Any]:
    if node is not None and not any(a["id"] == cid for a in gateway.acks.get(dev, [])):
        try:
            gateway.wait(
                lambda: any(a["id"] == cid for a in gateway.acks.get(dev, [])), timeout_s, cid
            )
        except AssertionError as e:
            raise AssertionError("\n".join(node.log[-30:])) from e
    gateway.wait(
        lambda: any(a["id"] == cid for a in gateway.acks.get(dev, [])), timeout_s, f"ack {cid}"
    )
    return next(a for a in gateway.acks[dev] if a["id"] == cid)


def _check_bad_commands_refused(gateway: Gateway, dev: str) -> None:
    """A wrong type, key, command or range, and a payload that is not JSON: refused in the ack."""
    bad = [
        (
            "c-type",
            {"v": 1, "id": "c-type", "cmd": "set", "args": {"intervals": {"report_s": "x"}}},
            "intervals.report_s",
        ),
        ("c-key", {"v": 1, "id": "c-key", "cmd": "set", "args": {"wifi": {"ssid": "x"}}}, "wifi"),
        ("c-cmd", {"v": 1, "id": "c-cmd", "cmd": "explode"}, "cmd"),
        (
            "c-range",
            {"v": 1, "id": "c-range", "cmd": "set", "args": {"intervals": {"sample_s": -1}}},
            "sample_s",
        ),
    ]
    for cid, cmd, word in bad:
        gateway.command(dev, cmd)
        ack = _ack(gateway, dev, cid)
        assert ack["ok"] is False and word in ack["error"], ack
    assert gateway.client is not None
    gateway.client.publish(contract.node_topic(dev, "cmd"), b"{not json", qos=1)
    gateway.wait(
        lambda: any(a["id"] == "" and not a["ok"] for a in gateway.acks.get(dev, [])),
        20,
        "bad JSON ack",
    )


def test_commands_are_acknowledged_and_set_takes_effect(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode]
) -> None:
    cfg = {"intervals": {"sample_s": 10, "report_s": 30, "status_s": 600}}
    node = _node(nodes, "air", broker, speed=60, config_overrides=cfg).start()
    dev = node.device_id
    gateway.wait(lambda: gateway.n_readings(dev) >= 2, 30, "readings")
    assert gateway.readings[dev][-1]["n"] == 3
    # The node's config is in its own (here: simulated-speed) seconds: 1.0 s = 6 samples.
    gateway.command(
        dev, {"v": 1, "id": "c-set", "cmd": "set", "args": {"intervals": {"report_s": 1.0}}}
    )
    ack = _ack(gateway, dev, "c-set", node=node)
    assert ack["ok"] is True and ack["error"] is None
    gateway.wait(
        lambda: sum(r["n"] == 6 for r in gateway.readings[dev]) >= 2, 30, "6-sample reports"
    )
    assert json.loads((node.flash_dir / "config.json").read_text())["intervals"]["report_s"] == 1.0
    _check_bad_commands_refused(gateway, dev)
    n_status = len(gateway.statuses.get(dev, []))
    gateway.command(dev, {"v": 1, "id": "c-status", "cmd": "status"})
    assert _ack(gateway, dev, "c-status")["ok"] is True
    gateway.wait(lambda: len(gateway.statuses.get(dev, [])) > n_status, 20, "status on demand")
    assert gateway.statuses[dev][-1]["intervals"]["report_s"] == 1.0
    gateway.command(dev, {"v": 1, "id": "c-blink", "cmd": "identify", "args": {"seconds": 1}})
    assert _ack(gateway, dev, "c-blink")["ok"] is True
    gateway.command(dev, {"v": 1, "id": "c-boot", "cmd": "reboot"})
    assert _ack(gateway, dev, "c-boot")["ok"] is True
    # boot 0, the set's restart (boot 1), the reboot (boot 2)
    gateway.wait(
        lambda: any(s["boot"] == 2 for s in gateway.statuses.get(dev, [])),
        30,
        "status after reboot",
    )
    after = next(s for s in gateway.statuses[dev] if s["boot"] == 2)
    assert after["reset_cause"] == "soft_reset"
    assert after["intervals"]["report_s"] == 1.0, "the set survived the reboot"
    assert not gateway.errors, gateway.errors[:3]


def _status_after(gateway: Gateway, dev: str, boot: int) -> dict[str, Any]:
    gateway.wait(
        lambda: any(s["boot"] == boot for s in gateway.statuses.get(dev, [])),
        30,
        f"a status of boot {boot}",
    )
    return next(s for s in gateway.statuses[dev] if s["boot"] == boot)


@pytest.mark.parametrize("kind", ["air", "water"])
def test_set_is_applied_by_a_restart_at_64k_without_losing_a_reading(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode], kind: str
) -> None:
    """A `set` at steady state in the 64 KB budget: stored, applied at the next boot (a quick
    restart), acknowledged after it with the command's id; an invalid one is refused with the
    reason and changes nothing; every reading stored on either side of the restarts arrives
    exactly once, in order."""
    cfg = {"intervals": {"sample_s": 10, "report_s": 30, "status_s": 600}}
    node = _node(nodes, kind, broker, speed=60, config_overrides=cfg).start()
    dev = node.device_id
    gateway.wait(lambda: gateway.n_readings(dev) >= 3, 30, "readings")
    assert _status_after(gateway, dev, 0)["intervals"]["report_s"] == pytest.approx(0.5)
    t0 = time.monotonic()
    args = {"intervals": {"report_s": 1.0}, "thresholds": {"rise_m_per_min": 0.2}}
    gateway.command(dev, {"v": 1, "id": f"set-{kind}", "cmd": "set", "args": args})
    ack = _ack(gateway, dev, f"set-{kind}", node=node)
    print(f"{kind}: set -> ack {time.monotonic() - t0:.2f} s")
    assert ack["ok"] is True and ack["error"] is None, ack
    assert node.boots == 2 and node.reset_causes[-1] == SOFT_RESET
    st = _status_after(gateway, dev, 1)
    assert st["intervals"]["report_s"] == 1.0 and st["config_error"] is None
    on_flash = json.loads((node.flash_dir / "config.json").read_text())
    assert on_flash["intervals"]["report_s"] == 1.0
    assert on_flash["thresholds"]["rise_m_per_min"] == 0.2
    # The new interval takes effect: 1.0 s of node time at sample_s 10/60 = 6 samples.
    gateway.wait(
        lambda: sum(r["boot"] == 1 and r["n"] == 6 for r in gateway.readings[dev]) >= 2,
        30,
        "6-sample reports",
    )
    # An invalid set: refused (after its restart) with the reason, nothing changed.
    before = (node.flash_dir / "config.json").read_text()
    bad = {"intervals": {"report_s": 2.0, "sample_s": -1}}
    gateway.command(dev, {"v": 1, "id": f"bad-{kind}", "cmd": "set", "args": bad})
    ack = _ack(gateway, dev, f"bad-{kind}", node=node)
    assert ack["ok"] is False and "sample_s" in ack["error"], ack
    assert (node.flash_dir / "config.json").read_text() == before
    assert _status_after(gateway, dev, 2)["intervals"]["report_s"] == 1.0
    # Nothing lost, nothing twice: every reading the node stored, in every boot, arrived
    # exactly once (the peer de-duplicates resends; a repeat would show as a stored duplicate).
    gateway.wait(lambda: any(r["boot"] == 2 for r in gateway.readings[dev]), 30, "boot 2 readings")
    stored = _stored(node)
    assert set(stored) == {0, 1, 2}, stored
    _wait_for_stored(gateway, node, dev, "every stored reading")
    rs = gateway.readings[dev]
    keys = [(r["boot"], r["seq"]) for r in rs]
    assert len(keys) == len(set(keys)), "a reading was stored twice"
    per_boot = assert_complete(rs)
    for boot, last in stored.items():
        assert per_boot[boot][0] == 0 and per_boot[boot][-1] >= last, (boot, per_boot[boot])
    assert not any("MemoryError" in ln for ln in node.log), node.log[-30:]
    assert not gateway.errors, gateway.errors[:3]


@pytest.mark.parametrize(
    ("override", "word"),
    [
        ({"bogus": 1}, "bogus: unknown key"),
        ({"thresholds": {"on_ut": "high"}}, "thresholds.on_ut: expected a number"),
    ],
)
def test_bad_config_runs_safe_mode_and_says_why(
    broker: MosquittoBroker,
    gateway: Gateway,
    nodes: list[SimNode],
    override: dict[str, Any],
    word: str,
) -> None:
    node = _node(nodes, "air", broker, speed=60, config_overrides=override).start()
    dev = node.device_id
    gateway.wait(lambda: len(gateway.statuses.get(dev, [])) >= 1, 30, "safe-mode status")
    st = gateway.statuses[dev][0]
    assert st["config_error"] is not None and word in st["config_error"], st["config_error"]
    time.sleep(1.0)
    assert gateway.n_readings(dev) == 0, "safe mode samples nothing"
    assert not gateway.errors, gateway.errors[:3]


DAY_S = 86400.0
DAY_SPEED = 2880.0  # a simulated day in 30 s
DAY_CONFIG = {
    "intervals": {
        "sample_s": 240,
        "report_s": 1200,
        "status_s": 1800,
        "heartbeat_s": 1800,
        "custody_s": 600,
    }
}


def _day_heap(statuses: list[dict[str, Any]]) -> tuple[float, float]:
    heap = [s["free_heap"] for s in statuses]
    q = max(1, len(heap) // 4)
    return sum(heap[:q]) / q, sum(heap[-q:]) / q


def test_a_simulated_day_in_the_heap_without_growth(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode]
) -> None:
    """Every kind runs a time-accelerated day in the node heap (HEAP, plus the simulated
    board's own allowance): no MemoryError, no reset, and free heap (after gc.collect(), as
    the status reports it) in the last quarter of the day no lower than in the first."""
    made = [
        _node(nodes, k, broker, heap=HEAP, speed=DAY_SPEED, config_overrides=DAY_CONFIG).start()
        for k in ("air", "water", "parking")
    ]
    t0 = time.monotonic()
    time.sleep(DAY_S / DAY_SPEED)
    for n in made:
        gateway.wait(
            lambda n=n: len(gateway.statuses.get(n.device_id, [])) >= 44, 15, f"{n.kind} statuses"
        )
    elapsed = time.monotonic() - t0
    for n in made:
        log = "\n".join(n.log)
        assert "MemoryError" not in log, log[-2000:]
        assert n.boots == 1, f"{n.kind} reset during the day: {n.reset_causes}"
        sts = gateway.statuses[n.device_id]
        first, last = _day_heap(sts)
        print(
            f"day {n.kind}: {len(sts)} statuses in {elapsed:.0f} s, free heap first quarter "
            f"{first:.0f}, last quarter {last:.0f}, readings {gateway.n_readings(n.device_id)}"
        )
        assert last >= first - 256, f"{n.kind}: free heap fell from {first:.0f} to {last:.0f}"
        assert gateway.n_readings(n.device_id) >= 40
        assert_complete(gateway.readings[n.device_id])
    assert not gateway.errors, gateway.errors[:3]


def test_battery_board_deep_sleeps_and_batches_its_radio_wakes(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode]
) -> None:
    """sim-battery (power.deep_sleep): one sample per wake, the radio only every batch_s;
    the run's boot id and sequence survive deep sleep in RTC memory."""
    cfg = {"intervals": {"sample_s": 60, "report_s": 300, "batch_s": 900, "status_s": 900}}
    node = _node(
        nodes,
        "water",
        broker,
        speed=120,
        board="sim-battery",
        config_overrides=cfg,
        heap=BATTERY_HEAP,
    ).start()
    dev = node.device_id
    gateway.wait(lambda: gateway.n_readings(dev) >= 6, 60, "batched readings")
    sleeps = sum("deep sleep" in ln for ln in node.log if ln.startswith("[sim]"))
    radio = sum(ln.startswith("node: mqtt up") for ln in node.log)
    wakes = sum(ln.startswith("node: wake:") for ln in node.log)
    assert sleeps >= wakes - 1 >= 20, (sleeps, wakes)
    assert radio * 5 <= wakes, f"{radio} radio wakes for {wakes} wakes: not batched"
    rs = gateway.readings[dev]
    assert {r["boot"] for r in rs} == {0}, "deep sleep is not a new boot"
    assert_complete(rs)
    assert all("battery" in r["raw"] and 3.0 < r["raw"]["battery"]["v"] < 4.3 for r in rs)
    assert {"distance", "pressure", "air_temp"} <= set(rs[-1]["raw"])
    st = gateway.statuses[dev][-1]
    assert st["reset_cause"] == "deep_sleep" and st["battery_v"] is not None
    assert st["intervals"]["batch_s"] == 900 / 120, "the gateway judges liveness by batch_s"
    # A `set` that arrived during a radio wake is stored by App.command (as here) and applied
    # at the next wake, which wakes the radio to send its ack: still boot 0 (deep sleep).
    cmd = {"v": 1, "id": "b-set", "cmd": "set", "args": {"intervals": {"report_s": 3.0}}}
    tmp = node.flash_dir / "data" / "set_cmd.json.tmp"
    tmp.write_text(json.dumps(cmd))
    tmp.rename(node.flash_dir / "data" / "set_cmd.json")
    ack = _ack(gateway, dev, "b-set", node=node)
    assert ack["ok"] is True, ack
    n_status = len(gateway.statuses[dev])
    gateway.wait(lambda: len(gateway.statuses[dev]) > n_status, 30, "a status after the set")
    assert gateway.statuses[dev][-1]["intervals"]["report_s"] == 3.0
    assert {r["boot"] for r in gateway.readings[dev]} == {0}
    assert not gateway.errors, gateway.errors[:3]


@contextmanager
def _main_py_interrupted(node: SimNode) -> Iterator[None]:
    """What `cityedge node verify` does on a board before the self-test: entering the raw REPL
    (Ctrl-C) stops main.py, so the self-test has the sensors to itself; the soft reset after
    it starts main.py again. Here the node's process is paused, then resumed. A self-test run
    beside the node's own sampling loop would interleave two programs' transactions on the one
    simulated PMS5003 and SHT3x (one drains the frame the other asked for, or reads the other's
    measurement, and gets a NACK): failures no board can have, which came up under CPU load."""
    assert node.pid is not None
    os.kill(node.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.pid, signal.SIGCONT)


def test_selftest_prints_one_line_for_verify(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode]
) -> None:
    """node.selftest.run() as `cityedge node verify` runs it, beside the running node."""
    import subprocess

    from host_tools.field.verify import parse_selftest
    from host_tools.sim.simnode import compile_tree
    from tests.support.tools import micropython

    node = _node(nodes, "air", broker, speed=60).start()
    gateway.wait(lambda: len(gateway.statuses.get(node.device_id, [])) >= 1, 30, "node up")
    tree = compile_tree()

    def selftest() -> Any:
        with _main_py_interrupted(node):
            r = _run_selftest()
        assert sum(ln.startswith("SELFTEST ") for ln in r.stdout.splitlines()) == 1, r.stdout
        return parse_selftest(r.stdout)

    def _run_selftest() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                micropython(),
                "-X",
                "heapsize=256k",
                "-c",
                "import node.selftest\nnode.selftest.run()\n",
            ],
            check=False,
            cwd=node.flash_dir,
            capture_output=True,
            text=True,
            timeout=60,
            env={"MICROPYPATH": f"{tree / 'firmware'}:{tree / 'simboard'}:.frozen"},
        )

    st = selftest()
    assert st.passed, st.raw
    assert st.device_id == node.device_id and st.firmware
    pm = st.raw["sensors"]["pm"]
    assert pm["ok"] and 0 < pm["reading"]["pm25_atm"] < 1000
    assert st.raw["sensors"]["th"]["ok"] and st.raw["wifi"]["ok"] and st.raw["mqtt"]["ok"]
    broker.stop(kill=True)
    st = selftest()
    assert not st.passed and not st.raw["mqtt"]["ok"] and st.raw["mqtt"]["error"]
    broker.start()


def test_wifi_loss_is_survived_without_loss(
    broker: MosquittoBroker, gateway: Gateway, nodes: list[SimNode]
) -> None:
    """The access point disappears for a while (beacon timeout): the node notices, stops
    MQTT, keeps sampling into the outbox, re-associates and sends the backlog in order."""
    cfg = {"intervals": {"sample_s": 10, "report_s": 30, "status_s": 600}}
    node = _node(nodes, "air", broker, speed=60, config_overrides=cfg).start()
    dev = node.device_id
    gateway.wait(lambda: gateway.n_readings(dev) >= 2, 30, "first readings")
    node.set_wifi(False)
    node.wait_for("WiFi link lost", 10)
    time.sleep(2.5)
    node.set_wifi(True)
    node.wait_for("node: wifi up", 20, start=len(node.log) - 50)
    before = gateway.n_readings(dev)
    gateway.wait(lambda: gateway.n_readings(dev) >= before + 4, 30, "the backlog and new readings")
    assert sum(ln == "node: wifi up" for ln in node.log) >= 2
    assert sum(ln == "node: mqtt up" for ln in node.log) >= 2
    stored = _stored(node)[0]
    gateway.wait(lambda: gateway.readings[dev][-1]["seq"] >= stored, 20, "all stored readings")
    assert_complete(gateway.readings[dev])
    assert not gateway.errors, gateway.errors[:3]
