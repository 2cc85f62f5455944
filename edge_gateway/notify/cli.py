"""`cityedge alerts …`: serve centrally, send a test, acknowledge, list incidents, status.

    cityedge alerts serve --config alerts.toml      # central mode: the platform's alert stream
    cityedge alerts deliver --config alerts.toml    # deliver the outbox only (no broker)
    cityedge alerts test --config alerts.toml [--channel line-ops]
    cityedge alerts ack 12 --by "somchai" --config alerts.toml
    cityedge alerts list --config alerts.toml [--json]

Central mode subscribes (QoS 2, persistent session) to the platform broker's alerts, the
observations (for peaks and place names), gateway health (the last will: ``gateway_offline``),
device status (``node_silent``) and gateway dispatcher heartbeats (``dispatcher_quiet``); a
message is acknowledged to the broker only after it was recorded in the outbox (fsync).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from typing import Any

from edge_gateway.config import ConfigError
from edge_gateway.errors import GatewayError
from edge_gateway.notify.settings import NotifySettings, load_settings

log = logging.getLogger(__name__)
EXIT_CONFIG = 2


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "alerts", help="deliver alerts to people: LINE, webhook, e-mail, ntfy"
    )
    sub = p.add_subparsers(dest="alerts_command", metavar="ALERTS_COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_CONFIG)[1])
    for name, text, func in (
        ("serve", "run the central dispatcher on the platform's alert stream", cmd_serve),
        ("deliver", "deliver what waits in the outbox, then keep delivering", cmd_deliver),
        ("test", "send a test message on every channel (or --channel NAME)", cmd_test),
        ("ack", "acknowledge an incident (stops its escalation)", cmd_ack),
        ("list", "open incidents and the outbox", cmd_list),
        (
            "line-group-id",
            "receive LINE webhooks and print the group ids the bot joins",
            cmd_line_group_id,
        ),
    ):
        sp = sub.add_parser(name, help=text)
        if name == "line-group-id":
            sp.add_argument(
                "--secret-file",
                required=True,
                metavar="FILE",
                help="file holding the LINE channel secret (Basic settings tab)",
            )
            sp.add_argument(
                "--host",
                default="127.0.0.1",
                help="address to listen on for LINE's webhook (default 127.0.0.1)",
            )
            sp.add_argument(
                "--port", type=int, default=8080, help="port to listen on (default 8080)"
            )
            sp.add_argument("--count", type=int, default=0, help="stop after N group ids")
            sp.set_defaults(func=func)
            continue
        sp.add_argument("--config", required=True, metavar="FILE", help="alerts TOML config")
        sp.set_defaults(func=func)
        if name == "test":
            sp.add_argument("--channel", action="append", help="channel name (repeatable)")
            sp.add_argument("--wait-s", type=float, default=30.0, help="how long to wait")
        if name == "ack":
            sp.add_argument("incident", type=int, help="incident number (#N in the message)")
            sp.add_argument("--by", default="cli", help="who acknowledges")
        if name == "list":
            sp.add_argument("--json", action="store_true", help="print JSON")


def _load(path: str) -> NotifySettings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        raise GatewayError(str(exc), hint=exc.hint, exit_code=EXIT_CONFIG) from None


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    logging.getLogger("edge_gateway").setLevel(logging.INFO)


def cmd_deliver(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    _logging()
    asyncio.run(_serve(settings, broker=False))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings.mode != "central":
        raise GatewayError(
            f"{args.config} has mode = {settings.mode!r}: its gateways deliver the alerts",
            hint='set mode = "central" in this file, and remove the alerts config from the '
            "gateways, so that no message is sent twice",
            exit_code=EXIT_CONFIG,
        )
    _logging()
    asyncio.run(_serve(settings, broker=True))
    return 0


async def _serve(settings: NotifySettings, broker: bool) -> None:
    from edge_gateway.notify.dispatcher import Dispatcher
    from edge_gateway.prometheus import MetricsServer

    dispatcher = Dispatcher(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, dispatcher.stop)
    metrics = None
    if settings.metrics_port is not None:
        metrics = MetricsServer(
            settings.metrics_host, settings.metrics_port, dict, extra=dispatcher.metrics_text
        )
        port = await metrics.start()
        print(f"metrics on http://{settings.metrics_host}:{port}/metrics", flush=True)
    tasks = [asyncio.create_task(dispatcher.run())]
    if broker:
        from edge_gateway.notify.central import Central

        tasks.append(asyncio.create_task(Central(settings, dispatcher).run()))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if metrics is not None:
            await metrics.stop()
        dispatcher.close()


def cmd_test(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    _logging()
    return asyncio.run(_test(settings, args.channel or list(settings.channels), args.wait_s))


async def _test(settings: NotifySettings, channels: list[str], wait_s: float) -> int:
    from edge_gateway.notify.dispatcher import Dispatcher

    unknown = [c for c in channels if c not in settings.channels]
    if unknown:
        raise GatewayError(
            f"no channel named {', '.join(unknown)}",
            hint=f"channels in this file: {', '.join(settings.channels)}",
        )
    dispatcher = Dispatcher(settings)
    # One message per channel, without failover: the point is to test each one.
    for name in channels:
        dispatcher.test_message([name])
    task = asyncio.create_task(dispatcher.run())
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and dispatcher.outbox.pending()[0]:
        await asyncio.sleep(0.2)
    dispatcher.stop()
    with contextlib.suppress(BaseException):
        await task
    ok = True
    for name in channels:
        n = dispatcher.sent.get(name, 0)
        fails = {o: k for (c, o), k in dispatcher.failed.items() if c == name}
        print(f"{name}: {'sent' if n else 'NOT sent'}{'' if not fails else f' ({fails})'}")
        ok = ok and n > 0
    dispatcher.close()
    return 0 if ok else 1


def cmd_ack(args: argparse.Namespace) -> int:
    from edge_gateway.notify.incidents import ack
    from edge_gateway.notify.outbox import Outbox

    settings = _load(args.config)
    outbox = Outbox(settings.outbox)
    try:
        done = ack(outbox, args.incident, args.by, time.time())
    finally:
        outbox.close()
    print(
        f"incident #{args.incident} {'acknowledged' if done else 'not found or already acknowledged'}"
    )
    return 0 if done else 1


def cmd_list(args: argparse.Namespace) -> int:
    from edge_gateway.notify.incidents import open_incidents
    from edge_gateway.notify.outbox import Outbox

    settings = _load(args.config)
    outbox = Outbox(settings.outbox)
    try:
        rows = open_incidents(outbox)
        pending, oldest = outbox.pending()
    finally:
        outbox.close()
    if args.json:
        print(json.dumps({"open": rows, "pending": pending}, indent=2, ensure_ascii=False))
        return 0
    for r in rows:
        print(
            f"#{r['no']} {r['site']}/{r['device']} {r['family']} {r['max_tier']} "
            f"peak {r['peak']} {r['unit'] or ''} {'acked by ' + r['acked_by'] if r['acked_by'] else ''}"
        )
    print(
        f"{len(rows)} open incident(s); {pending} notification(s) waiting"
        + ("" if oldest is None else f", oldest {time.time() - oldest:.0f} s")
    )
    return 0


def cmd_line_group_id(args: argparse.Namespace) -> int:
    """The bot learns a group's id only from a webhook: when it is invited (a ``join`` event)
    or when someone writes in the group. Each request is checked against
    ``x-line-signature`` (base64 HMAC-SHA256 of the body with the channel secret)."""
    from pathlib import Path

    secret = Path(args.secret_file).read_text("utf-8").strip()
    return asyncio.run(_line_group_id(secret, args.host, args.port, args.count))


async def _line_group_id(secret: str, host: str, port: int, count: int) -> int:
    import base64
    import hashlib
    import hmac

    from edge_gateway.notify.channels import need_aiohttp

    need_aiohttp()
    from aiohttp import web

    seen: list[str] = []
    done = asyncio.Event()

    async def hook(request: Any) -> Any:
        body = await request.read()
        want = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(want, request.headers.get("x-line-signature", "")):
            print("a request with a wrong x-line-signature was refused", flush=True)
            return web.Response(status=401)
        for event in json.loads(body).get("events", []):
            source = event.get("source") or {}
            group = source.get("groupId") or source.get("roomId")
            if group and group not in seen:
                seen.append(group)
                print(f"{source.get('type')} id: {group}  (event {event.get('type')})", flush=True)
                if count and len(seen) >= count:
                    done.set()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/line/webhook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    print(
        f"listening on http://{host}:{bound}/line/webhook; set the channel's webhook URL to "
        "the public HTTPS address that forwards here, then invite the bot to the group",
        flush=True,
    )
    try:
        await done.wait()
    finally:
        await runner.cleanup()
    return 0
