"""`cityedge demo`: the whole system on one machine.

A site broker, the edge gateway, a stand-in city platform broker and a few simulated nodes
running the real firmware under the real MicroPython; the forwarded stream is shown live until
Ctrl-C or --duration. Everything it starts, it stops: no stray processes on Ctrl-C or errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from boards import KINDS
from calibration.qc import Flag
from edge_gateway import contract
from host_tools.sim.brokers import EmbeddedBroker, MosquittoBroker, mosquitto_path

BANGKOK = ZoneInfo("Asia/Bangkok")
SITE_ID = "demo-school-01"
GATEWAY_ID = "gw-demo-school-01"
DEFAULT_NODES = "air:2,water:1,parking:1"
# Demo sites: a school roof in Rayong, a canal gauge and a car park nearby (illustrative).
LOCATIONS = {
    "air": {"lat": 12.6814, "lon": 101.2816, "elev_m": 12.0},
    "water": {"lat": 12.6790, "lon": 101.2750, "elev_m": 2.5},
    "parking": {"lat": 12.6832, "lon": 101.2841, "elev_m": 3.0},
}

# The canal gauge's surveyed sensor-face height, as a dated calibration record (the
# calibration package's TOML format). PM2.5 uses the fleet-default records shipped with
# `calibration` (the US-wide 2021 correction, a prior until a local PCD collocation exists).
DEMO_RECORDS = """\
[[record]]
id = "demo-canal-datum-2026"
device_id = "{water_device}"
quantity = "level"
unit = "m"
input_channel = "distance"
author = "CityEdge demo"
valid_from = 2020-01-01T00:00:00Z
notes = "sensor face surveyed at 3.200 m above mean sea level (demo value)"

[record.model]
form = "stage"

[record.model.coefficients]
z_sensor = 3.2
datum = "MSL"
"""


@dataclass
class _DeviceRow:
    kind: str
    count: int = 0
    replays: int = 0
    last: dict[str, Any] = field(default_factory=dict)


@dataclass
class _View:
    started: float = field(default_factory=time.monotonic)
    devices: dict[str, _DeviceRow] = field(default_factory=dict)
    alerts: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    health: dict[str, Any] = field(default_factory=dict)
    invalid: int = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            self.invalid += 1
            return
        if topic.endswith("/observation"):
            try:
                contract.validate("observation", obj)
            except contract.ContractError:
                self.invalid += 1
                return
            row = self.devices.setdefault(obj["device_id"], _DeviceRow(kind=obj["kind"]))
            row.count += 1
            row.replays += bool(obj.get("replay"))
            row.last = obj
        elif "/alert/" in topic:
            t = _local_time(obj.get("t"))
            self.alerts.appendleft(
                f"{t} {obj.get('device_id')}: {obj.get('state')} {obj.get('message')}"
            )
        elif "/gateway/" in topic and topic.endswith("/health"):
            self.health = obj

    def render(self, title: str) -> Group:
        table = Table(title=title, expand=True)
        for col in (
            "device",
            "kind",
            "sampled (Bangkok)",
            "raw",
            "calibrated",
            "calibration",
            "QC",
            "derived",
            "n",
            "replayed",
        ):
            table.add_column(col, overflow="fold")
        for device_id, row in sorted(self.devices.items()):
            table.add_row(
                device_id, row.kind, *_describe(row.last), str(row.count), str(row.replays)
            )
        h = self.health
        stats = (
            f"gateway: {h.get('state', '?')}  queue={h.get('queue_depth', '?')}  "
            f"duplicates={h.get('duplicates', '?')}  dead letters={h.get('dead_letters', '?')}  "
            f"dropped={h.get('dropped_total', '?')}  upstream offline={h.get('upstream_offline_s', '?')} s  "
            f"| invalid on the platform side: {self.invalid}  | running {time.monotonic() - self.started:.0f} s"
        )
        alerts = "\n".join(self.alerts) or "none yet"
        return Group(table, Text(stats, style="dim"), Panel(alerts, title="alerts", expand=True))


def _local_time(value: Any) -> str:
    if isinstance(value, (int, float)):
        dt = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        return "?"
    return dt.astimezone(BANGKOK).strftime("%d %b %H:%M:%S")


_FLAG: dict[int, str] = {
    Flag.GOOD: "[green]good[/]",
    Flag.UNKNOWN: "unknown",
    Flag.SUSPECT: "[yellow]suspect[/]",
    Flag.FAIL: "[red]FAIL[/]",
    Flag.MISSING: "missing",
}
_MAIN = {
    "air": ("pm25_cf1", "pm25"),
    "water": ("distance", "level"),
    "parking": ("field_delta", "occupied"),
}


def _describe(obs: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    kind = obs.get("kind", "")
    raw_key, cal_key = _MAIN.get(kind, ("", ""))
    raw = obs.get("raw", {}).get(raw_key)
    cal = obs.get("calibrated", {}).get(cal_key)
    raw_s = (
        f"{raw_key}={raw['v']:.3g} {raw['u']}"
        if raw and isinstance(raw.get("v"), (int, float))
        else "-"
    )
    cal_s, cal_id = "-", "-"
    if cal:
        v = cal.get("v")
        cal_s = (
            f"{cal_key}={v:.3g} {cal['u']}"
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            else f"{cal_key}={v}"
        )
        cal_id = cal.get("calibration_id", "-")
    flag = obs.get("quality", {}).get(cal_key)
    qc = _FLAG.get(flag, "-") if isinstance(flag, int) else "-"
    derived = obs.get("derived", {})
    d_s = "-"
    if kind == "air" and "thai_aqi" in derived:
        a = derived["thai_aqi"]
        colour = a.get("colour", "white")
        d_s = f"[{_rich_colour(colour)}]Thai AQI {a.get('value')} ({colour})[/]"
    elif derived:
        d_s = (
            ", ".join(f"{k}={v}" for k, v in derived.items() if not isinstance(v, dict))[:60] or "-"
        )
    return _local_time(obs.get("t")), raw_s, cal_s, cal_id, qc, d_s


def _rich_colour(name: str) -> str:
    return {
        "blue": "bright_blue",
        "green": "green",
        "yellow": "yellow",
        "orange": "dark_orange",
        "red": "red",
    }.get(str(name), "white")


def parse_nodes(spec: str) -> list[str]:
    """'air:2,water:1' -> ['air', 'air', 'water']; errors name the bad part."""
    kinds: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, count = part.partition(":")
        if kind not in KINDS:
            raise ValueError(
                f"--nodes: unknown node kind {kind!r} in {part!r}; use air, water or parking"
            )
        try:
            n = int(count or "1")
        except ValueError:
            raise ValueError(
                f"--nodes: {part!r} needs a whole number after the colon, e.g. air:2"
            ) from None
        if not 0 <= n <= 20:
            raise ValueError(f"--nodes: {part!r}: between 0 and 20 nodes of a kind")
        kinds += [kind] * n
    return kinds


async def _start_broker(
    name: str, embedded: bool, workdir: Path
) -> MosquittoBroker | EmbeddedBroker:
    if not embedded and mosquitto_path() is not None:
        return MosquittoBroker(name=name, workdir=workdir / name).start()
    return await EmbeddedBroker(name=name).start()


async def _stop_broker(broker: MosquittoBroker | EmbeddedBroker) -> None:
    if isinstance(broker, MosquittoBroker):
        broker.stop()
    else:
        await broker.stop()


def node_location(kind: str, index: int) -> dict[str, Any]:
    """Where the demo's ``index``-th simulated node stands (lat, lon, elev_m: the node's own
    config takes these keys): its kind's site, nodes of one kind about 50 m apart, so every
    observation carries its own node's position."""
    base = LOCATIONS[kind]
    return {**base, "lat": round(base["lat"] + 0.00045 * index, 6)}


