"""The set-up the process-level gateway tests share (SIGKILL, power cut, quarantine, full disk):
the gateway run as the service runs it from a TOML file, a few fake nodes, a steady load, and the
check that every reading a node produced reached the platform once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import FakeNode, Platform, stop_process
from tests.support.tools import REPO


def write_toml(path: Path, cfg: dict) -> None:
    """A tiny TOML writer for the flat tables the tests use."""
    lines: list[str] = []
    tables = {k: v for k, v in cfg.items() if isinstance(v, dict)}
    for k, v in cfg.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {json.dumps(v)}")
    for name, table in tables.items():
        lines.append(f"[{name}]")
        for k, v in table.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def start_nodes(
    broker: MosquittoBroker, ids: Sequence[str], kind: str, resend_after_s: float
) -> list[FakeNode]:
    return [await FakeNode(broker, dev, kind, resend_after_s=resend_after_s).start() for dev in ids]


@dataclass
class GatewayProcess:
    """A gateway process from ``<workdir>/gateway.toml``, its stderr in ``<workdir>/gateway.log``;
    ``restart`` starts it again after a kill (with ``launch``: a faulty variant)."""

    workdir: Path
    cfg: dict[str, Any]
    launch: Callable[[Path, Path], subprocess.Popen[bytes]] = start_gateway
    proc: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        write_toml(self.config, self.cfg)

    @property
    def config(self) -> Path:
        return self.workdir / "gateway.toml"

    @property
    def log(self) -> Path:
        return self.workdir / "gateway.log"

    def start(self) -> GatewayProcess:
        self.proc = self.launch(self.config, self.log)
        return self

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> None:
        stop_process(self.proc)


class Load:
    """``step`` called in a loop in a task until ``stop``."""

    def __init__(self, step: Callable[[], Awaitable[Any]]) -> None:
        self._step = step
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._step()

    async def stop(self) -> None:
        """Stop after the current step, and wait for it."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    def cancel(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()


def one_each(nodes: Sequence[FakeNode], pause_s: float) -> Callable[[], Awaitable[None]]:
    """A load step: one reading from each node, then a pause."""

    async def step() -> None:
        for node in nodes:
            await node.publish(1)
        await asyncio.sleep(pause_s)

    return step


async def wait_all_forwarded(
    nodes: Sequence[FakeNode], platform: Platform, ack_timeout_s: float, timeout_s: float
) -> dict[str, int]:
    """Until each node has custody for all it sent and the platform has as many distinct
    readings; returns how many each node produced."""
    for node in nodes:
        await node.wait_acked(ack_timeout_s)
    produced = {n.device_id: n.next_seq for n in nodes}
    total = sum(produced.values())
    await platform.wait_for(
        lambda: len({(o["device_id"], o["seq"]) for o in platform.observations()}) >= total,
        timeout_s=timeout_s,
    )
    return produced


def assert_none_lost(keys: Counter[tuple[Any, ...]], produced: dict[str, int]) -> None:
    """``keys`` count (device, ..., seq) tuples: every device has each seq it produced."""
    for dev, n in produced.items():
        got = {k[-1] for k in keys if k[0] == dev}
        assert got == set(range(n)), f"{dev}: lost {sorted(set(range(n)) - got)[:10]}"


async def stop_all(nodes: Sequence[FakeNode], platform: Platform) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            await node.stop()
    await platform.stop()
