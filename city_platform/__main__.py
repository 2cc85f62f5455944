"""``python -m city_platform …`` = ``cityedge platform …`` (without the field tools)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from calibration.errors import run_reported
from city_platform.cli import add_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m city_platform")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["platform", *(sys.argv[1:] if argv is None else argv)])
    func: Callable[[argparse.Namespace], int] = args.func
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # as cityedge's
    return run_reported(func, args)  # the same rule as `cityedge`'s boundary


if __name__ == "__main__":
    sys.exit(main())