def _gateway_config(
    workdir: Path, local: Any, upstream: Any, records: Path, nodes: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """The demo gateway's config; ``nodes`` = (device id, kind) each get an inventory entry with
    their own location (otherwise every observation would carry the school's)."""
    index: dict[str, int] = {}
    devices = []
    for device_id, kind in nodes:
        i = index[kind] = index.get(kind, -1) + 1
        devices.append(
            {
                "id": device_id,
                "kind": kind,
                "location": {**node_location(kind, i), "name": f"demo {kind} {i}"},
            }
        )
    return {
        "gateway_id": GATEWAY_ID,
        "site_id": SITE_ID,
        "data_dir": str(workdir / "gateway"),
        "location": {**LOCATIONS["air"], "name": "CityEdge demo school"},
        "local": {"host": local.host, "port": local.port},
        "upstream": {"host": upstream.host, "port": upstream.port, "tls": False},
        "calibration": {"records": str(records), "fleet_defaults": True},
        "inventory": {"allow_unknown": True, "device": devices},
        "alerts": {"water_warning_m": 1.6, "water_critical_m": 2.0},
        "health": {"interval_s": 5.0},
        "metrics": {"enabled": False},
    }


async def run_demo(args: argparse.Namespace, console: Console) -> int:
    from edge_gateway.app import Gateway
    from edge_gateway.config import GatewayConfig
    from host_tools.sim.simnode import SimNode, micropython_path

    kinds = parse_nodes(args.nodes)
    if kinds:
        micropython_path()  # no simulator (the 'sim' extra): say so before starting anything
    workdir = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cityedge-demo-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    brokers: list[MosquittoBroker | EmbeddedBroker] = []
    nodes: list[Any] = []
    gateway_task: asyncio.Task[None] | None = None
    gateway: Any = None
    try:
        local = await _start_broker("local", args.embedded_broker, workdir)
        brokers.append(local)
        upstream = await _start_broker("platform", args.embedded_broker, workdir)
        brokers.append(upstream)
        which = "Mosquitto" if isinstance(local, MosquittoBroker) else "embedded amqtt"
        console.print(
            f"[cyan]brokers ({which}):[/] site {local.address}, city platform {upstream.address}"
        )

        nodes += [
            SimNode(
                kind,
                broker=local.address,
                flash_dir=workdir / "nodes" / f"{kind}-{i}",
                speed=args.speed,
                seed=1000 + i,
                site_id=SITE_ID,
                config_overrides={"location": node_location(kind, kinds[:i].count(kind))},
            )
            for i, kind in enumerate(kinds)
        ]
        water = next((n.device_id for n in nodes if n.kind == "water"), "ce-000000000000")
        records = workdir / "calibration.toml"
        records.write_text(DEMO_RECORDS.format(water_device=water))
        config = GatewayConfig.from_dict(
            _gateway_config(
                workdir, local, upstream, records, [(n.device_id, n.kind) for n in nodes]
            )
        )
        gateway = Gateway(config)
        gateway_task = asyncio.create_task(gateway.run(), name="gateway")
        for node in nodes:
            node.start()
        console.print(
            f"[cyan]nodes:[/] {len(nodes)} simulated ({args.nodes}), time {args.speed:g}x; workdir {workdir}"
        )

        view = await _watch(upstream, gateway_task, args.duration, console)
        return _outcome(view, nodes, console)
    finally:
        await _stop_all(nodes, gateway, gateway_task, brokers)
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


async def _stop_all(
    nodes: list[Any],
    gateway: Any,
    gateway_task: asyncio.Task[None] | None,
    brokers: list[MosquittoBroker | EmbeddedBroker],
) -> None:
    """Everything the demo started, stopped, whatever went wrong."""
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop()
    if gateway is not None:
        gateway.request_stop()
    if gateway_task is not None:
        # A clean stop first (it closes its MQTT clients); cancelled mid-publish, a client
        # left the event loop a write callback on a closed socket (a traceback at the end).
        with contextlib.suppress(BaseException):
            await asyncio.wait({gateway_task}, timeout=10)
        gateway_task.cancel()
        with contextlib.suppress(BaseException):
            await gateway_task
    for broker in reversed(brokers):
        with contextlib.suppress(Exception):
            await _stop_broker(broker)


async def _watch(
    upstream: Any, gateway_task: asyncio.Task[None], duration: float | None, console: Console
) -> _View:
    """Show what the platform broker receives, live, for `duration` seconds (None: until
    Ctrl-C); a gateway that stops ends the demo."""
    view = _View()
    deadline = time.monotonic() + duration if duration else None
    async with aiomqtt.Client(
        upstream.host, upstream.port, identifier="cityedge-demo-viewer"
    ) as client:
        await client.subscribe(f"{contract.ROOT}/site/#", qos=1)
        title = f"CityEdge demo: what the city platform receives (site {SITE_ID})"
        with Live(
            view.render(title), console=console, refresh_per_second=2, transient=False
        ) as live:
            while deadline is None or time.monotonic() < deadline:
                if gateway_task.done():
                    exc = gateway_task.exception()
                    raise RuntimeError(f"the gateway stopped: {exc}")
                timeout = (
                    0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        async for message in client.messages:
                            view.on_message(str(message.topic), bytes(message.payload))
                live.update(view.render(title))
        if not console.is_terminal:
            console.line()  # Live leaves its last frame without a newline when piped
    return view


def _outcome(view: _View, nodes: list[Any], console: Console) -> int:
    total = sum(r.count for r in view.devices.values())
    if total == 0 and nodes:
        console.print("[red]no observation reached the platform.[/] The nodes' last log lines:")
        for node in nodes:
            console.print(f"[bold]{node.device_id} ({node.kind})[/]")
            for line in node.log[-12:]:
                console.print("  " + line, markup=False, highlight=False)
        return 1
    console.print(
        f"[green]done:[/] {total} observations from {len(view.devices)} devices reached the platform"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    console = Console()

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_demo(args, console)

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("stopped; everything the demo started has been shut down")
        return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run simulated nodes, a gateway and a platform broker, and watch the data"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=0,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--nodes", default=DEFAULT_NODES, help=f"node kinds and counts (default {DEFAULT_NODES})"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated time speed-up (default 60: a minute a second)",
    )
    p.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use the embedded amqtt broker even if Mosquitto is installed",
    )
    p.add_argument(
        "--workdir",
        help="keep brokers', nodes' and the gateway's files here (default: a temporary directory)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory at the end")
    p.set_defaults(func=_run)
