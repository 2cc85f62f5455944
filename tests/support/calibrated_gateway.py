"""A gateway as a site runs it, for the end-to-end tests (walking skeleton, two sites): a linear
PM2.5 calibration record, the gateway's TOML (site broker in, platform broker out, that record
applied), and the gateway started as its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

from host_tools.sim.brokers import MosquittoBroker


def linear_pm25_record(
    record_id: str, device_id: str, author: str, slope: float, intercept: float
) -> str:
    """One calibration record (TOML): pm25 = slope × pm25_cf1 + intercept."""
    return f"""
[[record]]
id = "{record_id}"
device_id = "{device_id}"
quantity = "pm25"
unit = "ug/m3"
input_channel = "pm25_cf1"
author = "{author}"
valid_from = 2020-01-01T00:00:00Z

[record.model]
form = "linear"

[record.model.coefficients]
slope = {slope}
intercept = {intercept}
"""


def write_gateway_toml(
    path: Path,
    *,
    gateway_id: str,
    site_id: str,
    data_dir: Path,
    location: tuple[float, float, str],
    local: MosquittoBroker,
    upstream: MosquittoBroker,
    records: Path,
) -> Path:
    """A gateway that forwards (no TLS) what it calibrates with ``records``; any device allowed."""
    lat, lon, name = location
    path.write_text(f"""
gateway_id = "{gateway_id}"
site_id = "{site_id}"
data_dir = "{data_dir}"

[location]
lat = {lat}
lon = {lon}
name = "{name}"

[local]
host = "{local.host}"
port = {local.port}

[upstream]
host = "{upstream.host}"
port = {upstream.port}
tls = false

[calibration]
records = "{records}"

[inventory]
allow_unknown = true

[metrics]
enabled = false

[health]
interval_s = 1
""")
    return path


def start_gateway_process(
    config: Path, stdout: int | IO[bytes] | None = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``python -m edge_gateway --config <config>``; stderr goes where stdout goes, or nowhere."""
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(config)],
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout == subprocess.PIPE else subprocess.DEVNULL,
    )
