"""Retention drops whole monthly partitions past their age; migrations run twice are a no-op."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from city_platform.db import Store, connect, migrate
from tests.platform.conftest import SinkDb
from tests.platform.helpers import observation


def _months_ago(n: int) -> datetime:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - n
    return datetime(index // 12, index % 12 + 1, 15, tzinfo=UTC)


def _retention(db_url: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "city_platform", "retention", "--db", db_url, *more],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _fill(sink_db: SinkDb) -> None:
    """One observation 30, 25, 23, 1 and 0 months old; rejected messages 200 and 10 days old."""
    with connect(sink_db.writer_url) as conn:
        store = Store(conn)
        docs = []
        for seq, age in enumerate((30, 25, 23, 1, 0)):
            when = _months_ago(age)
            store.ensure_partition("observation", when)
            docs.append(
                observation(
                    "site-ret-01", "gw-site-ret-01", "ce-0000000000ee", 1, seq, when.timestamp()
                )
            )
        with conn.transaction():
            for d in docs:
                assert store.write("observation", d)
            store.flush_latest()
    with connect(sink_db.owner_url) as conn, conn.transaction():
        for age_days in (200, 10):
            conn.execute(
                "INSERT INTO cityedge.rejected (received_at, topic, payload, reason) "
                "VALUES (now() - make_interval(days => %s), 't', 'x', 'test')",
                (age_days,),
            )


def test_retention_drops_old_months_only(sink_db: SinkDb) -> None:
    migrate(sink_db.owner_url)  # again: nothing to do, no error
    _fill(sink_db)
    result = _retention(sink_db.owner_url)
    assert result.returncode == 0, result.stderr
    old = {f"observation_{_months_ago(a):%Y_%m}" for a in (30, 25)}
    assert set(result.stdout.split("dropped: ")[1].splitlines()[0].split(", ")) == old
    assert "rejected messages deleted: 1" in result.stdout
    assert sink_db.query("SELECT count(*) FROM cityedge.rejected") == [(1,)]
    left = [r[0] for r in sink_db.query("SELECT seq FROM cityedge.observation ORDER BY seq")]
    assert left == [2, 3, 4]  # 23, 1 and 0 months old: within the default 24 months
    # The writer may not drop partitions itself.
    denied = _retention(sink_db.writer_url, "--keep", "observation=0")
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    bad = _retention(sink_db.owner_url, "--keep", "readings=3")
    assert bad.returncode != 0 and "TABLE=MONTHS" in bad.stderr
