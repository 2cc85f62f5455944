"""Part of the store: readings counted per device and sample-time bucket, for completeness
(kept across restarts; the status page and ``cityedge report completeness`` read them)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from edge_gateway.store.part import StorePart
from edge_gateway.store.schema import SAMPLE_BUCKET_S, SAMPLE_DAY_S


class Completeness(StorePart):
    """Part of :class:`edge_gateway.store.Store` (a mixin)."""

    def _count_samples(self, samples: Sequence[tuple[str, float]]) -> None:
        """Per device and 10-minute bucket of sample time, how many new readings; and each
        device's first sample time (meta ``first_sample:<device>``)."""
        per: dict[tuple[str, int], int] = defaultdict(int)
        first: dict[str, float] = {}
        for dev, t in samples:
            per[(dev, int(t // SAMPLE_BUCKET_S) * SAMPLE_BUCKET_S)] += 1
            first[dev] = min(t, first.get(dev, t))
        for (dev, bucket), n in per.items():
            self.db.execute(
                "INSERT INTO samples(device_id, bucket, n) VALUES(?, ?, ?) "
                "ON CONFLICT(device_id, bucket) DO UPDATE SET n = n + excluded.n",
                (dev, bucket, n),
            )
        for dev, t in first.items():
            self.db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET "
                "value = excluded.value WHERE CAST(excluded.value AS REAL) < CAST(value AS REAL)",
                (f"first_sample:{dev}", repr(float(t))),
            )

    def sample_counts(self, now: float) -> tuple[dict[str, dict[int, int]], dict[str, float]]:
        """Readings per device and sample-time bucket of the last 24 h, and first sample times
        (what completeness is computed from; kept across restarts)."""
        counts: dict[str, dict[int, int]] = defaultdict(dict)
        for dev, bucket, n in self.db.execute(
            "SELECT device_id, bucket, n FROM samples WHERE bucket > ?", (now - SAMPLE_DAY_S,)
        ):
            counts[str(dev)][int(bucket)] = int(n)
        firsts = {
            str(k).removeprefix("first_sample:"): float(v)
            for k, v in self.db.execute(
                "SELECT key, value FROM meta WHERE key LIKE 'first_sample:%'"
            )
        }
        return dict(counts), firsts
