"""Generated Mosquitto password and ACL files, checked against the real Mosquitto 2."""

from __future__ import annotations

import base64
import hashlib
import queue
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.field import broker_auth
from host_tools.field.inventory import Device, Inventory, utc_now
from host_tools.field.provision import create_gateway_credential, export_broker_files
from host_tools.sim.brokers import MosquittoBroker
from tests.host_tools.mqtt_helpers import ROOT_SAFE, Client, connect_refused


def test_hash_format_is_mosquitto_7() -> None:
    salt = bytes(range(12))
    h = broker_auth.hash_password("secret", salt=salt)
    kind, iterations, salt_b64, hash_b64 = h.split("$")[1:]
    assert (kind, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    assert base64.b64decode(hash_b64) == hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_verify_accepts_only_the_password(pw: str, other: str) -> None:
    h = broker_auth.hash_password(pw)
    assert broker_auth.verify_password(pw, h)
    assert broker_auth.verify_password(other, h) == (other == pw)


def test_usernames_that_would_break_the_files_are_refused() -> None:
    for bad in ("a:b", "a b", "", "x\n", "ce-x#"):
        with pytest.raises(ValueError):
            broker_auth.password_file_text({bad: broker_auth.hash_password("p")})


def _device(device_id: str, site: str, password: str, version: int = 1) -> Device:
    now = utc_now()
    return Device(
        device_id,
        device_id[3:],
        "ESP32",
        "air",
        "sim",
        site,
        None,
        13.7,
        100.5,
        None,
        "1.0",
        version,
        broker_auth.hash_password(password),
        now,
        now,
    )


def _store(inv: Inventory, dev: Device) -> None:
    with inv.provisioning(dev, port=None):
        pass


@pytest.mark.broker
def test_real_mosquitto_enforces_generated_files(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker]
) -> None:
    inv = Inventory(tmp_path / "inv.sqlite")
    a, b = "ce-aaaaaaaaaaa1", "ce-bbbbbbbbbbb2"
    _store(inv, _device(a, "school-1", "pw-a"))
    _store(inv, _device(b, "school-1", "pw-b"))
    _store(inv, _device("ce-ccccccccccc3", "other-site", "pw-c"))
    gw_pw = create_gateway_credential(inv, "gw-school-1", "school-1")
    create_gateway_credential(inv, "gw-other", "other-site")
    passwd, acl = export_broker_files(inv, tmp_path / "broker", site_id="school-1")
    assert "ce-ccccccccccc3:" not in passwd.read_text()  # another site's device is not let in
    assert "gw-other:" not in passwd.read_text()  # nor another site's gateway
    assert "pw-a" not in passwd.read_text()
    broker = broker_factory("auth", password_file=passwd, acl_file=acl, extra_config=ROOT_SAFE)

    gw = Client(broker.port, "gw-school-1", gw_pw)
    assert gw.ok
    gw.subscribe("cityedge/v1/#")
    dev_a = Client(broker.port, a, "pw-a")
    assert dev_a.ok
    assert connect_refused(broker.port, a, "pw-b")  # wrong password: CONNACK refused
    assert connect_refused(broker.port, "ce-ccccccccccc3", "pw-c")

    # A publishes as B (QoS 1 is PUBACKed but must not be delivered), then as itself.
    dev_a.publish(f"cityedge/v1/node/{b}/reading", b"forged", qos=1)
    dev_a.publish("cityedge/v1/site/school-1/alert/x", b"forged", qos=0)
    dev_a.publish(f"cityedge/v1/node/{a}/reading", b"mine", qos=1)
    assert gw.received.get(timeout=10) == (f"cityedge/v1/node/{a}/reading", b"mine")
    with pytest.raises(queue.Empty):
        gw.received.get(timeout=0.5)

    # A reads its own cmd, never B's.
    dev_a.subscribe(f"cityedge/v1/node/{a}/cmd")
    dev_a.subscribe(f"cityedge/v1/node/{b}/cmd")
    gw.publish(f"cityedge/v1/node/{b}/cmd", b"for-b")
    gw.publish(f"cityedge/v1/node/{a}/cmd", b"for-a")
    assert dev_a.received.get(timeout=10) == (f"cityedge/v1/node/{a}/cmd", b"for-a")
    with pytest.raises(queue.Empty):
        dev_a.received.get(timeout=0.5)
    for c in (gw, dev_a):
        c.close()
