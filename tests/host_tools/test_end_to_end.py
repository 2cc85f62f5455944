"""Three virtual boards provisioned in parallel from a site CSV, then running the firmware: their
readings reach the real gateway through a real Mosquitto holding the generated passwd and ACL,
each authenticated with its own credential; forging another node's topic is refused."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_gateway import contract
from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from host_tools.cli import main as cityedge
from host_tools.field.inventory import Inventory
from host_tools.sim.brokers import MosquittoBroker
from host_tools.sim.virtual_board import VirtualBoard
from tests.gateway.helpers import Platform, gateway_config, wait_ready
from tests.host_tools.mqtt_helpers import ROOT_SAFE, Client, connect_refused
from tests.host_tools.site_rig import (
    GATEWAY_USER,
    SITE,
    inventory_with_gateway,
    place,
    provision_for_site,
    site_broker,
)

pytestmark = [pytest.mark.broker, pytest.mark.micropython, pytest.mark.slow]
SEEN: set[str] = set()  # device ids seen at the platform, for the failure message
NODES = [("246f28000011", "air"), ("246f28000012", "water"), ("246f28000013", "parking")]


def _provision_the_school(
    tmp_path: Path, boards: list[VirtualBoard], local: MosquittoBroker, inv_path: Path
) -> dict[str, dict]:
    """`cityedge node provision --batch` over the site CSV; returns each node's config.json."""
    site_csv = tmp_path / "school.csv"
    site_csv.write_text(
        "port,kind,site,lat,lon,name\n"
        + "".join(
            f"{vb.device},{kind},{SITE},12.68,101.27,node {i}\n"
            for i, (vb, (_, kind)) in enumerate(zip(boards, NODES, strict=True))
        )
    )
    argv = provision_for_site(
        tmp_path,
        local,
        inv_path,
        "--batch",
        str(site_csv),
        "--deploy",
        sample_s=1,
        report_s=2,
        heartbeat_s=2,
    )
    assert cityedge(argv) == 0
    configs = {
        json.loads((vb.flash_dir / "config.json").read_text())["device_id"]: json.loads(
            (vb.flash_dir / "config.json").read_text()
        )
        for vb in boards
    }
    return configs


def _check_inventory(inv_path: Path, ids: list[str], *actions: str) -> None:
    with Inventory(inv_path) as inv:
        devices = {d.device_id: d for d in inv.devices(site_id=SITE)}
        assert sorted(devices) == ids
        for d in devices.values():
            assert d.credential_version == 1 and d.firmware_version
            assert [e.action for e in inv.events(d.device_id)] == list(actions)


def _check_verify(boards: list[VirtualBoard], inv_path: Path, ids: list[str]) -> None:
    # The self-test on each running node (verify stops main.py with Ctrl-C, as on a
    # board): sensors, WiFi, and MQTT with the node's own credential.
    ports = [a for vb in boards for a in ("--port", vb.device)]
    assert cityedge(["node", "verify", *ports, "--inventory", str(inv_path)]) == 0
    with Inventory(inv_path) as inv:
        for device_id in ids:
            last = inv.events(device_id)[0]
            assert (last.action, last.ok) == ("verify", True)
            assert last.detail["mqtt"]["ok"] and last.detail["device_id"] == device_id


def _check_no_forging(
    local: MosquittoBroker, gw_password: str, ids: list[str], configs: dict[str, dict]
) -> None:
    # A node's credential cannot speak for another node, nor log in as one.
    a, b = ids[0], ids[1]
    spy = Client(local.port, GATEWAY_USER, gw_password)
    spy.subscribe(f"cityedge/v1/node/{b}/reading")
    spy.subscribe(f"cityedge/v1/node/{a}/reading")
    forger = Client(local.port, a, configs[a]["mqtt"]["password"])
    assert forger.ok
    forger.publish(f"cityedge/v1/node/{b}/reading", b'{"forged": 1}', qos=1)  # PUBACKed
    forger.publish(f"cityedge/v1/node/{b}/reading", b'{"forged": 0}', qos=0)
    forger.publish(f"cityedge/v1/node/{a}/reading", b'{"own": 1}', qos=1)
    assert spy.received.get(timeout=10) == (f"cityedge/v1/node/{a}/reading", b'{"own": 1}')
    with pytest.raises(queue.Empty):
        spy.received.get(timeout=1.0)
    assert connect_refused(local.port, b, configs[a]["mqtt"]["password"])
    forger.close()
    spy.close()


