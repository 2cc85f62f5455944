"""The site broker config that `broker-files` writes is one Mosquitto accepts, and it refuses a
message above the gateway's payload bound."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiomqtt

from host_tools.field.broker_auth import SITE_MESSAGE_SIZE_LIMIT, hash_password, site_broker_config
from host_tools.sim.brokers import MosquittoBroker, free_port


def test_generated_site_config_runs_and_bounds_message_size(tmp_path: Path) -> None:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    passwd.write_text(f"gw:{hash_password('secret')}\n")
    acl.write_text("user gw\ntopic readwrite cityedge/v1/#\n")
    port = free_port()
    text = site_broker_config(str(passwd), str(acl)).replace(
        "listener 1883", f"listener {port} 127.0.0.1"
    )
    assert (
        f"message_size_limit {SITE_MESSAGE_SIZE_LIMIT}" in text
        and "autosave_on_changes true" in text
    )
    # MosquittoBroker writes its own listener on that port; the rest is the generated config.
    extra = [line for line in text.splitlines() if line and not line.startswith(("#", "listener"))]
    if os.geteuid() == 0:
        extra.append("user root")
    broker = MosquittoBroker(
        "site", port=port, workdir=tmp_path / "b", persistence=True, extra_config=extra
    ).start()
    try:

        async def check() -> list[int]:
            got: list[int] = []
            async with aiomqtt.Client(
                "127.0.0.1", port, username="gw", password="secret", identifier="sub"
            ) as sub:
                await sub.subscribe("cityedge/v1/node/+/reading", qos=1)
                async with aiomqtt.Client(
                    "127.0.0.1", port, username="gw", password="secret", identifier="pub"
                ) as pub:
                    for size in (SITE_MESSAGE_SIZE_LIMIT + 1, 100):
                        await pub.publish(
                            "cityedge/v1/node/ce-000000000001/reading", b"x" * size, qos=0
                        )
                async with asyncio.timeout(5):
                    async for m in sub.messages:
                        got.append(len(bytes(m.payload)))  # type: ignore[arg-type]
                        if len(bytes(m.payload)) == 100:  # type: ignore[arg-type]
                            break
            return got

        assert asyncio.run(check()) == [100]  # the oversized one never reached a client
    finally:
        broker.stop()
