"""``python -m city_platform …`` = ``cityedge platform …``."""

from __future__ import annotations

import sys

from host_tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["platform", *sys.argv[1:]]))
