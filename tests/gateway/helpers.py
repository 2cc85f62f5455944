"""Test doubles for the gateway tests: nodes that behave like the firmware, a platform consumer.

A :class:`FakeNode` publishes readings on its reading topic and keeps every reading until a
custody acknowledgement covers it, resending what is still unacknowledged after
``resend_after_s`` and on every reconnect — what the firmware's flash outbox does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker

# Mosquitto started as root drops to the `mosquitto` user unless told otherwise, and then cannot
# read certificates or write persistence files under pytest's 0700 temporary directories.
# (No effect when the tests run as an ordinary user.)
AS_INVOKER = ["user root"]


def run_async(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


async def wait_ready(gw: Any, timeout_s: float = 15.0, upstream: bool = True) -> None:
    """Until the gateway is subscribed on the site broker (and connected upstream)."""
    async with asyncio.timeout(timeout_s):
        while True:
            s = gw.stats()
            if s["local_connected"] and (s["upstream_connected"] or not upstream):
                return
            await asyncio.sleep(0.05)


def gateway_config(
    local_broker: MosquittoBroker,
    upstream_broker: MosquittoBroker,
    workdir: Path,
    **sections: Any,
) -> dict[str, Any]:
    """A config dict for loopback brokers; ``sections`` are merged over the defaults."""
    cfg: dict[str, Any] = {
        "gateway_id": "gw-test-01",
        "site_id": "test-site-01",
        "data_dir": str(workdir),
        "location": {"lat": 13.75, "lon": 100.5},
        "local": {
            "host": local_broker.host,
            "port": local_broker.port,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
        },
        "upstream": {
            "host": upstream_broker.host,
            "port": upstream_broker.port,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
            "timeout_s": 5.0,
        },
        "store": {"min_free_bytes": 0},
        "metrics": {"enabled": False},
        "health": {"interval_s": 1.0},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **value}
        else:
            cfg[name] = value
    return cfg


def reading(
    device_id: str,
    kind: str,
    boot: int,
    seq: int,
    t: float | None = None,
    value: float | None = None,
) -> dict[str, Any]:
    t = time.time() if t is None else t
    if kind == "air":
        v = 20.0 + (seq % 7) if value is None else value
        raw = {
            "pm25_cf1": {"v": v, "u": "ug/m3"},
            "pm25_atm": {"v": v * 0.9, "u": "ug/m3"},
            "pm10_atm": {"v": v * 1.3, "u": "ug/m3"},
            "temp": {"v": 31.0, "u": "Cel"},
            "rh": {"v": 60.0, "u": "%RH"},
        }
    elif kind == "water":
        raw = {
            "distance": {"v": 2.5 if value is None else value, "u": "m"},
            "air_temp": {"v": 30.0, "u": "Cel"},
        }
    else:
        raw = {
            "occupied": {"v": bool(seq % 2) if value is None else bool(value), "u": "/"},
            "field_delta": {"v": 12.0, "u": "uT"},
        }
    return {
        "v": 1,
        "device_id": device_id,
        "kind": kind,
        "fw": "0.1.0",
        "boot": boot,
        "seq": seq,
        "t": t,
        "synced": True,
        "raw": raw,
    }


@dataclass
class FakeNode:
    """A node on the site broker: publishes readings, resends until custody covers them."""

    broker: MosquittoBroker
    device_id: str
    kind: str = "air"
    boot: int = 1
    resend_after_s: float = 3.0
    next_seq: int = 0
    unacked: dict[int, tuple[bytes, float]] = field(default_factory=dict)
    custody_msgs: int = 0
    sent: int = 0
    _client: aiomqtt.Client | None = None
    _task: asyncio.Task[None] | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeNode:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._connected.wait()
        return self

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier=f"node-{self.device_id}",
                    clean_session=True,
                    timeout=5,
                ) as client:
                    await client.subscribe(contract.node_topic(self.device_id, "custody"), qos=1)
                    self._client = client
                    self._connected.set()
                    for seq in sorted(self.unacked):  # resend the outbox on reconnect
                        entry = self.unacked.get(seq)
                        if entry is not None:
                            await self._send(seq, entry[0])
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._custody(client))
                        tg.create_task(self._resender())
            except* aiomqtt.MqttError:
                pass
            self._client = None
            self._connected.clear()
            await asyncio.sleep(0.2)

    async def _custody(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            contract.validate("custody", body)
            self.custody_msgs += 1
            if body["boot"] != self.boot:
                continue
            for seq in range(body["from"], body["to"] + 1):
                self.unacked.pop(seq, None)

    async def _resender(self) -> None:
        while True:
            await asyncio.sleep(self.resend_after_s / 3)
            now = time.monotonic()
            for seq in sorted(self.unacked):
                entry = self.unacked.get(seq)  # custody may have arrived meanwhile
                if entry is not None and now - entry[1] >= self.resend_after_s:
                    await self._send(seq, entry[0])

    async def _send(self, seq: int, payload: bytes, new: bool = False) -> None:
        client = self._client
        if not new and seq not in self.unacked:
            return  # acknowledged meanwhile
        self.unacked[seq] = (payload, time.monotonic())
        if client is None:
            return
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(contract.node_topic(self.device_id, "reading"), payload, qos=1)
            self.sent += 1

    async def publish(self, n: int = 1, **kw: Any) -> list[int]:
        seqs = []
        for _ in range(n):
            seq = self.next_seq
            self.next_seq += 1
            body = reading(self.device_id, self.kind, self.boot, seq, **kw)
            await self._send(seq, json.dumps(body).encode(), new=True)
            seqs.append(seq)
        return seqs

    async def wait_acked(self, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while self.unacked:
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


@dataclass
class Platform:
    """A consumer on the platform broker with a persistent session (survives broker restarts
    when the broker keeps its sessions). It subscribes with QoS 2, so what the gateway delivers
    exactly once to the broker also reaches it exactly once: with QoS 1 the broker sends again,
    after its restart, what it had sent the consumer but not yet seen PUBACKed."""

    broker: MosquittoBroker
    topic: str = f"{contract.ROOT}/site/#"
    client_id: str = "platform-consumer"
    qos: int = 2
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    raw: list[tuple[str, bytes, bool]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Platform:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._connected.wait()
        return self

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier=self.client_id,
                    clean_session=False,
                    timeout=5,
                ) as client:
                    await client.subscribe(self.topic, qos=self.qos)
                    self._connected.set()
                    async for message in client.messages:
                        payload = bytes(message.payload)  # type: ignore[arg-type]
                        self.raw.append((str(message.topic), payload, bool(message.retain)))
                        with contextlib.suppress(ValueError):
                            self.messages.append((str(message.topic), json.loads(payload)))
            except aiomqtt.MqttError:
                pass
            self._connected.clear()
            await asyncio.sleep(0.1)

    def observations(self) -> list[dict[str, Any]]:
        return [b for t, b in self.messages if t.endswith("/observation")]

    def of(self, leaf: Callable[[str], bool]) -> list[dict[str, Any]]:
        return [b for t, b in self.messages if leaf(t)]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def stop_process(proc: Any, timeout_s: float = 20.0) -> None:
    """SIGTERM a gateway process (a clean stop), SIGKILL it if it does not stop in time."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
