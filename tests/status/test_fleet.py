"""`cityedge fleet serve` on one platform broker with three gateway processes (three sites,
each with its own site broker). One gateway is killed: its site shows down within the
broker's keepalive, its devices unknown (not online); the other sites stay online."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge_gateway import contract
from edge_gateway.ingest import iso_utc
from host_tools.field.broker_auth import hash_password, password_file_text
from host_tools.sim.brokers import MosquittoBroker, free_port
from tests.gateway.helpers import AS_INVOKER, reading

pytestmark = pytest.mark.broker
KEEPALIVE_S = 5


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


SITES = [f"fleet-site-0{i}" for i in range(1, 4)]
DEVICES = {s: f"ce-00000000f0{i:02d}" for i, s in enumerate(SITES, 1)}
TALKER = "ce-00000000f0aa"  # sends status heartbeats only, never a reading


def _platform_accounts(auth: Path) -> None:
    """The platform broker with accounts: each gateway writes its own site; the city view has
    its own account that can only read the retained status and health."""
    auth.mkdir()
    passwords = {f"gw-fleet-0{i}": f"gw-pw-{i}" for i in range(1, 4)} | {"fleet-view": "view-pw"}
    (auth / "passwd").write_text(
        password_file_text({u: hash_password(p) for u, p in passwords.items()})
    )
    acl = "".join(
        f"user gw-fleet-0{i}\ntopic readwrite cityedge/v1/site/fleet-site-0{i}/#\n\n"
        for i in range(1, 4)
    )
    acl += (
        "user fleet-view\ntopic read cityedge/v1/site/+/device/+/status\n"
        "topic read cityedge/v1/site/+/gateway/+/health\n"
    )
    (auth / "acl").write_text(acl)
    (auth / "view.pw").write_text("view-pw\n")


def _start_site(
    i: int, site: str, local: MosquittoBroker, platform: MosquittoBroker, tmp_path: Path
) -> tuple[subprocess.Popen[bytes], mqtt.Client]:
    """Site ``i``'s gateway process on its own site broker, and a node client on that broker."""
    cfg = tmp_path / f"gw{i}.toml"
    cfg.write_text(
        f'gateway_id = "gw-fleet-0{i}"\nsite_id = "{site}"\n'
        f'data_dir = "{tmp_path / f"gw{i}"}"\n'
        f'[local]\nhost = "{local.host}"\nport = {local.port}\n'
        f'[upstream]\nhost = "{platform.host}"\nport = {platform.port}\n'
        f'username = "gw-fleet-0{i}"\npassword = "gw-pw-{i}"\n'
        f"keepalive_s = {KEEPALIVE_S}\nreconnect_min_s = 0.2\n"
        "[metrics]\nenabled = false\n[status]\nenabled = false\n"
        "[health]\ninterval_s = 1\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    node = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"node-{i}")
    node.connect(local.host, local.port)
    node.loop_start()
    return proc, node


def _start_fleet_view(platform: MosquittoBroker, port: int, auth: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "fleet",
            "serve",
            "--broker",
            platform.address,
            "--port",
            str(port),
            "--lang",
            "en",
            "--username",
            "fleet-view",
            "--password-file",
            str(auth / "view.pw"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _send(nodes: list[mqtt.Client], seq: int) -> None:
    """One reading per site (a node reporting), and the talker's status."""
    status = contract.example("node_status") | {"device_id": TALKER, "t": time.time()}
    nodes[0].publish(contract.node_topic(TALKER, "status"), json.dumps(status), qos=1)
    for node, site in zip(nodes, SITES, strict=True):
        body = reading(DEVICES[site], "air", 1, seq)
        node.publish(contract.node_topic(DEVICES[site], "reading"), json.dumps(body), qos=1)


def _sites(base: str) -> dict[str, Any]:
    return {s["site_id"]: s for s in _get(f"{base}/api/sites")}


def _check_all_up(base: str, nodes: list[mqtt.Client]) -> None:
    seq = [0]

    def all_up() -> bool:
        _send(nodes, seq[0])
        seq[0] += 1
        got = _sites(base)
        return all(
            s in got and got[s]["gateway"]["state"] == "online" and got[s]["counts"]["online"] == 1
            for s in SITES
        )

    _wait(all_up, 60, "three sites online, one device each")
    # Liveness is data: status heartbeats alone never make a device online.
    quiet = _wait(lambda: _get(f"{base}/api/devices/{TALKER}"), 10, "the talker's status")
    assert quiet["state"] == "never", quiet
    devs = _get(f"{base}/api/devices?site={SITES[1]}")
    assert [d["device_id"] for d in devs] == [DEVICES[SITES[1]]]
    assert devs[0]["state"] == "online"


def _forge_online_health(platform: MosquittoBroker) -> None:
    """A forged "online" health for site 2, under the view's (read-only) account."""
    forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger")
    forger.username_pw_set("fleet-view", "view-pw")
    forger.connect(platform.host, platform.port)
    forger.loop_start()
    forged = {
        "v": 1,
        "site_id": SITES[1],
        "gateway_id": "gw-fleet-02",
        "state": "online",
        "t": iso_utc(time.time()),
    }
    forger.publish(
        contract.gateway_health_topic(SITES[1], "gw-fleet-02"),
        json.dumps(forged),
        qos=1,
        retain=True,
    ).wait_for_publish(5)
    forger.loop_stop()
    forger.disconnect()


def _check_site2_down_on_the_pages(base: str) -> None:
    dev = _get(f"{base}/api/devices/{DEVICES[SITES[1]]}")
    assert dev["state"] == "unknown" and "gw-fleet-02 is down" in dev["reason"]
    assert [d["device_id"] for d in _get(f"{base}/api/devices?state=unknown")] == [
        DEVICES[SITES[1]]
    ]
    with urllib.request.urlopen(f"{base}/", timeout=5) as r:
        page = r.read().decode()
    assert f'id="site-{SITES[1]}"' in page and 'data-state="down"' in page
    with urllib.request.urlopen(f"{base}/site/{SITES[1]}", timeout=5) as r:
        page = r.read().decode()
    assert 'data-state="unknown"' in page and 'data-gateway-state="offline"' in page


def _stop_all(nodes: list[mqtt.Client], procs: list[subprocess.Popen[bytes]]) -> None:
    for node in nodes:
        node.loop_stop()
        node.disconnect()
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


def test_city_view_shows_a_killed_gateway_down_and_its_devices_unknown(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker]
) -> None:
    """(With accounts: the gateways', and the view's own read-only one.)"""
    auth = tmp_path / "platform-auth"
    _platform_accounts(auth)
    platform = broker_factory(
        "platform", password_file=auth / "passwd", acl_file=auth / "acl", extra_config=AS_INVOKER
    )
    procs: list[subprocess.Popen[bytes]] = []
    port = free_port()
    nodes: list[mqtt.Client] = []
    try:
        for i, site in enumerate(SITES, 1):
            proc, node = _start_site(i, site, broker_factory(f"site{i}"), platform, tmp_path)
            procs.append(proc)
            nodes.append(node)
        procs.append(_start_fleet_view(platform, port, auth))
        base = f"http://127.0.0.1:{port}"
        _check_all_up(base, nodes)

        procs[1].send_signal(signal.SIGKILL)  # the Pi of site 2 loses power
        killed = time.monotonic()

        def site2_down() -> Any:
            got = _sites(base)
            return got[SITES[1]]["gateway"]["state"] == "offline" and got

        got = _wait(site2_down, 1.5 * KEEPALIVE_S + 5, "site 2 down")
        took = time.monotonic() - killed
        assert took <= 1.5 * KEEPALIVE_S + 5
        assert got[SITES[1]]["counts"]["unknown"] == 1 and got[SITES[1]]["counts"]["online"] == 0
        for s in (SITES[0], SITES[2]):
            assert got[s]["gateway"]["state"] == "online" and got[s]["counts"]["online"] == 1
        # The view's account cannot write: a forged "online" health under it is dropped.
        _forge_online_health(platform)
        time.sleep(1.0)
        got = _sites(base)
        assert got[SITES[1]]["gateway"]["state"] == "offline", "a read-only account wrote"
        _check_site2_down_on_the_pages(base)
        print(f"site down on the city view {took:.1f} s after the kill")
    finally:
        _stop_all(nodes, procs)
