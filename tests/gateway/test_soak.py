"""The long soak (``--run-soak``; not in the default suite): 30 minutes of traffic at a high rate
— good readings from many nodes, hostile payloads mixed in — at the gateway process. Its RSS
must level off (slope of the second half about 0) and its CPU when idle afterwards must stay
under 2 %. Set ``CITYEDGE_SOAK_S`` to shorten or lengthen the traffic phase."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway import hostile
from tests.gateway.helpers import Platform, gateway_config, run_async, stop_process
from tests.gateway.rig import GatewayProcess

SOAK_S = float(os.environ.get("CITYEDGE_SOAK_S", "1800"))

# Beyond the suite's per-test timeout: the traffic, the drain and a minute of idle CPU.
pytestmark = [pytest.mark.soak, pytest.mark.broker, pytest.mark.timeout(SOAK_S + 900)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slope_mb_per_h(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    num = sum((t - mt) * (v - mv) for t, v in samples)
    den = sum((t - mt) ** 2 for t, _ in samples) or 1.0
    return num / den * 3600


async def _traffic(
    local: MosquittoBroker, bad: list[bytes], gwp: GatewayProcess
) -> tuple[int, list[tuple[float, float]]]:
    """SOAK_S of ~400 readings/s from 200 devices, 1 in 10 messages bad; the gateway's RSS
    sampled every 10 s. Returns the good readings sent and the (s, MB) samples."""
    proc = gwp.proc
    devices = [f"ce-{0xB00000 + i:012x}" for i in range(200)]
    seqs = dict.fromkeys(devices, 0)
    samples: list[tuple[float, float]] = []
    sent = 0
    t0 = time.monotonic()
    async with aiomqtt.Client(local.host, local.port, identifier="soak-nodes") as nodes:
        nodes.pending_calls_threshold = 1_000_000
        while time.monotonic() - t0 < SOAK_S:
            batch = []
            for dev in random.sample(devices, 40):  # ~400 readings/s, 1 in 10 bad
                body = hostile.base_reading(dev, seqs[dev], t=time.time())
                seqs[dev] += 1
                batch.append(
                    nodes.publish(
                        contract.node_topic(dev, "reading"), json.dumps(body).encode(), qos=1
                    )
                )
            batch += [
                nodes.publish(contract.node_topic(devices[0], "reading"), random.choice(bad), qos=0)
                for _ in range(4)
            ]
            await asyncio.gather(*batch, asyncio.sleep(0.1))
            sent += 40
            if not samples or time.monotonic() - t0 - samples[-1][0] >= 10:
                samples.append((time.monotonic() - t0, rss_mb(proc.pid)))
                assert proc.poll() is None, gwp.log_tail()
    return sent, samples


@run_async
async def test_soak_rss_flat_and_idle_cpu_low(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    upstream = broker_factory("upstream")
    cfg = gateway_config(local, upstream, tmp_path, health={"interval_s": 30.0})
    gwp = GatewayProcess(tmp_path, cfg).start()
    proc = gwp.proc
    platform = await Platform(
        upstream, topic=f"{contract.ROOT}/site/+/+/+/observation", qos=1
    ).start()
    bad = [p for _w, p in hostile.corpus("ce-0000000f0f0f", 0, random.Random(9))]
    try:
        await asyncio.sleep(2.0)
        sent, samples = await _traffic(local, bad, gwp)
        await platform.wait_for(lambda: len(platform.observations()) >= sent, timeout_s=300)
        second_half = [s for s in samples if s[0] >= SOAK_S / 2]
        slope = slope_mb_per_h(second_half)
        await asyncio.sleep(10.0)
        c0 = cpu_s(proc.pid)
        await asyncio.sleep(60.0)
        idle_pct = (cpu_s(proc.pid) - c0) / 60.0 * 100
        print(
            f"soak {SOAK_S:.0f} s, {sent} readings: RSS {samples[0][1]:.1f} -> "
            f"{samples[-1][1]:.1f} MB, slope of the second half {slope:+.2f} MB/h, "
            f"idle CPU {idle_pct:.2f} %"
        )
        assert abs(slope) < 2.0, samples
        assert idle_pct < 2.0
        assert max(v for _, v in samples) <= 64
    finally:
        await platform.stop()
        stop_process(proc)
