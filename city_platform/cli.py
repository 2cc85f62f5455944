"""``cityedge platform …``: the city platform's sink, its database and its read API.

Thin handlers over :mod:`city_platform.sink`, :mod:`city_platform.db` and
:mod:`city_platform.api`; their dependencies (psycopg, alembic, aiohttp: the ``platform``
extra) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from city_platform import EXIT_CONFIG, INSTALL_HINT, PARTITIONED_TABLES, PlatformError

DB_ENV = "CITYEDGE_DB_URL"
PASSWORD_ENV = "CITYEDGE_SINK_PASSWORD"

# Default retention in months (docs/platform.md): raw observations 24 (two certification
# periods of the national smart-city scheme), the rest 12.
DEFAULT_KEEP = {"observation": 24, "device_status": 12, "gateway_health": 12, "alert": 24}


def _guard(handler: Any, exit_code: int = 1) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except PlatformError as exc:
            exc.exit_code = exit_code  # type: ignore[attr-defined]  # read by the entry point
            raise
        except ModuleNotFoundError as exc:
            raise PlatformError(f"{exc.name} is not installed", INSTALL_HINT) from exc

    return run


def _db(args: argparse.Namespace) -> str:
    url: str | None = args.db or os.environ.get(DB_ENV)
    if not url:
        raise PlatformError(
            "no database given", f"give --db postgresql://USER@HOST:PORT/DB or set {DB_ENV}"
        )
    return url


def _config(args: argparse.Namespace) -> Any:
    from city_platform.sink import Broker, SinkConfig

    if not args.broker:
        raise PlatformError("no broker given", "give --broker HOST:PORT (once per broker)")
    if bool(args.certfile) != bool(args.keyfile) or (args.certfile and not args.cafile):
        raise PlatformError("a client certificate needs --cafile, --certfile and --keyfile")
    return SinkConfig(
        brokers=tuple(Broker.parse(b) for b in args.broker),
        db_url=_db(args),
        group=args.group,
        consumers=getattr(args, "consumers", 1),
        client_prefix=args.client_prefix,
        batch_max=args.batch_max,
        session_expiry_s=args.session_expiry,
        username=args.username,
        password=os.environ.get(PASSWORD_ENV),
        cafile=args.cafile,
        certfile=args.certfile,
        keyfile=args.keyfile,
        stats_interval_s=args.stats_interval,
    )


def _sink(args: argparse.Namespace) -> int:
    from city_platform.sink import supervise

    if args.consumers < 1:
        raise PlatformError("--consumers must be at least 1")
    return supervise(_config(args))


def _consume(args: argparse.Namespace) -> int:
    from city_platform.sink import consume

    return consume(_config(args), args.index)


def _migrate(args: argparse.Namespace) -> int:
    from city_platform.db import migrate

    migrate(_db(args), args.revision)
    print(f"database at revision {args.revision}")
    return 0


def _retention(args: argparse.Namespace) -> int:
    from city_platform.db import connect, drop_old_partitions, prune_rejected

    keep = dict(DEFAULT_KEEP)
    for item in args.keep or []:
        table, _, months = item.partition("=")
        if table not in PARTITIONED_TABLES or not months.isdigit():
            raise PlatformError(
                f"--keep {item!r}: expected TABLE=MONTHS",
                f"tables: {', '.join(PARTITIONED_TABLES)}",
            )
        keep[table] = int(months)
    if args.keep_rejected_days < 1:
        raise PlatformError("--keep-rejected-days must be at least 1")
    with connect(_db(args)) as conn:
        dropped = drop_old_partitions(conn, keep)
        pruned = prune_rejected(conn, args.keep_rejected_days)
    print("dropped: " + (", ".join(dropped) if dropped else "nothing"))
    print(f"rejected messages deleted: {pruned}")
    return 0


def _api(args: argparse.Namespace) -> int:
    from city_platform.api import serve

    return int(serve(_db(args), host=args.host, port=args.port))


def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        action="append",
        metavar="HOST:PORT",
        help="a platform broker (repeat for one broker per district)",
    )
    p.add_argument("--db", help=f"postgresql:// URL of the sink's writer login (or ${DB_ENV})")
    p.add_argument("--group", default="cityedge-sink", help="shared-subscription group name")
    p.add_argument(
        "--client-prefix",
        default="cityedge-sink",
        help="MQTT client ids are PREFIX-INDEX-bN; keep them stable across restarts",
    )
    p.add_argument("--batch-max", type=int, default=500, help="messages per transaction")
    p.add_argument(
        "--session-expiry",
        type=int,
        default=7 * 24 * 3600,
        metavar="SECONDS",
        help="how long a broker keeps a stopped consumer's messages",
    )
    p.add_argument("--username", help=f"MQTT user (password from ${PASSWORD_ENV})")
    p.add_argument("--cafile", help="CA certificate: connect to the brokers with TLS")
    p.add_argument("--certfile", help="client certificate, for brokers that require one")
    p.add_argument("--keyfile", help="the client certificate's private key")
    p.add_argument(
        "--stats-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="print each consumer's counts this often (0: never)",
    )


def add_parser(sub: Any) -> None:
    plat = sub.add_parser("platform", help="city platform: PostgreSQL sink, read API, formats")
    psub = plat.add_subparsers(dest="platform_command", metavar="PLATFORM_COMMAND")
    plat.set_defaults(func=lambda args: plat.print_help() or 2)

    p = psub.add_parser("sink", help="run N consumers sharing one subscription on each broker")
    _broker_args(p)
    p.add_argument("--consumers", type=int, default=2, help="consumer processes (default 2)")
    p.set_defaults(func=_guard(_sink))

    p = psub.add_parser("consume", help="one consumer process (what 'sink' runs N of)")
    _broker_args(p)
    p.add_argument("--index", type=int, default=0, help="this consumer's number")
    p.set_defaults(func=_guard(_consume, EXIT_CONFIG))

    p = psub.add_parser("migrate", help="create or upgrade the sink's tables (as their owner)")
    p.add_argument("--db", help=f"postgresql:// URL of the owner (or ${DB_ENV})")
    p.add_argument(
        "--revision",
        default="head",
        help="Alembic revision to migrate to (default head: the newest)",
    )
    p.set_defaults(func=_guard(_migrate))

    p = psub.add_parser("retention", help="drop monthly partitions past their retention")
    p.add_argument("--db", help=f"postgresql:// URL of the owner (or ${DB_ENV})")
    p.add_argument(
        "--keep",
        action="append",
        metavar="TABLE=MONTHS",
        help=f"override a default ({', '.join(f'{k}={v}' for k, v in DEFAULT_KEEP.items())})",
    )
    p.add_argument(
        "--keep-rejected-days",
        type=int,
        default=90,
        metavar="DAYS",
        help="keep rejected messages this long (default 90)",
    )
    p.set_defaults(func=_guard(_retention))

    p = psub.add_parser("api", help="serve the read API (latest, series, Air4Thai, water)")
    p.add_argument("--db", help=f"postgresql:// URL of a reader login (or ${DB_ENV})")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address (default loopback)")
    p.add_argument("--port", type=int, default=8090, help="HTTP port (default 8090)")
    p.set_defaults(func=_guard(_api))
