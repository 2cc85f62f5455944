"""`cityedge report completeness --site … --month 2026-11`: how complete a site's data was,
per device per Bangkok day, from the gateway's own store (``<data_dir>/history.sqlite``: its
ten-minute counts of readings by *sample* time, and its maintenance windows).

* expected = (86 400 s − the day's maintenance seconds) ÷ the device's cadence, rounded;
* received = readings whose sample time falls in the day, outside maintenance (a ten-minute
  bucket at least half inside a maintenance window is left out);
* percent = received ÷ expected; a day with no data is **0 %** (never "missing"); a day wholly
  in maintenance has expected 0 and is shown apart (``maintenance``), not as a gap;
* the month figure caps each day at 100 % (extra alarm-driven readings must not hide a gap).

Writes a CSV, a PNG heatmap (devices × days; matplotlib from the ``fit`` extra) and a one-page
HTML summary with the heatmap inside, for a city's renewal file.
"""

from __future__ import annotations

import base64
import csv
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_gateway.status import liveness
from edge_gateway.status.history import BUCKET_S, BUCKETS, counts_from_db, day_start, open_db

if TYPE_CHECKING:
    from edge_gateway.config import GatewayConfig


@dataclass
class DayRow:
    device_id: str
    name: str
    day: str
    expected: int
    received: int
    maintenance_s: float

    @property
    def percent(self) -> float | None:
        return None if self.expected == 0 else round(100.0 * self.received / self.expected, 1)

    @property
    def note(self) -> str:
        if self.expected == 0:
            return "maintenance"
        if self.maintenance_s > 0:
            return "part maintenance"
        return "no data" if self.received == 0 else ""


def month_days(month: str) -> list[str]:
    try:
        y, m = (int(x) for x in month.split("-"))
        first = date(y, m, 1)
    except ValueError:
        raise ValueError(f"--month {month!r} is not YYYY-MM (e.g. 2026-11)") from None
    out = []
    d = first
    while d.month == first.month:
        out.append(d.isoformat())
        d = date.fromordinal(d.toordinal() + 1)
    return out


def _windows(db: sqlite3.Connection) -> dict[str, list[tuple[float, float | None]]]:
    out: dict[str, list[tuple[float, float | None]]] = {}
    for dev, start, end in db.execute("SELECT device_id, start, end FROM maintenance"):
        out.setdefault(dev, []).append((float(start), None if end is None else float(end)))
    return out


def _overlap(wins: list[tuple[float, float | None]], lo: float, hi: float) -> float:
    total = 0.0
    for a, b in wins:
        total += max(0.0, min(hi, b if b is not None else hi) - max(lo, a))
    return min(total, hi - lo)


def compute(config: GatewayConfig, month: str, now: float | None = None) -> list[DayRow]:
    now = time.time() if now is None else now
    path = Path(config.data_dir) / "history.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no history here (is data_dir the gateway's?)")
    db = open_db(path, readonly=True)
    try:
        docs: dict[str, dict[str, Any]] = {}
        for dev, doc in db.execute("SELECT device_id, doc FROM devices"):
            try:
                docs[dev] = json.loads(doc)
            except ValueError:
                docs[dev] = {}
        ids = sorted({e.id for e in config.inventory.device} | set(docs))
        windows = _windows(db)
        rows: list[DayRow] = []
        for dev in ids:
            entry = config.device(dev)
            doc = docs.get(dev, {})
            status = doc.get("status") or {}
            cadence = liveness.cadence_s(
                doc.get("kind") or (entry.kind if entry else None),
                status.get("intervals"),
                entry.report_s if entry else None,
                config.inventory.default_report_s,
            )
            wins = windows.get(dev, [])
            for day in month_days(month):
                start = day_start(day)
                if start >= now:
                    break
                end = min(start + 86400, now)
                maint = _overlap(wins, start, end)
                expected = max(0, round((end - start - maint) / cadence))
                counts = counts_from_db(db, dev, day)
                received = 0
                if counts is not None:
                    for i in range(BUCKETS):
                        t0 = start + i * BUCKET_S
                        if counts[i] and _overlap(wins, t0, t0 + BUCKET_S) < BUCKET_S / 2:
                            received += counts[i]
                name = (entry.name if entry and entry.name else "") or ""
                rows.append(DayRow(dev, name, day, expected, received, maint))
        return rows
    finally:
        db.close()


