"""``cityedge calibrate …``: thin command-line handlers over the calibration library.

The top-level ``cityedge`` CLI calls :func:`add_parser` with its sub-parsers object and then
``args.func(args)``, which returns the exit code. ``python -m calibration`` offers the same
sub-commands without the ``calibrate`` word.

Exit codes: 0 success, 1 a calibration/record/fit error (message on stderr, nothing written),
2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from calibration.errors import CalibrationError, run_reported

__all__ = ["add_parser", "main"]

Handler = Callable[[argparse.Namespace], int]

# calibration.fit.FORMS, spelled out here: calibration.fit needs numpy (the 'fit' extra), and
# building the parser must not (a test checks the two agree).
FIT_FORMS = ("linear", "linear_rh", "polynomial")
_FIT_MODULES = frozenset({"numpy", "matplotlib"})


def _guard(handler: Handler) -> Handler:
    """A missing 'fit' extra becomes a CalibrationError that says how to install it; errors
    are raised, and the entry point (`cityedge`'s or `python -m calibration`'s) reports them."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in _FIT_MODULES:
                raise
            err = CalibrationError(
                f"this command needs {exc.name}, part of the 'fit' extra, which is not "
                "installed here"
            )
            err.hint = "pip install 'cityedge[fit]'"
            raise err from exc

    return run


def _aware(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ISO 8601") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a UTC offset, e.g. 2026-03-01T00:00:00+07:00"
        )
    return when


def _fit(args: argparse.Namespace) -> int:
    from calibration import fit, report

    # Before reading and fitting (which takes a while): the cheap checks a typo fails.
    fit.check_device_id(args.device)
    fit.check_out_dir(args.out_dir)
    if args.report is not None and not Path(args.report).parent.is_dir():
        raise CalibrationError(f"{Path(args.report).parent}: folder for --report does not exist")
    result = fit.collocate(
        args.sensor,
        args.reference,
        args.device,
        quantity=args.quantity,
        channel=args.channel,
        rh_channel=args.rh_channel,
        reference_label=args.reference_label,
        station=args.station,
        form=args.form,
        record_id=args.record_id,
        author=args.author,
        valid_from=args.valid_from,
        valid_to=args.valid_to,
        min_hours=args.min_hours,
    )
    console = Console()
    console.print(report.metrics_table(result))
    console.print(f"recommended: {result.reason}", highlight=False)
    if not result.chosen.meets_targets:
        console.print(
            "[yellow]warning:[/yellow] the chosen model does not meet the EPA 24-h targets; "
            "collocate longer or check the node before relying on it",
            highlight=False,
        )
    record_path, png_path = fit.write_outputs(result, args.out_dir, report_path=args.report)
    console.print(f"wrote {record_path}\nwrote {png_path}", highlight=False)
    return 0


def _check(args: argparse.Namespace) -> int:
    from calibration.records import CalibrationRecord, Registry, load_file

    records: list[CalibrationRecord] = []
    for path in args.files:
        p = Path(path)
        records.extend(Registry.load(p) if p.is_dir() else load_file(p))
    registry = Registry(records)  # overlaps across all the given files
    console = Console()
    console.print(f"{len(registry)} calibration record(s), all valid:", highlight=False)
    for r in registry:
        start = f"{r.valid_from.astimezone(UTC):%Y-%m-%d %H:%M}"
        end = f"{r.valid_to.astimezone(UTC):%Y-%m-%d %H:%M}" if r.valid_to else "open"
        console.print(
            f"  {r.id}: device {r.device_id} {r.quantity} = {r.form}({', '.join(r.inputs)}) "
            f"[{r.unit}], valid {start} → {end} UTC",
            highlight=False,
            markup=False,
        )
    return 0


def _aqi(args: argparse.Namespace) -> int:
    from calibration import aqi

    if args.index == "us":
        value = aqi.us_aqi(args.pollutant, args.concentration)
        band = aqi.us_band(value)
        note = ""
    else:
        detail = aqi.thai_aqi_detail(args.pollutant, args.concentration)
        value, band = detail.aqi, detail.band
        note = " (above 200: project extrapolation, see docs)" if detail.extrapolated else ""
    console = Console()
    console.print(
        f"{args.index.upper()} AQI {value}{note}: {band.name_en} / {band.name_th} "
        f"({band.colour}, {band.colour_hex})",
        highlight=False,
    )
    console.print(band.advice_en, highlight=False)
    console.print(band.advice_th, highlight=False)
    return 0


