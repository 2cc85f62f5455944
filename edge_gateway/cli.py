"""`cityedge gateway …`: run the gateway, check a config, show the store's figures.

Library first: these handlers only call :mod:`edge_gateway.config`, :mod:`edge_gateway.app` and
:mod:`edge_gateway.store`; they raise, and the entry point (``cityedge``'s or
``python -m edge_gateway``'s) turns an error with a hint into a message and an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from edge_gateway.config import GatewayConfig, load_config
from edge_gateway.errors import EXIT_CONFIG

EXIT_OK = 0
__all__ = ["EXIT_CONFIG", "EXIT_OK", "add_parser", "run_service"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gateway",
        help="run and inspect the site gateway",
        description="Run the site gateway (as the systemd service does), check its config, and "
        "read its store's figures. docs/gateway.md explains all of it.",
    )
    sub = p.add_subparsers(dest="gateway_command", metavar="GATEWAY_COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_CONFIG)[1])

    run = sub.add_parser(
        "run",
        help="run the gateway (as the systemd service does)",
        description="Run the gateway in the foreground until SIGTERM or Ctrl-C; SIGHUP re-reads "
        "the config. Exit 2 on a config error.",
    )
    run.add_argument("--config", required=True, metavar="FILE", help="gateway TOML config")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check-config",
        help="validate a config file and print it (secrets hidden)",
        description="Validate a gateway config; on an error, name the key and exit 2, else print "
        "a summary (passwords never shown).",
    )
    check.add_argument("config", metavar="FILE", help="gateway TOML config")
    check.set_defaults(func=cmd_check_config)

    stats = sub.add_parser(
        "stats",
        help="queue depth, oldest row and drop counts from the store",
        description="Read the store (read-only, also while the gateway runs): rows waiting, the "
        "oldest one, and the counters kept across restarts (drops, dead letters, "
        "errors).",
    )
    stats.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="gateway TOML config (the store is read, read-only, from its data_dir)",
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=cmd_stats)

    from edge_gateway.status.cli import add_maintenance

    add_maintenance(sub)


def _load(path: str) -> GatewayConfig:
    return load_config(path)  # a ConfigError carries its hint and EXIT_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    return run_service(config, args.config)


def run_service(config: GatewayConfig, config_path: str | None) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the config file."""
    from edge_gateway.app import Gateway
    from edge_gateway.journal import setup_logging

    setup_logging(config.log_level)  # syslog priorities when stderr is the journal
    gateway = Gateway(config, config_path)
    asyncio.run(gateway.run(handle_signals=True))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(f"{args.config}: OK")
    print(f"  gateway {config.gateway_id} at site {config.site_id}; store {config.store_path}")
    print(
        f"  site broker {config.local.host}:{config.local.port} (user {config.local.username or '-'})"
    )
    up = config.upstream
    print(
        f"  platform broker {up.host}:{up.port} tls={'on' if up.tls else 'OFF'}"
        f"{'' if up.enabled else ' (forwarding disabled)'}"
    )
    print(
        f"  inventory: {len(config.inventory.device)} devices, unknown devices "
        f"{'allowed' if config.inventory.allow_unknown else 'refused'}"
    )
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    from edge_gateway.store import read_stats

    config = _load(args.config)
    stats = read_stats(config.store_path)
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return EXIT_OK
    age = stats["oldest_age_s"]
    print(f"store {config.store_path}")
    print(
        f"  waiting: {stats['queue_depth']} rows, {stats['queue_bytes']} bytes, oldest "
        f"{'-' if age is None else f'{age:.0f} s'}"
    )
    for name, value in sorted(stats["counters"].items()):
        print(f"  {name}: {value}")
    for dev, n in sorted(stats["per_device"].items()):
        print(f"  waiting for {dev}: {n}")
    return EXIT_OK
