"""`cityedge report completeness` against known gaps: a node off for 6 hours, a node in
maintenance for a day, a node that never reported — exact percentages, per day and month."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from edge_gateway.config import GatewayConfig
from edge_gateway.status import StatusFeed
from edge_gateway.status.history import TZ
from edge_gateway.status.report import compute, month_percent

FULL, GAPPY, MAINT, NEVER = (
    "ce-00000000d001",
    "ce-00000000d002",
    "ce-00000000d003",
    "ce-00000000d004",
)
REPORT_S = 600  # 144 readings a Bangkok day


def _t(day: int, hour: float = 0.0) -> float:
    return datetime(2026, 11, day, tzinfo=TZ).timestamp() + hour * 3600


def _site_files(tmp_path: Path) -> tuple[Path, GatewayConfig]:
    """The gateway's TOML (for the CLI) and the same config as an object."""
    text = (
        f'gateway_id = "gw-report-01"\nsite_id = "report-school-01"\n'
        f'data_dir = "{tmp_path}"\n[inventory]\ndefault_report_s = {REPORT_S}\n'
    )
    for dev, name in (
        (FULL, "always on"),
        (GAPPY, "off 6 h"),
        (MAINT, "maintained"),
        (NEVER, "never reported"),
    ):
        text += f'[[inventory.device]]\nid = "{dev}"\nkind = "air"\nname = "{name}"\n'
    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text(text)
    config = GatewayConfig.from_dict(
        {
            "gateway_id": "gw-report-01",
            "site_id": "report-school-01",
            "data_dir": str(tmp_path),
            "inventory": {
                "default_report_s": REPORT_S,
                "device": [{"id": d, "kind": "air"} for d in (FULL, GAPPY, MAINT, NEVER)],
            },
        }
    )
    return cfg_path, config


def _november_with_known_gaps(config: GatewayConfig, now: float) -> None:
    """Every reading of November into the history, but GAPPY's first 6 h of the 10th; MAINT in
    maintenance on the 15th; NEVER silent."""
    feed = StatusFeed(config)
    feed.open_store()
    seq = 0
    for day in range(1, 31):
        if day == 15:
            feed.start_maintenance(MAINT, 24, "mast repainted", now=_t(15))
        for k in range(144):
            t = _t(day) + k * REPORT_S + 7
            for dev in (FULL, GAPPY, MAINT):
                if dev == GAPPY and day == 10 and t < _t(10, 6):
                    continue  # off from midnight to 06:00 on 10 November
                # (the maintained node keeps sending on the 15th: not counted)
                feed.observation(
                    {
                        "device_id": dev,
                        "kind": "air",
                        "t": t,
                        "boot": 1,
                        "seq": seq,
                        "calibrated": {},
                    },
                    t + 1,
                )
                seq += 1
        feed.drain(now)
    feed.flush(now)


def _report_cli(
    cfg_path: Path, month: str, *more: str, timeout: int
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "report",
            "completeness",
            "--config",
            str(cfg_path),
            "--site",
            "report-school-01",
            "--month",
            month,
            *more,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _check_rows(config: GatewayConfig, now: float) -> None:
    rows = compute(config, "2026-11", now=now)
    by = {(r.device_id, r.day): r for r in rows}
    assert len(rows) == 4 * 30
    full = [r for r in rows if r.device_id == FULL]
    assert all((r.expected, r.received, r.percent) == (144, 144, 100.0) for r in full)
    gap = by[(GAPPY, "2026-11-10")]
    assert (gap.expected, gap.received, gap.percent) == (144, 108, 75.0)
    assert by[(GAPPY, "2026-11-11")].percent == 100.0
    m = by[(MAINT, "2026-11-15")]
    assert (m.expected, m.received, m.percent, m.note) == (0, 0, None, "maintenance")
    assert by[(MAINT, "2026-11-14")].percent == 100.0 and by[(MAINT, "2026-11-16")].percent == 100.0
    never = [r for r in rows if r.device_id == NEVER]
    assert all(
        (r.expected, r.received, r.percent, r.note) == (144, 0, 0.0, "no data") for r in never
    )
    assert month_percent(full) == 100.0
    assert month_percent([r for r in rows if r.device_id == GAPPY]) == 99.2  # 4284 / 4320
    assert month_percent([r for r in rows if r.device_id == MAINT]) == 100.0  # 29 days
    assert month_percent(never) == 0.0


def test_completeness_report_counts_gaps_maintenance_and_silence_exactly(tmp_path: Path) -> None:
    cfg_path, config = _site_files(tmp_path)
    now = _t(30, 24 + 36)  # 2 December, noon: the whole of November is past
    _november_with_known_gaps(config, now)
    _check_rows(config, now)

    out = tmp_path / "out"
    run = _report_cli(cfg_path, "2026-11", "--out", str(out), timeout=120)
    assert run.returncode == 0, run.stderr
    stem = out / "completeness-report-school-01-2026-11"
    with open(f"{stem}.csv", newline="") as f:
        table = {(r["device_id"], r["day"]): r for r in csv.DictReader(f)}
    assert table[(GAPPY, "2026-11-10")]["percent"] == "75.0"
    assert table[(MAINT, "2026-11-15")]["note"] == "maintenance"
    assert table[(MAINT, "2026-11-15")]["percent"] == ""
    assert table[(NEVER, "2026-11-03")]["percent"] == "0.0"
    png = Path(f"{stem}.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    html = Path(f"{stem}.html").read_text()
    assert "data:image/png;base64," in html and "99.2 %" in html

    wrong = _report_cli(cfg_path, "November", timeout=60)
    assert wrong.returncode != 0 and "YYYY-MM" in wrong.stderr + wrong.stdout
