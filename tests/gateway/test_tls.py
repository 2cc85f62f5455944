"""Forwarding to a platform broker that requires TLS with a client certificate."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from host_tools.sim.brokers import MosquittoBroker, free_port
from tests.gateway.helpers import AS_INVOKER, FakeNode, gateway_config, run_async, wait_ready

pytestmark = pytest.mark.broker


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path, name: str = "ca") -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d.mkdir(parents=True, exist_ok=True)
    ca = f"-x509 -newkey rsa:2048 -nodes -days 2 -keyout {name}.key -out {name}.crt".split()
    openssl("req", *ca, "-subj", f"/CN=CityEdge test {name}", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        csr = f"-newkey rsa:2048 -nodes -keyout {who}.key -out {who}.csr".split()
        openssl("req", *csr, "-subj", f"/CN={who}", cwd=d)
        signed = (
            f"-req -in {who}.csr -CA {name}.crt -CAkey {name}.key -CAcreateserial -days 2"
            f" -out {who}.crt -extfile san.ext"
        ).split()
        openssl("x509", *signed, cwd=d)
    return {
        k: d / f"{v}"
        for k, v in (
            ("ca", f"{name}.crt"),
            ("server_cert", "server.crt"),
            ("server_key", "server.key"),
            ("client_cert", "client.crt"),
            ("client_key", "client.key"),
        )
    }


async def _check_untrusted_ca_sends_nothing(
    local: MosquittoBroker, upstream: MosquittoBroker, tmp_path: Path, tls: dict[str, Any]
) -> None:
    # A gateway that does not trust the broker's CA must not send anything.
    wrong = GatewayConfig.from_dict(
        gateway_config(local, upstream, tmp_path / "wrong", upstream=tls)
    )
    gw = Gateway(wrong)
    task = asyncio.create_task(gw.run())
    await wait_ready(gw, upstream=False)
    await asyncio.sleep(1.0)
    assert gw.stats()["upstream_connected"] is False
    gw.request_stop()
    await task


@run_async
async def test_upstream_over_tls_with_client_certificate(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", "other-ca")
    tls_port = free_port()
    local = broker_factory("local")
    upstream = broker_factory(
        "upstream",
        tls_listener={
            "port": str(tls_port),
            "cafile": str(pki["ca"]),
            "certfile": str(pki["server_cert"]),
            "keyfile": str(pki["server_key"]),
            "require_certificate": "true",
        },
        extra_config=AS_INVOKER,
    )
    tls = {
        "port": tls_port,
        "tls": True,
        "ca_file": str(pki["ca"]),
        "cert_file": str(pki["client_cert"]),
        "key_file": str(pki["client_key"]),
    }

    await _check_untrusted_ca_sends_nothing(
        local, upstream, tmp_path, {**tls, "ca_file": str(other["ca"])}
    )

    config = GatewayConfig.from_dict(gateway_config(local, upstream, tmp_path / "gw", upstream=tls))
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    received: list[bytes] = []
    try:
        await wait_ready(gw)
        # The platform consumer listens on the broker's plain loopback listener.
        async with aiomqtt.Client(upstream.host, upstream.port, identifier="tls-consumer") as c:
            await c.subscribe("cityedge/v1/site/+/+/+/observation", qos=1)
            node = await FakeNode(local, "ce-0000000c0c01", "air").start()
            await node.publish(5)
            async with asyncio.timeout(20):
                async for m in c.messages:
                    received.append(bytes(m.payload))  # type: ignore[arg-type]
                    if len(received) == 5:
                        break
            await node.stop()
        async with asyncio.timeout(10):  # the PUBACKs may come just after the consumer got them
            while gw.stats()["readings_out"] < 5:
                await asyncio.sleep(0.05)
        assert gw.stats()["readings_out"] == 5
    finally:
        gw.request_stop()
        await task
