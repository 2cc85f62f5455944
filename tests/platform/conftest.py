"""Fixtures for the city platform tests: one real PostgreSQL cluster per session, a fresh
migrated database per test, and the sink run as real processes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from city_platform.db import connect, create_login, migrate
from host_tools.sim.pgserver import PostgresServer, pg_bin

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if pg_bin("initdb") is None:
        pytest.fail("PostgreSQL is not installed: run the README's test command, which installs it")
    server = PostgresServer().start()
    yield server
    server.stop()


class SinkDb:
    """A migrated database with a writer login (the sink) and a reader login (integrators)."""

    def __init__(self, server: PostgresServer, name: str) -> None:
        self.server = server
        self.name = name
        self.owner_url = server.create_database(name)
        migrate(self.owner_url)
        self.writer = f"{name}_sink"
        self.reader = f"{name}_read"
        with connect(self.owner_url, autocommit=True) as conn:
            create_login(conn, self.writer, "sink-secret", reader=False)
            create_login(conn, self.reader, "read-secret", reader=True)
        self.writer_url = server.url(self.writer, name, "sink-secret")
        self.reader_url = server.url(self.reader, name, "read-secret")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with connect(self.owner_url) as conn:
            return list(conn.execute(sql, params).fetchall())  # type: ignore[arg-type]


@pytest.fixture
def sink_db(pg_server: PostgresServer) -> SinkDb:
    return SinkDb(pg_server, f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture
def sink_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `cityedge platform sink` (the supervisor and its consumers) as a process."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        brokers: list[str], db_url: str, consumers: int, wait_ready: bool = True, **extra: str
    ) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "city_platform",
            "sink",
            "--db",
            db_url,
            "--consumers",
            str(consumers),
        ]
        for b in brokers:
            cmd += ["--broker", b]
        for k, v in extra.items():
            cmd += [f"--{k.replace('_', '-')}", v]
        path = tmp_path / f"sink-{len(procs)}.log"
        log = open(path, "wb")  # noqa: SIM115 - the process holds it
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        procs.append(proc)
        proc.log_path = path  # type: ignore[attr-defined]
        if wait_ready:
            want = consumers * len(brokers)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = path.read_text(errors="replace")
                if text.count(" subscribed on ") >= want:
                    return proc
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
            raise AssertionError("the sink did not subscribe:\n" + path.read_text(errors="replace"))
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def children(pid: int) -> list[int]:
    """The child processes of `pid` (the supervisor's consumers)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(x) for x in path.read_text().split()]
    except OSError:
        return []
