"""The Prometheus side of :mod:`edge_gateway.metrics`: ``GET /metrics`` answers the text
format 0.0.4 (over a minimal asyncio HTTP server, no dependency) rendered from the one table,
with ``cityedge_build_info`` and the standard ``process_*`` metrics from ``/proc/self``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import resource
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from edge_gateway import __version__
from edge_gateway.metrics import METRICS, PREFIX

log = logging.getLogger(__name__)

_IMPORTED = time.time()


# --- Prometheus text format ------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "0"
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, Any]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines.extend(f"{name}{labels} {_fmt(value)}" for labels, value in samples)
    return lines


def _process_metrics() -> list[str]:
    """The standard process_* metrics (what Prometheus client libraries export), Linux only."""
    lines: list[str] = []
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        utime, stime = int(fields[11]), int(fields[12])
        vsize, rss = int(fields[20]), int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        fds = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError):
        return lines
    try:  # boot time: /proc/stat, hidden by the unit's ProcSubset=pid
        with open("/proc/stat", "rb") as f:
            btime = next(int(x.split()[1]) for x in f if x.startswith(b"btime"))
        start = btime + int(fields[19]) / ticks
    except (OSError, ValueError, IndexError, StopIteration):
        start = _IMPORTED  # when this module was loaded: within a second of the start
    lines += _family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        [("", (utime + stime) / ticks)],
    )
    lines += _family(
        "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [("", rss)]
    )
    lines += _family(
        "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", [("", vsize)]
    )
    lines += _family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        [("", start)],
    )
    lines += _family("process_open_fds", "gauge", "Number of open file descriptors.", [("", fds)])
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    lines += _family(
        "process_max_fds", "gauge", "Maximum number of open file descriptors.", [("", soft)]
    )
    return lines


def render(stats: Mapping[str, Any], process: bool = True) -> str:
    """The exposition text of a stats dict (missing counters read 0)."""
    lines: list[str] = []
    for m in METRICS:
        samples: list[tuple[str, Any]]
        if m.reasons:
            by: Mapping[str, int] = {r: 0 for r in m.reasons} | dict(stats.get(m.key) or {})
            samples = [(f'{{reason="{_escape(r)}"}}', n) for r, n in sorted(by.items())]
        else:
            samples = [("", stats.get(m.key))]
        lines += _family(PREFIX + m.name, m.kind, m.help, samples)
    labels = (
        f'{{version="{_escape(__version__)}",python="{platform.python_version()}",'
        f'implementation="{platform.python_implementation()}"}}'
    )
    lines += _family(
        "cityedge_build_info",
        "gauge",
        "CityEdge gateway build: version and Python (always 1)",
        [(labels, 1)],
    )
    if process:
        lines += _process_metrics()
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serve ``render(stats())`` on host:port."""

    def __init__(
        self,
        host: str,
        port: int,
        stats: Callable[[], Mapping[str, Any]],
        extra: Callable[[], str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._stats = stats
        self.extra = extra  # more exposition lines (the alert dispatcher's)
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            if (
                len(parts) >= 2
                and parts[0] in ("GET", "HEAD")
                and parts[1].split("?")[0] == "/metrics"
            ):
                stats = self._stats()
                text = render(stats) if stats else ""
                body = (text + (self.extra() if self.extra is not None else "")).encode()
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + (body if parts[0] == "GET" else b""))
            else:
                body = b"try /metrics\n"
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
            await writer.drain()
        except (TimeoutError, OSError, UnicodeDecodeError) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
