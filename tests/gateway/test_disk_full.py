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
from tests.gateway.helpers import AS_INVOKER, Platform, gateway_config, run_async
from tests.gateway.rig import (
    GatewayProcess,
    Load,
    assert_none_lost,
    one_each,
    start_nodes,
    stop_all,
    wait_all_forwarded,
)

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


async def fill_until_disk_full(
    gwp: GatewayProcess, upstream: MosquittoBroker, port: int, filler: Path
) -> float:
    """The platform goes away, rows pile up in the store, the disk fills: until the gateway says
    disk_full; returns the readings it had stored by then."""
    upstream.stop()  # rows pile up in the store ...
    async with asyncio.timeout(30):
        while await asyncio.to_thread(metric, port, "cityedge_gateway_queue_depth") < 100:
            await asyncio.sleep(0.1)
    fill(filler)  # ... and the disk fills
    async with asyncio.timeout(30):
        while await asyncio.to_thread(metric, port, "cityedge_gateway_disk_full") != 1:
            assert gwp.proc.poll() is None, gwp.log_tail()
            await asyncio.sleep(0.2)
    return await asyncio.to_thread(metric, port, "cityedge_gateway_readings_stored_total")


async def check_forwarding_while_full(
    gwp: GatewayProcess, upstream: MosquittoBroker, port: int, platform: Platform
) -> None:
    """The platform comes back while the disk is still full: what was stored is forwarded."""
    before = len(platform.observations())
    waiting = await asyncio.to_thread(metric, port, "cityedge_gateway_queue_depth")
    upstream.start()
    await platform.wait_for(lambda: len(platform.observations()) >= before + waiting, 60)
    health = [b for t, b in platform.messages if t.endswith("/health")]
    assert any(h.get("disk_full") is True for h in health), health[-3:]
    assert gwp.proc.poll() is None


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
    gwp = GatewayProcess(tmp_path, cfg)
    platform = await Platform(upstream).start()
    nodes = await start_nodes(local, [f"ce-00000000f00{i}" for i in range(3)], "air", 2.0)
    gwp.start()
    filler = small_fs / "filler"
    loader = Load(one_each(nodes, 0.02))  # ~150 readings/s in all
    try:
        await nodes[0].publish(1)
        await nodes[0].wait_acked(20)
        loader.start()
        await asyncio.sleep(1.0)
        stored_when_full = await fill_until_disk_full(gwp, upstream, port, filler)
        await asyncio.sleep(3.0)  # under load, disk full: nothing more is acknowledged
        assert gwp.proc.poll() is None, gwp.log_tail()
        assert sum(len(n.unacked) for n in nodes) > 100
        assert await asyncio.to_thread(metric, port, "cityedge_gateway_disk_full") == 1
        await check_forwarding_while_full(gwp, upstream, port, platform)
        # Space returns: the gateway resumes by itself.
        filler.unlink()
        await asyncio.sleep(1.0)
        await loader.stop()
        produced = await wait_all_forwarded(nodes, platform, 60, 60)
        assert await asyncio.to_thread(metric, port, "cityedge_gateway_disk_full") == 0
        assert (
            await asyncio.to_thread(metric, port, "cityedge_gateway_readings_stored_total")
            > stored_when_full
        )
        keys = Counter((o["device_id"], o["seq"]) for o in platform.observations())
        assert_none_lost(keys, produced)
        assert max(keys.values()) == 1, "duplicates"
        assert gwp.proc.poll() is None
        assert "Traceback" not in gwp.log.read_text()
    finally:
        loader.cancel()
        await stop_all(nodes, platform)
        gwp.stop()
        filler.unlink(missing_ok=True)
