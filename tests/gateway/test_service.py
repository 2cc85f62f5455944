"""The gateway as systemd runs it: `python -m edge_gateway --config FILE` — sd_notify READY and
WATCHDOG, SIGHUP reload keeping the store, a bad reload refused, retained health and device
status, `cityedge gateway stats` / `check-config`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import AS_INVOKER, FakeNode, Platform, gateway_config, run_async
from tests.gateway.test_crash import write_toml
from tests.support.tools import REPO

pytestmark = pytest.mark.broker


def cityedge(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "cityedge"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out.stderr = " ".join(out.stderr.split())  # rich wraps long lines
    return out


async def wait_log(log: Path, text: str, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while text not in log.read_text(errors="replace"):
            await asyncio.sleep(0.05)


@run_async
async def test_service_reload_keeps_store_and_notifies_systemd(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    upstream = broker_factory("upstream", persistence=True, extra_config=AS_INVOKER)
    platform = await Platform(upstream).start()  # a persistent session, kept across the restart
    upstream.stop()
    dev = "ce-00000000f001"
    cfg = gateway_config(local, upstream, tmp_path, inventory={"allow_unknown": True})
    conf = tmp_path / "gateway.toml"
    write_toml(conf, cfg)
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    log = tmp_path / "gw.log"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; we never wait on it here
        [sys.executable, "-m", "edge_gateway", "--config", str(conf)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
    )
    messages: list[str] = []

    async def read_notify() -> None:
        # Read the notify socket all along, as systemd does. (The gateway must not depend on it:
        # a datagram socket holds only net.unix.max_dgram_qlen unread messages — 10 by default —
        # and the gateway once blocked its event loop sending the 11th watchdog ping, so a
        # SIGHUP or SIGTERM went unhandled when this test ran slowly.)
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except BlockingIOError:
                await asyncio.sleep(0.05)

    reader = asyncio.create_task(read_notify())
    node = await FakeNode(local, dev, "air").start()
    try:
        async with asyncio.timeout(15):
            while not any("WATCHDOG=1" in m for m in messages):
                await asyncio.sleep(0.05)
        assert messages[0].startswith("READY=1")

        await asyncio.sleep(0.5)  # let it subscribe on the site broker
        await node.publish(50)
        await node.wait_acked(20)  # custody while the platform is down
        stats = cityedge("gateway", "stats", "--config", str(conf), "--json")
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["queue_depth"] == 50

        # A valid change: reloaded, nothing lost, nothing reprocessed.
        cfg["forward"] = {"drain_rate_per_s": 1000.0}
        write_toml(conf, cfg)
        proc.send_signal(signal.SIGHUP)
        await wait_log(log, "config reloaded")
        # A broken change: refused, naming the key; the running config stays.
        conf.write_text(conf.read_text() + "[bogus]\nx = 1\n")
        proc.send_signal(signal.SIGHUP)
        await wait_log(log, "reload refused")
        assert "bogus" in log.read_text()
        assert proc.poll() is None
        write_toml(conf, cfg)

        await node.publish(10)
        await node.wait_acked(20)
        pings = sum("WATCHDOG=1" in m for m in messages)
        async with asyncio.timeout(5):  # the watchdog still runs after both reloads
            while sum("WATCHDOG=1" in m for m in messages) == pings:
                await asyncio.sleep(0.05)
        upstream.start()
        await platform.wait_for(lambda: len(platform.observations()) >= 60, timeout_s=30)
        await platform.wait_for(
            lambda: any(t.endswith(f"/device/{dev}/status") for t, _ in platform.messages), 10
        )
        await asyncio.sleep(0.3)
        seqs = [o["seq"] for o in platform.observations()]
        assert sorted(seqs) == list(range(60)) and len(seqs) == 60
        health = [b for t, b in platform.messages if t.endswith("/health")]
        assert health and health[-1]["state"] == "online"
        contract.validate("gateway_health", health[-1])
        status = [b for t, b in platform.messages if t.endswith(f"/device/{dev}/status")][-1]
        contract.validate("device_status", status)
        assert status["received_24h"] == 60 and status["state"] == "online"
    finally:
        await platform.stop()
        await node.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        reader.cancel()
        notify.close()
    assert proc.returncode == 0, log.read_text()[-2000:]
    stats = cityedge("gateway", "stats", "--config", str(conf), "--json")
    counters = json.loads(stats.stdout)["counters"]
    assert counters["readings_stored"] == 60 and counters["delivered"] >= 60


def test_cli_config_errors_exit_non_zero_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_id = "gw-a1"\nsite_id = "s-1"\n[local]\nport = 99999\n')
    out = cityedge("gateway", "check-config", str(bad))
    assert out.returncode == 2 and "local.port" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "edge_gateway", "--config", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "local.port" in out.stderr
    out = cityedge("gateway", "run", "--config", str(tmp_path / "missing.toml"))
    assert out.returncode == 2 and "not found" in out.stderr
    good = cityedge("gateway", "check-config", str(REPO / "edge_gateway/examples/gateway.toml"))
    assert good.returncode == 0 and "OK" in good.stdout
