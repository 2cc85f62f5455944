"""The sink: consumer processes that share one subscription on each platform broker and write
every contract payload to PostgreSQL once.

Delivery, step by step (docs/platform.md explains why):

1. Each consumer holds one MQTT 5 session per broker, with a fixed client id and a session
   that outlives a crash (``clean_start=False``, session expiry), subscribed to
   ``$share/<group>/cityedge/v1/site/...`` at **QoS 1**. The broker gives each message to one
   member of the group; messages for a member that is down wait in its session.
2. paho runs with ``manual_ack=True``: a message is not acknowledged when it arrives.
3. A batch of messages is written in one transaction, idempotently on the reading's key.
4. Only after ``COMMIT`` returns does the consumer send each message's PUBACK
   (``client.ack(mid, qos)``). A crash before that makes the broker redeliver, which the key
   turns into a no-op; a crash after it has nothing left to lose.

Why QoS 1 and not 2 on the sink's own link: paho 2.2 answers an incoming QoS 2 PUBLISH with
PUBREC at once, even with ``manual_ack``, and keeps the message only in memory until PUBREL
(``Client._handle_publish``). A consumer killed in that window has told the broker it owns a
message it never stored; the broker then only resends PUBREL, and the message is gone. QoS 1
with a manual PUBACK after commit plus the idempotent key gives exactly-once in the database.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from city_platform import EXIT_CONFIG, PlatformError
from city_platform.db import Store, WriteCounts, check_schema, connect, partition_time

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt
    import psycopg

log = logging.getLogger("cityedge.platform.sink")

SUBSCRIPTIONS = (
    ("cityedge/v1/site/+/+/+/observation", "observation"),
    ("cityedge/v1/site/+/device/+/status", "device_status"),
    ("cityedge/v1/site/+/gateway/+/health", "gateway_health"),
    ("cityedge/v1/site/+/alert/+", "alert"),
)
SUB_QOS = 1


@dataclass(frozen=True)
class Broker:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Broker:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, "1883"
        try:
            number = int(port)
        except ValueError:
            raise PlatformError(
                f"broker {text!r}: the port must be a number", "give --broker HOST:PORT"
            ) from None
        return cls(host or "127.0.0.1", number)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SinkConfig:
    brokers: tuple[Broker, ...]
    db_url: str
    group: str = "cityedge-sink"
    consumers: int = 2
    client_prefix: str = "cityedge-sink"
    batch_max: int = 500
    session_expiry_s: int = 7 * 24 * 3600
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    stats_interval_s: float = 60.0

    def argv(self) -> list[str]:
        """The `cityedge platform consume` arguments that give a child process this config
        (the database URL, which may hold a password, goes in its environment instead)."""
        args = [
            "--group",
            self.group,
            "--client-prefix",
            self.client_prefix,
            "--batch-max",
            str(self.batch_max),
            "--session-expiry",
            str(self.session_expiry_s),
            "--stats-interval",
            str(self.stats_interval_s),
        ]
        for b in self.brokers:
            args += ["--broker", str(b)]
        if self.username:
            args += ["--username", self.username]
        for flag, value in (
            ("--cafile", self.cafile),
            ("--certfile", self.certfile),
            ("--keyfile", self.keyfile),
        ):
            if value:
                args += [flag, value]
        return args


def classify(topic: str) -> str | None:
    """The payload kind a platform topic carries, or None."""
    p = topic.split("/")
    if p[:3] != ["cityedge", "v1", "site"]:
        return None
    if len(p) == 7 and p[6] == "observation":
        return "observation"
    if len(p) == 7 and p[4] == "device" and p[6] == "status":
        return "device_status"
    if len(p) == 7 and p[4] == "gateway" and p[6] == "health":
        return "gateway_health"
    if len(p) == 6 and p[4] == "alert":
        return "alert"
    return None


def decode(topic: str, payload: bytes) -> tuple[str, dict[str, Any]]:
    """Parse and check one message against the contract and its topic; ContractError if not."""
    from edge_gateway import contract

    kind = classify(topic)
    if kind is None:
        raise contract.ContractError(f"not a CityEdge platform topic: {topic}")
    doc = contract.decode(kind, payload)
    p = topic.split("/")
    if doc["site_id"] != p[3]:
        raise contract.ContractError(f"site_id {doc['site_id']!r} does not match the topic")
    named = {
        "observation": doc.get("device_id"),
        "device_status": doc.get("device_id"),
        "gateway_health": doc.get("gateway_id"),
        "alert": doc.get("device_id"),
    }[kind]
    if named != p[5]:
        raise contract.ContractError(f"the payload's id {named!r} does not match the topic")
    try:
        partition_time(kind, doc)
    except (ValueError, OverflowError, OSError) as exc:
        raise contract.ContractError(f"{kind}: its time cannot be stored: {exc}") from None
    return kind, doc


Item = tuple["mqtt.Client", "mqtt.MQTTMessage"]


class Consumer:
    """One consumer process: a session on every broker, one database connection."""

    def __init__(self, cfg: SinkConfig, index: int) -> None:
        self.cfg = cfg
        self.index = index
        self.inbox: queue.Queue[Item] = queue.Queue()
        self.stop = threading.Event()
        self.clients: list[mqtt.Client] = []
        self.committed = 0

    def _client(self, broker: Broker, n: int) -> mqtt.Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client_id = f"{self.cfg.client_prefix}-{self.index}-b{n}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, self.cfg.password)
        if self.cfg.cafile:
            client.tls_set(
                ca_certs=self.cfg.cafile, certfile=self.cfg.certfile, keyfile=self.cfg.keyfile
            )
        client.reconnect_delay_set(1, 30)

        def on_connect(c: mqtt.Client, _u: object, flags: Any, rc: Any, _p: Any) -> None:
            if rc.is_failure:
                log.error("broker %s refused %s: %s", broker, client_id, rc)
                return
            log.info(
                "consumer %d connected to %s (session present: %s)",
                self.index,
                broker,
                flags.session_present,
            )
            c.subscribe([(f"$share/{self.cfg.group}/{t}", SUB_QOS) for t, _ in SUBSCRIPTIONS])

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            self.inbox.put((c, msg))

        def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, codes: Any, _p: Any) -> None:
            failed = [str(rc) for rc in codes if rc.is_failure]
            if failed:
                log.error("broker %s refused the subscriptions: %s", broker, ", ".join(failed))
                return
            # One line per broker, for operators and for whoever waits for the sink to be up.
            print(f"consumer {self.index} subscribed on {broker} as {client_id}", flush=True)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        # As many unacknowledged messages as one batch holds; the broker sends no more to this
        # consumer until its PUBACKs (after commit) free the window. Mosquitto also caps this
        # with its max_inflight_messages (default 20): raise it for the sink's listener.
        props.ReceiveMaximum = max(1, min(self.cfg.batch_max, 65535))
        # clean_start=False on the first connect too: a restarted consumer takes up the session
        # (and the unacknowledged messages) its killed predecessor left.
        client.connect_async(
            broker.host, broker.port, keepalive=30, clean_start=False, properties=props
        )
        return client

    def run(self) -> int:
        conn = self._connect_db()
        store = Store(conn)
        self.clients = [self._client(b, n) for n, b in enumerate(self.cfg.brokers)]
        for c in self.clients:
            c.loop_start()
        next_stats = time.monotonic() + self.cfg.stats_interval_s
        try:
            while not self.stop.is_set():
                batch = self._take()
                if batch:
                    conn, store = self._commit(conn, store, batch)
                if self.cfg.stats_interval_s > 0 and time.monotonic() >= next_stats:
                    n = store.counts
                    # One line a minute for the operator (journald): what this consumer did.
                    print(
                        f"consumer {self.index}: {n.inserted} stored, {n.duplicates} already "
                        f"there (redelivered), {n.rejected} rejected in the last "
                        f"{self.cfg.stats_interval_s:.0f} s",
                        flush=True,
                    )
                    store.counts = WriteCounts()
                    next_stats = time.monotonic() + self.cfg.stats_interval_s
        finally:
            for c in self.clients:
                c.disconnect()
                c.loop_stop()
            conn.close()
        return 0

    def _connect_db(self) -> psycopg.Connection[Any]:
        delay = 0.5
        while True:
            try:
                conn = connect(self.cfg.db_url)
                check_schema(conn)
                return conn
            except PlatformError as exc:
                if "schema" in str(exc) or self.stop.is_set():
                    raise
                log.warning("%s; retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30)

    def _take(self) -> list[Item]:
        try:
            first = self.inbox.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.cfg.batch_max:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(
        self, conn: psycopg.Connection[Any], store: Store, batch: list[Item]
    ) -> tuple[psycopg.Connection[Any], Store]:
        import psycopg as pg

        from edge_gateway.contract import ContractError

        good: list[tuple[str, dict[str, Any]]] = []
        bad: list[tuple[Item, str]] = []
        topics: dict[int, str] = {}
        for item in batch:
            try:
                good.append(decode(item[1].topic, bytes(item[1].payload)))
                topics[id(good[-1][1])] = item[1].topic
            except ContractError as exc:
                bad.append((item, str(exc)))
        # One lock order for every consumer: by device, then (boot, seq).
        good.sort(key=_lock_order)
        delay = 0.5
        while True:
            try:
                store.partitions_for(good)
                self._write(conn, store, good, bad, savepoints=False)
                break
            except pg.errors.TransactionRollback as exc:
                # Deadlock or serialization failure with another consumer: nothing was
                # committed, so run the batch again after a short random pause.
                store.discard()
                log.info("batch rolled back (%s); retrying", str(exc).splitlines()[0])
                time.sleep(random.uniform(0.02, 0.2))
            except (pg.DataError, pg.IntegrityError, KeyError, ValueError, TypeError) as exc:
                # One payload the database refuses: redo the batch with a savepoint each, so
                # the others are stored and that one is rejected with the reason.
                log.warning("batch refused (%s); writing one by one", exc)
                conn.rollback()
                store.discard()
                self._write(conn, store, good, bad, savepoints=True, topics=topics)
                break
            except pg.OperationalError as exc:
                log.warning("database error (%s); retrying the batch in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30)
                store.discard()
                conn.close()
                conn = self._connect_db()
                store = Store(conn)
        # Committed: only now tell the brokers.
        for client, msg in batch:
            client.ack(msg.mid, msg.qos)
        self.committed += len(batch)
        return conn, store

    @staticmethod
    def _write(
        conn: psycopg.Connection[Any],
        store: Store,
        good: Sequence[tuple[str, Mapping[str, Any]]],
        bad: Sequence[tuple[Item, str]],
        *,
        savepoints: bool,
        topics: Mapping[int, str] | None = None,
    ) -> None:
        import psycopg as pg

        with conn.transaction():
            for kind, doc in good:
                if not savepoints:
                    store.write(kind, doc)
                    continue
                kept = store.latest_of(doc)
                try:
                    with conn.transaction():
                        store.write(kind, doc)
                except (pg.DataError, pg.IntegrityError, KeyError, ValueError, TypeError) as exc:
                    store.restore_latest(doc, kept)
                    topic = (topics or {}).get(id(doc), kind)
                    store.reject(topic, json.dumps(doc).encode(), f"database refused it: {exc}")
            for (_, msg), reason in bad:
                store.reject(msg.topic, bytes(msg.payload), reason)
            store.flush_latest()
        store.committed()


def _lock_order(item: tuple[str, Mapping[str, Any]]) -> tuple[str, str, int, int]:
    kind, doc = item
    return (
        str(doc.get("device_id") or doc.get("gateway_id") or ""),
        kind,
        int(doc.get("boot", 0)),
        int(doc.get("seq", 0)),
    )


def consume(cfg: SinkConfig, index: int) -> int:
    """Run one consumer until SIGTERM/SIGINT."""
    consumer = Consumer(cfg, index)

    def stop(_sig: int, _frame: object) -> None:
        consumer.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return consumer.run()


class Supervisor:
    """Runs N consumer processes and restarts any that dies (same index, same session)."""

    def __init__(self, cfg: SinkConfig, python: str = sys.executable) -> None:
        self.cfg = cfg
        self.python = python
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self.stop = threading.Event()

    def _spawn(self, index: int) -> None:
        env = dict(os.environ)
        env["CITYEDGE_DB_URL"] = self.cfg.db_url  # not on the command line (ps shows it)
        if self.cfg.password:
            env["CITYEDGE_SINK_PASSWORD"] = self.cfg.password  # not on the command line
        cmd = [
            self.python,
            "-m",
            "city_platform",
            "consume",
            "--index",
            str(index),
            *self.cfg.argv(),
        ]
        self.procs[index] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        log.warning("consumer %d started, pid %d", index, self.procs[index].pid)

    def pids(self) -> dict[int, int]:
        return {i: p.pid for i, p in self.procs.items() if p.poll() is None}

    def run(self) -> int:
        started: dict[int, float] = {}
        backoff: dict[int, float] = {}
        due: dict[int, float] = {}
        for i in range(self.cfg.consumers):
            self._spawn(i)
            started[i] = time.monotonic()
        try:
            while not self.stop.wait(0.2):
                for i, proc in list(self.procs.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    if code == EXIT_CONFIG:
                        # It said why (schema or configuration): restarting would repeat it.
                        log.error("consumer %d cannot run (see its message); stopping the sink", i)
                        return code
                    if i in due:  # a restart after a back-off is scheduled
                        if time.monotonic() < due[i]:
                            continue
                        del due[i]
                    else:
                        how = f"signal {-code}" if code < 0 else f"exit code {code}"
                        log.warning(
                            "consumer %d (pid %d) ended by %s; restarting", i, proc.pid, how
                        )
                        # An error exit soon after its start again: back off (1 s doubling to
                        # 30 s). A kill, or an error after a good run, restarts at once.
                        quick = time.monotonic() - started.get(i, 0.0) < 10
                        backoff[i] = (
                            min(backoff.get(i, 0.5) * 2, 30.0) if quick and code > 0 else 0.0
                        )
                        if backoff[i]:
                            due[i] = time.monotonic() + backoff[i]
                            continue
                    self.restarts += 1
                    self._spawn(i)
                    started[i] = time.monotonic()
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return 0


def supervise(cfg: SinkConfig) -> int:
    supervisor = Supervisor(cfg)

    def stop(_sig: int, _frame: object) -> None:
        supervisor.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return supervisor.run()
