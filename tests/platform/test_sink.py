"""The sink on a real Mosquitto pair and a real PostgreSQL: every payload kind stored once,
redeliveries and garbage handled, roles kept apart."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from city_platform.sink import classify
from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from tests.platform.conftest import SinkDb
from tests.platform.helpers import Publisher, observation, wait_until

pytestmark = [pytest.mark.broker]


def test_topics_are_classified() -> None:
    assert classify("cityedge/v1/site/s-01/air/ce-1/observation") == "observation"
    assert classify("cityedge/v1/site/s-01/device/ce-1/status") == "device_status"
    assert classify("cityedge/v1/site/s-01/gateway/gw-1/health") == "gateway_health"
    assert classify("cityedge/v1/site/s-01/alert/ce-1") == "alert"
    assert classify("cityedge/v1/node/ce-1/reading") is None
    assert classify("cityedge/v1/site/s-01/air/ce-1/observation/x") is None


def _publish_every_kind(pa: Publisher, pb: Publisher, t0: float) -> None:
    """20 observations a district, a repeat, each other kind, and four that must be rejected."""
    for seq in range(20):
        o = observation("site-a-01", "gw-site-a-01", "ce-00000000000a", 1, seq, t0 + 60 * seq)
        pa.send(contract.observation_topic("site-a-01", "air", o["device_id"]), o)
        o = observation("site-b-01", "gw-site-b-01", "ce-00000000000b", 3, seq, t0 + 60 * seq)
        pb.send(contract.observation_topic("site-b-01", "air", o["device_id"]), o)
    # A repeat (as after a lost acknowledgement upstream) is stored once.
    pa.send(
        contract.observation_topic("site-a-01", "air", "ce-00000000000a"),
        observation("site-a-01", "gw-site-a-01", "ce-00000000000a", 1, 5, t0 + 300),
    )
    status = contract.example("device_status")
    pa.send(contract.device_status_topic(status["site_id"], status["device_id"]), status, qos=1)
    health = contract.example("gateway_health")
    pb.send(contract.gateway_health_topic(health["site_id"], health["gateway_id"]), health, qos=1)
    pb.send(contract.gateway_health_topic(health["site_id"], health["gateway_id"]), health, qos=1)
    alert = contract.example("alert")
    pa.send(contract.alert_topic(alert["site_id"], alert["device_id"]), alert)
    pa.send("cityedge/v1/site/site-a-01/air/ce-00000000000a/observation", b"\x00 not json")
    wrong = observation("site-a-01", "gw-site-a-01", "ce-00000000000c", 1, 0, t0)
    pa.send("cityedge/v1/site/site-a-01/air/ce-00000000000a/observation", wrong)
    # Valid by the schema, impossible to store: the consumer rejects them and carries on.
    far = observation("site-a-01", "gw-site-a-01", "ce-00000000000d", 1, 0, t0)
    far["t"] = 1e300
    pa.send(contract.observation_topic("site-a-01", "air", "ce-00000000000d"), far)
    huge = observation("site-a-01", "gw-site-a-01", "ce-00000000000d", 2**40, 0, t0)
    pa.send(contract.observation_topic("site-a-01", "air", "ce-00000000000d"), huge)
    pa.flush()
    pb.flush()


def _check_stored_once(sink_db: SinkDb) -> None:
    assert sink_db.query("SELECT count(*) FROM cityedge.observation") == [(40,)]
    assert sink_db.query("SELECT count(*) FROM cityedge.device_status") == [(1,)]
    assert sink_db.query("SELECT count(*) FROM cityedge.gateway_health") == [(1,)]
    assert sink_db.query("SELECT count(*) FROM cityedge.alert") == [(1,)]
    reasons = [r[0] for r in sink_db.query("SELECT reason FROM cityedge.rejected ORDER BY id")]
    assert any("not JSON" in r for r in reasons), reasons
    assert any("does not match the topic" in r for r in reasons), reasons
    assert any("cannot be stored" in r for r in reasons), reasons
    assert any("database refused it" in r and "out of range" in r for r in reasons), reasons
    latest = sink_db.query("SELECT device_id, boot, seq FROM cityedge.device_latest ORDER BY 1")
    assert latest == [("ce-00000000000a", 1, 19), ("ce-00000000000b", 3, 19)]
    # Every reading but each device's last got its final flags from the next one.
    settled = sink_db.query(
        "SELECT device_id, count(*) FILTER (WHERE quality_settled), "
        "bool_and(quality->>'pm25' = '3') FILTER (WHERE quality_settled) "
        "FROM cityedge.observation GROUP BY 1 ORDER BY 1"
    )
    assert settled == [("ce-00000000000a", 19, True), ("ce-00000000000b", 19, True)]
    parts = sink_db.query(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = 'observation'"
    )
    assert parts[0][0] >= 1


def _check_roles_apart(sink_db: SinkDb) -> None:
    # The integrators' login reads but cannot write; the sink's login writes but cannot delete
    # nor change the schema.
    with psycopg.connect(sink_db.reader_url) as conn:
        assert conn.execute("SELECT count(*) FROM cityedge.observation").fetchone() == (40,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM cityedge.observation")
    denied = pytest.raises(psycopg.errors.InsufficientPrivilege)
    with psycopg.connect(sink_db.writer_url) as conn, denied:
        conn.execute("DROP TABLE cityedge.alert")
    with (
        psycopg.connect(sink_db.writer_url) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("DELETE FROM cityedge.observation")


def test_sink_stores_every_kind_once_rejects_garbage_and_keeps_roles_apart(
    broker_factory: Callable[..., MosquittoBroker],
    sink_db: SinkDb,
    sink_process: Callable[..., object],
) -> None:
    a, b = broker_factory("district-a"), broker_factory("district-b")
    sink = sink_process([a.address, b.address], sink_db.writer_url, consumers=2, stats_interval="1")
    pa, pb = Publisher(a.host, a.port, "gw-a"), Publisher(b.host, b.port, "gw-b")
    t0 = time.time() - 600
    try:
        _publish_every_kind(pa, pb, t0)

        def done() -> bool:
            rows = sink_db.query("SELECT count(*) FROM cityedge.observation")
            rej = sink_db.query("SELECT count(*) FROM cityedge.rejected")
            return rows[0][0] == 40 and rej[0][0] == 4

        assert wait_until(done, 60), sink_db.query("SELECT count(*) FROM cityedge.observation")
        time.sleep(1.0)  # anything still on its way would show as an extra row below
    finally:
        pa.close()
        pb.close()
    _check_stored_once(sink_db)
    _check_roles_apart(sink_db)

    # Each consumer reports what it did; the repeat shows up as "already there".
    def reported() -> tuple[int, int, int]:
        log = sink.log_path.read_text()  # type: ignore[attr-defined]
        return (
            sum(int(m) for m in re.findall(r"consumer \d: (\d+) stored", log)),
            sum(int(m) for m in re.findall(r"(\d+) already there", log)),
            sum(int(m) for m in re.findall(r"(\d+) rejected", log)),
        )

    assert wait_until(lambda: reported() == (43, 2, 4), 15), reported()
    doc = sink_db.query("SELECT observation FROM cityedge.device_latest ORDER BY 1 LIMIT 1")[0][0]
    contract.validate("observation", json.loads(json.dumps(doc)))


def test_sink_without_a_migrated_database_says_what_to_do(
    sink_db: SinkDb, tmp_path: object
) -> None:
    import subprocess
    import sys

    url = sink_db.server.create_database(f"{sink_db.name}_empty")
    result = subprocess.run(
        [sys.executable, "-m", "city_platform", "consume", "--broker", "127.0.0.1:1", "--db", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "cityedge platform migrate" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_sink_reads_a_broker_that_requires_tls_and_a_client_certificate(
    broker_factory: Callable[..., MosquittoBroker],
    sink_db: SinkDb,
    sink_process: Callable[..., object],
    tmp_path: Path,
) -> None:
    from host_tools.sim.brokers import free_port
    from tests.gateway.helpers import AS_INVOKER
    from tests.gateway.test_tls import make_pki

    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    broker = broker_factory(
        "district-tls",
        tls_listener={
            "port": str(tls_port),
            "cafile": str(pki["ca"]),
            "certfile": str(pki["server_cert"]),
            "keyfile": str(pki["server_key"]),
            "require_certificate": "true",
        },
        extra_config=AS_INVOKER,
    )
    sink_process(
        [f"127.0.0.1:{tls_port}"],
        sink_db.writer_url,
        consumers=1,
        cafile=str(pki["ca"]),
        certfile=str(pki["client_cert"]),
        keyfile=str(pki["client_key"]),
    )
    pub = Publisher(broker.host, broker.port, "gw-plain")  # the plain listener, for the test only
    try:
        for seq in range(3):
            o = observation(
                "site-tls-01", "gw-site-tls-01", "ce-0000000000ff", 1, seq, time.time() - 60 + seq
            )
            pub.send(contract.observation_topic("site-tls-01", "air", o["device_id"]), o)
        pub.flush()
        assert wait_until(
            lambda: sink_db.query("SELECT count(*) FROM cityedge.observation")[0][0] == 3, 30
        )
    finally:
        pub.close()
    # The sink was given the TLS listener only, so every row above came over TLS.
