"""A full disk is a state, not a crash.

When a group commit fails because the file system is full (SQLite's ``SQLITE_FULL``, or
``ENOSPC``), the gateway does not PUBACK the group's readings — the site broker keeps them in the
gateway's session and the nodes keep them in their outboxes — and retries the same group until
it commits. It reports ``disk_full`` in its health message, its stats and its metrics, and it
never exits because of it.

Forwarding must go on meanwhile (that is what frees the space: a row is deleted after its
PUBCOMP), and it writes too: the packet ids before each PUBLISH, the PUBREC marks, the deletes.
So the guard keeps a *reserve*: a file of ``RESERVE_BYTES`` in the data directory, written while
there is room. On the first disk-full error the reserve is deleted, which gives the store the
room to checkpoint its WAL and commit the forwarder's small transactions. New readings must not
eat that room: while the disk is full, a group is tried again only when there is room for it
without the reserve — the file system has more than the reserve free again, or the forwarder's
deletes left at least ``REUSE_BYTES`` of free pages in the database, which new rows reuse without
growing the file. When the file system has room again (the reserve twice over) the reserve is
written again; the next successful group commit ends the state.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_BYTES = 2 << 20
RETRY_S = 0.5  # how often a group that could not be stored is tried again
REUSE_BYTES = 256 << 10  # free pages in the database worth trying a group again


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full file system gives (SQLite or the OS)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
            return True
        return "disk is full" in str(exc)
    return False


class DiskGuard:
    """The disk-full state of one data directory. Methods run on the store thread."""

    def __init__(self, data_dir: Path, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.data_dir = data_dir
        self.reserve_path = data_dir / "space-reserve"
        self.reserve_bytes = reserve_bytes
        self.full = False
        self.since: float | None = None
        self.episodes = 0
        self._last_check = 0.0
        self.reserve_ok = False  # the reserve file is there, full size

    def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_reserve()

    def failed(self, exc: BaseException) -> bool:
        """A store write failed; True if the disk is full (the state begins or goes on)."""
        if not is_disk_full(exc):
            return False
        if not self.full:
            self.full = True
            self.since = time.time()
            self.episodes += 1
            log.error(
                "the data file system is full (%s): readings are left with the site broker "
                "(not acknowledged) until space returns; forwarding goes on",
                exc,
            )
        self._release_reserve()
        return True

    def may_retry(self, free_pages_bytes: int) -> bool:
        """While full: is there room for a group without using the reserve's space?"""
        if not self.full:
            return True
        if free_pages_bytes >= REUSE_BYTES:
            return True
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            return False
        return free > (1 if self.reserve_ok else 2) * self.reserve_bytes

    def committed(self) -> None:
        """A group commit succeeded: the state ends; the reserve comes back when there is room."""
        if self.full:
            log.warning(
                "the store can write again after %.0f s of a full disk",
                time.time() - (self.since or time.time()),
            )
            self.full = False
            self.since = None
        now = time.monotonic()
        if now - self._last_check >= 5.0:
            self._last_check = now
            self._write_reserve()

    def _release_reserve(self) -> None:
        self.reserve_ok = False
        try:
            self.reserve_path.unlink()
            log.warning("released the %d-byte space reserve for the forwarder", self.reserve_bytes)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot release the space reserve %s: %s", self.reserve_path, exc)

    def _write_reserve(self) -> None:
        try:
            if self.reserve_path.stat().st_size >= self.reserve_bytes:
                self.reserve_ok = True
                return
        except OSError:
            pass
        try:
            if shutil.disk_usage(self.data_dir).free < 2 * self.reserve_bytes:
                return
        except OSError:
            return
        tmp = self.reserve_path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.writelines(b"\0" * 65536 for _ in range(self.reserve_bytes // 65536))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.reserve_path)
            self.reserve_ok = True
        except OSError:
            tmp.unlink(missing_ok=True)
