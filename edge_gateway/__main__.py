"""`python -m edge_gateway --config FILE`: run the gateway service (what systemd starts)."""

from __future__ import annotations

import argparse
import logging
import sys

from calibration.errors import CalibrationError
from edge_gateway.cli import EXIT_CONFIG, run_service
from edge_gateway.config import ConfigError, load_config
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
        config = load_config(args.config)
    except ConfigError as exc:
        _error(f"error: {exc}")
        _error(f"what to do: {exc.hint}")
        return EXIT_CONFIG  # RestartPreventExitStatus: restarting cannot fix the file
    try:
        return run_service(config, args.config)
    except (StoreError, CalibrationError) as exc:  # a message a technician can act on
        _error(f"error: {exc}")
        return 1
    except Exception:  # a bug: the traceback at priority crit, then systemd restarts the gateway
        logging.getLogger("edge_gateway").critical("the gateway failed", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
