"""`python -m edge_gateway --config FILE`: run the gateway service (what systemd starts)."""

from __future__ import annotations

import argparse
import logging
import sys

from calibration.errors import report
from edge_gateway.cli import run_service
from edge_gateway.config import load_config
from edge_gateway.errors import GatewayError
from edge_gateway.journal import stream_is_journal
from edge_gateway.store import StoreError


def _error(text: str) -> None:
    """A line on stderr at syslog priority err when stderr is the journal."""
    print(f"{'<3>' if stream_is_journal(sys.stderr) else ''}{text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_gateway", description=__doc__)
    parser.add_argument("--config", required=True, metavar="FILE", help="gateway TOML config")
    args = parser.parse_args(argv)
    try:
        try:
            return run_service(load_config(args.config), args.config)
        except StoreError as exc:  # its message says what to do; it carries no hint (yet)
            raise GatewayError(str(exc)) from exc
    except Exception as exc:  # the service's boundary: the same rule as `cityedge`'s
        code = report(exc, _error)  # a ConfigError exits EXIT_CONFIG: no restart can fix it
        if code is not None:
            return code
        # a bug: the traceback at priority crit, then systemd restarts the gateway
        logging.getLogger("edge_gateway").critical("the gateway failed", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
