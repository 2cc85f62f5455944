"""`cityedge node list|flash|deploy|provision|verify|monitor|label|inventory|broker-files`.

Thin handlers over the library modules (house style 6). They raise: a FieldError carries its
hint, and `cityedge`'s entry point (host_tools/cli.py) reports it; batch commands print a
summary table and fail (exit 1) if any board failed.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from host_tools.field.errors import FieldError

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
            out.print(_history_table(args.history, inv.events(args.history)))
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


def _history_table(device_id: str, events: list[Any]) -> Table:
    table = Table(title=f"history of {device_id}")
    for col in ("when (UTC)", "action", "ok", "port", "firmware", "credential", "details"):
        table.add_column(col)
    for e in events:
        detail = ", ".join(
            f"{k}={v}" for k, v in sorted(e.detail.items()) if not isinstance(v, dict | list)
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
    return table


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
