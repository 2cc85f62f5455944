"""`cityedge node provision`: identity, site, WiFi and a per-device MQTT credential, one board
or a batch file's, and the site's broker files after."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from host_tools.field import field_cli as h
from host_tools.field.errors import ProvisionError


def _wifi_password(args: argparse.Namespace) -> str:
    if args.wifi_password_file:
        return Path(args.wifi_password_file).read_text().strip()
    env = os.environ.get(h.WIFI_PASSWORD_ENV)
    if env is not None:
        return env
    if sys.stdin.isatty():
        return getpass.getpass(f"WiFi password for {args.ssid!r}: ")
    raise ProvisionError(
        "no WiFi password given",
        hint=f"Set {h.WIFI_PASSWORD_ENV}, or pass --wifi-password-file FILE (it is never stored).",
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
    from host_tools.field.batch import Job, Reporter, run_parallel
    from host_tools.field.board import Board
    from host_tools.field.provision import BrokerTarget, NodeSpec, provision_board

    if not args.ssid:
        raise ProvisionError("no WiFi network name given", hint="Give --ssid NAME.")
    if not args.broker:
        raise ProvisionError(
            "no broker given", hint="Give --broker HOST[:PORT] of the site gateway."
        )
    specs = _specs(
        args,
        BrokerTarget.parse(args.broker, tls=args.tls),
        _intervals(args.interval),
        _wifi_password(args),
    )
    for job in specs:
        job.spec.validate()  # every row checked before any board is touched

    def work(job: Job[NodeSpec], rep: Reporter) -> tuple[str, Any]:
        firmware = None
        with Board(job.port) as board:  # closing it starts the firmware with its new config
            if args.deploy:
                res, _ = h._deploy_one(job.port, job.spec.board, args, rep, board)
                firmware = res.firmware
            rep.stage("provisioning")
            with h._inventory(args) as inv:
                result = provision_board(board, job.spec, inv, firmware_version=firmware)
            rep.stage("starting firmware")
        rep.bytes(1, 1)
        what = "credential rotated" if result.rotated else "new device"
        return (
            f"{result.device_id} {result.kind} @ {result.site_id}, "
            f"credential v{result.credential_version} ({what})"
        ), result

    outcomes = run_parallel(specs, work, h.err)
    _broker_files(args, sorted({j.spec.site_id for j in specs}))
    _warn_rotated([o.result for o in outcomes if o.ok])
    return h._finish("provision", outcomes)


def _specs(
    args: argparse.Namespace, broker: Any, intervals: dict[str, float], password: str
) -> list[Any]:
    """One job per board: the batch file's rows (those of --port, if given), or --port's boards
    with the flags' node."""
    from host_tools.field.batch import Job, read_batch_csv
    from host_tools.field.provision import NodeSpec

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
        for port in h._ports(args):
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
    return specs


def _broker_files(args: argparse.Namespace, sites: list[str]) -> None:
    from host_tools.field.provision import export_broker_files

    with h._inventory(args) as inv:
        for site in sites:
            target = (
                Path(args.broker_dir) if args.broker_dir and len(sites) == 1 else h.SITES_DIR / site
            )
            passwd, acl = export_broker_files(inv, target, site_id=site)
            h.err.print(
                f"Broker files for {site}: {passwd} and {acl}. Copy both to the gateway "
                "and reload Mosquitto ('sudo systemctl reload mosquitto').",
                markup=False,
            )


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
    h.err.print(
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
        h.err.print(
            f"[yellow]{r.device_id} ({r.port}): credential rotated "
            f"(v{r.credential_version - 1} → v{r.credential_version})[/]: its old password "
            "no longer works.",
            highlight=False,
        )
    if rotated:
        h.err.print(
            "[yellow]These nodes are locked out until the new passwd and acl are on the "
            "gateway[/]: copy them and reload Mosquitto now (see above).",
            highlight=False,
        )
