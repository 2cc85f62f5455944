"""The gateway as an admin runs it: what the platform's retained health says after a clean stop
and after a crash, and the log priorities journald sees."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import gateway_config, run_async
from tests.gateway.test_crash import write_toml
from tests.support.tools import REPO

pytestmark = pytest.mark.broker

SITE, GW = "test-site-01", "gw-test-01"
KEEPALIVE_S = 5


async def retained_health(
    broker: MosquittoBroker, timeout_s: float = 5.0, live: bool = False
) -> dict[str, Any]:
    """What a platform consumer connecting now gets: the retained gateway health (or, with
    ``live``, a live one if nothing is retained yet)."""
    topic = contract.gateway_health_topic(SITE, GW)
    async with aiomqtt.Client(
        broker.host, broker.port, identifier="health-reader", clean_session=True, timeout=5
    ) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                assert live or message.retain, "expected the retained health first"
                body: dict[str, Any] = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                contract.validate("gateway_health", body)
                return body
    raise AssertionError("no retained health")


async def wait_health(broker: MosquittoBroker, state: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            body = await retained_health(broker, timeout_s=1.0, live=True)
            if body["state"] == state:
                return body
        except TimeoutError:
            pass  # nothing retained yet
        if time.monotonic() > deadline:
            raise AssertionError(f"retained health did not become {state!r} in {timeout_s} s")
        await asyncio.sleep(0.1)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def start(conf: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(conf)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


@run_async
async def test_clean_stop_leaves_offline_with_the_stop_time_and_a_kill_leaves_the_will(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    upstream = broker_factory("upstream")
    cfg = gateway_config(local, upstream, tmp_path, upstream={"keepalive_s": KEEPALIVE_S})
    cfg["health"] = {"interval_s": 0.5}  # keep publishing online right up to the stop
    conf = tmp_path / "gateway.toml"
    write_toml(conf, cfg)
    log = tmp_path / "gw.log"

    proc = start(conf, log)
    try:
        online = await wait_health(upstream, "online", 20)
        await asyncio.sleep(1.2)  # a few periodic online messages have gone out
        stopped_at = time.time()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0, log.read_text()[-2000:]
        exited_at = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
    health = await retained_health(upstream)
    assert health["state"] == "offline" and health["reason"] == "stopped", health
    # t is the stop time (whole seconds), not the connect time
    assert int(stopped_at) - 1 <= _ts(health["t"]) <= exited_at + 1, (health, stopped_at)
    assert _ts(health["t"]) >= _ts(online["t"])
    assert health["queue_depth"] == 0 and "online_since" in health

    proc = start(conf, log)
    try:
        online = await wait_health(upstream, "online", 20)
        assert online.get("reason") is None
        proc.kill()
        killed_at = time.monotonic()
        will = await wait_health(upstream, "offline", KEEPALIVE_S * 1.5 + 2)
        assert time.monotonic() - killed_at <= KEEPALIVE_S * 1.5 + 2
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert will["reason"] == "connection_lost", will
    assert "t" not in will  # the broker sends it when it notices: no time the gateway could know
    assert will["online_since"] == online["online_since"]


@run_async
async def test_completeness_counts_by_sample_time_and_survives_a_restart(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    from edge_gateway.app import Gateway
    from edge_gateway.config import GatewayConfig
    from tests.gateway.helpers import FakeNode, wait_ready

    local = broker_factory("local")
    cfg = gateway_config(
        local, local, tmp_path, upstream={"enabled": False}, inventory={"default_report_s": 600}
    )
    dev = "ce-00000000c0de"
    now = time.time()

    async def run_gateway(sends: list[float]) -> dict[str, Any]:
        gw = Gateway(GatewayConfig.from_dict(cfg))
        task = asyncio.create_task(gw.run())
        node = await FakeNode(local, dev, "water", boot=len(sends)).start()
        try:
            await wait_ready(gw, upstream=False)
            for t in sends:
                await node.publish(1, t=t)
            await node.wait_acked()
            return gw.devices.payload(dev, time.time())
        finally:
            await node.stop()
            gw.request_stop()
            await task

    # A node back after 12 hours uploads its backlog at once: one reading per 10 minutes over
    # the last 12 h, plus one from 25 h ago (outside the window). By arrival time that was 73
    # readings "in the last second" of a device first seen a second ago: completeness 73.
    backlog = [now - 25 * 3600] + [now - 12 * 3600 + 600 * i for i in range(72)]
    status = await run_gateway(backlog)
    contract.validate("device_status", status)
    assert status["received_24h"] == 72
    assert status["expected_24h"] == 24 * 3600 // 600  # first sample 25 h ago: a full day
    assert status["completeness"] == round(72 / 144, 3)

    # After a restart the counts are still there (they were 0 before: memory only).
    status = await run_gateway([now])
    assert status["received_24h"] == 73 and status["completeness"] == round(73 / 144, 3)


def test_demo_nodes_each_carry_their_own_location(tmp_path: Path) -> None:
    from edge_gateway.config import GatewayConfig
    from host_tools.sim.demo import _gateway_config

    nodes = [
        ("ce-0000000000a1", "air"),
        ("ce-0000000000a2", "air"),
        ("ce-0000000000b1", "water"),
        ("ce-0000000000c1", "parking"),
    ]
    broker = type("B", (), {"host": "127.0.0.1", "port": 1883})()
    (tmp_path / "r.toml").write_text("")
    config = GatewayConfig.from_dict(
        _gateway_config(tmp_path, broker, broker, tmp_path / "r.toml", nodes)
    )
    where = {}
    for device_id, _kind in nodes:
        entry = config.device(device_id)
        assert entry is not None and entry.location is not None
        where[device_id] = (entry.location.lat, entry.location.lon)
    assert len(set(where.values())) == len(nodes)  # four nodes, four places
    assert (config.location.lat, config.location.lon) not in {
        where["ce-0000000000b1"],
        where["ce-0000000000c1"],
    }


def _journal_env(log: Path) -> dict[str, str]:
    """What systemd sets when stderr is the journal: JOURNAL_STREAM = device:inode of stderr."""
    st = log.stat()
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


@run_async
async def test_service_logs_carry_syslog_priorities_when_stderr_is_the_journal(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    import socket

    local = broker_factory("local")
    with socket.socket() as s:  # a platform port nobody listens on: warnings
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    cfg = gateway_config(local, local, tmp_path, upstream={"port": dead_port})
    conf = tmp_path / "gateway.toml"
    write_toml(conf, cfg)
    log = tmp_path / "journal.log"
    log.touch()
    proc = start(conf, log, _journal_env(log))
    try:
        async with asyncio.timeout(20):
            while "platform broker" not in log.read_text():
                await asyncio.sleep(0.05)
        conf.write_text(conf.read_text() + "[bogus]\nx = 1\n")
        proc.send_signal(signal.SIGHUP)  # a config that does not validate: an error
        async with asyncio.timeout(10):
            while "reload refused" not in log.read_text():
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = log.read_text().splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines[:5]
    by_text = {line[3:]: line[:3] for line in lines}
    assert any(p == "<4>" and "platform broker 127.0.0.1" in t for t, p in by_text.items())
    assert any(p == "<3>" and "reload refused" in t and "bogus" in t for t, p in by_text.items())
    assert any(p == "<6>" and "gateway stopped" in t for t, p in by_text.items())
    assert not any(line[3:7].isdigit() for line in lines)  # no own timestamp: journald adds it


def test_config_error_lines_are_errors_and_exit_2(tmp_path: Path) -> None:
    # A config error: each line at priority err, and exit code 2 (the unit's
    # RestartPreventExitStatus, so systemd does not restart it every 2 s for ever).
    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_id = "gw-a1"\nsite_id = "s-1"\n[local]\nport = 99999\n')
    err = tmp_path / "err.log"
    err.touch()
    out = subprocess.run(
        [sys.executable, "-m", "edge_gateway", "--config", str(bad)],
        cwd=REPO,
        stderr=err.open("wb"),
        env={**os.environ, **_journal_env(err)},
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    lines = err.read_text().splitlines()
    assert lines and all(line.startswith("<3>") for line in lines), lines


def test_plain_stderr_keeps_timestamps_and_level_names(tmp_path: Path) -> None:
    import logging

    from edge_gateway.journal import JournalFormatter, priority, stream_is_journal

    f = tmp_path / "x.log"
    with f.open("w") as stream:
        assert not stream_is_journal(stream, {})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "1:2"})
        st = f.stat()
        assert stream_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert [priority(x) for x in (50, 40, 30, 25, 20, 10, 5)] == [2, 3, 4, 6, 6, 7, 7]
    try:
        raise ValueError("boom")
    except ValueError:
        import sys as _sys

        record = logging.LogRecord(
            "edge_gateway", logging.ERROR, __file__, 1, "failed", None, _sys.exc_info()
        )
    text = JournalFormatter().format(record)
    assert len(text.splitlines()) > 2 and all(x.startswith("<3>") for x in text.splitlines())
