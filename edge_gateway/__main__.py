"""`python -m edge_gateway --config FILE`: run the gateway service (what systemd starts)."""

from __future__ import annotations

import argparse
import sys

from calibration.errors import CalibrationError
from edge_gateway.cli import run_service
from edge_gateway.config import ConfigError, load_config
from edge_gateway.store import StoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_gateway", description=__doc__)
    parser.add_argument("--config", required=True, metavar="FILE", help="gateway TOML config")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"what to do: {exc.hint}", file=sys.stderr)
        return 2
    try:
        return run_service(config, args.config)
    except (StoreError, CalibrationError) as exc:  # a message a technician can act on
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
