"""Central mode (``cityedge alerts serve``) on a real platform broker, against a real gateway
process: a node that stops raises ``node_silent`` within two report intervals plus 60 s, a
SIGKILLed gateway raises ``gateway_offline`` from its last will, and a gateway dispatcher that
stops sending heartbeats raises ``dispatcher_quiet``. Each arrives at fake LINE once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import FakeNode, run_async
from tests.notify.conftest import GROUP, LINE_TOKEN
from tests.support.fake_services import FakeLine

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]
DEV = "ce-00000000c001"


def _proc(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def _until(pred: Any, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen in {timeout_s} s:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.1)


def _central_config(tmp_path: Path, upstream_broker: MosquittoBroker, line: FakeLine) -> Path:
    """`cityedge alerts serve`'s config: quick rules, LINE the one channel."""
    central = tmp_path / "central.toml"
    central.write_text(f'''
mode = "central"
outbox = "central.sqlite"
silent_grace_s = 4
quiet_after_s = 5
rules_interval_s = 0.5
[broker]
host = "127.0.0.1"
port = {upstream_broker.port}
client_id = "cityedge-alerts-test"
[channels.line]
type = "line"
to = "{GROUP}"
token_file = "line.token"
api_base = "{line.url}"
[[routes]]
channels = ["line"]
''')
    return central


def _gateway_alerts_config(tmp_path: Path, line: FakeLine) -> Path:
    """The gateway's dispatcher: heartbeats every 0.5 s."""
    gw_alerts = tmp_path / "gw-alerts.toml"
    gw_alerts.write_text(f'''
mode = "gateway"
outbox = "gw-notify.sqlite"
[heartbeat]
publish_s = 0.5
[channels.line]
type = "line"
to = "{GROUP}"
token_file = "line.token"
api_base = "{line.url}"
''')
    return gw_alerts


def _gateway_config(
    tmp_path: Path, local_broker: MosquittoBroker, upstream_broker: MosquittoBroker, gw_alerts: Path
) -> Path:
    """The gateway, one air node in its inventory that reports every second."""
    gw = tmp_path / "gateway.toml"
    gw.write_text(f'''
gateway_id = "gw-central-01"
site_id = "central-site-01"
data_dir = "{tmp_path / "gw"}"
[local]
port = {local_broker.port}
reconnect_min_s = 0.1
reconnect_max_s = 0.5
[upstream]
port = {upstream_broker.port}
reconnect_min_s = 0.1
reconnect_max_s = 0.5
[store]
min_free_bytes = 0
[metrics]
enabled = false
[health]
interval_s = 1.0
[notify]
config = "{gw_alerts}"
[[inventory.device]]
id = "{DEV}"
kind = "air"
report_s = 1.0
name = "Ban Khlong school"
''')
    return gw


def _delivered(line: FakeLine, text: str) -> Callable[[], bool]:
    return lambda: any(text in m["text"] for m in line.delivered)


@run_async
async def test_silent_node_and_offline_gateway_raised_centrally(
    local_broker: MosquittoBroker, upstream_broker: MosquittoBroker, tmp_path: Path, line: FakeLine
) -> None:
    (tmp_path / "line.token").write_text(LINE_TOKEN)
    central = _central_config(tmp_path, upstream_broker, line)
    gw_alerts = _gateway_alerts_config(tmp_path, line)
    gw = _gateway_config(tmp_path, local_broker, upstream_broker, gw_alerts)
    log = tmp_path / "procs.log"
    serve = _proc(
        [
            str(Path(sys.executable).parent / "cityedge"),
            "alerts",
            "serve",
            "--config",
            str(central),
        ],
        log,
    )
    gateway = _proc([sys.executable, "-m", "edge_gateway", "--config", str(gw)], log)
    node = await FakeNode(local_broker, DEV, "air").start()
    try:
        for _ in range(4):  # a reading every second, as its report interval says
            await node.publish(1)
            await asyncio.sleep(1.0)
        await node.wait_acked()
        stopped = time.monotonic()
        await node.stop()  # the node dies
        await _until(_delivered(line, "Sensor node silent"), 2 * 1.0 + 60, "node_silent", log)
        silent_after = time.monotonic() - stopped
        assert silent_after <= 2 * 1.0 + 60
        assert (
            "Ban Khlong school" in line.delivered[-1]["text"] or DEV in line.delivered[-1]["text"]
        )
        gateway.send_signal(signal.SIGKILL)  # the broker publishes its last will
        gateway.wait(10)
        await _until(_delivered(line, "Gateway offline"), 30, "gateway_offline", log)
        # Its dispatcher's heartbeats stopped too: the dead-man's switch.
        await _until(_delivered(line, "Alert dispatcher quiet"), 30, "dispatcher_quiet", log)
        await asyncio.sleep(1.0)
        kinds = [m["text"].split("\n")[0] for m in line.delivered]
        assert len(kinds) == len(set(kinds)) == 3, kinds
        print(f"node_silent raised {silent_after:.1f} s after the node stopped (limit 62 s)")
    finally:
        for p in (serve, gateway):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
