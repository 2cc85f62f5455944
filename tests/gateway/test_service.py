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
from typing import Any

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


class NotifySocket:
    """The sd_notify socket, read all along as systemd does. (The gateway must not depend on it:
    a datagram socket holds only net.unix.max_dgram_qlen unread messages — 10 by default — and
    the gateway once blocked its event loop sending the 11th watchdog ping, so a SIGHUP or
    SIGTERM went unhandled when this test ran slowly.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> NotifySocket:
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                await asyncio.sleep(0.05)

    def pings(self) -> int:
        return sum("WATCHDOG=1" in m for m in self.messages)

    async def wait_ping(self, after: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while self.pings() == after:
                await asyncio.sleep(0.05)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.sock.close()


def start_as_systemd(conf: Path, log: Path, notify: NotifySocket) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(conf)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
    )


async def check_reloads(
    proc: subprocess.Popen[bytes], conf: Path, cfg: dict[str, Any], log: Path
) -> None:
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


async def check_all_forwarded_with_status(platform: Platform, dev: str) -> None:
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
    notify = NotifySocket(tmp_path / "notify.sock")
    log = tmp_path / "gw.log"
    proc = start_as_systemd(conf, log, notify)
    notify.start()
    node = await FakeNode(local, dev, "air").start()
    try:
        await notify.wait_ping(0, 15)
        assert notify.messages[0].startswith("READY=1")

        await asyncio.sleep(0.5)  # let it subscribe on the site broker
        await node.publish(50)
        await node.wait_acked(20)  # custody while the platform is down
        stats = cityedge("gateway", "stats", "--config", str(conf), "--json")
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["queue_depth"] == 50
        await check_reloads(proc, conf, cfg, log)

        await node.publish(10)
        await node.wait_acked(20)
        # the watchdog still runs after both reloads
        await notify.wait_ping(notify.pings(), 5)
        upstream.start()
        await check_all_forwarded_with_status(platform, dev)
    finally:
        await platform.stop()
        await node.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
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
