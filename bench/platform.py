"""City platform sink benchmark: readings/s with 1, 2 and 4 consumers on 2 brokers, and
PostgreSQL bytes per reading.

    python bench/platform.py            # 40 000 readings per run
    python bench/platform.py --quick    # 8 000 readings per run

Real parts on loopback: two Mosquitto brokers (two districts), a PostgreSQL cluster started for
the run, ``cityedge platform sink`` as processes. For each consumer count the sink subscribes
once (its MQTT 5 sessions then persist), is stopped, a backlog of contract-valid observations
(50 devices, half on each broker) is published into the brokers' queues for the stopped
consumers, and the sink is started again: the throughput is the backlog over the time between
the first and the last committed batch (``ingested_at``), so the publisher's speed and the
consumers' start-up are not in it. Bytes per reading are the observation partitions' heap,
index and TOAST size over their rows.

The last line printed is one line of ``key=value`` figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's directory must not be on the path: its name would shadow the standard library's
# `platform` module, which uuid (used by psycopg and paho) imports.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import os
import signal
import subprocess
import time
from typing import Any

from city_platform.db import connect, create_login, migrate
from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from host_tools.sim.pgserver import PostgresServer
from tests.platform.helpers import Publisher, observation

DEVICES = 50


def start_sink(
    brokers: list[MosquittoBroker], url: str, consumers: int, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "city_platform",
        "sink",
        "--db",
        url,
        "--consumers",
        str(consumers),
        "--client-prefix",
        f"bench{consumers}",
        "--group",
        f"bench{consumers}",
    ]
    for b in brokers:
        cmd += ["--broker", b.address]
    out = open(log, "wb")  # noqa: SIM115 - the process holds it
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count(" subscribed on ") < consumers * len(brokers):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the sink did not subscribe:\n" + log.read_text(errors="replace"))
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def queue_readings(brokers: list[MosquittoBroker], consumers: int, readings: int) -> None:
    """``readings`` observations of DEVICES devices over the two brokers, for the sink's
    offline sessions to hold."""
    pubs = [Publisher(b.host, b.port, f"bench-pub-{consumers}-{i}") for i, b in enumerate(brokers)]
    t0 = time.time() - 7 * 86400
    for n in range(readings):
        d = n % DEVICES
        device = f"ce-{d:012x}"
        site = f"bench-site-{d % 2}"
        seq = n // DEVICES
        obs = observation(
            site, f"gw-{site}", device, 1, seq, t0 + 60 * seq, pm25_cf1=float(seq % 80)
        )
        pubs[d % 2].send(contract.observation_topic(site, "air", device), obs, qos=1)
        if n % 2000 == 1999:
            for p in pubs:
                p.flush(300)
    for p in pubs:
        p.close()


def wait_stored(conn: Any, readings: int, wall0: float) -> None:
    while True:
        count = conn.execute("SELECT count(*) FROM cityedge.observation").fetchone()
        conn.rollback()
        if count and count[0] >= readings:
            return
        if time.monotonic() - wall0 > 900:
            raise SystemExit(f"only {count} of {readings} stored after 900 s")
        time.sleep(0.2)


def run_once(
    pg: PostgresServer, brokers: list[MosquittoBroker], consumers: int, readings: int, workdir: Path
) -> dict[str, Any]:
    name = f"bench_{consumers}_{os.getpid()}"
    owner = pg.create_database(name)
    migrate(owner)
    with connect(owner, autocommit=True) as conn:
        create_login(conn, f"{name}_w", "bench", reader=False)
    writer = pg.url(f"{name}_w", name, "bench")
    log = workdir / f"sink-{consumers}.log"
    stop(start_sink(brokers, writer, consumers, log))  # the sessions now exist, offline
    queue_readings(brokers, consumers, readings)

    wall0 = time.monotonic()
    proc = start_sink(brokers, writer, consumers, log)
    try:
        with connect(owner) as conn:
            wait_stored(conn, readings, wall0)
            wall = time.monotonic() - wall0
            first, last, rows = conn.execute(
                "SELECT min(ingested_at), max(ingested_at), count(*) FROM cityedge.observation"
            ).fetchone() or (None, None, 0)
            size = conn.execute(
                """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
                   JOIN pg_namespace n ON n.oid = p.relnamespace
                   WHERE n.nspname = 'cityedge' AND p.relname = 'observation'"""
            ).fetchone()
    finally:
        stop(proc)
    span = (last - first).total_seconds() if first and last else wall
    return {
        "consumers": consumers,
        "readings": rows,
        "span_s": span,
        "wall_s": wall,
        "rate": rows / max(span, 1e-6),
        "bytes_per_reading": (size[0] if size else 0) / max(rows, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="8 000 readings per run")
    ap.add_argument("--readings", type=int, help="readings per run")
    ap.add_argument("--consumers", default="1,2,4", help="consumer counts to run")
    args = ap.parse_args()
    readings = args.readings or (8_000 if args.quick else 40_000)
    counts = [int(x) for x in args.consumers.split(",")]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"cityedge-bench-platform-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    pg = PostgresServer().start()
    brokers = [
        MosquittoBroker(name=f"district-{i}", workdir=workdir / f"b{i}").start() for i in range(2)
    ]
    results = []
    try:
        for n in counts:
            r = run_once(pg, brokers, n, readings, workdir)
            results.append(r)
            print(
                f"{n} consumer(s): {r['readings']} readings in {r['span_s']:.1f} s "
                f"({r['wall_s']:.1f} s with start-up): {r['rate']:.0f} readings/s",
                flush=True,
            )
    finally:
        for b in brokers:
            b.stop(kill=True)
        pg.stop()
    base = results[0]["rate"]
    print()
    print(f"{'consumers':>9} {'readings/s':>11} {'ratio to 1':>10} {'PG bytes/reading':>17}")
    for r in results:
        print(
            f"{r['consumers']:>9} {r['rate']:>11.0f} {r['rate'] / base:>10.2f} {r['bytes_per_reading']:>17.0f}"
        )
    load = os.getloadavg()[0]
    print(
        f"(2 brokers, {DEVICES} devices, {readings} readings per run, {os.cpu_count()} CPUs, "
        f"load average {load:.1f})"
    )
    figures = {f"rate_{r['consumers']}": round(r["rate"]) for r in results}
    figures |= {f"ratio_{r['consumers']}": round(r["rate"] / base, 2) for r in results}
    figures["bytes_per_reading"] = round(results[-1]["bytes_per_reading"])
    print(" ".join(f"{k}={v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
