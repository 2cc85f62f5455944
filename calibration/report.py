"""Reports for a collocation fit: a rich terminal table and a PNG figure (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a gateway or CI runner

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rich import box
from rich.table import Table

from calibration.fit import EPA_TARGETS, Array, FitResult, Metrics

__all__ = ["metrics_table", "write_png"]


def _mark(ok: bool) -> str:
    return "[green]✓[/green]" if ok else "[red]✗[/red]"


def _cells(m: Metrics | None) -> list[str]:
    if m is None:
        return ["—"] * 5
    ok = m.meets()
    return [
        f"{m.r2:.3f} {_mark(ok['r2'])}",
        f"{m.slope:.3f} {_mark(ok['slope'])}",
        f"{m.intercept:+.2f} {_mark(ok['intercept'])}",
        f"{m.rmse:.2f} {_mark(ok['rmse'])}",
        f"{m.mae:.2f}",
    ]


def metrics_table(result: FitResult) -> Table:
    """Each model (and the raw sensor) against the EPA targets on 24-h means, plus the hourly
    R² and the cross-validated hourly RMSE the recommendation uses. ★ marks the choice."""
    t = EPA_TARGETS
    days = result.chosen.daily.n if result.chosen.daily else 0
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=(
            f"{result.device_id} {result.quantity} vs {result.station}, "
            f"{result.paired.hours[0]:%Y-%m-%d} – {result.paired.hours[-1]:%Y-%m-%d} UTC: "
            f"{len(result.paired.hours)} h, {days} days paired"
        ),
        caption=(
            f"R², slope, intercept, RMSE, MAE on 24-h means (µg/m³); EPA 2021 targets: "
            f"R² ≥ {t.r2_min}, slope {t.slope_lo}–{t.slope_hi}, |intercept| ≤ "
            f"{t.intercept_abs_max}, RMSE ≤ {t.rmse_max}. CV: hourly RMSE, day-blocked 5-fold cross-validation."
        ),
    )
    for col in ("model", "R²", "slope", "intercept", "RMSE", "MAE", "1h R²", "CV"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    table.add_row("raw", *_cells(result.raw_daily), f"{result.raw_hourly.r2:.3f}", "—")
    for c in result.candidates:
        name = f"[bold]{c.form} ★[/bold]" if c is result.chosen else c.form
        table.add_row(name, *_cells(c.daily), f"{c.hourly.r2:.3f}", f"{c.cv_rmse:.2f}")
    return table


def _plot_one_to_one(
    fig: Figure, ax_raw: Axes, ax_cal: Axes, result: FitResult, cal: Array
) -> None:
    """Raw and calibrated against the reference, coloured by RH, with a 1:1 line."""
    p = result.paired
    top = float(max(p.raw.max(), p.reference.max(), cal.max())) * 1.05
    for ax, y, title, m in (
        (ax_raw, p.raw, f"Raw {result.channel} vs reference", result.raw_hourly),
        (ax_cal, cal, f"Calibrated ({result.chosen.form}) vs reference", result.chosen.hourly),
    ):
        sc = ax.scatter(p.reference, y, c=p.rh, cmap="viridis", s=9, alpha=0.75, vmin=0, vmax=100)
        ax.plot([0, top], [0, top], color="black", lw=1, ls="--", label="1:1")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
        ax.set_xlabel(f"Reference {result.station} PM2.5 (µg/m³, hourly)")
        ax.set_ylabel("Sensor PM2.5 (µg/m³, hourly)")
        ax.set_title(f"{title}\nR² {m.r2:.3f}  RMSE {m.rmse:.1f}  slope {m.slope:.2f}", fontsize=10)
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
    fig.colorbar(sc, ax=[ax_raw, ax_cal], label="sensor RH (%)", shrink=0.8)


def _plot_series(ax_ts: Axes, result: FitResult, cal: Array) -> None:
    """Raw, reference and calibrated hourly series, with gaps where hours are missing."""
    p = result.paired
    hours = np.asarray([h.replace(tzinfo=None) for h in p.hours], dtype="datetime64[s]")  # UTC
    # One slot per hour from first to last, NaN where an hour is missing, so gaps show.
    t0 = hours[0]
    slot = ((hours - t0) // np.timedelta64(3600, "s")).astype(int)
    full = t0 + np.arange(int(slot[-1]) + 1) * np.timedelta64(3600, "s")
    for y, style in (
        (p.raw, {"lw": 0.8, "color": "tab:gray", "label": f"raw {result.channel}"}),
        (p.reference, {"lw": 1.2, "color": "black", "label": f"reference {result.station}"}),
        (cal, {"lw": 1.0, "color": "tab:orange", "label": f"calibrated ({result.chosen.form})"}),
    ):
        filled = np.full(full.size, np.nan)
        filled[slot] = y
        ax_ts.plot(full, filled, **style)  # type: ignore[arg-type]
    ax_ts.set_ylabel("PM2.5 (µg/m³)")
    ax_ts.set_title("Hourly means (UTC); gaps are hours failing the 75 % completeness rule")
    ax_ts.legend(loc="upper right", ncols=3)
    ax_ts.grid(alpha=0.3)


def _plot_residuals(ax_res: Axes, result: FitResult, cal: Array) -> None:
    """Calibrated − reference (and plain linear's, if not chosen) against the sensor's RH."""
    p = result.paired
    ax_res.scatter(
        p.rh, cal - p.reference, s=8, alpha=0.7, color="tab:orange", label=result.chosen.form
    )
    plain = next((c for c in result.candidates if c.form == "linear"), None)
    if plain is not None and plain is not result.chosen:
        resid = plain.predict(p.raw, p.rh) - p.reference
        ax_res.scatter(p.rh, resid, s=6, alpha=0.35, color="tab:blue", label="linear (no RH term)")
    ax_res.axhline(0.0, color="black", lw=1)
    ax_res.set_xlabel("sensor RH (%)")
    ax_res.set_ylabel("calibrated − reference (µg/m³)")
    ax_res.set_title("Residuals against humidity: a slope left here means RH is not corrected")
    ax_res.legend(loc="upper left")
    ax_res.grid(alpha=0.3)


def write_png(result: FitResult, path: Path) -> None:
    """Four panels: raw vs reference and calibrated vs reference (1:1 line), the three time
    series, and calibrated − reference residuals against the sensor's RH."""
    p = result.paired
    cal = result.chosen.predict(p.raw, p.rh)
    fig = plt.figure(figsize=(12, 10), dpi=110, layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[1.15, 0.9, 0.9])
    ax_raw = fig.add_subplot(grid[0, 0])
    ax_cal = fig.add_subplot(grid[0, 1])
    ax_ts = fig.add_subplot(grid[1, :])
    ax_res = fig.add_subplot(grid[2, :])
    _plot_one_to_one(fig, ax_raw, ax_cal, result, cal)
    _plot_series(ax_ts, result, cal)
    _plot_residuals(ax_res, result, cal)
    verdict = "meets" if result.chosen.meets_targets else "does NOT meet"
    fig.suptitle(
        f"CityEdge calibration {result.record.id}\n{result.chosen.form} {verdict} the EPA 24-h "
        f"targets; record valid from {result.record.valid_from:%Y-%m-%d %H:%M %Z}",
        fontsize=12,
    )
    fig.savefig(path, format="png")
    plt.close(fig)
