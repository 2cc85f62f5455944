"""Gateway benchmark: what durability costs, and how fast a backlog drains.

    python bench/gateway.py            # full run (1 000 000-reading backlog)
    python bench/gateway.py --quick    # under a minute

Three measurements, each on real Mosquitto brokers on loopback:

1. **Gateway** — node readings (QoS 1) → site broker → ``python -m edge_gateway`` (SQLite WAL,
   synchronous=FULL, group commit) → platform broker → a consumer. Throughput is a flood of
   readings timed from the first publish to the last observation received; latency is measured
   separately at a paced rate (40 % of the measured throughput) from the reading's ``t`` (set
   at publish) to its arrival. Peak RSS is the gateway process's VmHWM; disk bytes per reading
   are the process's ``write_bytes`` from /proc (WAL, checkpoints, fsyncs) over readings.
2. **Mosquitto bridge** — the same stream through a site broker bridged to the platform broker
   (``topic … out 1``; no disk, no validation, no calibration): the plain-broker ceiling.
3. **Drain** — a backlog is inserted straight into the store with ``Store.commit`` (to save
   time; the rows are real observation payloads), then the gateway starts with the platform
   reachable and drains it while a node keeps sending live readings; we report the drain time
   and the live readings' latency during the drain.

The last line printed is one line of ``key=value`` figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_gateway import contract
from edge_gateway.store import Entry, Limits, Store
from host_tools.sim.brokers import MosquittoBroker, free_port, wait_for_port

SITE = "bench-site-01"
GATEWAY = "gw-bench-01"


def reading(device_id: str, seq: int, t: float) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "device_id": device_id,
            "kind": "air",
            "fw": "0.1.0",
            "boot": 1,
            "seq": seq,
            "t": t,
            "synced": True,
            "window_s": 60,
            "raw": {
                "pm25_cf1": {"v": 20.0 + seq % 13, "u": "ug/m3"},
                "pm25_atm": {"v": 18.0 + seq % 11, "u": "ug/m3"},
                "pm10_atm": {"v": 25.0 + seq % 7, "u": "ug/m3"},
                "temp": {"v": 31.2, "u": "Cel"},
                "rh": {"v": 60.0, "u": "%RH"},
            },
        },
        separators=(",", ":"),
    ).encode()


class Consumer:
    """Platform-side subscriber; records (arrival, sample time) per message."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self.arrivals: list[tuple[float, float, str, int]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-consumer-{topic.count('/')}"
        )
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        body = json.loads(msg.payload)
        with self.lock:
            self.arrivals.append((now, float(body["t"]), body["device_id"], int(body["seq"])))

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def reset(self) -> None:
        with self.lock:
            self.arrivals.clear()

    def wait(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.count() >= n:
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Publisher:
    """Nodes on the site broker (one paho connection, many device ids), QoS 1."""

    def __init__(self, broker: MosquittoBroker, devices: int, prefix: str = "ce-bench") -> None:
        self.devices = [f"{prefix}{i:06x}"[-15:] for i in range(devices)]
        self.devices = [f"ce-{i:012x}" for i in range(1, devices + 1)]
        self.seq = dict.fromkeys(self.devices, 0)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-nodes")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, n: int, rate_per_s: float | None = None) -> None:
        start = self.started = time.monotonic()
        info = None
        for i in range(n):
            dev = self.devices[i % len(self.devices)]
            seq = self.seq[dev]
            self.seq[dev] = seq + 1
            info = self.client.publish(
                contract.node_topic(dev, "reading"), reading(dev, seq, time.time()), qos=1
            )
            if rate_per_s:
                ahead = start + (i + 1) / rate_per_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            elif i % 200 == 199:
                time.sleep(0.001)  # let paho's network thread run
        if info is not None:
            info.wait_for_publish(60)
        self.rate = n / max(1e-9, time.monotonic() - start)  # what the publisher managed

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def latencies_ms(consumer: Consumer) -> list[float]:
    with consumer.lock:
        return [(a - t) * 1000 for a, t, _d, _s in consumer.arrivals]


def proc_io_write(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_config(
    path: Path,
    local: MosquittoBroker,
    upstream: MosquittoBroker,
    data: Path,
    drain_rate: float,
    metrics_port: int,
) -> None:
    path.write_text(
        f"""
gateway_id = "{GATEWAY}"
site_id = "{SITE}"
data_dir = "{data}"
log_level = "warning"
[location]
lat = 13.75
lon = 100.5
[local]
host = "127.0.0.1"
port = {local.port}
[upstream]
host = "127.0.0.1"
port = {upstream.port}
max_inflight_messages_placeholder = 0
[store]
min_free_bytes = 0
[forward]
drain_rate_per_s = {drain_rate}
# = the brokers' max_inflight_messages (host_tools/sim/brokers.py): a larger QoS 2 window loses
# messages in Mosquitto (docs/gateway.md, "What the platform broker needs").
max_inflight = 100
[calibration]
fleet_defaults = true
[metrics]
enabled = true
port = {metrics_port}
[health]
interval_s = 5
""".replace("max_inflight_messages_placeholder = 0\n", "")
    )


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def stop_gateway(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_stream(
    publisher: Publisher, consumer: Consumer, n: int, timeout_s: float
) -> tuple[float, bool]:
    consumer.reset()
    t0 = time.monotonic()
    publisher.publish(n)
    ok = consumer.wait(n, timeout_s)
    elapsed = time.monotonic() - t0
    return consumer.count() / elapsed, ok


def paced_latency(
    publisher: Publisher, consumer: Consumer, n: int, rate: float
) -> tuple[float, float]:
    consumer.reset()
    publisher.publish(n, rate_per_s=rate)
    consumer.wait(n, 30)
    lat = latencies_ms(consumer)
    return percentile(lat, 50), percentile(lat, 99)


def bench_gateway(work: Path, n: int, n_paced: int) -> dict[str, Any]:
    local = MosquittoBroker("bench-local", workdir=work / "local").start()
    upstream = MosquittoBroker("bench-up", workdir=work / "up").start()
    conf = work / "gateway.toml"
    write_config(conf, local, upstream, work / "gw-data", 1e6, free_port())
    proc = start_gateway(conf, work / "gateway.log")
    consumer = Consumer(upstream, f"{contract.ROOT}/site/+/+/+/observation")
    publisher = Publisher(local, devices=50)
    try:
        # Warm-up: the first observation proves the gateway is subscribed and connected.
        deadline = time.monotonic() + 20
        while consumer.count() == 0 and time.monotonic() < deadline:
            publisher.publish(1)
            time.sleep(0.2)
        if consumer.count() == 0:
            raise RuntimeError(
                f"gateway did not forward: {(work / 'gateway.log').read_text()[-2000:]}"
            )
        time.sleep(0.5)
        io0 = proc_io_write(proc.pid)
        cpu0 = proc_cpu_s(proc.pid)
        rate, ok = run_stream(publisher, consumer, n, timeout_s=max(60.0, n / 200))
        io1 = proc_io_write(proc.pid)
        cpu1 = proc_cpu_s(proc.pid)
        got = consumer.count()
        pub_rate = publisher.rate
        time.sleep(5.0)  # idle: no readings, health every 5 s
        idle_cpu = (proc_cpu_s(proc.pid) - cpu1) / 5.0 * 100
        p50, p99 = paced_latency(publisher, consumer, n_paced, rate=max(50.0, rate * 0.4))
        rss = proc_peak_rss_mb(proc.pid)
        return {
            "gw_readings_per_s": round(rate),
            "gw_complete": ok and got >= n,
            "gw_p50_ms": round(p50, 1),
            "gw_p99_ms": round(p99, 1),
            "gw_peak_rss_mb": round(rss, 1),
            "gw_disk_bytes_per_reading": round((io1 - io0) / max(1, got)),
            "gw_cpu_ms_per_reading": round((cpu1 - cpu0) * 1000 / max(1, got), 3),
            "gw_idle_cpu_pct": round(idle_cpu, 2),
            "gw_publisher_per_s": round(pub_rate),
        }
    finally:
        publisher.close()
        consumer.close()
        stop_gateway(proc)
        local.close()
        upstream.close()


def bench_bridge(work: Path, n: int, n_paced: int) -> dict[str, Any]:
    upstream = MosquittoBroker("bridge-up", workdir=work / "bridge-up").start()
    bridge = [
        "connection bench-bridge",
        f"address 127.0.0.1:{upstream.port}",
        f"topic {contract.ROOT}/node/+/reading out 1",
        "cleansession true",
        "bridge_protocol_version mqttv311",
    ]
    local = MosquittoBroker(
        "bridge-local", workdir=work / "bridge-local", extra_config=bridge
    ).start()
    consumer = Consumer(upstream, f"{contract.ROOT}/node/+/reading")
    publisher = Publisher(local, devices=50)
    try:
        deadline = time.monotonic() + 20
        while consumer.count() == 0 and time.monotonic() < deadline:
            publisher.publish(1)
            time.sleep(0.2)
        time.sleep(0.3)
        rate, ok = run_stream(publisher, consumer, n, timeout_s=60)
        pub_rate = publisher.rate
        p50, p99 = paced_latency(publisher, consumer, n_paced, rate=max(50.0, rate * 0.4))
        return {
            "bridge_readings_per_s": round(rate),
            "bridge_complete": ok,
            "bridge_publisher_per_s": round(pub_rate),
            "bridge_p50_ms": round(p50, 1),
            "bridge_p99_ms": round(p99, 1),
        }
    finally:
        publisher.close()
        consumer.close()
        local.close()
        upstream.close()


def fill_store(path: Path, n: int, devices: int) -> float:
    """Insert n observation rows straight into the store, as an outage would leave them."""
    store = Store(path, Limits(1 << 40, 1e9, 0, 1e9), "normal")
    store.open()
    t0 = time.monotonic()
    template = json.loads(reading("ce-000000000001", 0, time.time()))
    batch: list[Entry] = []
    now = time.time()
    for i in range(n):
        dev = f"ce-{(i % devices) + 1:012x}"
        seq = 10_000_000 + i // devices  # never collides with the live node's seqs
        obs = {
            "v": 1,
            "site_id": SITE,
            "gateway_id": GATEWAY,
            "device_id": dev,
            "kind": "air",
            "fw": "0.1.0",
            "boot": 1,
            "seq": seq,
            "phenomenon_time": "2026-11-22T00:00:00Z",
            "t": now,
            "clock_synced": True,
            "received_time": "2026-11-22T00:00:00.000Z",
            "location": {"lat": 13.75, "lon": 100.5},
            "raw": template["raw"],
            "calibrated": {"pm25": {"v": 12.0, "u": "ug/m3", "calibration_id": "none"}},
            "quality": {"pm25": 1},
            "replay": False,
        }
        payload = json.dumps(obs, separators=(",", ":")).encode()
        batch.append(
            Entry(contract.observation_topic(SITE, "air", dev), payload, now, 0, (dev, 1, seq))
        )
        if len(batch) == 5000:
            store.commit(batch, now=now)
            batch.clear()
    if batch:
        store.commit(batch, now=now)
    store.close()
    return time.monotonic() - t0


def bench_drain(work: Path, backlog: int, live_n: int) -> dict[str, Any]:
    data = work / "drain-data"
    data.mkdir()
    fill_s = fill_store(data / "store.sqlite", backlog, devices=50)
    local = MosquittoBroker("drain-local", workdir=work / "drain-local").start()
    upstream = MosquittoBroker("drain-up", workdir=work / "drain-up").start()
    conf = work / "drain.toml"
    metrics_port = free_port()
    write_config(conf, local, upstream, data, 1e6, metrics_port)
    backlog_consumer = Consumer(upstream, f"{contract.ROOT}/site/+/+/+/observation")
    publisher = Publisher(local, devices=5)
    proc = start_gateway(conf, work / "drain.log")
    try:
        wait_for_port("127.0.0.1", metrics_port, 30)
        t0 = time.monotonic()
        live_lat: list[float] = []
        # Live readings at 20/s while the backlog drains; their latency is what "live first" keeps.
        sent_live = 0
        while backlog_consumer.count() < backlog + sent_live and time.monotonic() - t0 < 900:
            if sent_live < live_n:
                publisher.publish(1)
                sent_live += 1
            time.sleep(0.05)
        drain_s = time.monotonic() - t0
        with backlog_consumer.lock:
            for arrival, t, _dev, seq in backlog_consumer.arrivals:
                if seq < 10_000_000:
                    live_lat.append((arrival - t) * 1000)
        return {
            "drain_backlog": backlog,
            "drain_fill_s": round(fill_s, 1),
            "drain_s": round(drain_s, 1),
            "drain_readings_per_s": round(backlog / drain_s),
            "drain_live_p50_ms": round(percentile(live_lat, 50), 1),
            "drain_live_p99_ms": round(percentile(live_lat, 99), 1),
            "drain_live_n": len(live_lat),
        }
    finally:
        publisher.close()
        backlog_consumer.close()
        stop_gateway(proc)
        local.close()
        upstream.close()


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop brokers and gateways


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    n, n_paced, backlog, live_n = (
        (5_000, 1_000, 20_000, 100) if args.quick else (50_000, 5_000, 1_000_000, 400)
    )
    work = Path(tempfile.mkdtemp(prefix="cityedge-bench-gw-", dir=os.environ.get("BENCH_DIR")))
    figures: dict[str, Any] = {"quick": args.quick, "n": n}
    try:
        t0 = time.monotonic()
        figures.update(bench_gateway(work, n, n_paced))
        print(f"gateway: {figures}", file=sys.stderr)
        figures.update(bench_bridge(work, n, n_paced))
        figures["durability_cost_ratio"] = round(
            figures["bridge_readings_per_s"] / max(1, figures["gw_readings_per_s"]), 2
        )
        # The bench's own ends are not the ceiling when the bridge run (same publisher, same
        # consumer) goes faster than the gateway: the consumer took bridge_readings_per_s.
        figures["gw_to_bridge_ratio"] = round(
            figures["gw_readings_per_s"] / max(1, figures["bridge_readings_per_s"]), 2
        )
        print(f"bridge: {figures}", file=sys.stderr)
        figures.update(bench_drain(work, backlog, live_n))
        figures["total_s"] = round(time.monotonic() - t0, 1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    # The last line: every figure, ending with what the goals are about (issue 11).
    last = (
        "gw_readings_per_s",
        "gw_to_bridge_ratio",
        "gw_cpu_ms_per_reading",
        "gw_disk_bytes_per_reading",
        "gw_peak_rss_mb",
    )
    ordered = [k for k in figures if k not in last] + [k for k in last if k in figures]
    print(" ".join(f"{k}={figures[k]}" for k in ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
