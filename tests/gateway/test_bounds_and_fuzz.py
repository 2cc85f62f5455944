"""Full store under a tiny byte bound, and hostile input: the gateway keeps counting and running."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_gateway import bounds, contract
from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from edge_gateway.ingest import Accepted, Rejected, classify, reading_is_valid
from host_tools.sim.brokers import MosquittoBroker, free_port
from tests.gateway import hostile
from tests.gateway.helpers import (
    AS_INVOKER,
    FakeNode,
    Platform,
    gateway_config,
    reading,
    run_async,
    stop_process,
    wait_ready,
)
from tests.gateway.rig import GatewayProcess


@run_async
async def test_tiny_store_drop_policy_counts_add_up(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    # A persistent consumer session (broker persistence) so nothing the gateway sends right
    # after the broker comes back is missed by the test's consumer.
    upstream = broker_factory("upstream", persistence=True, extra_config=AS_INVOKER)
    platform = await Platform(upstream).start()
    upstream.stop()  # the platform is unreachable while the store fills
    config = GatewayConfig.from_dict(
        gateway_config(local, upstream, tmp_path, store={"max_bytes": 16384, "min_free_bytes": 0})
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw, upstream=False)
    nodes = [
        await FakeNode(local, f"ce-00000000e00{i}", kind).start()
        for i, kind in enumerate(("air", "water", "parking"))
    ]
    try:
        for _ in range(80):
            for node in nodes:
                await node.publish(1)
        for node in nodes:
            await node.wait_acked(20)  # custody for everything: the store took it, then chose
        s = gw.stats()
        assert s["queue_bytes"] <= 16384
        assert s["dropped"].get("max_bytes", 0) > 100
        produced = sum(n.next_seq for n in nodes)
        assert s["readings_stored"] == produced
        upstream.start()  # drains by itself: no new reading arrives after this point
        await platform.wait_for(lambda: gw.stats()["queue_depth"] == 0, timeout_s=30)
        await asyncio.sleep(0.3)
        s = gw.stats()
        delivered_keys = {(o["device_id"], o["seq"]) for o in platform.observations()}
        assert len(delivered_keys) == s["readings_out"]
        assert produced == len(delivered_keys) + s["dropped"]["max_bytes"]
        c = gw.store.counters if gw.store is not None else {}
        assert c["readings_stored"] + c.get("alerts_stored", 0) == (
            c["delivered"] + s["dropped_total"] + s["queue_depth"]
        )
        # drop oldest: what is left is the newest of each device
        for node in nodes:
            seqs = sorted(seq for dev, seq in delivered_keys if dev == node.device_id)
            assert seqs == list(range(node.next_seq - len(seqs), node.next_seq))
        assert all(o["replay"] for o in platform.observations())
    finally:
        await platform.stop()
        for node in nodes:
            await node.stop()
        gw.request_stop()
        await task


# --- fuzz ----------------------------------------------------------------------------------

DEV = "ce-0000000f0f0f"
TOPIC = contract.node_topic(DEV, "reading")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mutated_reading(draw_key: str, value: Any) -> bytes:
    body = reading(DEV, "air", 1, 1)
    body[draw_key] = value
    return json.dumps(body).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.binary(max_size=2048),
    leaf=st.sampled_from(["reading", "status", "state", "ack", "cmd", "x"]),
)
def test_random_bytes_never_crash_ingest(payload: bytes, leaf: str) -> None:
    out = classify(contract.node_topic(DEV, leaf), payload, 16384)
    assert isinstance(out, (Accepted, Rejected))
    if isinstance(out, Rejected):
        assert out.reason_code and out.reason


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(
        ["v", "device_id", "kind", "fw", "boot", "seq", "t", "synced", "raw", "n", "extra"]
    ),
    value=json_values,
)
def test_wrong_types_are_rejected_with_a_reason(key: str, value: Any) -> None:
    payload = _mutated_reading(key, value)
    out = classify(TOPIC, payload, 16384)
    if isinstance(out, Accepted):
        contract.validate("reading", out.body)  # only valid readings get through
        assert out.body["device_id"] == DEV
    else:
        assert out.reason_code in ("schema", "device_mismatch", "not_json")


@settings(max_examples=400, deadline=None)
@given(
    key=st.sampled_from(
        [
            "v",
            "device_id",
            "kind",
            "fw",
            "boot",
            "seq",
            "t",
            "synced",
            "raw",
            "n",
            "window_s",
            "alarm",
            "extra",
        ]
    ),
    value=json_values,
    channel=st.text(max_size=34),
    unit=st.text(max_size=6) | st.sampled_from(["ug/m3", "m", "/"]),
    v=json_values,
)
def test_fast_reading_check_never_accepts_what_the_schema_refuses(
    key: str, value: Any, channel: str, unit: str, v: Any
) -> None:
    body = reading(DEV, "air", 1, 1)
    body[key] = value
    variant = reading(DEV, "water", 2, 3)
    variant["raw"] = {channel: {"v": v, "u": unit}}
    for candidate in (body, variant):
        if reading_is_valid(candidate):
            contract.validate("reading", candidate)
    assert reading_is_valid(reading(DEV, "parking", 0, 0))


def test_nan_and_infinity_are_not_json() -> None:
    body = json.dumps(reading(DEV, "air", 1, 1)).replace("31.0", "NaN").encode()
    r = classify(TOPIC, body, 16384)
    assert isinstance(r, Rejected) and r.reason_code == "not_json"


def test_specific_rejections() -> None:
    ok = json.dumps(reading(DEV, "air", 1, 1)).encode()
    assert isinstance(classify(TOPIC, ok, 16384), Accepted)
    other = json.dumps(reading("ce-0000000a0a0a", "air", 1, 1)).encode()
    r = classify(TOPIC, other, 16384)
    assert isinstance(r, Rejected) and r.reason_code == "device_mismatch"
    assert classify(TOPIC, b"x" * 20000, 16384) == Rejected(
        "too_large", "payload of 20000 bytes exceeds 16384 bytes"
    )
    r = classify(TOPIC, ok, 16384, known_kind=lambda d: None)
    assert isinstance(r, Rejected) and r.reason_code == "unknown_device"
    r = classify(TOPIC, ok, 16384, known_kind=lambda d: "water")
    assert isinstance(r, Rejected) and r.reason_code == "kind_mismatch"
    r = classify("cityedge/v1/node/x/y/reading", ok, 16384)
    assert isinstance(r, Rejected) and r.reason_code == "bad_topic"
    r = classify(TOPIC, b"\xff\xfe{", 16384)
    assert isinstance(r, Rejected) and r.reason_code == "not_json"


def _garbage(rng: random.Random) -> list[tuple[str, bytes]]:
    """300 bad messages, six sorts in turn: random bytes, a schema error, huge, an unknown
    device, a payload naming another device, a bad status."""
    bad: list[tuple[str, bytes]] = []
    for i in range(300):
        choice = i % 6
        if choice == 0:
            bad.append((TOPIC, rng.randbytes(rng.randrange(0, 300))))
        elif choice == 1:
            body = reading(DEV, "air", 1, i)
            body["seq"] = "seven"
            bad.append((TOPIC, json.dumps(body).encode()))
        elif choice == 2:
            bad.append((TOPIC, b"{" * 20000 + b"}"))  # huge
        elif choice == 3:  # unknown device
            dev = f"ce-0000000000{i:02x}"[-15:]
            bad.append(
                (
                    contract.node_topic(dev, "reading"),
                    json.dumps(reading(dev, "air", 1, i)).encode(),
                )
            )
        elif choice == 4:  # payload device differs from the topic
            bad.append((TOPIC, json.dumps(reading("ce-0000000b0b0b", "air", 1, i)).encode()))
        else:
            bad.append((contract.node_topic(DEV, "status"), b'{"v": 1, "device_id": 5}'))
    return bad


def _check_dead_letters_counted(
    s: dict[str, Any], bad: list[tuple[str, bytes]], dead: list[dict[str, Any]]
) -> None:
    assert s["dead_letters"] == len(bad)
    assert s["readings_stored"] == 10
    assert sum(s["dead_letters_by_reason"].values()) == len(bad)
    assert set(s["dead_letters_by_reason"]) >= {
        "not_json",
        "schema",
        "too_large",
        "unknown_device",
        "device_mismatch",
    }
    for d in dead:
        contract.validate("deadletter", d)


@run_async
async def test_live_burst_of_garbage_is_dead_lettered_and_counted(
    local_broker: MosquittoBroker, upstream_broker: MosquittoBroker, tmp_path: Path
) -> None:
    inventory = {"allow_unknown": False, "device": [{"id": DEV, "kind": "air"}]}
    config = GatewayConfig.from_dict(
        gateway_config(
            local_broker,
            upstream_broker,
            tmp_path,
            inventory=inventory,
            metrics={"enabled": True, "port": 0},
        )
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw)
    bad = _garbage(random.Random(7))
    dead: list[dict[str, Any]] = []
    try:
        async with aiomqtt.Client(local_broker.host, local_broker.port, identifier="fuzzer") as c:
            await c.subscribe(contract.deadletter_topic("gw-test-01"), qos=0)
            for topic, payload in bad:
                await c.publish(topic, payload, qos=1)
            node = await FakeNode(local_broker, DEV, "air").start()
            await node.publish(10)
            await node.wait_acked(15)
            await node.stop()
            async with asyncio.timeout(15):
                async for m in c.messages:
                    dead.append(json.loads(bytes(m.payload)))  # type: ignore[arg-type]
                    if len(dead) == len(bad):
                        break
        _check_dead_letters_counted(gw.stats(), bad, dead)
        assert not task.done()
        url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
        assert f'cityedge_gateway_dead_letters_total{{reason="too_large"}} {len(bad) // 6}' in text
        assert "cityedge_gateway_readings_stored_total 10" in text
    finally:
        gw.request_stop()
        await task


# --- hostile corpus, in process and against the gateway process ----------------------------

ISSUE_11_PAYLOAD = hostile.payload_with(DEV, 5, ("raw", "battery", "v"), hostile.HUGE_INT)


def test_the_issue_11_reading_is_refused_by_schema_and_fast_path() -> None:
    out = classify(TOPIC, ISSUE_11_PAYLOAD, 16384)
    assert isinstance(out, Rejected) and out.reason_code == "not_json", out
    assert "digits" in out.reason
    body = hostile.base_reading(DEV, 1)
    body["raw"]["battery"]["v"] = 10**30  # as Python would parse it: the schema's bounds refuse it
    assert not reading_is_valid(body)
    with pytest.raises(contract.ContractError):
        contract.validate("reading", body)


def test_every_payload_of_the_corpus_is_refused_with_a_reason() -> None:
    items = list(hostile.corpus(DEV, 0, random.Random(11)))
    assert len(items) > 800
    for what, payload in items:
        out = classify(TOPIC, payload, 16384)
        assert isinstance(out, Rejected), what
        assert out.reason_code in ("not_json", "schema", "too_large"), (what, out)


tokens = st.one_of(
    st.sampled_from(hostile.TOKENS),
    st.integers(min_value=-(10**60), max_value=10**60).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=60).map(json.dumps),
    st.integers(0, 3000).map(lambda n: "[" * n + "]" * n),
)


@settings(max_examples=500, deadline=None)
@given(path=st.sampled_from(hostile.field_paths()), token=tokens, seq=st.integers(0, 10))
def test_fast_path_and_schema_agree_on_every_field(
    path: tuple[str, ...], token: str, seq: int
) -> None:
    payload = hostile.payload_with(DEV, seq, path, token)
    out = classify(TOPIC, payload, 16384)
    if isinstance(out, Accepted):
        assert hostile._accepted_by_reference(payload.decode())
        contract.validate("reading", out.body)
        for ch in out.body["raw"].values():  # every number in range for its unit
            if not isinstance(ch["v"], bool):
                lo, hi = bounds.unit_limits()[ch["u"]]
                assert lo <= ch["v"] <= hi
    else:
        assert out.reason_code in ("not_json", "schema", "too_large", "device_mismatch"), (
            out.reason_code
        )


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _vm(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _attack(
    local: MosquittoBroker, items: list[tuple[str, bytes]], rounds: int, node: FakeNode, gwp: Any
) -> float:
    """The corpus ``rounds`` times, a good reading after each 100; returns the peak RSS seen."""
    proc = gwp.proc
    peak = 0.0
    async with aiomqtt.Client(
        local.host, local.port, identifier="attacker", max_queued_outgoing_messages=0
    ) as attacker:
        for _round in range(rounds):
            for start in range(0, len(items), 100):  # QoS 1 and 0, 100 at a time in flight
                await asyncio.gather(
                    *(
                        attacker.publish(TOPIC, payload, qos=i % 2)
                        for i, (_what, payload) in enumerate(items[start : start + 100])
                    )
                )
                await node.publish(1)
                peak = max(peak, _vm(proc.pid, "VmRSS"))
            assert proc.poll() is None, gwp.log_tail()
    return peak


async def _wait_counted(
    metrics: Callable[[], str], platform: Platform, sent_bad: int, want: int
) -> None:
    """Until every bad message is counted and every good reading forwarded."""
    async with asyncio.timeout(90):
        while True:
            text = await asyncio.to_thread(metrics)
            if (
                _metric(text, "cityedge_gateway_dead_letters_total") >= sent_bad
                and len({o["seq"] for o in platform.observations()}) >= want
            ):
                break
            await asyncio.sleep(0.3)


def _metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


@run_async
async def test_gateway_process_survives_the_corpus_and_keeps_forwarding(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    """The whole corpus, several times over and as fast as the broker takes it, at a gateway
    run as the service runs it, with good readings in between: no exit, every bad message
    counted as a dead letter, every good reading forwarded once, memory bounded."""
    local = broker_factory("local")
    upstream = broker_factory("upstream")
    port = free_port()
    cfg = gateway_config(local, upstream, tmp_path, metrics={"enabled": True, "port": port})
    gwp = GatewayProcess(tmp_path, cfg).start()
    proc, log = gwp.proc, gwp.log
    platform = await Platform(upstream).start()

    def metrics() -> str:
        return _metrics_text(port)

    try:
        node = await FakeNode(local, "ce-0000000c0c0c", "air").start()
        await node.publish(1)
        await node.wait_acked(20)  # the gateway is subscribed and storing
        items = list(hostile.corpus(DEV, 1000, random.Random(3)))
        rounds = 4
        peak = await _attack(local, items, rounds, node, gwp)
        sent_bad = rounds * len(items)
        await node.publish(5)
        await node.wait_acked(60)
        want = node.next_seq
        await _wait_counted(metrics, platform, sent_bad, want)
        assert proc.poll() is None
        text = await asyncio.to_thread(metrics)
        assert _metric(text, "cityedge_gateway_dead_letters_total") == sent_bad
        assert _metric(text, "cityedge_gateway_readings_stored_total") == want
        seqs = sorted(o["seq"] for o in platform.observations() if o["device_id"] == node.device_id)
        assert seqs == list(range(want))  # every good reading, once, in order
        hwm = _vm(proc.pid, "VmHWM")
        print(f"corpus {sent_bad} bad + {want} good: peak RSS {hwm:.1f} MB (sampled {peak:.1f})")
        assert hwm < 96, f"peak RSS {hwm:.1f} MB"
        # One log line per reason and minute, not one per message (or a traceback each).
        lines = log.read_text().splitlines()
        assert sum("dead letter" in line for line in lines) < 20, lines[-20:]
        assert "Traceback" not in log.read_text()
        await node.stop()
    finally:
        await platform.stop()
        stop_process(proc)


async def _flood(local: MosquittoBroker, bad: list[bytes], node: FakeNode) -> int:
    """12 000 QoS 0 messages, 500 at a time: a reading from one of 1 500 made-up devices every
    fourth, bad payloads between; a good reading every 1 500. Returns how many were sent."""
    sent = 0
    flooder = aiomqtt.Client(local.host, local.port, identifier="flooder")
    flooder.pending_calls_threshold = 1_000_000
    async with flooder:
        for start in range(0, 12_000, 500):
            batch = []
            for i in range(start, start + 500):
                if i % 4 == 0:
                    dev = f"ce-{0xA00000 + (i // 4) % 1500:012x}"  # 3 000 sends: 1 500 ids
                    batch.append(
                        (
                            contract.node_topic(dev, "reading"),
                            json.dumps(hostile.base_reading(dev, i)).encode(),
                        )
                    )
                else:
                    batch.append((TOPIC, bad[i % len(bad)]))
            await asyncio.gather(*(flooder.publish(t, p, qos=0) for t, p in batch))
            sent += len(batch)
            if start % 1500 == 0:
                await node.publish(1)
    return sent


@run_async
async def test_memory_stays_bounded_under_a_flood(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    """12 000 messages as fast as one client sends them — bad payloads, 1 500 made-up devices,
    valid readings at QoS 0 (never throttled by the broker's in-flight window) — at the gateway
    process: its peak RSS stays within the issue's 64 MB goal (asserted with margin for the
    machine), and it still stores and forwards the good readings."""
    local = broker_factory("local")
    upstream = broker_factory("upstream")
    port = free_port()
    cfg = gateway_config(local, upstream, tmp_path, metrics={"enabled": True, "port": port})
    gwp = GatewayProcess(tmp_path, cfg).start()
    proc = gwp.proc
    platform = await Platform(upstream).start()
    rng = random.Random(5)
    bad = [p for _w, p in hostile.corpus(DEV, 0, rng)]
    try:
        node = await FakeNode(local, "ce-0000000c0c0d", "air").start()
        await node.publish(1)
        await node.wait_acked(20)
        baseline = _vm(proc.pid, "VmRSS")
        sent = await _flood(local, bad, node)
        assert proc.poll() is None, gwp.log_tail()
        await node.publish(3)
        await node.wait_acked(90)
        await platform.wait_for(
            lambda: (
                {o["seq"] for o in platform.observations() if o["device_id"] == node.device_id}
                >= set(range(node.next_seq))
            ),
            90,
        )
        hwm = _vm(proc.pid, "VmHWM")
        print(f"flood of {sent}: RSS {baseline:.1f} MB before, peak {hwm:.1f} MB")
        assert hwm <= 80, f"peak RSS {hwm:.1f} MB"
        text = await asyncio.to_thread(_metrics_text, port)
        assert 'reason="too_many_devices"' in text
        assert proc.poll() is None
        await node.stop()
    finally:
        await platform.stop()
        stop_process(proc)
