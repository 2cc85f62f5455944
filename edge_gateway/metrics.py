"""The gateway's figures: ONE table (:data:`METRICS`) drives ``Gateway.stats()``, the Prometheus
endpoint and the retained health message.

Adding a figure is one line in :data:`METRICS` (and the ``+= 1`` where it happens):

    Metric("disk_full", "disk_full_total", "counter", "commits refused: disk full", "saved",
           health=True),

``source`` says where the value lives:

* ``store``: a counter the store updates in the same transaction as the rows it counts
  (``Store.counters``; exact across crashes);
* ``saved``: a counter the event loop increments (``Gateway.counters[key] += 1``) and the
  gateway writes to the store's ``counters`` table every few seconds and at a clean stop, so
  it survives restarts (use it for anything that signals loss or trouble);
* ``process``: a counter of this process only (since the start);
* ``given``: a value the gateway computes when asked (gauges, the offline time).

A metric with ``reasons`` is one labelled counter: its per-reason counts are the counters named
``<counter_prefix><reason>``, every known reason is exported at 0 from the start (so an
``increase()`` alert sees the first event), ``stats()[key]`` is the dict by reason and
``stats()[total]`` the sum. Names follow the Prometheus conventions: base unit last
(``_seconds``, ``_bytes``), ``_total`` on counters, no NaN (an empty queue's oldest age is 0).

``GET /metrics`` (:mod:`edge_gateway.prometheus`) renders the same table in the text format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_gateway.ingest import REASON_CODES
from edge_gateway.store import DROP_REASONS

PREFIX = "cityedge_gateway_"


@dataclass(frozen=True)
class Metric:
    key: str  # the stats() key
    name: str  # the Prometheus name, after PREFIX
    kind: str  # "counter" or "gauge"
    help: str
    source: str  # "store", "saved", "process" or "given" (see the module docstring)
    health: bool = False  # also in the retained gateway health message
    reasons: tuple[str, ...] = ()  # a counter labelled {reason}: the known reasons
    counter_prefix: str = ""  # ... counted as <counter_prefix><reason>
    total: str | None = None  # ... and stats()[total] = their sum


DEAD_LETTER_REASONS = (*REASON_CODES, "processing", "too_many_devices", "quarantined")

METRICS: tuple[Metric, ...] = (
    Metric(
        "messages_in",
        "messages_received_total",
        "counter",
        "MQTT messages received from nodes",
        "process",
    ),
    Metric(
        "readings_in",
        "readings_received_total",
        "counter",
        "valid node readings received (duplicates included)",
        "process",
    ),
    Metric(
        "readings_stored",
        "readings_stored_total",
        "counter",
        "readings committed to the store (new ones)",
        "store",
    ),
    Metric(
        "alerts_stored", "alerts_stored_total", "counter", "alerts committed to the store", "store"
    ),
    Metric(
        "duplicates",
        "duplicates_total",
        "counter",
        "readings de-duplicated on (device_id, boot, seq)",
        "store",
        health=True,
    ),
    Metric(
        "readings_out",
        "readings_forwarded_total",
        "counter",
        "observations completed by the platform broker (PUBCOMP)",
        "process",
    ),
    Metric(
        "replayed_out",
        "readings_replayed_total",
        "counter",
        "observations completed with replay true (backlog after an outage)",
        "process",
    ),
    Metric(
        "alerts_out",
        "alerts_forwarded_total",
        "counter",
        "alerts completed by the platform broker (PUBCOMP)",
        "process",
    ),
    Metric(
        "alerts_raised",
        "alerts_raised_total",
        "counter",
        "alerts raised or cleared by processing",
        "process",
    ),
    Metric(
        "delivered",
        "rows_delivered_total",
        "counter",
        "stored rows deleted after the platform broker completed them",
        "store",
    ),
    Metric(
        "custody_acks",
        "custody_acks_total",
        "counter",
        "custody acknowledgements sent to nodes",
        "process",
    ),
    Metric(
        "command_acks",
        "command_acks_total",
        "counter",
        "command acknowledgements received from nodes",
        "process",
    ),
    Metric(
        "dropped",
        "dropped_total",
        "counter",
        "stored rows dropped by the store bounds, by reason",
        "store",
        health=True,
        reasons=DROP_REASONS,
        counter_prefix="dropped_",
        total="dropped_total",
    ),
    Metric(
        "dead_letters_by_reason",
        "dead_letters_total",
        "counter",
        "messages refused (sent to the dead-letter topic), by reason",
        "saved",
        health=True,
        reasons=DEAD_LETTER_REASONS,
        counter_prefix="dead_letter_",
        total="dead_letters",
    ),
    Metric(
        "processing_errors",
        "processing_errors_total",
        "counter",
        "readings whose processing failed (kept as dead letters)",
        "store",
        health=True,
    ),
    Metric(
        "calibration_errors",
        "calibration_errors_total",
        "counter",
        "calibrations that failed (the raw value passed through)",
        "store",
        health=True,
    ),
    Metric(
        "store_errors",
        "store_errors_total",
        "counter",
        "group commits that failed (the readings were not acknowledged)",
        "saved",
        health=True,
    ),
    Metric(
        "upstream_sessions_lost",
        "upstream_sessions_lost_total",
        "counter",
        "reconnects where the platform broker had lost the session with messages pending",
        "saved",
        health=True,
    ),
    Metric(
        "upstream_offline_s",
        "upstream_offline_seconds_total",
        "counter",
        "seconds without a platform connection since the start",
        "given",
        health=True,
    ),
    Metric(
        "queue_depth",
        "queue_depth",
        "gauge",
        "rows waiting for the platform broker",
        "given",
        health=True,
    ),
    Metric("queue_bytes", "queue_bytes", "gauge", "stored bytes of the waiting rows", "given"),
    Metric(
        "oldest_age_s",
        "queue_oldest_age_seconds",
        "gauge",
        "age of the oldest waiting row (0 when none waits)",
        "given",
        health=True,
    ),
    Metric(
        "store_file_bytes", "store_file_bytes", "gauge", "size of the store files on disk", "given"
    ),
    Metric(
        "upstream_connected",
        "upstream_connected",
        "gauge",
        "1 when connected to the platform broker",
        "given",
    ),
    Metric(
        "local_connected",
        "local_connected",
        "gauge",
        "1 when subscribed on the site broker",
        "given",
    ),
    Metric(
        "last_commit_s",
        "last_commit_duration_seconds",
        "gauge",
        "duration of the last group commit",
        "given",
    ),
    Metric(
        "devices", "devices", "gauge", "devices heard from since the start", "given", health=True
    ),
    Metric("ready", "ready", "gauge", "1 once the store is open and the gateway runs", "given"),
    Metric(
        "disk_full",
        "disk_full",
        "gauge",
        "1 while the data file system is full (readings wait at the site broker)",
        "given",
        health=True,
    ),
    Metric(
        "quarantined",
        "quarantined_total",
        "counter",
        "readings dead-lettered from quarantine (in hand at two process deaths)",
        "saved",
        health=True,
    ),
    Metric(
        "quarantined_new",
        "quarantine_entries_total",
        "counter",
        "readings put in quarantine at a start of this process",
        "process",
    ),
    Metric(
        "held",
        "readings_held_total",
        "counter",
        "readings held behind a (boot, seq) gap until it filled or timed out",
        "store",
    ),
    Metric(
        "late",
        "readings_late_total",
        "counter",
        "readings sent marked late (their gap did not fill in time)",
        "store",
    ),
    Metric(
        "dead_letters_unpublished",
        "dead_letters_unpublished_total",
        "counter",
        "dead letters counted but not published (rate limit)",
        "saved",
    ),
)

BY_KEY = {m.key: m for m in METRICS}


# The counters that signal loss or trouble: kept in the store (source "store" or "saved"), so
# they survive restarts and show in `cityedge gateway stats` (tests/gateway/test_metrics.py).
TROUBLE = (
    "dropped",
    "dead_letters_by_reason",
    "dead_letters_unpublished",
    "processing_errors",
    "calibration_errors",
    "store_errors",
    "upstream_sessions_lost",
    "quarantined",
)

_KEPT_IN = {"store": "store", "saved": "store (saved)", "process": "process", "given": "—"}


def docs_table() -> str:
    """The metrics table of docs/gateway.md, made from :data:`METRICS` (a test keeps the page
    equal to it)."""
    lines = [
        "| metric | type | `stats()` key | kept in | health | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        name = f"`{PREFIX}{m.name}{'{reason}' if m.reasons else ''}`"
        key = f"`{m.key}`" + (f" (sum: `{m.total}`)" if m.total else "")
        health = "✓" if m.health else ""
        lines.append(f"| {name} | {m.kind} | {key} | {_KEPT_IN[m.source]} | {health} | {m.help} |")
    return "\n".join(lines) + "\n"


def saved_counter(name: str) -> bool:
    """True for the loop-side counters the gateway writes to the store (``source = saved``)."""
    for m in METRICS:
        if m.source == "saved" and (
            name == m.key if not m.reasons else name.startswith(m.counter_prefix)
        ):
            return True
    return False


def collect(
    counters: Mapping[str, int], stored: Mapping[str, int], given: Mapping[str, Any]
) -> dict[str, Any]:
    """The stats dict: every metric of the table from its source. ``counters`` are the event
    loop's (``process`` and ``saved`` ones), ``stored`` the store's, ``given`` the computed."""
    out: dict[str, Any] = {}
    for m in METRICS:
        src: Mapping[str, Any] = (
            stored if m.source == "store" else given if m.source == "given" else counters
        )
        if m.reasons:
            by = {r: 0 for r in m.reasons}
            for name, n in src.items():
                if name.startswith(m.counter_prefix):
                    by[name.removeprefix(m.counter_prefix)] = int(n)
            out[m.key] = by
            if m.total:
                out[m.total] = sum(by.values())
        else:
            out[m.key] = src.get(m.key, None if m.source == "given" else 0)
    return out


def health(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the retained health message carries (the metrics marked ``health``)."""
    out: dict[str, Any] = {}
    for m in METRICS:
        if m.health:
            out[m.key] = stats.get(m.key)
            if m.total:
                out[m.total] = stats.get(m.total)
    return out
