"""The store's bounds: size, age and the free-disk floor, enforced by dropping rows — the
lowest priority and oldest first, never a row the platform broker may hold (it has a packet id)
or one being forwarded (leased). Each drop is counted by reason (``dropped_<reason>``)."""

from __future__ import annotations

import shutil
import time

from edge_gateway.store.part import StorePart
from edge_gateway.store.schema import (
    PRIORITY_ALERT,
    PRIORITY_ALERT_READING,
    PRIORITY_READING,
)


class Bounds(StorePart):
    """Part of :class:`edge_gateway.store.Store` (a mixin): it runs on the store thread, inside
    the store's transactions."""

    def _evict(self, reason: str, n_rows: int | None, bytes_over: int | None) -> int:
        """Delete the lowest-priority, oldest rows (never leased ones); count them."""
        db = self.db
        dropped = 0
        freed = 0
        while True:
            if n_rows is not None and dropped >= n_rows:
                break
            if bytes_over is not None and freed >= bytes_over:
                break
            want = 256 if n_rows is None else min(256, n_rows - dropped)
            rows = []
            for priority in (PRIORITY_READING, PRIORITY_ALERT_READING, PRIORITY_ALERT):
                # Rowid order: the oldest rows of the lowest priority go first.
                # Rows with a packet id are never dropped: the platform broker may hold them
                # (exactly once means finishing their handshake), and they are few.
                found = db.execute(
                    "SELECT id, size, device_id FROM queue WHERE priority = ? AND mid IS NULL "
                    "ORDER BY id LIMIT ?",
                    (priority, want + len(self.leased)),
                ).fetchall()
                rows = [r for r in found if r[0] not in self.leased][:want]
                if rows:
                    break
            if not rows:
                break
            for rid, size, _dev in rows:
                if bytes_over is not None and freed >= bytes_over:
                    break
                if n_rows is not None and dropped >= n_rows:
                    break
                db.execute("DELETE FROM queue WHERE id=?", (rid,))
                freed += int(size)
                dropped += 1
        self.bytes -= freed
        self.depth -= dropped
        self._bump(f"dropped_{reason}", dropped)
        return dropped

    def _enforce_bounds(self, now: float, inserted: int) -> dict[str, int]:
        dropped: dict[str, int] = {}
        lim = self.limits
        if now - self._last_age_check >= 1.0:
            self._last_age_check = now
            n = self._drop_old(now - lim.max_age_s)
            if n:
                dropped["max_age"] = n
        if self.bytes > lim.max_bytes:
            n = self._evict("max_bytes", None, self.bytes - lim.max_bytes)
            if n:
                dropped["max_bytes"] = n
        if inserted and lim.min_free_bytes and self.free_bytes() < lim.min_free_bytes:
            # Below the free-disk floor the store must not grow: every row added pushes out one
            # old row, and SQLite reuses the freed pages.
            n = self._evict("disk_floor", inserted, None)
            if n:
                dropped["disk_floor"] = n
        return dropped

    def _drop_old(self, cutoff: float) -> int:
        """Drop rows received before ``cutoff``. Rows are stored in time order, so this reads
        from the oldest end and stops at the first young row: no scan of the whole table."""
        db = self.db
        dropped = 0
        after = 0
        while True:
            rows = db.execute(
                "SELECT id, size, received, mid FROM queue WHERE id > ? ORDER BY id LIMIT 512",
                (after,),
            ).fetchall()
            old = [(rid, size, mid) for rid, size, received, mid in rows if received < cutoff]
            doomed = [
                (rid, size) for rid, size, mid in old if rid not in self.leased and mid is None
            ]
            if doomed:
                db.executemany("DELETE FROM queue WHERE id=?", [(rid,) for rid, _ in doomed])
                self.bytes -= sum(int(size) for _, size in doomed)
                self.depth -= len(doomed)
                dropped += len(doomed)
            if len(old) < len(rows) or not rows:
                break
            after = rows[-1][0]
        self._bump("dropped_max_age", dropped)
        return dropped

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return 0

    def enforce(self, now: float | None = None) -> dict[str, int]:
        """Apply the bounds without inserting (e.g. after a reload shrank them)."""
        now = time.time() if now is None else now
        self._last_age_check = 0.0
        with self.transaction(mirrors=False):
            return self._enforce_bounds(now, 0)