def month_percent(rows: list[DayRow]) -> float | None:
    exp = sum(r.expected for r in rows)
    if exp == 0:
        return None
    return round(100.0 * sum(min(r.received, r.expected) for r in rows) / exp, 1)


def write_csv(rows: list[DayRow], path: Path, site: str) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "site_id",
                "device_id",
                "name",
                "day",
                "expected",
                "received",
                "percent",
                "maintenance_s",
                "note",
            ]
        )
        for r in rows:
            w.writerow(
                [
                    site,
                    r.device_id,
                    r.name,
                    r.day,
                    r.expected,
                    r.received,
                    "" if r.percent is None else f"{r.percent:.1f}",
                    int(r.maintenance_s),
                    r.note,
                ]
            )


def write_png(rows: list[DayRow], path: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the heatmap needs matplotlib: pip install 'cityedge[fit]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted({r.device_id for r in rows})
    days = sorted({r.day for r in rows})
    grid = [[float("nan")] * len(days) for _ in devices]
    maint: list[tuple[int, int]] = []
    for r in rows:
        i, j = devices.index(r.device_id), days.index(r.day)
        if r.percent is None:
            maint.append((i, j))
        else:
            grid[i][j] = min(100.0, r.percent)
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.32 * len(days) + 3), max(2.0, 0.4 * len(devices) + 1.5))
    )
    cmap = plt.get_cmap("RdYlGn").copy()
    cmap.set_bad("#9ab8e0")  # maintenance: blue, apart from the red-to-green scale
    im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, vmax=100, interpolation="nearest")
    for i, j in maint:
        ax.text(j, i, "M", ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(devices)), devices, fontsize=8)
    ax.set_xticks(range(len(days)), [d[-2:] for d in days], fontsize=7)
    ax.set_xlabel("day (Asia/Bangkok)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="% of expected readings")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_html(rows: list[DayRow], path: Path, png: Path | None, site: str, month: str) -> None:
    from edge_gateway.status.render import esc

    by_dev: dict[str, list[DayRow]] = {}
    for r in rows:
        by_dev.setdefault(r.device_id, []).append(r)
    lines = []
    for dev, rs in by_dev.items():
        mp = month_percent(rs)
        lines.append(
            f"<tr><td>{esc(dev)}</td><td>{esc(rs[0].name)}</td>"
            f"<td>{'–' if mp is None else f'{mp:.1f} %'}</td>"
            f"<td>{sum(1 for r in rs if r.note == 'no data')}</td>"
            f"<td>{sum(1 for r in rs if r.note == 'maintenance')}</td>"
            f"<td>{sum(1 for r in rs if r.percent is not None and r.percent < 90)}</td></tr>"
        )
    img = ""
    if png is not None and png.exists():
        img = (
            '<img alt="heatmap" style="max-width:100%" src="data:image/png;base64,'
            + base64.b64encode(png.read_bytes()).decode()
            + '">'
        )
    total = month_percent(rows)
    text = (
        '<!doctype html><html lang="th"><head><meta charset="utf-8"><title>'
        f"Completeness {esc(site)} {esc(month)}</title><style>body{{font-family:sans-serif;"
        "max-width:60em;margin:1em auto}td,th{border-bottom:1px solid #ccc;padding:.2em .5em}"
        "</style></head><body>"
        f"<h1>ความครบถ้วนของข้อมูล / Data completeness: {esc(site)}, {esc(month)}</h1>"
        f"<p>Site total: <b>{'–' if total is None else f'{total:.1f} %'}</b> of expected "
        "readings (days wholly in maintenance left out; a day with no data counts 0 %). "
        "Counted by sample time, Asia/Bangkok days, from the site gateway's store.</p>"
        "<table><tr><th>device</th><th>name</th><th>month</th><th>days with no data</th>"
        f"<th>maintenance days</th><th>days under 90 %</th></tr>{''.join(lines)}</table>"
        f"{img}<p>Generated {esc(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))} by "
        "cityedge report completeness.</p></body></html>"
    )
    path.write_text(text, encoding="utf-8")
