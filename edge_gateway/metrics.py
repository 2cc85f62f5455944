"""Prometheus text exposition (format 0.0.4) over a minimal asyncio HTTP server.

``GET /metrics`` answers the current figures; anything else gets 404. No dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# name, type, help, key in the stats dict (or a callable picking the value/labels)
_SIMPLE = (
    ("cityedge_gateway_messages_received_total", "counter", "MQTT messages received from nodes", "messages_in"),
    ("cityedge_gateway_readings_received_total", "counter", "valid node readings received (duplicates included)", "readings_in"),
    ("cityedge_gateway_readings_stored_total", "counter", "readings committed to the store (new ones)", "readings_stored"),
    ("cityedge_gateway_readings_forwarded_total", "counter", "observations acknowledged by the platform broker", "readings_out"),
    ("cityedge_gateway_alerts_forwarded_total", "counter", "alerts acknowledged by the platform broker", "alerts_out"),
    ("cityedge_gateway_duplicates_total", "counter", "readings de-duplicated on (device_id, boot, seq)", "duplicates"),
    ("cityedge_gateway_custody_acks_total", "counter", "custody acknowledgements sent to nodes", "custody_acks"),
    ("cityedge_gateway_queue_depth", "gauge", "rows waiting for the platform broker", "queue_depth"),
    ("cityedge_gateway_queue_bytes", "gauge", "payload bytes waiting in the store", "queue_bytes"),
    ("cityedge_gateway_store_file_bytes", "gauge", "size of the store files on disk", "store_file_bytes"),
    ("cityedge_gateway_queue_oldest_age_seconds", "gauge", "age of the oldest waiting row", "oldest_age_s"),
    ("cityedge_gateway_upstream_connected", "gauge", "1 when connected to the platform broker", "upstream_connected"),
    ("cityedge_gateway_upstream_offline_seconds_total", "counter", "seconds without a platform connection", "upstream_offline_s"),
    ("cityedge_gateway_local_connected", "gauge", "1 when connected to the site broker", "local_connected"),
    ("cityedge_gateway_commit_seconds_last", "gauge", "duration of the last group commit", "last_commit_s"),
    ("cityedge_gateway_devices", "gauge", "devices seen", "devices"),
    ("cityedge_gateway_disk_full", "gauge", "1 while the data file system is full (readings wait at the site broker)", "disk_full"),
    ("cityedge_gateway_quarantined_total", "counter", "readings quarantined: dead-lettered after the process died twice with each alone in hand", "quarantined"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def render(stats: Mapping[str, Any]) -> str:
    lines: list[str] = []
    for name, kind, help_text, key in _SIMPLE:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {_fmt(stats.get(key))}")
    for name, key, label, help_text in (
        ("cityedge_gateway_dropped_total", "dropped", "reason", "stored rows dropped by the store bounds, by reason"),
        ("cityedge_gateway_dead_letters_total", "dead_letters_by_reason", "reason", "messages refused, by reason"),
    ):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} counter")
        values: Mapping[str, int] = stats.get(key) or {}
        for reason, n in sorted(values.items()):
            lines.append(f'{name}{{{label}="{reason}"}} {int(n)}')
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serve ``render(stats())`` on host:port."""

    def __init__(self, host: str, port: int, stats: Callable[[], Mapping[str, Any]]) -> None:
        self.host = host
        self.port = port
        self._stats = stats
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
            if len(parts) >= 2 and parts[0] in ("GET", "HEAD") and parts[1].split("?")[0] == "/metrics":
                body = render(self._stats()).encode()
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