def _add_fit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``fit`` subcommand: collocation CSVs in, record + PNG out."""
    f = sub.add_parser(
        "fit",
        help="fit a PM calibration from a collocation with a reference station",
        description=(
            "Fit linear, linear+RH and quadratic calibrations of a node against a reference "
            "station, score them against the EPA targets, and write the recommended record "
            "(TOML) and a PNG report. Node CSV: timestamp (UTC) + raw channels; reference CSV: "
            "date, time (Asia/Bangkok, hour-ending) + pm25. See docs/calibration.md."
        ),
    )
    f.add_argument("--sensor", required=True, type=Path, help="node CSV (UTC timestamps)")
    f.add_argument("--reference", required=True, type=Path, help="reference CSV (local time)")
    f.add_argument("--device", required=True, help="device id the record is for")
    f.add_argument("--out-dir", type=Path, default=Path("."), help="folder for record + PNG")
    f.add_argument("--record-id", help="record id (default: DEVICE-QUANTITY-YYYYMMDD-FORM)")
    f.add_argument("--author", default="cityedge calibrate fit", help="who made this record")
    f.add_argument(
        "--quantity",
        choices=("pm25", "pm10"),
        default="pm25",
        help="quantity to fit (default pm25)",
    )
    f.add_argument("--channel", help="raw input channel (default: QUANTITY_cf1)")
    f.add_argument("--rh-channel", default="rh", help="the node's RH channel (default: rh)")
    f.add_argument("--station", help="reference station code (default: the CSV's station)")
    f.add_argument(
        "--reference-label",
        choices=("end", "start"),
        default="end",
        help="reference hours labelled by their end (PCD, default) or start",
    )
    f.add_argument("--form", choices=FIT_FORMS, help="override the recommended model form")
    f.add_argument("--valid-from", type=_aware, help="default: start of the collocation")
    f.add_argument("--valid-to", type=_aware, help="default: open-ended")
    f.add_argument("--min-hours", type=int, default=72, help="minimum paired hours (default 72)")
    f.add_argument("--report", type=Path, help="PNG path (default: OUT_DIR/RECORD_ID.png)")
    f.set_defaults(func=_guard(_fit))


def _add_check(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``check`` subcommand: validate record files or folders."""
    c = sub.add_parser(
        "check",
        help="validate calibration record files (schema, fields, overlaps)",
        description="Validate TOML record files or folders; exit 1 naming the file and field.",
    )
    c.add_argument("files", nargs="+", help="record files or folders of *.toml")
    c.set_defaults(func=_guard(_check))


def _add_aqi(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``aqi`` subcommand: a Thai or US AQI with band and advice."""
    a = sub.add_parser("aqi", help="compute a Thai (default) or US AQI with band and advice")
    a.add_argument(
        "pollutant",
        choices=("pm25", "pm10", "o3", "o3_1h", "co", "no2", "so2", "so2_24h"),
        help="o3_1h and so2_24h are US-only (1-hour ozone ≥ 0.125 ppm; 24-hour SO2 ≥ 305 ppb)",
    )
    a.add_argument("concentration", type=float, help="µg/m³ for PM; ppb/ppm as the table says")
    a.add_argument(
        "--index",
        choices=("thai", "us"),
        default="thai",
        help="Thai AQI (PCD bands, default) or US AQI",
    )
    a.set_defaults(func=_guard(_aqi))


def _add_subcommands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _add_fit(sub)
    _add_check(sub)
    _add_aqi(sub)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``calibrate`` (with ``fit``, ``check``, ``aqi``) on the ``cityedge`` CLI."""
    p = subparsers.add_parser(
        "calibrate",
        help="calibration: fit records from collocations, check record files, compute AQI",
        description="Calibration tools. See docs/calibration.md.",
    )
    sub = p.add_subparsers(dest="calibrate_command", metavar="{fit,check,aqi}")
    _add_subcommands(sub)

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m calibration fit|check|aqi …``."""
    parser = argparse.ArgumentParser(prog="python -m calibration", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="{fit,check,aqi}")
    _add_subcommands(sub)
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return run_reported(func, args)  # the same rule as `cityedge`'s boundary


if __name__ == "__main__":
    sys.exit(main())
