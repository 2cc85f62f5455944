"""The de-duplication memory of the store: committed sequence numbers as ranges."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge_gateway.store.schema import SAMPLE_BUCKET_S, SAMPLE_DAY_S

if TYPE_CHECKING:
    from edge_gateway.store.part import StorePart
else:
    StorePart = object

MAX_RANGES = 4096  # per (device, boot); beyond it the oldest ranges are forgotten
MAX_BOOTS = 8  # per device; beyond it the oldest boot's ranges are forgotten (bounded memory)


class SeenRanges:
    """Sequence numbers of one (device, boot) as sorted, disjoint, non-adjacent [lo, hi] ranges.

    Gaps (readings a node dropped, or not yet resent) keep their own ranges. If a boot ever has
    more than ``MAX_RANGES`` gaps, the oldest ranges are forgotten: a very late copy of such a
    reading is then taken as new (a possible duplicate upstream, never a loss).
    """

    __slots__ = ("his", "los")

    def __init__(self, ranges: list[list[int]] | None = None) -> None:
        self.los: list[int] = [r[0] for r in ranges or []]
        self.his: list[int] = [r[1] for r in ranges or []]

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self.los, seq) - 1
        return i >= 0 and seq <= self.his[i]

    def add(self, seq: int) -> None:
        i = bisect.bisect_right(self.los, seq) - 1  # the range starting at or before seq
        if i >= 0 and seq <= self.his[i]:
            return
        joins_left = i >= 0 and self.his[i] == seq - 1
        joins_right = i + 1 < len(self.los) and self.los[i + 1] == seq + 1
        if joins_left and joins_right:
            self.his[i] = self.his[i + 1]
            del self.los[i + 1], self.his[i + 1]
        elif joins_left:
            self.his[i] = seq
        elif joins_right:
            self.los[i + 1] = seq
        else:
            self.los.insert(i + 1, seq)
            self.his.insert(i + 1, seq)
            if len(self.los) > MAX_RANGES:
                del self.los[0], self.his[0]

    def dumps(self) -> str:
        return json.dumps(
            [[lo, hi] for lo, hi in zip(self.los, self.his, strict=True)], separators=(",", ":")
        )


class DedupMemory(StorePart):
    """Part of :class:`edge_gateway.store.Store`: which (device, boot, seq) were committed,
    mirrored in memory from ``seen_ranges`` (one row per device and boot)."""

    def is_new(self, keys: Iterable[tuple[str, int, int]]) -> list[bool]:
        """Which of these keys have not been committed before (memory only, no I/O)."""
        out = []
        for dev, boot, seq in keys:
            ranges = self.seen.get((dev, boot))
            out.append(ranges is None or seq not in ranges)
        return out

    def _remember(self, key: tuple[str, int, int], dirty: set[tuple[str, int]]) -> bool:
        """Add a key to the de-duplication memory; False if it was there already."""
        dev, boot, seq = key
        ranges = self.seen.get((dev, boot))
        if ranges is None:
            self._new_boot(dev, boot, dirty)
            ranges = self.seen[(dev, boot)] = SeenRanges()
        elif seq in ranges:
            return False
        ranges.add(seq)
        dirty.add((dev, boot))
        return True

    def _new_boot(self, dev: str, boot: int, dirty: set[tuple[str, int]]) -> None:
        """Inside a transaction: a boot not seen before; forget the device's oldest boot beyond
        ``MAX_BOOTS`` (a very late copy of one of its readings is then taken as new)."""
        boots = self._boots.setdefault(dev, [])
        bisect.insort(boots, boot)
        while len(boots) > MAX_BOOTS:
            old = boots.pop(0) if boots[0] != boot else boots.pop(1)
            self.seen.pop((dev, old), None)
            dirty.discard((dev, old))
            self.db.execute("DELETE FROM seen_ranges WHERE device_id = ? AND boot = ?", (dev, old))

    def prune_seen(self, now: float) -> int:
        """Forget the sequence ranges of boots not heard of for ``dedup_horizon_s`` (and
        completeness buckets older than a day)."""
        self.db.execute(
            "DELETE FROM samples WHERE bucket <= ?", (now - SAMPLE_DAY_S - SAMPLE_BUCKET_S,)
        )
        cutoff = now - self.limits.dedup_horizon_s
        gone = self.db.execute(
            "DELETE FROM seen_ranges WHERE updated < ? RETURNING device_id, boot", (cutoff,)
        ).fetchall()
        for dev, boot in gone:
            self.seen.pop((str(dev), int(boot)), None)
            boots = self._boots.get(str(dev))
            if boots is not None and int(boot) in boots:
                boots.remove(int(boot))
                if not boots:
                    del self._boots[str(dev)]
        return len(gone)
