"""`python -m edge_gateway --config FILE`: run the gateway service (what systemd starts)."""

from __future__ import annotations

import argparse
import sys

from edge_gateway.cli import run_service
from edge_gateway.config import ConfigError, load_config


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
    return run_service(config, args.config)


if __name__ == "__main__":
    sys.exit(main())
