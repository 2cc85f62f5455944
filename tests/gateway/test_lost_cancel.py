"""The gateway's loops end when cancelled even if a cancellation is lost inside aiomqtt.

Python 3.11's asyncio.wait_for (aiomqtt's publish awaits its PUBACK through it) returns the
result instead of raising CancelledError when the PUBACK completes in the same loop pass as the
cancel. The status publisher then carried on for ever, and so did the gateway's stop: the demo
hung at its end under CPU load. The stand-in client below publishes through the real
asyncio.wait_for and delivers its PUBACK in the same pass as the cancel, every time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edge_gateway.app import Gateway, _limits
from edge_gateway.config import GatewayConfig
from edge_gateway.forwarder import Forwarder
from edge_gateway.store import open_store


class _PubackWithTheCancel:
    """publish() as aiomqtt's: wait_for(PUBACK, timeout). The test cancels the publishing task
    from the callback that completes the PUBACK."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.published = 0
        self.task: asyncio.Task[None] | None = None

    async def publish(self, topic: str, payload: Any, qos: int = 0, retain: bool = False) -> None:
        loop = asyncio.get_running_loop()
        puback: asyncio.Future[None] = loop.create_future()
        self.published += 1

        def arrive() -> None:
            puback.set_result(None)
            if self.published == 2 and self.task is not None:
                # The gateway stops (as run() does) while this PUBACK is on its way in.
                self.gateway.request_stop()
                self.task.cancel()

        loop.call_soon(arrive)
        await asyncio.wait_for(puback, timeout=10)


def _gateway(tmp_path: Path) -> Gateway:
    config = GatewayConfig.from_dict(
        {
            "gateway_id": "gw-test-01",
            "site_id": "test-site-01",
            "data_dir": str(tmp_path),
            "location": {"lat": 13.75, "lon": 100.5},
            "metrics": {"enabled": False},
            "health": {"interval_s": 0.1},
        }
    )
    return Gateway(config)


def test_status_publisher_ends_when_a_publish_loses_the_cancel(tmp_path: Path) -> None:
    gateway = _gateway(tmp_path)
    client = _PubackWithTheCancel(gateway)

    async def main() -> tuple[bool, int]:
        gateway._stop = asyncio.Event()  # what run() sets up
        cfg = gateway.config
        store = open_store(cfg.store_path, _limits(cfg), cfg.store.synchronous)
        forwarder = Forwarder(gateway, store)
        task = asyncio.create_task(forwarder.status_publisher(client, "health"))  # type: ignore[arg-type]
        client.task = task
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:  # the lost cancel: it keeps publishing
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        await asyncio.to_thread(store.shutdown)
        return bool(done) and task.cancelled(), client.published

    ended, published = asyncio.run(main())
    assert ended, f"the status publisher kept running after its cancel ({published} publishes)"
    assert published == 2
