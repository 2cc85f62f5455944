"""The shipped systemd unit: hardened (systemd-analyze security at most 2.0), valid
(systemd-analyze verify), and consistent with the gateway (config exit code, data_dir)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_gateway.cli import EXIT_CONFIG
from edge_gateway.config import GatewayConfig
from tests.support.tools import REPO

UNIT = REPO / "edge_gateway" / "systemd" / "cityedge-gateway.service"


def _directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (Debian: systemd)")
    return exe


def test_unit_matches_the_gateway() -> None:
    d = _directives()
    assert str(EXIT_CONFIG) in d["RestartPreventExitStatus"][0].split()
    assert d["SyslogIdentifier"] == ["cityedge-gateway"]
    default_data_dir = GatewayConfig.from_dict({"gateway_id": "gw-x1", "site_id": "s-x1"}).data_dir
    assert default_data_dir in " ".join(d["ReadWritePaths"]).split()
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["true"]
    assert d["Type"] == ["notify"]


def test_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    exe = _analyze()
    out = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in out.stderr and out.returncode != 0:
        pytest.skip(f"this systemd-analyze has no --offline (needs systemd 250+): {out.stderr}")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
    assert m, out.stdout[-1500:] + out.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security: {score}")
    assert score <= 2.0, out.stdout


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    exe = _analyze()
    # verify checks that ExecStart exists: point it at this interpreter instead of the Pi's venv
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/cityedge/venv/bin/python", sys.executable))
    out = subprocess.run(
        [exe, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
