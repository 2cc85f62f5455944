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


def test_city_view_shows_a_killed_gateway_down_and_its_devices_unknown(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker]
) -> None:
    """(With accounts: the gateways', and the view's own read-only one.)"""
    # The platform broker with accounts: each gateway writes its own site; the city view has
    # its own account that can only read the retained status and health.
    auth = tmp_path / "platform-auth"
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
    platform = broker_factory(
        "platform", password_file=auth / "passwd", acl_file=auth / "acl", extra_config=AS_INVOKER
    )
    procs: list[subprocess.Popen[bytes]] = []
    sites = [f"fleet-site-0{i}" for i in range(1, 4)]
    devices = {s: f"ce-00000000f0{i:02d}" for i, s in enumerate(sites, 1)}
    port = free_port()
    nodes: list[mqtt.Client] = []
    seq = [0]

    talker = "ce-00000000f0aa"  # sends status heartbeats only, never a reading

    def send() -> None:  # one reading per site (a node reporting)
        status = contract.example("node_status") | {"device_id": talker, "t": time.time()}
        nodes[0].publish(contract.node_topic(talker, "status"), json.dumps(status), qos=1)
        for node, site in zip(nodes, sites, strict=True):
            body = reading(devices[site], "air", 1, seq[0])
            node.publish(contract.node_topic(devices[site], "reading"), json.dumps(body), qos=1)
        seq[0] += 1

    try:
        for i, site in enumerate(sites, 1):
            local = broker_factory(f"site{i}")
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
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edge_gateway", "--config", str(cfg)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
            node = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"node-{i}")
            node.connect(local.host, local.port)
            node.loop_start()
            nodes.append(node)
        fleet = subprocess.Popen(
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
        procs.append(fleet)
        base = f"http://127.0.0.1:{port}"

        def all_up() -> bool:
            send()
            got = {s["site_id"]: s for s in _get(f"{base}/api/sites")}
            return all(
                s in got
                and got[s]["gateway"]["state"] == "online"
                and got[s]["counts"]["online"] == 1
                for s in sites
            )

        _wait(all_up, 60, "three sites online, one device each")
        # Liveness is data: status heartbeats alone never make a device online.
        quiet = _wait(lambda: _get(f"{base}/api/devices/{talker}"), 10, "the talker's status")
        assert quiet["state"] == "never", quiet
        devs = _get(f"{base}/api/devices?site={sites[1]}")
        assert [d["device_id"] for d in devs] == [devices[sites[1]]]
        assert devs[0]["state"] == "online"

        procs[1].send_signal(signal.SIGKILL)  # the Pi of site 2 loses power
        killed = time.monotonic()

        def site2_down() -> Any:
            got = {s["site_id"]: s for s in _get(f"{base}/api/sites")}
            return got[sites[1]]["gateway"]["state"] == "offline" and got

        got = _wait(site2_down, 1.5 * KEEPALIVE_S + 5, "site 2 down")
        took = time.monotonic() - killed
        assert took <= 1.5 * KEEPALIVE_S + 5
        assert got[sites[1]]["counts"]["unknown"] == 1 and got[sites[1]]["counts"]["online"] == 0
        for s in (sites[0], sites[2]):
            assert got[s]["gateway"]["state"] == "online" and got[s]["counts"]["online"] == 1
        # The view's account cannot write: a forged "online" health under it is dropped.
        forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forger")
        forger.username_pw_set("fleet-view", "view-pw")
        forger.connect(platform.host, platform.port)
        forger.loop_start()
        forged = {
            "v": 1,
            "site_id": sites[1],
            "gateway_id": "gw-fleet-02",
            "state": "online",
            "t": iso_utc(time.time()),
        }
        forger.publish(
            contract.gateway_health_topic(sites[1], "gw-fleet-02"),
            json.dumps(forged),
            qos=1,
            retain=True,
        ).wait_for_publish(5)
        forger.loop_stop()
        forger.disconnect()
        time.sleep(1.0)
        got = {s["site_id"]: s for s in _get(f"{base}/api/sites")}
        assert got[sites[1]]["gateway"]["state"] == "offline", "a read-only account wrote"
        dev = _get(f"{base}/api/devices/{devices[sites[1]]}")
        assert dev["state"] == "unknown" and "gw-fleet-02 is down" in dev["reason"]
        assert [d["device_id"] for d in _get(f"{base}/api/devices?state=unknown")] == [
            devices[sites[1]]
        ]
        with urllib.request.urlopen(f"{base}/", timeout=5) as r:
            page = r.read().decode()
        assert f'id="site-{sites[1]}"' in page and 'data-state="down"' in page
        with urllib.request.urlopen(f"{base}/site/{sites[1]}", timeout=5) as r:
            page = r.read().decode()
        assert 'data-state="unknown"' in page and 'data-gateway-state="offline"' in page
        print(f"site down on the city view {took:.1f} s after the kill")
    finally:
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
