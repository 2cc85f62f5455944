"""``python -m calibration fit|check|aqi …`` (the same handlers as ``cityedge calibrate``)."""

import sys

from calibration.cli import main

sys.exit(main())