def test_three_boards_provisioned_in_parallel_reach_the_gateway(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    broker_factory: Callable[..., MosquittoBroker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inv_path, gw_password = inventory_with_gateway(tmp_path)
    boards = [vboard_factory(mac, mac, kind) for mac, kind in NODES]
    local = site_broker(tmp_path)
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    configs = _provision_the_school(tmp_path, boards, local, inv_path)
    ids = [f"ce-{mac}" for mac, _ in NODES]
    assert sorted(configs) == ids
    _check_inventory(inv_path, ids, "provision", "deploy")

    local.start()
    try:
        upstream = broker_factory("platform", extra_config=ROOT_SAFE)
        # No EN press, no power cycle: provisioning left each board running its firmware.
        assert all(vb.running_main for vb in boards)
        try:
            asyncio.run(_gateway_receives(tmp_path, local, upstream, gw_password, ids))
        except TimeoutError:
            seen = sorted(SEEN)
            tails = "\n".join(bytes(vb.transcript[-600:]).decode(errors="replace") for vb in boards)
            log = local.log_path.read_text()[-1500:]
            pytest.fail(
                f"not every node reached the platform ({seen}). Boards:\n{tails}\nbroker:\n{log}"
            )
        _check_verify(boards, inv_path, ids)
        for vb in boards:
            vb.close()  # stop the nodes: only the forger speaks from here on
        _check_no_forging(local, gw_password, ids, configs)
    finally:
        local.stop(kill=True)


async def _gateway_receives(
    tmp_path: Path,
    local: MosquittoBroker,
    upstream: MosquittoBroker,
    gw_password: str,
    ids: list[str],
) -> None:
    config = GatewayConfig.from_dict(
        gateway_config(
            local,
            upstream,
            tmp_path / "gw",
            site_id=SITE,
            local={"username": "gw-rayong-01", "password": gw_password},
        )
    )
    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    platform = await Platform(upstream).start()
    try:
        await wait_ready(gw)

        def all_seen() -> bool:
            SEEN.update(o["device_id"] for o in platform.observations())
            return SEEN >= set(ids)

        await platform.wait_for(all_seen, timeout_s=45)
        for o in platform.observations():
            contract.validate("observation", o)
            assert o["site_id"] == SITE
    finally:
        await platform.stop()
        task.cancel()
        with __import__("contextlib").suppress(BaseException):
            await task


def _next_status(spy: Client, device_id: str, after_boot: int, timeout_s: float = 30.0) -> dict:
    """The first status the node publishes from a boot later than `after_boot`."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            topic, payload = spy.received.get(timeout=left)
        except queue.Empty:
            break
        if topic == f"cityedge/v1/node/{device_id}/status":
            status: dict = json.loads(payload)
            if status["boot"] > after_boot:
                return status
    raise AssertionError(f"{device_id} published no status from a boot after {after_boot}")


def test_node_runs_its_firmware_after_provision_verify_and_deploy(
    tmp_path: Path,
    vboard_factory: Callable[..., VirtualBoard],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A technician who unplugs the laptop after any command leaves a running node: after
    `provision`, `verify` and `deploy` the board leaves the raw REPL and soft-resets, so main.py
    runs and its status and readings reach the broker without a power cycle or EN press."""
    inv_path, gw_password = inventory_with_gateway(tmp_path)
    mac = "246f28000021"
    device_id = f"ce-{mac}"
    vb = vboard_factory(mac, mac, "air")
    broker = site_broker(tmp_path)
    monkeypatch.setenv("CITYEDGE_WIFI_PASSWORD", "school-wifi")
    common = ["--port", vb.device, "--inventory", str(inv_path)]
    argv = provision_for_site(
        tmp_path,
        broker,
        inv_path,
        "--deploy",
        *place("air"),
        "--port",
        vb.device,
        sample_s=1,
        report_s=2,
    )
    assert cityedge(argv) == 0
    assert vb.running_main  # main.py started by the tool itself
    broker.start()
    try:
        spy = Client(broker.port, GATEWAY_USER, gw_password)
        spy.subscribe(f"cityedge/v1/node/{device_id}/#")
        first = _next_status(spy, device_id, after_boot=-1)
        assert first["config_error"] is None and first["reset_cause"] == "soft_reset"
        deadline = time.monotonic() + 30
        while spy.received.get(timeout=max(0.1, deadline - time.monotonic()))[0] != (
            f"cityedge/v1/node/{device_id}/reading"
        ):
            pass  # a reading, authenticated with the node's own credential, reached the broker

        assert cityedge(["node", "verify", *common]) == 0
        assert vb.running_main
        after_verify = _next_status(spy, device_id, after_boot=first["boot"])

        assert cityedge(["node", "deploy", "--board", "sim", *common]) == 0
        assert vb.running_main
        after_deploy = _next_status(spy, device_id, after_boot=after_verify["boot"])
        assert after_deploy["config_error"] is None
        spy.close()
    finally:
        broker.stop(kill=True)
