"""`cityedge gateway maintenance …` (talks to the running gateway's status page with the
token), `cityedge fleet serve` and `cityedge report completeness`."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1


def add_maintenance(gateway_sub: Any) -> None:
    """Register ``maintenance`` under ``cityedge gateway``."""
    m = gateway_sub.add_parser(
        "maintenance", help="put a device in maintenance (not counted as down, no alerts) or end it"
    )
    m.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config")
    m.add_argument(
        "action",
        choices=("start", "end", "list"),
        help="start or end maintenance of a device, or list the devices in it",
    )
    m.add_argument("device", nargs="?", help="device id (start, end)")
    m.add_argument("--hours", type=float, default=None, help="how long (default: until `end`)")
    m.add_argument("--reason", default="", help="shown on the page (e.g. 'sensor swap')")
    m.set_defaults(func=cmd_maintenance)


def _fail(message: str, hint: str) -> Exception:
    from edge_gateway.errors import GatewayError

    return GatewayError(message, hint=hint)


def _request(url: str, token: str | None, body: dict[str, Any] | None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise _fail(
            f"the gateway refused: HTTP {exc.code} {detail}",
            "check the device id and that the token file is the gateway's",
        ) from None
    except OSError as exc:
        raise _fail(
            f"cannot reach the gateway's status page at {url}: {exc}",
            "is the gateway running, with status.enabled = true? (systemctl "
            "status cityedge-gateway)",
        ) from None


def cmd_maintenance(args: argparse.Namespace) -> int:
    from edge_gateway.cli import _load

    config = _load(args.config)
    s = config.status
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    base = f"http://{host}:{s.port}"
    if args.action == "list":
        rows = _request(f"{base}/api/devices?state=maintenance", None, None)
        for r in rows:
            m = r.get("maintenance") or {}
            print(f"{r['device_id']}  {m.get('reason', '')}")
        return EXIT_OK
    if not args.device:
        raise _fail(
            "give the device id",
            "e.g. cityedge gateway maintenance --config "
            "gateway.toml start ce-a1b2c3d4e5f6 --hours 24 --reason 'sensor swap'",
        )
    token_path = Path(s.token_file) if s.token_file else Path(config.data_dir) / "status-token"
    try:
        token = token_path.read_text().strip()
    except OSError as exc:
        raise _fail(
            f"cannot read the status token {token_path}: {exc.strerror}",
            "run as the gateway's user (sudo -u cityedge …)",
        ) from None
    body: dict[str, Any] = {"action": args.action, "reason": args.reason}
    if args.hours is not None:
        body["hours"] = args.hours
    out = _request(f"{base}/api/devices/{args.device}/maintenance", token, body)
    print(f"{out['device_id']}: {out['state']} ({out['reason']})")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register ``cityedge fleet …`` and ``cityedge report …``."""
    fleet = sub.add_parser("fleet", help="the city-wide status page from the platform broker")
    fsub = fleet.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    fleet.set_defaults(func=lambda args: (fleet.print_help(), 2)[1])
    serve = fsub.add_parser("serve", help="serve sites → site → device pages and the JSON API")
    serve.add_argument("--broker", required=True, metavar="HOST:PORT", help="platform broker")
    serve.add_argument("--username", help="this view's own read-only account")
    serve.add_argument("--password-file", metavar="FILE", help="its password (one line)")
    serve.add_argument("--tls", action="store_true", help="TLS to the broker")
    serve.add_argument("--ca-file", metavar="FILE", help="CA bundle (with --tls)")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default loopback)")
    serve.add_argument("--port", type=int, default=9190, help="HTTP port (default 9190)")
    serve.add_argument(
        "--lang",
        choices=("th", "en"),
        default="th",
        help="the page's default language (default th)",
    )
    serve.add_argument(
        "--stale-s",
        type=float,
        default=180.0,
        help="a gateway health older than this counts as down",
    )
    serve.add_argument(
        "--client-id",
        default="cityedge-fleet-view",
        help="MQTT client id on the platform broker (default cityedge-fleet-view)",
    )
    serve.set_defaults(func=cmd_fleet_serve)
    add_report(sub)


def cmd_fleet_serve(args: argparse.Namespace) -> int:
    import asyncio
    import ssl

    from edge_gateway.status.fleet import FleetModel, FleetSettings, serve

    host, sep, port = str(args.broker).rpartition(":")
    if not sep or not port.isdigit():
        raise _fail(
            f"--broker {args.broker!r} is not HOST:PORT",
            "e.g. --broker platform.city.example:8883 --tls",
        )
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        raise _fail(
            f"--host {args.host} is not loopback: the fleet view has no login",
            "serve on 127.0.0.1 behind the city's reverse proxy (with its login)",
        )
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().strip()
        except OSError as exc:
            raise _fail(
                f"cannot read {args.password_file}: {exc.strerror}",
                "give the file holding this view's broker password",
            ) from None
    tls = None
    if args.tls:
        tls = ssl.create_default_context(cafile=args.ca_file)
    model = FleetModel(FleetSettings(stale_s=args.stale_s))
    try:
        asyncio.run(
            serve(
                model,
                (host, int(port)),
                (args.host, args.port),
                args.username,
                password,
                tls,
                args.lang,
                args.client_id,
            )
        )
    except OSError as exc:
        raise _fail(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror}", "pick a free --port"
        ) from None
    return EXIT_OK


def add_report(sub: Any) -> None:
    report = sub.add_parser("report", help="reports from a gateway's store")
    rsub = report.add_subparsers(dest="report_command", metavar="REPORT_COMMAND")
    report.set_defaults(func=lambda args: (report.print_help(), 2)[1])
    comp = rsub.add_parser(
        "completeness", help="CSV, PNG heatmap and HTML summary of a month's completeness"
    )
    comp.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config")
    comp.add_argument("--site", required=True, help="the site (the gateway's site_id)")
    comp.add_argument("--month", required=True, help="YYYY-MM, e.g. 2026-11")
    comp.add_argument("--out", default=".", metavar="DIR", help="where the files go")
    comp.set_defaults(func=cmd_report_completeness)


def cmd_report_completeness(args: argparse.Namespace) -> int:
    from edge_gateway.cli import _load
    from edge_gateway.status import report

    config = _load(args.config)
    if args.site != config.site_id:
        raise _fail(
            f"--site {args.site} is not this gateway's site ({config.site_id})",
            "run the report on the site's gateway, with its config",
        )
    try:
        rows = report.compute(config, args.month)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc), "give --month YYYY-MM and the gateway's own config") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"completeness-{args.site}-{args.month}"
    report.write_csv(rows, out / f"{stem}.csv", args.site)
    png: Path | None = out / f"{stem}.png"
    try:
        report.write_png(rows, out / f"{stem}.png", f"{args.site} {args.month}")
    except ImportError as exc:
        print(f"no heatmap: {exc}")
        png = None
    report.write_html(rows, out / f"{stem}.html", png, args.site, args.month)
    total = report.month_percent(rows)
    print(
        f"{len({r.device_id for r in rows})} devices, {len({r.day for r in rows})} days: "
        f"{'–' if total is None else f'{total:.1f} %'} complete; wrote {out / stem}.csv/.png/.html"
    )
    return EXIT_OK
