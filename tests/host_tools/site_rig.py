"""The set-up the field-tool end-to-end tests share: an inventory with the gateway's credential,
the site broker that reads the passwd and ACL `cityedge node provision --broker-dir` writes, and
the provision command line for simulated boards."""

from __future__ import annotations

from pathlib import Path

from host_tools.field.inventory import Inventory
from host_tools.field.provision import create_gateway_credential
from host_tools.sim.brokers import MosquittoBroker
from tests.host_tools.mqtt_helpers import ROOT_SAFE

SITE = "rayong-school-01"
GATEWAY_USER = "gw-rayong-01"


def inventory_with_gateway(tmp_path: Path) -> tuple[Path, str]:
    """A new inventory under ``tmp_path`` holding the gateway's credential: (path, password)."""
    inv_path = tmp_path / "inventory.sqlite"
    with Inventory(inv_path) as inv:
        gw_password = create_gateway_credential(inv, GATEWAY_USER, SITE)
    return inv_path, gw_password


def site_broker(tmp_path: Path) -> MosquittoBroker:
    """The site broker (not started) on the passwd and ACL in ``tmp_path / "broker"``."""
    return MosquittoBroker(
        "site",
        workdir=tmp_path / "site-broker",
        password_file=tmp_path / "broker" / "passwd",
        acl_file=tmp_path / "broker" / "acl",
        extra_config=ROOT_SAFE,
    )


def provision_argv(
    *args: str, broker: str, inventory: Path, broker_dir: Path | None = None, **intervals: float
) -> list[str]:
    """``cityedge node provision *args`` for the simulated board on the school's WiFi."""
    argv = ["node", "provision", *args, "--board", "sim", "--ssid", "school-iot"]
    argv += ["--broker", broker]
    if broker_dir is not None:
        argv += ["--broker-dir", str(broker_dir)]
    argv += ["--inventory", str(inventory)]
    for name, value in intervals.items():
        argv += ["--interval", f"{name}={value:g}"]
    return argv


def place(kind: str, lat: str = "12.68", lon: str = "101.27") -> list[str]:
    """The single-board flags: kind, site and position."""
    return ["--kind", kind, "--site", SITE, "--lat", lat, "--lon", lon]


def provision_for_site(
    tmp_path: Path, broker: MosquittoBroker, inventory: Path, *args: str, **intervals: float
) -> list[str]:
    """``provision_argv`` for boards on ``broker`` (the site broker), the broker files written
    where :func:`site_broker` reads them."""
    return provision_argv(
        *args,
        broker=f"127.0.0.1:{broker.port}",
        broker_dir=tmp_path / "broker",
        inventory=inventory,
        **intervals,
    )
