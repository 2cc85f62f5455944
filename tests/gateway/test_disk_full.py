"""A full disk under load, on a small tmpfs: the gateway process never exits, acknowledges
nothing it could not store, says ``disk_full`` in its health and metrics, goes on forwarding what
it stored, and resumes by itself when space returns — with no reading lost or duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from host_tools.sim.brokers import MosquittoBroker, free_port
from tests.gateway.helpers import (
    AS_INVOKER,
    FakeNode,
    Platform,
    gateway_config,
    run_async,
    stop_process,
)
from tests.gateway.test_crash import start_gateway, write_toml

pytestmark = pytest.mark.broker


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 12 MB tmpfs (root only: mount), unmounted at the end."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> int:
    """Write a file until the file system is full; returns the bytes written."""
    written = 0
    with contextlib.suppress(OSError), open(path, "wb", buffering=0) as f:
        while True:
            written += f.write(b"\xa5" * 16384)
    return written


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


@run_async
async def test_full_disk_is_a_state_not_a_crash(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path, small_fs: Path
) -> None:
    local = broker_factory("local")
    # Persistent, so the platform consumer's session (and what it missed) survives the restart.
    upstream = broker_factory("upstream", persistence=True, extra_config=AS_INVOKER)
    port = free_port()
    data = small_fs / "gw"
    cfg = gateway_config(local, upstream, data, metrics={"enabled": True, "port": port})
    write_toml(tmp_path / "gateway.toml", cfg)
    log = tmp_path / "gateway.log"
    platform = await Platform(upstream).start()
    nodes = [
        await FakeNode(local, f"ce-00000000f00{i}", "air", resend_after_s=2.0).start()
        for i in range(3)
    ]
    proc = start_gateway(tmp_path / "gateway.toml", log)
    stop_load = asyncio.Event()

    async def load() -> None:
        while not stop_load.is_set():
            for node in nodes:
                await node.publish(1)
            await asyncio.sleep(0.02)  # ~150 readings/s in all

    filler = small_fs / "filler"
    loader: asyncio.Task[None] | None = None
    try:
        await nodes[0].publish(1)
        await nodes[0].wait_acked(20)
        loader = asyncio.create_task(load())
        await asyncio.sleep(1.0)
        upstream.stop()  # rows pile up in the store ...
        async with asyncio.timeout(30):
            while await asyncio.to_thread(metric, port, "cityedge_gateway_queue_depth") < 100:
                await asyncio.sleep(0.1)
        fill(filler)  # ... and the disk fills
        async with asyncio.timeout(30):
            while await asyncio.to_thread(metric, port, "cityedge_gateway_disk_full") != 1:
                assert proc.poll() is None, log.read_text()[-3000:]
                await asyncio.sleep(0.2)
        stored_when_full = await asyncio.to_thread(
            metric, port, "cityedge_gateway_readings_stored_total"
        )
        await asyncio.sleep(3.0)  # under load, disk full: nothing more is acknowledged
        assert proc.poll() is None, log.read_text()[-3000:]
        assert sum(len(n.unacked) for n in nodes) > 100
        assert await asyncio.to_thread(metric, port, "cityedge_gateway_disk_full") == 1
        # The platform comes back while the disk is still full: what was stored is forwarded.
        before = len(platform.observations())
        waiting = await asyncio.to_thread(metric, port, "cityedge_gateway_queue_depth")
        upstream.start()
        await platform.wait_for(lambda: len(platform.observations()) >= before + waiting, 60)
        health = [b for t, b in platform.messages if t.endswith("/health")]
        assert any(h.get("disk_full") is True for h in health), health[-3:]
        assert proc.poll() is None
        # Space returns: the gateway resumes by itself.
        filler.unlink()
        await asyncio.sleep(1.0)
        stop_load.set()
        await loader
        loader = None
        for node in nodes:
            await node.wait_acked(60)
        produced = {n.device_id: n.next_seq for n in nodes}
        total = sum(produced.values())
        await platform.wait_for(
            lambda: len({(o["device_id"], o["seq"]) for o in platform.observations()}) >= total,
            timeout_s=60,
        )
        assert await asyncio.to_thread(metric, port, "cityedge_gateway_disk_full") == 0
        assert (
            await asyncio.to_thread(metric, port, "cityedge_gateway_readings_stored_total")
            > stored_when_full
        )
        keys = Counter((o["device_id"], o["seq"]) for o in platform.observations())
        for dev, n in produced.items():
            got = {seq for (d, seq) in keys if d == dev}
            assert got == set(range(n)), f"{dev}: lost {sorted(set(range(n)) - got)[:10]}"
        assert max(keys.values()) == 1, "duplicates"
        assert proc.poll() is None
        assert "Traceback" not in log.read_text()
    finally:
        stop_load.set()
        if loader is not None:
            loader.cancel()
        for node in nodes:
            await node.stop()
        await platform.stop()
        stop_process(proc)
        filler.unlink(missing_ok=True)
