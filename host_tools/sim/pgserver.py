"""A throwaway PostgreSQL cluster on loopback, for the tests, the bench and a quick try-out.

Like :mod:`host_tools.sim.brokers` for Mosquitto: ``initdb`` + ``pg_ctl`` from the Debian
``postgresql`` package, a free port on 127.0.0.1, a temporary data directory. PostgreSQL refuses
to run as root, so as root the cluster belongs to the ``postgres`` user and its commands run
through ``runuser``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from city_platform import PlatformError
from host_tools.sim.brokers import free_port, wait_for_port

BIN_DIRS = (
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)


def pg_bin(name: str) -> str | None:
    for d in BIN_DIRS:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


@dataclass
class PostgresServer:
    """A PostgreSQL cluster with trust authentication on 127.0.0.1 only."""

    port: int = 0
    superuser: str = "postgres"
    settings: dict[str, str] = field(default_factory=dict)
    datadir: Path | None = None
    _top: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()

    @property
    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def url(
        self, user: str | None = None, db: str = "postgres", password: str | None = None
    ) -> str:
        who = user or self.superuser
        auth = f"{who}:{password}" if password else who
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def _run(self, *cmd: str) -> None:
        result = subprocess.run(
            [*self._as_postgres, *cmd], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise PlatformError(f"{Path(cmd[0]).name} failed: {result.stderr.strip()[-800:]}")

    def start(self) -> Self:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise PlatformError(
                "PostgreSQL is not installed", "sudo apt-get install postgresql (the tests need it)"
            )
        if self.datadir is None:
            self._top = Path(tempfile.mkdtemp(prefix="cityedge-pg-"))
            self.datadir = self._top / "data"
            if os.geteuid() == 0:
                shutil.chown(self._top, "postgres", "postgres")
            self._run(
                initdb,
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        opts = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.datadir),
            "max_connections": "100",
            "timezone": "UTC",
            **self.settings,
        }
        o = " ".join(f"-c {k}={v}" for k, v in opts.items())
        self._run(
            pg_ctl,
            "-D",
            str(self.datadir),
            "-o",
            o,
            "-l",
            str(self.datadir / "log.txt"),
            "-w",
            "-t",
            "60",
            "start",
        )
        if not wait_for_port("127.0.0.1", self.port, timeout_s=30):
            raise PlatformError(f"PostgreSQL did not listen on port {self.port}")
        return self

    def stop(self) -> None:
        pg_ctl = pg_bin("pg_ctl")
        if pg_ctl and self.datadir and (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                [
                    *self._as_postgres,
                    pg_ctl,
                    "-D",
                    str(self.datadir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        if self._top is not None:
            shutil.rmtree(self._top, ignore_errors=True)
            self._top = None

    def create_database(self, name: str) -> str:
        """A fresh database; returns its superuser URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(db=name)
